// The edge decision as the isolate runs it: the built bundle's wasm under Node's V8, without
// workerd or any I/O. Prints µs per call of `decide` (a valid submission to "consult the
// location's binding"), of `consulted` (the binding's yes to a signed forward) and of `conclude`
// (origin receipt to the visitor's 202), boundary crossings included. Each submission carries
// its proof of work (solved beforehand; checking it is part of `decide`).
//   node bench/decide.mjs [target/bench-worker/worker] [--shadow DIR]
// With --shadow, DIR is the same worker built with a candidate policy (scripts/bench makes one
// that moves the bench's country to another region, so every decision is a counted difference):
// both bundles run in alternating rounds, and the difference of their `decide` medians is what
// the shadow evaluation costs per request.
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { tmpdir } from "node:os";

const args = process.argv.slice(2);
const shadowAt = args.indexOf("--shadow");
const shadowDir = shadowAt >= 0 ? args.splice(shadowAt, 2)[1] : undefined;
const dir = args[0] ?? "target/bench-worker/worker";
const policy = JSON.parse(readFileSync("policy/harbour.json", "utf8"));

// The bundle imports its wasm as a module (as workerd provides it); Node is given the same.
async function load(dir, tag) {
  let source = readFileSync(join(dir, "shim.mjs"), "utf8");
  const glue = source.match(/\{"\.\/index_bg\.js":([\w$]+)/);
  if (!glue) throw new Error(`cannot find the wasm-bindgen glue in ${dir}`);
  source = source.replace(
    /import ([\w$]+) ?from ?"\.\/index\.wasm";/,
    (_, name) => `const ${name} = new WebAssembly.Module(globalThis.__harbourWasm);`,
  );
  source += `\nexport { ${glue[1]} as harbour };\n`;
  globalThis.__harbourWasm = readFileSync(join(dir, "index.wasm"));
  const scratch = mkdtempSync(join(tmpdir(), `harbour-decide-${tag}-`));
  writeFileSync(join(scratch, "bundle.mjs"), source);
  const { harbour } = await import(pathToFileURL(join(scratch, "bundle.mjs")));
  // The regions come from the shipped policy, the only list of them.
  const env = {};
  for (const [i, region] of policy.regions.map((r) => r.id).entries()) {
    const suffix = region.toUpperCase().replaceAll("-", "_");
    env[`HARBOUR_ORIGINS_${suffix}`] = `http://127.0.0.1:${9000 + i} http://127.0.0.1:${9100 + i}`;
    env[`HARBOUR_KEY_${suffix}`] = `${suffix}-0123456789abcdef0123456789abcdef`;
  }
  // The rate-limiting bindings the policy needs (named as harbour::admission's LocationLimit
  // names them); `consulted` below answers for them, so only their presence matters here.
  for (const c of policy.campaigns) {
    for (const { burst, window_ms } of [c.limits.per_client, ...(c.surge_windows ?? []).map((w) => w.per_client)]) {
      env[`HARBOUR_RL_${burst}_PER_${window_ms / 1000}S`] = { limit: async () => ({ success: true }) };
    }
  }
  env.HARBOUR_FORM_KEY = "bench-form-0123456789abcdef0123456789abcdef";
  const configured = JSON.parse(harbour.configure(env, new Uint8Array(24).fill(42)));
  if (!configured.ok) throw new Error(configured.error);
  if (configured.candidate_error) throw new Error(configured.candidate_error);
  return harbour;
}

const url = "https://campaign.example/api/campaigns/spring-launch/submissions";
const encoder = new TextEncoder();
const bodies = Array.from({ length: 64 }, (_, i) =>
  encoder.encode(
    `{"name":"Load Visitor ${i}","email":"load-${i}@example.org","country":"IT","consent":true}`,
  ),
);
const receipt = encoder.encode('{"receipt":{"id":"eu-0000000000000001","region":"eu"}}');
const perRound = 20_000;
const batch = 1_000; // concluded soon after being decided, as in service
const LOCATION_ADMITTED = 1; // as crates/worker/src/wire.rs
// `decide`'s request facts as shim.js joins them (`REQUEST_FACTS` in crates/worker/src/wire.rs):
// method, URL, content type, country, client IP, idempotency key, challenge, origin, notice;
// "\0" for an absent one.
const facts = (...values) =>
  Array.from({ length: 9 }, (_, i) => values[i] ?? "\0").join("\n");
// An answer's kind and fields after its notes (the line protocol of crates/worker/src/wire.rs).
const fieldsOf = (answer) => {
  const lines = answer.split("\n");
  return lines.slice(Number(lines[0]) + 1);
};
// A reply's body: after kind, status, the headers, the log line, the summary line, the data
// points and the delay.
const bodyOf = (answer) => {
  const [kind, , count] = fieldsOf(answer);
  if (kind !== "reply") throw new Error(`not a reply: ${answer}`);
  let at = -1;
  for (let i = 0; i < Number(answer.split("\n")[0]) + 8 + 2 * Number(count); i++) at = answer.indexOf("\n", at + 1);
  return answer.slice(at + 1);
};

// Work for every decision of the run, a key of its own each (one solution buys one entry: a
// resend is answered from the isolate's memory), for the challenge of a form description
// (crates/core/src/phase/challenge.rs), and the notice it shows. Challenges are stateless: every
// bundle configured with the same form key takes the same work.
function solveKeys(harbour, now, count) {
  const form = harbour.decide(facts("GET", url.replace("/submissions", ""), undefined, "IT", "192.0.2.1"), 0, new Uint8Array(0), now);
  const description = JSON.parse(bodyOf(form));
  const { token, difficulty_bits: bits } = description.challenge;
  const notice = `${description.lang}.${description.notice.version}`;
  const zeroBits = (digest) => { let z = 0; for (const b of digest) { if (b) return z + Math.clz32(b) - 24; z += 8; } return z; };
  const keys = Array.from({ length: count }, (_, i) => {
    const key = `bench-key-${i.toString().padStart(12, "0")}`;
    for (let nonce = 0; ; nonce++) {
      const hex = nonce.toString(16);
      if (zeroBits(createHash("sha256").update(`${token}\n${key}\n${hex}`).digest()) >= bits) return [key, `${token}.${hex}`];
    }
  });
  return { keys, notice };
}

// One round of `perRound` decide + consulted + conclude calls; returns µs per call of each.
function round(harbour, state, keys) {
  let decideNs = 0n;
  let consultedNs = 0n;
  let concludeNs = 0n;
  for (let b = 0; b < perRound / batch; b++) {
    const holds = new Array(batch);
    const tickets = new Array(batch);
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) {
      const n = ++state.n;
      const ip = `100.${64 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`;
      const [key, work] = keys.keys[n - 1];
      const answer = harbour.decide(
        `POST\n${url}\napplication/json\nIT\n${ip}\n${key}\n${work}\n\0\n${keys.notice}`, 1, bodies[n & 63], state.now++,
      );
      const [kind, hold] = fieldsOf(answer);
      if (kind !== "consult") throw new Error(`not held for the location: ${answer}`);
      holds[i] = Number(hold);
    }
    let t1 = process.hrtime.bigint();
    decideNs += t1 - t0;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) {
      const answer = harbour.consulted(holds[i], LOCATION_ADMITTED, state.now);
      const [kind, , , , ticket] = fieldsOf(answer); // key, url, timeout, ticket
      if (kind !== "forward") throw new Error(`not forwarded: ${answer}`);
      tickets[i] = Number(ticket);
    }
    t1 = process.hrtime.bigint();
    consultedNs += t1 - t0;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) {
      const answer = harbour.conclude(tickets[i], 201, receipt, state.now);
      const [kind, status] = fieldsOf(answer);
      if (kind !== "reply" || status !== "202") throw new Error(`not accepted: ${answer}`);
      if (answer.includes("harbour.summary") && answer.includes("region_changes")) state.summaries++;
    }
    t1 = process.hrtime.bigint();
    concludeNs += t1 - t0;
  }
  const us = (ns) => Number(ns) / 1000 / perRound;
  return [us(decideNs), us(consultedNs), us(concludeNs)];
}

const rounds = 5;
const start = 1_764_000_000_000;
const runs = [{ name: "live", harbour: await load(dir, "live") }];
if (shadowDir) runs.push({ name: "shadow", harbour: await load(shadowDir, "shadow") });
const keys = solveKeys(runs[0].harbour, start, (rounds + 1) * perRound);
for (const run of runs) {
  run.state = { n: 0, now: start + 1, summaries: 0 };
  run.decide = [];
  run.consulted = [];
  run.conclude = [];
}
// Alternating rounds, so both bundles meet the same machine; the first round warms the JIT up.
for (let r = 0; r < rounds + 1; r++) {
  for (const run of runs) {
    const [decideUs, consultedUs, concludeUs] = round(run.harbour, run.state, keys);
    if (r > 0) {
      run.decide.push(decideUs);
      run.consulted.push(consultedUs);
      run.conclude.push(concludeUs);
    }
  }
}
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
const [live, shadow] = runs;
console.log(
  `  wasm under Node, per call (median of ${rounds} x ${perRound}): decide ${median(live.decide).toFixed(2)} us, consulted ${median(live.consulted).toFixed(2)} us, conclude ${median(live.conclude).toFixed(2)} us`,
);
if (shadow) {
  if (shadow.state.summaries === 0) throw new Error("the shadow build wrote no shadow counts: is a candidate compiled in?");
  const extra = median(shadow.decide) - median(live.decide);
  console.log(
    `  with a candidate policy in shadow: decide ${median(shadow.decide).toFixed(2)} us; the shadow evaluation costs ${extra.toFixed(2)} us per request`,
  );
}
