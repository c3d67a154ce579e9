// A CPU profile of one worker of the bench's workerd, through its V8 inspector, summarised by
// self time per function (and per file): where a contestant's JS and wasm time goes.
//   HARBOUR_BENCH_INSPECTOR=127.0.0.1:9230 target/release/harbour-bench --cost-only --rounds 2 &
//   node bench/profile.mjs 127.0.0.1:9230 peer 20 [--top 40] [--save target/peer.cpuprofile]
// The profile covers `seconds` of wall time; only the named worker's isolate is sampled, so
// start it while that worker is under load (or for the whole run: the others add nothing).
import WebSocket from "ws";
import { writeFileSync } from "node:fs";

const [address, worker, seconds = "20", ...rest] = process.argv.slice(2);
if (!address || !worker) {
  console.error("usage: node bench/profile.mjs HOST:PORT WORKER [SECONDS] [--top N] [--save FILE]");
  process.exit(2);
}
const option = (name) => {
  const i = rest.indexOf(name);
  return i < 0 ? undefined : rest[i + 1];
};
const top = Number(option("--top") ?? 40);

const socket = new WebSocket(`ws://${address}/${worker}`);
let id = 0;
const pending = new Map();
const send = (method, params = {}) =>
  new Promise((resolve, reject) => {
    id += 1;
    pending.set(id, { resolve, reject });
    socket.send(JSON.stringify({ id, method, params }));
  });
socket.on("message", (data) => {
  const message = JSON.parse(data.toString());
  const waiting = pending.get(message.id);
  if (waiting === undefined) return;
  pending.delete(message.id);
  // workerd's inspector echoes the method in its answers; only `result` carries data.
  if (message.error) waiting.reject(new Error(JSON.stringify(message.error)));
  else waiting.resolve(message.result);
});
await new Promise((resolve, reject) => {
  socket.on("open", resolve);
  socket.on("error", reject);
});
// workerd gone (the bench ended) before the profile came back.
socket.on("close", () => {
  for (const waiting of pending.values()) waiting.reject(new Error("the inspector closed"));
});
await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 100 });
await send("Profiler.start");
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
const { profile } = await send("Profiler.stop");
socket.close();
if (option("--save")) writeFileSync(option("--save"), JSON.stringify(profile));

// Self time per node from the samples, then summed per function and per file.
const counts = new Map();
for (const node of profile.samples) counts.set(node, (counts.get(node) ?? 0) + 1);
const total = profile.samples.length;
const byFunction = new Map();
const byFile = new Map();
for (const node of profile.nodes) {
  const n = counts.get(node.id) ?? 0;
  if (n === 0) continue;
  const frame = node.callFrame;
  const file = frame.url.split("/").pop() || "(native)";
  const name = `${frame.functionName || "(anonymous)"} ${file}:${frame.lineNumber + 1}`;
  byFunction.set(name, (byFunction.get(name) ?? 0) + n);
  byFile.set(file, (byFile.get(file) ?? 0) + n);
}
const share = (n) => `${((100 * n) / total).toFixed(1).padStart(5)} %`;
console.log(`${worker}: ${total} samples at 100 us`);
for (const [name, n] of [...byFile].sort((a, b) => b[1] - a[1])) console.log(`  ${share(n)}  ${name}`);
console.log("self time per function:");
for (const [name, n] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${share(n)}  ${name}`);
