// The broadcast's live view and report in a real browser (Debian's chromium, playwright-core):
// a short rehearsal (harbour-bench: the release worker with the bench's policy under workerd
// serve, reference origins, a realistic mix) runs with the live view on 127.0.0.1; the page must
// show each region's entries as they come, then the rehearsal's report must carry the same
// charts and its audit. axe-core finds no violation in either; screenshots go to
// target/test-artifacts/. scripts/test builds what it runs (harbour-bench, harbour-live, the
// bench's worker build) before the browser tier.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { browserTest, launchBrowser, closeBrowser, axe } from "./watch.mjs";
import { sleep, anyFreePort } from "./shared.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const artifacts = join(root, "target", "test-artifacts");
// The regions come from the shipped policy, the only list of them.
const POLICY = JSON.parse(readFileSync(join(root, "policy", "harbour.json"), "utf8"));

const RATE = 150;
const SECONDS = 12;
const bench = join(root, "target", "debug", "harbour-bench");
// A bound on a wait that does not keep the test process alive once the wait is over.
const giveUpAfter = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref());

let rehearsal;
let output = "";
let finished;
let live;

before(async () => {
  for (const built of [bench, join(root, "target", "debug", "harbour-live"), join(root, "target", "bench-worker", "worker", "index.wasm")]) {
    assert.ok(existsSync(built), `${built} is missing: scripts/test builds it before this tier`);
  }
  mkdirSync(artifacts, { recursive: true });
  live = `127.0.0.1:${await anyFreePort()}`;
  rehearsal = spawn(bench, ["--rehearsal", "--rate", String(RATE), "--duration", String(SECONDS), "--live", live], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  rehearsal.stdout.on("data", (chunk) => (output += chunk));
  rehearsal.stderr.on("data", (chunk) => (output += chunk));
  finished = new Promise((resolve) => rehearsal.once("exit", (code) => resolve(code)));
  await launchBrowser();
});

after(async () => {
  await closeBrowser();
  if (rehearsal.exitCode === null) {
    try { process.kill(-rehearsal.pid, "SIGTERM"); } catch { /* gone */ }
  }
});

/** The live view's data, once it answers. */
async function data() {
  const response = await fetch(`http://${live}/data`);
  return response.ok ? (await response.json()).series : null;
}

const regionIds = POLICY.regions.map((r) => r.id);
const accepted = (region) => region.edge.filter((s) => s.label.startsWith("accepted")).reduce((a, s) => a + s.total, 0);

browserTest("the live view shows each region's entries second by second during a rehearsal, and axe finds nothing (screenshot)", async (s) => {
  // Every region stored entries (the origins' count) and the edge counted them (its data points).
  const deadline = Date.now() + 120_000;
  let series = null;
  for (;;) {
    series = await data().catch(() => null);
    const regions = series?.regions.filter((r) => regionIds.includes(r.id)) ?? [];
    if (regions.length === regionIds.length && regions.every((r) => r.stored_total > 0 && accepted(r) > 0)) break;
    assert.ok(Date.now() < deadline && rehearsal.exitCode === null,
      `no entries in every region on the live view:\n${JSON.stringify(series?.regions?.map((r) => [r.id, r.stored_total, accepted(r)]))}\n${output}`);
    await sleep(500);
  }
  const context = await s.context({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  await page.goto(`http://${live}/`);
  // The page drew a chart per region, whose sentence names what the origins stored.
  await page.locator("#regions .chart canvas").nth(regionIds.length - 1).waitFor();
  for (const [i, region] of POLICY.regions.entries()) {
    const summary = page.locator(`#region-${i} .summary`);
    await assert.doesNotReject(summary.waitFor());
    const text = await summary.textContent();
    assert.match(text, /the origins stored [1-9][\d,]* entries; the edge accepted [1-9]/, `${region.id}: ${text}`);
    assert.match(await page.locator(`#region-${i} h3`).textContent(), new RegExp(`\\(${region.id}\\): entries per second`));
  }
  // Units on every axis (uPlot draws them on the canvas; each chart's label says them in words).
  const labels = await page.locator(".chart .plot").evaluateAll((plots) => plots.map((p) => p.getAttribute("aria-label")));
  for (const label of labels) assert.match(label, /: [a-z ]+ \(vertical axis\) against time in UTC \(horizontal axis\)/, label);
  assert.ok(labels.some((t) => t.includes("entries per second (vertical axis)")), labels.join(" | "));
  assert.ok(labels.some((t) => t.includes("milliseconds (vertical axis)")), labels.join(" | "));
  await sleep(1_500); // a redraw or two with the next seconds
  await page.screenshot({ path: join(artifacts, "live-view.png"), fullPage: true });
  await axe(page, "the live view");
});

browserTest("the rehearsal writes its broadcast report: the same charts and the audit, nothing loaded, and axe finds nothing (screenshot)", async (s) => {
  const code = await Promise.race([finished, giveUpAfter(240_000).then(() => "timed out")]);
  assert.equal(code, 0, `harbour-bench --rehearsal: ${code}\n${output}`);
  const path = output.match(/broadcast report: (\S+)/)?.[1];
  assert.ok(path && existsSync(path), `no report path in the output:\n${output}`);
  const context = await s.context({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const requests = [];
  page.on("request", (request) => requests.push(request.url()));
  await page.goto(pathToFileURL(path).href);
  await page.locator("#regions .chart canvas").nth(regionIds.length - 1).waitFor();
  assert.match(await page.locator(".verdict").textContent(), /^Passed/);
  const figures = await page.locator("table.audit").first().textContent();
  assert.match(figures, /lost \(answered 202, or valid and unanswered, and not stored\)0/);
  assert.match(figures, /stored outside their region0/);
  for (const [i] of POLICY.regions.entries()) {
    assert.match(await page.locator(`#region-${i} .summary`).textContent(), /the origins stored [1-9]/);
  }
  assert.deepEqual(requests.filter((url) => !url.startsWith("file:") && !url.startsWith("data:")), [], "the report loads nothing");
  await page.screenshot({ path: join(artifacts, "broadcast-report.png"), fullPage: true });
  await axe(page, "the broadcast report");
});
