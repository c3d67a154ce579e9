// The campaign page in a real browser (Debian's chromium, driven by playwright-core) against the
// real local stack (harness.mjs starts it). Every browser test is a `browserTest`: it fails on an
// uncaught error, a console error or a CSP violation it does not declare. Run by scripts/test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, statSync } from "node:fs";
import { createHmac, randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import {
  browserTest, root, artifacts, REGIONS, CAMPAIGN, FORM_KEY, origins, base, count, counts, rows, startOrigin, stopOrigin,
} from "./harness.mjs";
import { axe } from "./watch.mjs";

const LOCALES = ["en", "zh-CN", "ru", "it", "de", "fr"];
const localeTexts = (locale) => JSON.parse(readFileSync(join(root, "www", "locales", `${locale}.json`), "utf8"));
// The privacy notice, the storage confirmation and per-region addresses took the page from
// 29.0 KB to 33.7 KB uncompressed; what a visitor downloads is the compressed size.
const PAGE_LIMIT = 36 * 1024;
const PAGE_GZIP_LIMIT = 13 * 1024;
// The privacy notice and the storage confirmation are in every locale (GDPR Art. 13).
const LOCALE_LIMIT = 8 * 1024;

// Submissions the page sent, in the order it sent them, with the headers it sent; each one's
// answer (status, problem code) is filled in when it comes: `await settled(sent)` first.
function recordSubmissions(page) {
  const sent = [];
  page.on("request", (request) => {
    if (request.method() !== "POST" || !request.url().endsWith("/submissions")) return;
    const headers = request.headers();
    const entry = { key: headers["idempotency-key"], challenge: headers["harbour-challenge"], notice: headers["harbour-notice"], status: null, code: undefined };
    entry.done = request.response().then(async (response) => {
      entry.status = response?.status() ?? null;
      entry.code = (await response?.json().catch(() => ({})))?.code;
    }).catch(() => {});
    sent.push(entry);
  });
  return sent;
}
const settled = (sent) => Promise.all(sent.map((entry) => entry.done));

// Chromium logs every answer of 400 or more to a fetch as a console error ("Failed to load
// resource"): a test refused on purpose declares the status it expects for its submissions.
function expectRefused(s, status, why) {
  const url = `/api/campaigns/${CAMPAIGN.id}/submissions`.replaceAll("/", "\\/");
  s.expectProblem("console", new RegExp(`^console error: Failed to load resource: the server responded with a status of ${status} .*${url}\\)$`), why);
}

async function fill(page, { name = "Ada Lovelace", email, country = "IT", consent = true, marketing = false }) {
  await page.getByLabel("Full name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Country").selectOption(country);
  await page.getByLabel(/I accept the rules of the draw/).setChecked(consent);
  await page.getByLabel(/Send me news about this campaign/).setChecked(marketing);
}

// The watch itself (harness.mjs), so that it cannot quietly stop seeing: each kind of problem is
// caused on purpose and declared, and the fixture fails the test if one of them is not seen.
browserTest("the fixture sees an uncaught error (in the page and in its worker), a console error and a CSP violation (which Chromium also logs)", async (s) => {
  s.expectProblem("uncaught", /^uncaught harbour-test-uncaught /, "thrown on purpose");
  s.expectProblem("console", /^console error: harbour-test-console /, "logged on purpose");
  s.expectProblem("csp", /^csp violation of script-src-elem: blocked inline /, "an inline script, which the page's CSP refuses");
  s.expectProblem("console", /^console error: Executing inline script violates the following Content Security Policy directive/, "Chromium's own report of the same violation");
  s.expectProblem("uncaught", /^uncaught Cannot destructure property 'token' of '.*' as it is null/, "the solver's worker, handed no job");
  const page = await s.visit("IT");
  await page.evaluate(() => {
    new Worker("/pow.js").postMessage(null);
    setTimeout(() => { throw new Error("harbour-test-uncaught"); });
    console.error("harbour-test-console");
    const script = document.createElement("script");
    script.textContent = "window.inlineRan = true;";
    document.body.append(script);
  });
  await page.waitForTimeout(500); // the reports arrive asynchronously
  assert.equal(await page.evaluate(() => window.inlineRan), undefined, "the CSP kept the inline script from running");
});

browserTest("fill and submit: the challenge is solved in a worker, the receipt shows and the row is in the region's database", async (s) => {
  const page = await s.visit("IT");
  const sent = recordSubmissions(page);
  await page.screenshot({ path: join(artifacts, "page.png"), fullPage: true });
  const before = await counts();
  await fill(page, { email: "ada.browser@example.org" });
  // The bots' field: named by the policy, out of the tab order and hidden from assistive
  // technology, and marked for browsers and password managers not to fill it.
  const trap = page.locator("#f-hp");
  assert.equal(await trap.getAttribute("name"), CAMPAIGN.honeypot);
  assert.equal(await page.locator("#hp").getAttribute("aria-hidden"), "true");
  for (const [name, value] of [["tabindex", "-1"], ["autocomplete", "off"], ["data-1p-ignore", "true"], ["data-lpignore", "true"]]) {
    assert.equal(await trap.getAttribute(name), value, name);
  }
  assert.equal(await trap.inputValue(), "");
  // A double click must not send two different submissions.
  await page.getByRole("button", { name: "Enter the draw" }).dblclick();
  await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
  const receipt = await page.locator("#receipt-id").textContent();
  assert.match(receipt, /^eu-[0-9a-f]{16}$/);
  const after = await counts();
  for (const r of REGIONS) assert.equal(after[r] - before[r], r === "eu" ? 1 : 0, `rows added to ${r}`);
  assert.equal(sent.length, 1);
  // The record of consent: the notice the page showed, in its language, and only the boxes ticked.
  const description = await (await fetch(`${base}/api/campaigns/${CAMPAIGN.id}?lang=en`, { headers: { "mf-cf-blob": '{"country":"IT"}' } })).json();
  assert.equal(sent[0].notice, `en.${description.notice.version}`, "the entry names the notice shown");
  const row = rows("eu").find((r) => r.receipt_id === receipt);
  assert.equal(row.notice_locale, "en");
  assert.equal(row.notice_version, description.notice.version);
  const { fields } = JSON.parse(row.payload);
  assert.equal(fields.consent, true);
  assert.notEqual(fields.marketing, true, "marketing consent is not given unless ticked");
  assert.match(sent[0].challenge, /^spring-launch\.\d+\.\d+\.[0-9a-f]{32}\.[0-9a-f]{32}\.[0-9a-f]{8}$/);
  // Set only by the /pow.js worker's answer (the page replaces that worker after a receipt, to
  // solve for the next entry, so whether one is running at this instant proves nothing).
  const [ms, hashes] = await page.locator("#entry").evaluate((f) => [f.dataset.solveMs, f.dataset.solveHashes]);
  assert.ok(Number(hashes) > 0 && ms !== undefined, "solved in the /pow.js worker");
  console.log(`# challenge solved in the page's worker: ${ms} ms, ${hashes} hashes at ${CAMPAIGN.challenge.difficulty_bits} bits (no throttling)`);
  // However late a double click's second click comes, it sends nothing: the button of a stored
  // entry stays off until the form is edited.
  const button = page.getByRole("button", { name: "Enter the draw" });
  assert.equal(await button.isDisabled(), true, "the button of a stored entry is off");
  await page.locator("#entry").evaluate((f) => f.requestSubmit());
  await page.waitForTimeout(300);
  assert.equal(sent.length, 1, "a submit after the receipt sent nothing");
  assert.equal(await page.locator("#receipt-id").textContent(), receipt, "the receipt stays");
  await page.getByLabel("Full name").fill("Grace Hopper");
  assert.equal(await button.isDisabled(), false, "editing the form starts a new entry");
  await page.context().close();
});

browserTest("empty and invalid fields: each error shows next to its field and nothing is stored", async (s) => {
  expectRefused(s, 422, "422 for the empty and the invalid fields");
  const page = await s.visit("DE");
  const before = await counts();
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#f-name-error", { hasText: "required" }).waitFor();
  for (const field of ["name", "email", "country", "consent"]) {
    assert.equal(await page.locator(`#f-${field}`).getAttribute("aria-invalid"), "true", field);
    assert.notEqual((await page.locator(`#f-${field}-error`).textContent()).trim(), "", field);
    assert.equal(await page.locator(`#f-${field}`).getAttribute("aria-describedby"), `f-${field}-error`);
  }
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-name", "focus moves to the first error");
  await fill(page, { email: "not-an-address", consent: false, country: "DE" });
  await page.locator("#f-email").evaluate((e) => e.setAttribute("type", "text")); // let the invalid address through the browser
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#f-email-error[data-code=invalid_email]").waitFor();
  assert.equal(await page.locator("#f-consent-error").getAttribute("data-code"), "must_be_true");
  assert.equal(await page.locator("#f-name").getAttribute("aria-invalid"), null, "a fixed field is no longer marked");
  await page.screenshot({ path: join(artifacts, "errors.png"), fullPage: true });
  assert.deepEqual(await counts(), before);
  await page.context().close();
});

browserTest("a forced 429 shows a countdown, then the entry goes through", async (s) => {
  expectRefused(s, 429, "429 once the client's burst is spent");
  const page = await s.visit("US");
  // Spend this client's burst (5 per minute), then one more submission meets the limit.
  for (let i = 0; i < 5; i++) {
    await fill(page, { email: `burst${i}@example.org`, country: "US" });
    await page.getByRole("button", { name: "Enter the draw" }).click();
    await page.locator("#receipt-id").waitFor();
    await page.evaluate(() => { document.getElementById("form-status").textContent = ""; });
  }
  const before = await count("global");
  await fill(page, { email: "patient@example.org", country: "US" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#form-status", { hasText: /Retrying in \d+ s/ }).waitFor({ timeout: 5_000 });
  const shown = await page.locator("#form-status").textContent();
  // The isolate gives one submission back after 12 s; the location's binding counts 5 per minute
  // and may then ask for up to its whole period (60 s): the page waits that out too.
  await page.locator("#receipt-id").waitFor({ timeout: 90_000 });
  assert.match(shown, /Lots of entries right now\. Retrying in \d+ s/);
  assert.equal(await count("global"), before + 1);
  await page.context().close();
});

browserTest("origins down then up: the page retries with the same key, and the one row that lands is stored under its first attempt's key", async (s) => {
  expectRefused(s, 503, "503 while every EU origin is down");
  const page = await s.visit("FR");
  const sent = recordSubmissions(page);
  const eu = origins.eu;
  const before = new Set(rows("eu").map((r) => r.receipt_id));
  await stopOrigin(eu.primary);
  await stopOrigin(eu.secondary);
  await fill(page, { email: "resilient@example.org", country: "FR" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#form-status", { hasText: /Saving is taking longer than usual\. Retrying in/ }).waitFor({ timeout: 30_000 });
  await startOrigin("eu", eu.primary);
  await startOrigin("eu", eu.secondary);
  await page.locator("#receipt-id").waitFor({ timeout: 60_000 });
  await settled(sent);
  const first = sent[0];
  assert.equal(first.status, 503, "the first attempt met the outage");
  assert.match(first.key, /^[A-Za-z0-9_-]{16,64}$/);
  assert.ok(sent.length >= 2, "the page retried");
  assert.deepEqual(sent.map((x) => x.key), sent.map(() => first.key), "every attempt carries the first attempt's key");
  assert.equal(sent.at(-1).status, 202);
  // The row, as the EU region's SQLite file holds it.
  const added = rows("eu").filter((r) => !before.has(r.receipt_id));
  assert.equal(added.length, 1, "exactly one row lands");
  assert.equal(added[0].idempotency_key, first.key, "stored under the key of the page's first attempt");
  assert.equal(added[0].receipt_id, await page.locator("#receipt-id").textContent(), "the receipt the page shows");
});

browserTest("a second entry from the same person is refused in words, and nothing more is stored", async (s) => {
  expectRefused(s, 409, "409 already_entered for the second entry");
  const first = await s.visit("IT");
  await fill(first, { email: "only.once@example.org" });
  await first.getByRole("button", { name: "Enter the draw" }).click();
  await first.locator("#receipt-id").waitFor({ timeout: 30_000 });
  await first.context().close();
  const before = await count("eu");
  const page = await s.visit("IT");
  await fill(page, { name: "Ada Again", email: "Only.Once@Example.org" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  const status = page.locator("#form-status[data-code=already_entered]");
  await status.waitFor({ timeout: 30_000 });
  assert.equal(await status.textContent(), localeTexts("en").problems.already_entered);
  assert.equal(await page.locator("#receipt-id").count(), 0);
  await page.screenshot({ path: join(artifacts, "already-entered.png"), fullPage: true });
  assert.equal(await count("eu"), before);
  await page.context().close();
});

browserTest("the page sends nothing to third parties: every request goes to its own origin", async (s) => {
  const context = await s.context({ country: "AU" });
  const requested = [];
  context.on("request", (request) => requested.push(request.url()));
  // Anything bound elsewhere is recorded above and never leaves the machine.
  const own = new URL(base).origin;
  await context.route("**/*", (route) => (new URL(route.request().url()).origin === own ? route.continue() : route.abort()));
  const page = await context.newPage();
  await page.goto(base + "/");
  await page.getByLabel("Full name").waitFor();
  await page.waitForTimeout(1600);
  await fill(page, { email: "own.origin@example.org", country: "AU" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
  await page.waitForLoadState("networkidle");
  const urls = [...new Set(requested)];
  console.log(`# requests the page made: ${urls.map((u) => new URL(u).pathname).join(" ")}`);
  const paths = urls.map((u) => new URL(u).pathname);
  for (const path of ["/", "/app.js", "/pow.js", "/style.css", "/locales/en.json", "/api/campaigns/spring-launch", "/api/campaigns/spring-launch/submissions"]) {
    assert.ok(paths.includes(path), `the page requested ${path}`);
  }
  for (const url of urls) assert.equal(new URL(url).origin, own, `third-party request: ${url}`);
  await context.close();
});

browserTest("a country under another law than the visitor's: refused in words next to the field, nothing stored", async (s) => {
  expectRefused(s, 422, "422 residency_conflict on the country field");
  const page = await s.visit("IT");
  const before = await counts();
  await fill(page, { email: "conflict@example.org", country: "CN" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  const error = page.locator("#f-country-error[data-code=residency_conflict]");
  await error.waitFor({ timeout: 30_000 });
  assert.equal(await error.textContent(), localeTexts("en").fields.residency_conflict);
  assert.match(await error.textContent(), /data-protection law.*choose the country you are in now/);
  assert.equal(await page.locator("#f-country").getAttribute("aria-invalid"), "true");
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-country", "focus moves to the field");
  await page.screenshot({ path: join(artifacts, "residency-conflict.png"), fullPage: true });
  assert.deepEqual(await counts(), before, "nothing stored in any region");
  // Choosing the country the visitor is in goes through, to that country's region.
  await page.getByLabel("Country").selectOption("IT");
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
  assert.match(await page.locator("#receipt-id").textContent(), /^eu-/);
  await page.context().close();
});

browserTest("a country stored in another region: the notice says where, the page asks the visitor to confirm it, and only a confirmed entry is stored there", async (s) => {
  expectRefused(s, 422, "422 storage_unconfirmed for the unconfirmed move");
  const page = await s.visit("US");
  const description = await (await fetch(`${base}/api/campaigns/${CAMPAIGN.id}?lang=en`, { headers: { "mf-cf-blob": '{"country":"US"}' } })).json();
  const cn = description.storage.choices.find((c) => c.countries.includes("CN")).then;
  assert.equal(cn.confirm, true, "a move from the rest of the world into China's region needs confirming");
  const before = await counts();
  assert.equal(await page.locator("#n-stored").textContent(), localeTexts("en").notice.stored_pick);
  await fill(page, { email: "moving@example.org", country: "CN" });
  assert.equal(await page.locator("#n-stored").textContent(), cn.name, "the notice says where this entry is stored");
  const confirm = page.getByLabel(localeTexts("en").notice.confirm.replace("{name}", cn.name));
  assert.equal(await confirm.isVisible(), true, "the confirmation shows for this country");
  await page.getByRole("button", { name: "Enter the draw" }).click();
  const error = page.locator("#f-country-error[data-code=storage_unconfirmed]");
  await error.waitFor({ timeout: 30_000 });
  assert.equal(await error.textContent(), localeTexts("en").fields.storage_unconfirmed);
  assert.deepEqual(await counts(), before, "nothing stored before the visitor confirms");
  await page.screenshot({ path: join(artifacts, "storage-confirm.png"), fullPage: true });
  await confirm.check();
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
  assert.match(await page.locator("#receipt-id").textContent(), /^cn-/);
  const after = await counts();
  for (const r of REGIONS) assert.equal(after[r] - before[r], r === "cn" ? 1 : 0, `rows added to ${r}`);
  // Choosing a country of the visitor's own region hides the confirmation again.
  await fill(page, { email: "staying@example.org", country: "US" });
  assert.equal(await confirm.isVisible(), false);
  await page.context().close();
});

// A challenge as harbour makes one (src/challenge.rs), with the worker's own form key: genuine,
// but issued `ageMs` ago, so it has expired.
function staleChallenge(ageMs) {
  const { difficulty_bits: bits, valid_ms: validMs } = CAMPAIGN.challenge;
  const signed = `${CAMPAIGN.id}.${Date.now() - ageMs + validMs}.${bits}.${randomBytes(16).toString("hex")}`;
  const mac = createHmac("sha256", FORM_KEY).update(`harbour-challenge-v1\n${signed}`).digest("hex").slice(0, 32);
  return { token: `${signed}.${mac}`, difficulty_bits: bits, expires_in_ms: validMs };
}

browserTest("a day-old challenge is refused honestly, refreshed, solved and sent again with the same key", async (s) => {
  // Let the page believe its challenge is fresh while harbour knows it is a day old: the
  // description the page loads first carries a genuine challenge issued yesterday.
  expectRefused(s, 403, "403 challenge_expired for the day-old challenge");
  const context = await s.context({ country: "DE", locale: "de-DE" });
  const stalePage = await context.newPage();
  let served = 0;
  await stalePage.route(/\/api\/campaigns\/spring-launch\?/, async (route) => {
    try {
      const response = await route.fetch();
      const description = await response.json();
      if (served++ === 0) description.challenge = staleChallenge(24 * 3600 * 1000);
      await route.fulfill({ response, json: description });
    } catch {
      // The page asks for its next challenge after a receipt; the test may have closed it by then.
    }
  });
  const sent = recordSubmissions(stalePage);
  await stalePage.goto(base + "/");
  await stalePage.locator("#submit:not([disabled])").waitFor();
  assert.equal(await stalePage.locator("html").getAttribute("lang"), "de", "German from navigator.languages");
  const before = await count("eu");
  await stalePage.getByLabel("Vollständiger Name").fill("Tab von gestern");
  await stalePage.getByLabel("E-Mail").fill("yesterday@example.org");
  await stalePage.getByLabel("Land").selectOption("DE");
  await stalePage.locator("#f-consent").check();
  await stalePage.getByRole("button", { name: "Jetzt teilnehmen" }).click();
  await stalePage.locator("#receipt-id").waitFor({ timeout: 60_000 });
  assert.equal(await count("eu"), before + 1, "exactly one row");
  assert.deepEqual(sent.map((s) => [s.status, s.code ?? null]), [[403, "challenge_expired"], [202, null]]);
  assert.equal(sent[0].key, sent[1].key, "the retry kept the idempotency key");
  assert.notEqual(sent[0].challenge, sent[1].challenge, "with fresh work");
  assert.ok(served >= 2, "a fresh challenge was fetched");
  await context.close();
});

test("a raw submission without a solution is refused and nothing is stored", async () => {
  const before = await counts();
  const response = await fetch(`${base}/api/campaigns/spring-launch/submissions`, {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": "raw-0123456789abcdef", "mf-cf-blob": '{"country":"IT"}', "cf-connecting-ip": "203.0.113.250", "accept-encoding": "identity" },
    body: JSON.stringify({ name: "Bot", email: "bot@example.org", country: "IT", consent: true }),
  });
  assert.equal(response.status, 400);
  assert.equal(response.headers.get("content-type"), "application/problem+json");
  const problem = await response.json();
  assert.equal(problem.code, "challenge_required");
  assert.equal(problem.challenge_url, "/api/campaigns/spring-launch");
  assert.deepEqual(await counts(), before);
});

test("page weight: HTML+CSS+JS for the default locale within 36 KB (13 KB gzip, file by file), each locale file within 8 KB", () => {
  const read = (file) => readFileSync(join(root, "www", file));
  const parts = ["index.html", "style.css", "app.js", "pow.js", "locales/en.json"];
  const page = parts.reduce((sum, f) => sum + read(f).length, 0);
  const gzipped = parts.reduce((sum, f) => sum + gzipSync(read(f), { level: 9 }).length, 0);
  console.log(`# campaign page: ${page} bytes of HTML+CSS+JS for the default locale, uncompressed (${parts.map((f) => `${f} ${read(f).length}`).join(", ")}; limit ${PAGE_LIMIT}), ${gzipped} gzip (limit ${PAGE_GZIP_LIMIT})`);
  const locales = LOCALES.map((l) => [l, read(`locales/${l}.json`).length]);
  console.log(`# campaign page: locale files ${locales.map(([l, n]) => `${l} ${n}`).join(", ")} bytes (limit ${LOCALE_LIMIT} each)`);
  assert.ok(page <= PAGE_LIMIT, `${page} bytes`);
  assert.ok(gzipped <= PAGE_GZIP_LIMIT, `${gzipped} bytes gzip`);
  for (const [l, n] of locales) assert.ok(n <= LOCALE_LIMIT, `${l}: ${n} bytes`);
});

browserTest("each locale renders its own texts and the policy's labels (screenshots), and the switcher keeps what was typed", async (s) => {
  for (const locale of LOCALES) {
    const page = await s.visit("FR", { query: `?lang=${locale}` });
    const texts = localeTexts(locale);
    const campaign = locale === "en" ? { title: CAMPAIGN.title, labels: {} } : CAMPAIGN.texts[locale];
    assert.equal(await page.locator("html").getAttribute("lang"), locale);
    assert.equal(await page.locator("#title").textContent(), campaign.title);
    assert.equal(await page.title(), campaign.title);
    assert.equal((await page.locator("#submit").textContent()).trim(), texts.submit);
    assert.equal(await page.locator("#lang-label").textContent(), texts.language);
    for (const field of CAMPAIGN.fields) {
      const label = await page.locator(`label[for="f-${field.name}"]`).textContent();
      assert.equal(label, campaign.labels[field.name] ?? field.label, `${locale} ${field.name}`);
    }
    assert.equal(await page.locator("#f-country option").first().textContent(), texts.choose);
    // The notice (GDPR Art. 13, PIPL Art. 17) in this locale: who, why, where, how long, and a link.
    assert.equal(await page.locator("#notice").isVisible(), true, `${locale}: the notice shows`);
    assert.equal(await page.locator("#notice-title").textContent(), texts.notice.title);
    assert.match(await page.locator("#n-controller").textContent(), new RegExp(CAMPAIGN.notice.contact.replace(".", "\\.")));
    const purpose = locale === "en" ? CAMPAIGN.notice.purpose : CAMPAIGN.texts[locale].notice.purpose;
    assert.equal(await page.locator("#n-purpose").textContent(), purpose, `${locale}: the purpose in this language`);
    assert.match(await page.locator("#n-kept").textContent(), new RegExp(`${CAMPAIGN.retention.days_after_end}`));
    assert.equal(await page.locator("#n-link").getAttribute("href"), CAMPAIGN.notice.link);
    await page.screenshot({ path: join(artifacts, `page-${locale}.png`), fullPage: true });
    await page.context().close();
  }
  const page = await s.visit("IT", { query: "?lang=en" });
  const locales = [];
  page.on("request", (r) => { if (r.url().includes("/locales/")) locales.push(r.url().split("/locales/")[1]); });
  await page.getByLabel("Full name").fill("Grace Hopper");
  await page.locator("#lang").selectOption("it");
  await page.getByLabel("Nome e cognome").waitFor();
  assert.equal(await page.getByLabel("Nome e cognome").inputValue(), "Grace Hopper");
  assert.deepEqual(locales, ["it.json"], "a locale file is loaded only when chosen");
  await page.context().close();
});

browserTest("axe-core: no violations in the empty form, the error state and the receipt, in each locale", async (s) => {
  expectRefused(s, 422, "422 for the empty form, to see the error state");
  for (const locale of LOCALES) {
    const page = await s.visit("IT", { query: `?lang=${locale}` });
    await axe(page, `${locale}: empty form`);
    await page.locator("#submit").click();
    await page.locator("#f-name[aria-invalid=true]").waitFor();
    await axe(page, `${locale}: errors`);
    await page.locator("#f-name").fill("Ada Lovelace");
    await page.locator("#f-email").fill(`axe-${locale.toLowerCase()}@example.org`);
    await page.locator("#f-country").selectOption("IT");
    await page.locator("#f-consent").check();
    await page.locator("#submit").click();
    await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
    await axe(page, `${locale}: receipt`);
    await page.context().close();
  }
});

// The accessible name and description of the focused element, as the browser exposes them to
// assistive technology.
async function focusedAccessible(page) {
  const cdp = await page.context().newCDPSession(page);
  const { root: doc } = await cdp.send("DOM.getDocument");
  const id = await page.evaluate(() => document.activeElement.id);
  const { nodeId } = await cdp.send("DOM.querySelector", { nodeId: doc.nodeId, selector: `#${id}` });
  const { nodes } = await cdp.send("Accessibility.getPartialAXTree", { nodeId, fetchRelatives: false });
  await cdp.detach();
  const node = nodes.find((n) => !n.ignored) || nodes[0];
  return { id, name: node.name?.value ?? "", description: node.description?.value ?? "" };
}

browserTest("keyboard only: tab order, Enter submits, focus goes to the first error, which is announced", async (s) => {
  expectRefused(s, 422, "422 for the form sent with the name only");
  const page = await s.visit("IT");
  const before = await count("eu");
  const order = [];
  for (let i = 0; i < 8; i++) {
    await page.keyboard.press("Tab");
    order.push(await page.evaluate(() => document.activeElement.id));
  }
  // The notice's link between the boxes and the button: read before sending.
  assert.deepEqual(order, ["lang", "f-name", "f-email", "f-country", "f-consent", "f-marketing", "n-link", "submit"]);
  // Name only, then Enter in the email field.
  for (let i = order.indexOf("f-name"); i < order.length - 1; i++) await page.keyboard.press("Shift+Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "f-name");
  await page.keyboard.type("Ada Lovelace");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await page.locator("#f-email[aria-invalid=true]").waitFor();
  const focused = await focusedAccessible(page);
  const texts = localeTexts("en");
  assert.equal(focused.id, "f-email", "focus moved to the first field in error");
  assert.equal(focused.name, "Email");
  assert.equal(focused.description, texts.fields.required, "the error is its accessible description");
  assert.equal(await page.locator("#form-alert").getAttribute("role"), "alert");
  assert.equal(await page.locator("#form-alert").textContent(), texts.fix, "the summary is announced");
  // Finish by keyboard: type the address, choose the country by typing, tick with Space, Enter.
  await page.keyboard.type("keyboard@example.org");
  await page.keyboard.press("Tab");
  await page.keyboard.type("Italy");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Space");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Shift+Tab");
  await page.keyboard.press("Enter");
  await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
  assert.equal(await page.locator("#f-country").inputValue(), "", "the form was reset after the receipt");
  assert.equal(await count("eu"), before + 1);
  await page.context().close();
});

// The shipped solver's search, run on the page's main thread: Chromium's CPU throttling
// (Emulation.setCPUThrottlingRate) slows the main thread only; a dedicated worker runs at full
// speed (and CDP refuses Emulation on a worker target), so the phone's hash rate is measured here,
// with the very code /pow.js runs, and the worker's own solves are timed unthrottled.
const POW = `(() => {${readFileSync(join(root, "www", "pow.js"), "utf8").replace("onmessage =", "self.harbourPow =").replace("postMessage(", "return (")}})()`;
// A WebCrypto search for comparison (not shipped): one crypto.subtle.digest per try, 64 in flight.
async function subtleSearch({ prefix, tries }) {
  const encoder = new TextEncoder();
  const started = performance.now();
  for (let n = 0; n < tries; n += 64) {
    const batch = [];
    for (let i = n; i < n + 64; i++) batch.push(crypto.subtle.digest("SHA-256", encoder.encode(prefix + i.toString(16).padStart(8, "0"))));
    await Promise.all(batch);
  }
  return performance.now() - started;
}
// The guard on the solve time at the policy's difficulty with the CPU throttled 4x: the expected
// time, 2^bits hashes at the hash rate measured so, within this many seconds. README says about a
// second (20 bits at about 1 M hashes/s; 2 s at the 0.5 M/s measured on a busy 2-core machine).
// The page solves while the visitor fills the form, which takes longer than 5 s, so up to then
// nobody waits. It fails when the difficulty goes up 3 bits (8x the work at README's rate; 2 bits
// at the busy machine's) or the solver falls to crypto.subtle's speed (about 17x slower). A guard,
// not a benchmark.
const SOLVE_BOUND_S = 5;
// A search of fixed length for measuring the hash rate: the same token, key and bits always take
// the same number of hashes, so both rates below are over the same work.
const RATE_JOB = { token: `${CAMPAIGN.id}.1800000000000.20.${"0123456789abcdef".repeat(2)}.${"00112233445566778899aabbccddeeff"}`, key: "0b6a3c0e-5f55-4c1e-9b1a-2f1d3c4b5a69", bits: 20 };

browserTest(`expected solve time at the policy's difficulty (from the form description) with the CPU throttled 4x like a mid-range phone is within ${SOLVE_BOUND_S} s`, async (s) => {
  const page = await s.visit("IT");
  // The difficulty the edge asks of visitors now, as the page reads it, not the policy file's.
  const description = await page.evaluate(async (id) => (await fetch(`/api/campaigns/${id}`)).json(), CAMPAIGN.id);
  const bits = description.challenge.difficulty_bits;
  assert.ok(Number.isInteger(bits) && bits > 0, `difficulty_bits ${bits}`);
  assert.equal(Number(description.challenge.token.split(".")[2]), bits, "the token carries the difficulty the description states");
  // The worker, as visitors run it: five fresh challenges.
  const solves = [];
  for (let i = 0; i < 5; i++) {
    if (i > 0) await page.reload();
    await page.locator("#entry[data-solve-ms]").waitFor({ state: "attached", timeout: 60_000 });
    solves.push(await page.locator("#entry").evaluate((f) => [Number(f.dataset.solveMs), Number(f.dataset.solveHashes)]));
  }
  console.log(`# challenge at ${bits} bits, solved in the page's worker (no throttling): ${solves.map(([m, h]) => `${(m / 1000).toFixed(2)} s (${h} hashes)`).join(", ")}`);
  await page.evaluate(POW);
  const cdp = await page.context().newCDPSession(page);
  const rates = {};
  for (const rate of [1, 4]) {
    await cdp.send("Emulation.setCPUThrottlingRate", { rate });
    const js = await page.evaluate((job) => self.harbourPow({ data: job }), RATE_JOB);
    const tries = 16_384;
    const subtleMs = await page.evaluate(subtleSearch, { prefix: `${RATE_JOB.token}\n${RATE_JOB.key}\n`, tries });
    rates[rate] = { js: js.hashes / js.ms * 1000, subtle: tries / subtleMs * 1000 };
    const seconds = (r) => (2 ** bits / r).toFixed(2);
    console.log(`# challenge, CPU ${rate}x: JS SHA-256 ${(rates[rate].js / 1e6).toFixed(2)} M hashes/s over ${js.hashes} hashes (a ${bits}-bit challenge takes ${seconds(rates[rate].js)} s on average), crypto.subtle.digest ${(rates[rate].subtle / 1e6).toFixed(2)} M/s (${seconds(rates[rate].subtle)} s)`);
  }
  await cdp.send("Emulation.setCPUThrottlingRate", { rate: 1 });
  // Throttling took: otherwise the bound below would be checked at full speed.
  assert.ok(rates[4].js < rates[1].js * 0.6, `4x throttling slowed the solver (${rates[1].js.toFixed(0)} → ${rates[4].js.toFixed(0)} hashes/s)`);
  assert.ok(rates[4].js > rates[4].subtle, "the JS solver is faster than crypto.subtle");
  const expectedS = 2 ** bits / rates[4].js;
  assert.ok(expectedS <= SOLVE_BOUND_S, `a ${bits}-bit challenge takes ${expectedS.toFixed(2)} s on average at 4x throttling; the bound is ${SOLVE_BOUND_S} s`);
});
