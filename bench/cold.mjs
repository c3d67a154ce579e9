// Cold start under Node's V8, each sample in a fresh process: for harbour, the wasm compiled
// (WebAssembly.compile) and the bundle evaluated (which instantiates it); for the plain-JS peer,
// its module (with the policy, as workerd gives it a JSON module) evaluated. Then, for both, the
// first request answered (a form description): harbour configures from the environment on it,
// the peer imports its keys. Prints medians and ratios harbour / peer.
//   node bench/cold.mjs [target/bench-worker/worker] [--samples 7]
import { readFileSync, writeFileSync, mkdtempSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { tmpdir } from "node:os";

const args = process.argv.slice(2);
const samplesAt = args.indexOf("--samples");
const samples = samplesAt >= 0 ? Number(args.splice(samplesAt, 2)[1]) : 7;
const oneAt = args.indexOf("--one");
const one = oneAt >= 0 ? args.splice(oneAt, 2)[1] : undefined;
const dir = args[0] ?? "target/bench-worker/worker";
const policyText = readFileSync("bench/policy.json", "utf8");

function environment() {
  const policy = JSON.parse(policyText);
  const env = { HARBOUR_FORM_KEY: "bench-form-key-0123456789abcdefghijklmnopqrstuvwxyz" };
  for (const [i, region] of policy.regions.map((r) => r.id).entries()) {
    const suffix = region.toUpperCase().replaceAll("-", "_");
    env[`HARBOUR_ORIGINS_${suffix}`] = `http://127.0.0.1:${9000 + i} http://127.0.0.1:${9100 + i}`;
    env[`HARBOUR_KEY_${suffix}`] = `bench-${region}-0123456789abcdefghijklmnopqrstuvwxyz`;
  }
  for (const c of policy.campaigns) {
    for (const { burst, window_ms } of [c.limits.per_client, ...(c.surge_windows ?? []).map((w) => w.per_client)]) {
      env[`HARBOUR_RL_${burst}_PER_${window_ms / 1000}S`] = { limit: async () => ({ success: true }) };
    }
  }
  return env;
}

// One sample in this process: [load ms, first answer ms].
async function sample(which) {
  const scratch = mkdtempSync(join(tmpdir(), `harbour-cold-${which}-`));
  let source;
  let wasm;
  if (which === "harbour") {
    source = readFileSync(join(dir, "shim.mjs"), "utf8").replace(
      /import ([\w$]+) ?from ?"\.\/index\.wasm";/,
      (_, name) => `const ${name} = globalThis.__harbourModule;`,
    );
    wasm = readFileSync(join(dir, "index.wasm"));
  } else {
    // workerd parses a JSON module when the worker loads; so does this.
    source = readFileSync("bench/peer.js", "utf8").replace(
      'import policy from "./policy.json";',
      `const policy = JSON.parse(${JSON.stringify(policyText)});`,
    );
  }
  const file = join(scratch, "worker.mjs");
  writeFileSync(file, source);
  const env = environment();
  const start = performance.now();
  if (wasm) globalThis.__harbourModule = await WebAssembly.compile(wasm);
  const worker = (await import(pathToFileURL(file))).default;
  const loaded = performance.now();
  const response = await worker.fetch(new Request("http://127.0.0.1/api/campaigns/spring-launch"), env);
  const body = await response.text();
  const answered = performance.now();
  if (response.status !== 200) throw new Error(`${which}: first answer ${response.status} ${body}`);
  return [loaded - start, answered - loaded];
}

if (one) {
  console.log(JSON.stringify(await sample(one)));
} else {
  const median = (v) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const results = { harbour: [], peer: [] };
  for (let i = 0; i < samples; i++) {
    for (const which of i % 2 ? ["peer", "harbour"] : ["harbour", "peer"]) {
      const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), dir, "--one", which], { encoding: "utf8" });
      results[which].push(JSON.parse(out));
    }
  }
  const row = (label, pick) => {
    const h = median(results.harbour.map(pick));
    const p = median(results.peer.map(pick));
    console.log(`  ${label.padEnd(44)} harbour ${h.toFixed(2).padStart(7)} ms   peer ${p.toFixed(2).padStart(7)} ms   harbour/peer ${(h / p).toFixed(2)}`);
  };
  console.log(`cold start under Node (median of ${samples} fresh processes each, alternating):`);
  row("load (compile + instantiate / evaluate)", (s) => s[0]);
  row("first answer (configure + form description)", (s) => s[1]);
  row("both", (s) => s[0] + s[1]);
}
