// The real entry module (build/worker/shim.mjs: crates/worker/src/shim.js bundled with its glue)
// against the real built wasm, under Node: the JS side of the line protocol is exercised below
// the end-to-end suite. The platform's parts are stand-ins: the rate-limiting binding is an
// object with `limit`, the origins are a `fetch` that answers as the test says, and
// `request.cf.country` is set on the request. Run after `bash scripts/build`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { register } from "node:module";
import { readFileSync } from "node:fs";

register("./wasm-loader.mjs", import.meta.url);
const root = new URL("../../../../", import.meta.url);
const { default: worker } = await import(new URL("build/worker/shim.mjs", root));

const policy = JSON.parse(readFileSync(new URL("policy/harbour.json", root), "utf8"));
const campaign = policy.campaigns[0];
const SUBMIT = `https://campaign.example/api/campaigns/${campaign.id}/submissions`;
const DESCRIBE = `https://campaign.example/api/campaigns/${campaign.id}`;
const suffix = (region) => region.toUpperCase().replaceAll("-", "_");
// Two origins per region on loopback (the configuration takes http:// only there).
const origins = (i) => [`http://127.0.0.1:${9100 + i}`, `http://127.0.0.1:${9200 + i}`];

// The origins, as `fetch` sees them: each call is recorded and answered by `answer(url, init)`.
const calls = [];
let answer = () => new Response("{}", { status: 500 });
globalThis.fetch = async (url, init) => {
  calls.push({ url, init });
  return answer(url, init);
};

// The bindings: what the rate-limiting binding's `limit` resolves to (or throws) is up to each
// test; the Analytics Engine dataset records what is written to it.
let limit = async () => ({ success: true });
const env = { HARBOUR_LOG: "decisions", HARBOUR_FORM_KEY: "form-secret-0123456789abcdefghijklmnop" };
policy.regions.forEach((region, i) => {
  env[`HARBOUR_ORIGINS_${suffix(region.id)}`] = origins(i).join(" ");
  env[`HARBOUR_KEY_${suffix(region.id)}`] = `${region.id}-secret-0123456789abcdefghijklmnop`;
});
env.HARBOUR_RL_5_PER_60S = { limit: (options) => limit(options) };
// The Analytics Engine dataset: every data point written, as given.
const written = [];
let writeDataPoint = (point) => written.push(point);
env.HARBOUR_ANALYTICS = { writeDataPoint: (point) => writeDataPoint(point) };

// What the worker logs (its decision lines are JSON).
const logged = [];
console.log = (line) => logged.push(String(line));

function request(url, { method = "GET", body, headers = {}, country = "IT" } = {}) {
  const r = new Request(url, { method, body, headers });
  Object.defineProperty(r, "cf", { value: { country } });
  return r;
}

/// The page's work: a nonce whose SHA-256("{token}\n{key}\n{nonce}") starts with `bits` zeros.
function solve(token, key, bits) {
  for (let n = 0; ; n++) {
    const nonce = n.toString(16).padStart(8, "0");
    const digest = createHash("sha256").update(`${token}\n${key}\n${nonce}`).digest();
    let zeros = 0;
    for (const byte of digest) {
      if (byte === 0) { zeros += 8; continue; }
      zeros += Math.clz32(byte) - 24;
      break;
    }
    if (zeros >= bits) return `${token}.${nonce}`;
  }
}

async function submission(email, { ip = `192.0.2.${1 + (calls.length % 200)}`, country = "IT" } = {}) {
  const description = await (await worker.fetch(request(DESCRIBE), env)).json();
  const key = randomBytes(16).toString("hex");
  const { token, difficulty_bits } = description.challenge;
  const notice = `${description.lang}.${description.notice.version}`;
  const body = JSON.stringify({ name: "Ada", email, country, consent: true });
  return request(SUBMIT, {
    method: "POST",
    body,
    country,
    headers: {
      "content-type": "application/json",
      "idempotency-key": key,
      "harbour-challenge": solve(token, key, difficulty_bits),
      "harbour-notice": notice,
      "cf-connecting-ip": ip,
    },
  });
}

const receipt = (region) => () =>
  new Response(JSON.stringify({ receipt: { id: `${region}-0123456789abcdef`, region } }), { status: 201 });

test("a form description comes back with a challenge and no-store", async () => {
  const response = await worker.fetch(request(DESCRIBE), env);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  const description = await response.json();
  assert.equal(description.id, campaign.id);
  assert.equal(description.challenge.difficulty_bits, campaign.challenge.difficulty_bits);
});

test("a submission is consulted, forwarded signed to its region's primary, and its receipt answered", async () => {
  calls.length = 0;
  let asked;
  limit = async (options) => ((asked = options), { success: true });
  answer = receipt("eu");
  const sent = await submission("ada-1@example.org");
  const response = await worker.fetch(sent, env);
  assert.equal(response.status, 202, await response.clone().text());
  const body = await response.json();
  assert.equal(body.receipt.region, "eu");
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
  assert.equal(response.headers.get("idempotency-key"), sent.headers.get("idempotency-key"));
  assert.match(response.headers.get("ratelimit-policy"), /"location";q=5;w=60/);
  // The campaign and a keyed digest of the client: the address never reaches the binding.
  assert.match(asked.key, /^spring-launch [0-9a-f]{32}$/);
  assert.equal(calls.length, 1);
  const eu = policy.regions.findIndex((r) => r.id === "eu");
  assert.equal(calls[0].url, `${origins(eu)[0]}/v1/submissions`);
  // Headers reads the forward's headers in any form fetch takes (an object, pairs).
  const headers = new Headers(calls[0].init.headers);
  assert.equal(headers.get("idempotency-key"), sent.headers.get("idempotency-key"));
  assert.match(headers.get("x-harbour-signature"), /^t=\d+,r=eu,v1=[0-9a-f]{64}$/);
  const forwarded = JSON.parse(calls[0].init.body);
  assert.equal(forwarded.fields.email, "ada-1@example.org");
  assert.deepEqual(forwarded.notice, { locale: "en", version: (await (await worker.fetch(request(DESCRIBE), env)).json()).notice.version });
  const line = logged.map((l) => { try { return JSON.parse(l); } catch { return {}; } })
    .find((l) => l.msg === "harbour.decision" && l.outcome === "stored");
  assert.ok(line, `a decision line for the stored entry: ${logged.join("\n")}`);
});

test("an origin that does not answer is failed over to the region's secondary, with the same request", async () => {
  calls.length = 0;
  limit = async () => ({ success: true });
  answer = (url) => {
    if (calls.length === 1) throw new TypeError("connection refused");
    return receipt("eu")(url);
  };
  const response = await worker.fetch(await submission("ada-2@example.org"), env);
  assert.equal(response.status, 202, await response.clone().text());
  assert.equal(calls.length, 2);
  const eu = policy.regions.findIndex((r) => r.id === "eu");
  assert.deepEqual(calls.map((c) => c.url), origins(eu).map((o) => `${o}/v1/submissions`));
  assert.equal(calls[1].init.body, calls[0].init.body);
  assert.deepEqual(calls[1].init.headers, calls[0].init.headers);
});

test("the location's refusal is a 429 naming the location, and nothing is forwarded", async () => {
  calls.length = 0;
  limit = async () => ({ success: false });
  const response = await worker.fetch(await submission("ada-3@example.org"), env);
  assert.equal(response.status, 429);
  assert.equal(response.headers.get("ratelimit-policy"), '"location";q=5;w=60');
  assert.equal((await response.json()).code, "rate_limited");
  assert.equal(calls.length, 0);
});

test("a binding that throws fails open on the isolate's limits", async () => {
  calls.length = 0;
  limit = async () => { throw new Error("down"); };
  answer = receipt("eu");
  const response = await worker.fetch(await submission("ada-4@example.org"), env);
  assert.equal(response.status, 202);
  assert.equal(calls.length, 1);
});

test("an origin that says it is full, then its secondary too: 503 with the key, none stored", async () => {
  calls.length = 0;
  limit = async () => ({ success: true });
  answer = () => new Response(JSON.stringify({ code: "origin_busy", retry_after_ms: 250 }), { status: 503 });
  const sent = await submission("ada-5@example.org");
  const response = await worker.fetch(sent, env);
  assert.equal(response.status, 503);
  const problem = await response.json();
  assert.equal(problem.code, "origins_busy");
  assert.equal(problem.idempotency_key, sent.headers.get("idempotency-key"));
  assert.equal(calls.length, 2);
  const breaker = logged.filter((l) => l.includes('"msg":"harbour.breaker"'));
  assert.ok(breaker.length >= 2, "the breakers' opening is logged");
});

test("a refused request is answered by the module's reply, headers and body as written", async () => {
  const response = await worker.fetch(
    request(SUBMIT, { method: "POST", body: "{}", headers: { "content-type": "text/plain" } }),
    env,
  );
  assert.equal(response.status, 415);
  assert.equal(response.headers.get("content-type"), "application/problem+json");
  assert.equal(response.headers.get("accept-post"), "application/json, application/x-www-form-urlencoded");
  assert.equal((await response.json()).code, "unsupported_media_type");
  assert.equal(response.headers.get("x-content-type-options"), "nosniff");
});

// A second's data points are written once it is over, with the next decision: wait for the next
// whole second, then ask for a form description.
async function nextSecond() {
  await new Promise((resolve) => setTimeout(resolve, 1_050 - (Date.now() % 1_000)));
  return worker.fetch(request(DESCRIBE), env);
}

test("each second's outcomes go to the Analytics Engine binding as data points that name no person", async () => {
  calls.length = 0;
  limit = async () => ({ success: true });
  answer = receipt("eu");
  await nextSecond();
  written.length = 0;
  const email = "points-1@example.org";
  const ip = "192.0.2.77";
  const stored = await worker.fetch(await submission(email, { ip }), env);
  assert.equal(stored.status, 202);
  const refused = await worker.fetch(
    request(SUBMIT, { method: "POST", body: "{}", headers: { "content-type": "text/plain" } }),
    env,
  );
  assert.equal(refused.status, 415);
  assert.equal((await nextSecond()).status, 200);
  const byOutcome = Object.fromEntries(written.map((p) => [p.blobs[2], p]));
  const point = byOutcome.stored;
  assert.ok(point, `a point for the stored entry: ${JSON.stringify(written)}`);
  assert.deepEqual(point.indexes, [campaign.id]);
  assert.deepEqual(point.blobs, [campaign.id, "eu", "stored", "202"]);
  assert.equal(point.doubles[1], 1, "one entry");
  assert.ok(Math.abs(point.doubles[0] - Date.now() / 1000) < 5, "the second it covers");
  assert.deepEqual(byOutcome.unsupported_media_type.blobs, [campaign.id, "", "unsupported_media_type", "415"]);
  assert.ok(!byOutcome.ok, "form descriptions are not entries");
  const text = JSON.stringify(written);
  for (const secret of [email, ip, stored.headers.get("idempotency-key")]) {
    assert.ok(!text.includes(secret), `${secret} in a data point`);
  }
});

test("a data point the binding refuses costs no visitor their answer", async () => {
  const errors = [];
  const error = console.error;
  console.error = (line) => errors.push(String(line));
  writeDataPoint = () => { throw new TypeError("writeDataPoint(): too many blobs"); };
  try {
    const refused = await worker.fetch(
      request(SUBMIT, { method: "POST", body: "{}", headers: { "content-type": "text/plain" } }),
      env,
    );
    assert.equal(refused.status, 415);
    const next = await nextSecond();
    assert.equal(next.status, 200);
    assert.ok(errors.some((l) => l.includes('"msg":"harbour.points_unwritten"')), errors.join("\n"));
  } finally {
    console.error = error;
    writeDataPoint = (point) => written.push(point);
  }
});
