// The campaign page in a real browser (Debian's chromium, driven by playwright-core) against the
// real local stack: reference origins with their SQLite files and the built worker under
// `wrangler dev`, all on 127.0.0.1 and stopped when the tests end. Run by scripts/test.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, rmSync, readFileSync, writeFileSync, statSync, readdirSync, createWriteStream } from "node:fs";
import { createServer } from "node:net";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const work = join(root, "target", "e2e", "browser");
const artifacts = join(root, "target", "test-artifacts");
// The regions come from the shipped policy, the only list of them.
const POLICY = JSON.parse(readFileSync(join(root, "policy", "harbour.json"), "utf8"));
const REGIONS = POLICY.regions.map((r) => r.id);
// The rate-limiting bindings: one per distinct per-client limit (campaigns' and surge windows'),
// named as harbour::limit::LocationLimit::binding_name spells them; wrangler dev simulates them.
const RATELIMITS = [
  ...new Map(
    POLICY.campaigns
      .flatMap((c) => [c.limits.per_client, ...(c.surge_windows ?? []).map((w) => w.per_client)])
      .map(({ burst, window_ms }) => [`HARBOUR_RL_${burst}_PER_${window_ms / 1000}S`, [burst, window_ms / 1000]]),
  ),
].flatMap(([name, [limit, period]], i) => [
  "[[ratelimits]]", `name = "${name}"`, `namespace_id = "${9001 + i}"`, `simple = { limit = ${limit}, period = ${period} }`,
]);
// Variable names per region, as harbour::config::{origins_var, key_var} spell them.
const envSuffix = (region) => region.toUpperCase().replaceAll("-", "_");
const originsVar = (region) => `HARBOUR_ORIGINS_${envSuffix(region)}`;
const keyVar = (region) => `HARBOUR_KEY_${envSuffix(region)}`;
const personKeyVar = (region) => `HARBOUR_PERSON_KEY_${envSuffix(region)}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const running = new Map(); // port -> child process
let origins = {};
let worker;
let base;
let browser;

function anyFreePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

// Ports are picked before the servers start, and the system may hand a just-closed one out
// again: never give the same one twice.
const handedOut = new Set();
async function freePort() {
  for (let i = 0; i < 1000; i++) {
    const port = await anyFreePort();
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error("no fresh port after 1000 tries");
}

async function waitFor(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch { /* not up yet */ }
    await sleep(100);
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms`);
}

function spawnLogged(name, command, args, options) {
  const log = createWriteStream(join(work, `${name}.log`));
  const child = spawn(command, args, { ...options, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  return child;
}

function stopProcess(child) {
  if (!child || child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", resolve);
    try { process.kill(-child.pid, "SIGTERM"); } catch { resolve(); }
    setTimeout(() => { try { process.kill(-child.pid, "SIGKILL"); } catch { /* gone */ } }, 5000).unref();
  });
}

async function startOrigin(region, port) {
  const o = origins[region];
  const ops = o.ops[port];
  const child = spawnLogged(`origin-${region}-${port}`, join(root, "target", "debug", "harbour-origin"),
    ["--region", region, "--listen", `127.0.0.1:${port}`, "--ops-listen", `127.0.0.1:${ops}`, "--db", o.db],
    { env: { ...process.env, [keyVar(region)]: o.key, [personKeyVar(region)]: `${o.key}-person` } });
  running.set(port, child);
  // The answer must come from this region's origin, not from anything else on the port.
  await waitFor(`origin ${region}:${port}`, async () => {
    if (child.exitCode !== null) throw new Error(`origin ${region}:${port} exited; see its log`);
    const health = await fetch(`http://127.0.0.1:${ops}/health`);
    return health.ok && (await health.json()).region === region;
  });
}

async function stopOrigin(port) {
  await stopProcess(running.get(port));
  running.delete(port);
}

async function count(region) {
  const o = origins[region];
  const response = await fetch(`http://127.0.0.1:${o.ops[o.primary]}/v1/count`);
  return (await response.json()).count;
}

async function counts() {
  return Object.fromEntries(await Promise.all(REGIONS.map(async (r) => [r, await count(r)])));
}

before(async () => {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  mkdirSync(artifacts, { recursive: true });
  for (const [i, region] of REGIONS.entries()) {
    origins[region] = {
      primary: await freePort(),
      secondary: await freePort(),
      db: join(work, `${region}.sqlite`),
      key: `browser-${region}-${i}-0123456789abcdefghijklmnopqrstuvwxyz`,
    };
    // The operations listener (/health, /v1/count) of each origin, by its submissions port.
    origins[region].ops = { [origins[region].primary]: await freePort(), [origins[region].secondary]: await freePort() };
  }
  for (const region of REGIONS) {
    await startOrigin(region, origins[region].primary);
    await startOrigin(region, origins[region].secondary);
  }
  const port = await freePort();
  const vars = REGIONS.map((r) => `${originsVar(r)} = "http://127.0.0.1:${origins[r].primary} http://127.0.0.1:${origins[r].secondary}"`);
  writeFileSync(join(work, "wrangler.toml"), [
    'name = "harbour-browser"',
    `main = "${join(root, "build", "worker", "shim.mjs")}"`,
    'compatibility_date = "2025-09-01"',
    "[assets]",
    `directory = "${join(root, "www")}"`,
    'not_found_handling = "none"',
    ...RATELIMITS,
    "[vars]",
    ...vars,
  ].join("\n"));
  writeFileSync(join(work, ".dev.vars"), REGIONS.map((r) => `${keyVar(r)}=${origins[r].key}`).join("\n"));
  worker = spawnLogged("wrangler", join(root, "node_modules", ".bin", "wrangler"),
    ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--show-interactive-dev-session=false"],
    { cwd: work, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" } });
  base = `http://127.0.0.1:${port}`;
  await waitFor("wrangler dev", async () => (await fetch(`${base}/api/campaigns/spring-launch`)).ok, 120_000);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const bytes = readdirSync(join(root, "www")).reduce((sum, f) => sum + statSync(join(root, "www", f)).size, 0);
  console.log(`# campaign page: ${bytes} bytes of HTML+CSS+JS (uncompressed)`);
});

after(async () => {
  await browser?.close();
  await stopProcess(worker);
  for (const port of [...running.keys()]) await stopOrigin(port);
});

let clientNumber = 0;
async function visit(country) {
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 },
    // The platform's signals, as wrangler dev takes them: request.cf and the client address.
    extraHTTPHeaders: { "mf-cf-blob": JSON.stringify({ country }), "cf-connecting-ip": `203.0.113.${++clientNumber}` },
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => console.log(`# page error: ${error.message}`));
  await page.goto(base + "/");
  await page.getByLabel("Full name").waitFor();
  // The policy's minimum fill time: a form sent sooner is taken for a bot's.
  await page.waitForTimeout(1600);
  return page;
}

async function fill(page, { name = "Ada Lovelace", email, country = "IT", consent = true }) {
  await page.getByLabel("Full name").fill(name);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Country").selectOption(country);
  await page.getByLabel(/I agree/).setChecked(consent);
}

test("fill and submit: the receipt shows and the row is in the region's database", async () => {
  const page = await visit("IT");
  await page.screenshot({ path: join(artifacts, "page.png"), fullPage: true });
  const before = await counts();
  await fill(page, { email: "ada.browser@example.org" });
  // A double click must not send two different submissions.
  await page.getByRole("button", { name: "Enter the draw" }).dblclick();
  await page.locator("#receipt-id").waitFor({ timeout: 30_000 });
  const receipt = await page.locator("#receipt-id").textContent();
  assert.match(receipt, /^eu-[0-9a-f]{16}$/);
  const after = await counts();
  for (const r of REGIONS) assert.equal(after[r] - before[r], r === "eu" ? 1 : 0, `rows added to ${r}`);
  await page.context().close();
});

test("empty and invalid fields: each error shows next to its field and nothing is stored", async () => {
  const page = await visit("DE");
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

test("a forced 429 shows a countdown, then the entry goes through", async () => {
  const page = await visit("US");
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

test("origins down then up: the page retries with the same key and exactly one row lands", async () => {
  const page = await visit("FR");
  const eu = origins.eu;
  const before = await count("eu");
  await stopOrigin(eu.primary);
  await stopOrigin(eu.secondary);
  await fill(page, { email: "resilient@example.org", country: "FR" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  await page.locator("#form-status", { hasText: /Saving is taking longer than usual\. Retrying in/ }).waitFor({ timeout: 30_000 });
  await startOrigin("eu", eu.primary);
  await startOrigin("eu", eu.secondary);
  await page.locator("#receipt-id").waitFor({ timeout: 60_000 });
  assert.equal(await count("eu"), before + 1);
  await page.context().close();
});

test("a second entry from the same person is refused in words, and nothing more is stored", async () => {
  const first = await visit("IT");
  await fill(first, { email: "only.once@example.org" });
  await first.getByRole("button", { name: "Enter the draw" }).click();
  await first.locator("#receipt-id").waitFor({ timeout: 30_000 });
  await first.context().close();
  const before = await count("eu");
  const page = await visit("IT");
  await fill(page, { name: "Ada Again", email: "Only.Once@Example.org" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  const status = page.locator("#form-status[data-code=already_entered]");
  await status.waitFor({ timeout: 30_000 });
  assert.match(await status.textContent(), /already entered this draw: only one entry per person/);
  assert.equal(await page.locator("#receipt-id").count(), 0);
  await page.screenshot({ path: join(artifacts, "already-entered.png"), fullPage: true });
  assert.equal(await count("eu"), before);
  await page.context().close();
});

test("the page sends nothing to third parties: every request goes to its own origin", async () => {
  const context = await browser.newContext({
    extraHTTPHeaders: { "mf-cf-blob": JSON.stringify({ country: "AU" }), "cf-connecting-ip": `203.0.113.${++clientNumber}` },
  });
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
  for (const path of ["/", "/app.js", "/style.css", "/api/campaigns/spring-launch", "/api/campaigns/spring-launch/submissions"]) {
    assert.ok(paths.includes(path), `the page requested ${path}`);
  }
  for (const url of urls) assert.equal(new URL(url).origin, own, `third-party request: ${url}`);
  await context.close();
});

test("a country under another law than the visitor's: refused in words next to the field, nothing stored", async () => {
  const page = await visit("IT");
  const before = await counts();
  await fill(page, { email: "conflict@example.org", country: "CN" });
  await page.getByRole("button", { name: "Enter the draw" }).click();
  const error = page.locator("#f-country-error[data-code=residency_conflict]");
  await error.waitFor({ timeout: 30_000 });
  assert.match(await error.textContent(), /data-protection law.*choose the country you are in/);
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
