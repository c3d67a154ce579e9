// The edge decision as the isolate runs it: the built bundle's wasm under Node's V8, without
// workerd or any I/O. Prints µs per call of `decide` (a valid submission to a signed forward)
// and of `conclude` (origin receipt to the visitor's 202), boundary crossings included. Each
// submission carries its proof of work (solved beforehand; checking it is part of `decide`).
//   node bench/decide.mjs [target/bench-worker/worker]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { createHash } from "node:crypto";

const dir = process.argv[2] ?? "target/bench-worker/worker";
// The bundle imports its wasm as a module (as workerd provides it); Node is given the same.
let source = readFileSync(join(dir, "shim.mjs"), "utf8");
const glue = source.match(/\{"\.\/index_bg\.js":(\w+)/);
if (!glue) throw new Error("cannot find the wasm-bindgen glue in the bundle");
source = source.replace(
  /import (\w+) ?from ?"\.\/index\.wasm";/,
  (_, name) => `const ${name} = new WebAssembly.Module(globalThis.__harbourWasm);`,
);
source += `\nexport { ${glue[1]} as harbour };\n`;
globalThis.__harbourWasm = readFileSync(join(dir, "index.wasm"));
const scratch = mkdtempSync(join(tmpdir(), "harbour-decide-"));
writeFileSync(join(scratch, "bundle.mjs"), source);
const { harbour } = await import(pathToFileURL(join(scratch, "bundle.mjs")));

const env = {};
for (const [i, region] of ["CN", "RU", "EU", "AU", "GLOBAL"].entries()) {
  env[`HARBOUR_ORIGINS_${region}`] = `http://127.0.0.1:${9000 + i} http://127.0.0.1:${9100 + i}`;
  env[`HARBOUR_KEY_${region}`] = `${region}-0123456789abcdef0123456789abcdef`;
}
env.HARBOUR_FORM_KEY = "bench-form-0123456789abcdef0123456789abcdef";
const configured = JSON.parse(harbour.configure(env, new Uint8Array(24).fill(42)));
if (!configured.ok) throw new Error(configured.error);

const url = "https://campaign.example/api/campaigns/spring-launch/submissions";
const encoder = new TextEncoder();
const bodies = Array.from({ length: 64 }, (_, i) =>
  encoder.encode(
    `{"name":"Load Visitor ${i}","email":"load-${i}@example.org","country":"IT","consent":true}`,
  ),
);
const receipt = encoder.encode('{"receipt":{"id":"eu-0000000001","region":"eu","stored_at_ms":1}}');
let now = 1_764_000_000_000;
// The challenge of a form description, and work for 64 keys (src/challenge.rs).
const form = harbour.decide("GET", url.replace("/submissions", ""), undefined, 0, new Uint8Array(0), "IT", "192.0.2.1", undefined, undefined, undefined, now);
const { token, difficulty_bits: bits } = JSON.parse(form.slice(form.indexOf("\n", form.indexOf("\n") + 1) + 1)).challenge;
const zeroBits = (digest) => { let z = 0; for (const b of digest) { if (b) return z + Math.clz32(b) - 24; z += 8; } return z; };
const keys = Array.from({ length: 64 }, (_, i) => {
  const key = `bench-key-${i.toString().padStart(12, "0")}`;
  for (let nonce = 0; ; nonce++) {
    const hex = nonce.toString(16);
    if (zeroBits(createHash("sha256").update(`${token}\n${key}\n${hex}`).digest()) >= bits) return [key, `${token}.${hex}`];
  }
});
let n = 0;
function one() {
  n++;
  const ip = `100.${64 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`;
  const answer = harbour.decide(
    "POST", url, "application/json", 1, bodies[n & 63], "IT", ip, keys[n & 63][0], keys[n & 63][1], undefined, now++,
  );
  const meta = JSON.parse(answer.slice(0, answer.indexOf("\n")));
  if (meta.ticket === undefined) throw new Error(`not forwarded: ${answer}`);
  return meta.ticket;
}

const rounds = 5;
const perRound = 20_000;
const batch = 1_000; // concluded soon after being decided, as in service
const decideUs = [];
const concludeUs = [];
for (let r = 0; r < rounds + 1; r++) {
  let decideNs = 0n;
  let concludeNs = 0n;
  for (let b = 0; b < perRound / batch; b++) {
    const tickets = new Array(batch);
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) tickets[i] = one();
    let t1 = process.hrtime.bigint();
    decideNs += t1 - t0;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < batch; i++) {
      const answer = harbour.conclude(tickets[i], 201, receipt, now);
      if (!answer.startsWith('{"status":202')) throw new Error(`not accepted: ${answer}`);
    }
    t1 = process.hrtime.bigint();
    concludeNs += t1 - t0;
  }
  if (r > 0) {
    // The first round warms the JIT up.
    decideUs.push(Number(decideNs) / 1000 / perRound);
    concludeUs.push(Number(concludeNs) / 1000 / perRound);
  }
}
const median = (v) => v.sort((a, b) => a - b)[v.length >> 1];
console.log(
  `  wasm under Node, per call (median of ${rounds} x ${perRound}): decide ${median(decideUs).toFixed(2)} us, conclude ${median(concludeUs).toFixed(2)} us`,
);
