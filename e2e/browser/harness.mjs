// The campaign page's browser tests' stack and fixture: reference origins with their SQLite files
// and the built worker under `wrangler dev`, all on 127.0.0.1 and stopped when the tests end, and
// the watched browser (watch.mjs): pages exist only through `browserTest`, and every page is
// watched for uncaught errors, console errors and CSP violations. Its sessions can also `visit`
// the campaign page from a country.
import { before, after } from "node:test";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, rmSync, readFileSync, writeFileSync, createWriteStream } from "node:fs";
import { randomBytes } from "node:crypto";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { Session, browserTest as watchedTest, launchBrowser, closeBrowser } from "./watch.mjs";
import { sleep, anyFreePort } from "./shared.mjs";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
// What the deployed worker runs with, so what the worker under test runs with.
const COMPATIBILITY_DATE = (() => {
  const found = readFileSync(join(root, "wrangler.toml"), "utf8").match(/^compatibility_date\s*=\s*"([^"]+)"/m);
  if (!found) throw new Error("wrangler.toml has no compatibility_date");
  return found[1];
})();
const work = join(root, "target", "e2e", "browser");
export const artifacts = join(root, "target", "test-artifacts");
// The regions and the campaign's texts come from the shipped policy, the only list of them.
export const POLICY = JSON.parse(readFileSync(join(root, "policy", "harbour.json"), "utf8"));
export const REGIONS = POLICY.regions.map((r) => r.id);
export const CAMPAIGN = POLICY.campaigns[0];
// The worker's HARBOUR_FORM_KEY: the tests know it, to make a genuine challenge that expired.
export const FORM_KEY = `browser-form-${randomBytes(16).toString("hex")}`;
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
export { sleep };
const running = new Map(); // port -> child process
export const origins = {};
let worker;
/** The worker's URL, once the stack is up. */
export let base;

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

export async function startOrigin(region, port) {
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

export async function stopOrigin(port) {
  await stopProcess(running.get(port));
  running.delete(port);
}

export async function count(region) {
  const o = origins[region];
  const response = await fetch(`http://127.0.0.1:${o.ops[o.primary]}/v1/count`);
  return (await response.json()).count;
}

export async function counts() {
  return Object.fromEntries(await Promise.all(REGIONS.map(async (r) => [r, await count(r)])));
}

// The region's rows as its SQLite file holds them, read-only, through python3's sqlite3 module
// (Node 20 has no SQLite of its own).
export function rows(region) {
  const script = [
    "import json, sqlite3, sys",
    "db = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True)",
    "cols = ['receipt_id', 'region', 'campaign', 'idempotency_key', 'platform_country', 'declared_country', 'notice_locale', 'notice_version', 'payload']",
    "print(json.dumps([dict(zip(cols, r)) for r in db.execute('SELECT ' + ', '.join(cols) + ' FROM submissions ORDER BY seq')]))",
  ].join("\n");
  return JSON.parse(execFileSync("python3", ["-c", script, origins[region].db], { encoding: "utf8" }));
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
    `compatibility_date = "${COMPATIBILITY_DATE}"`,
    "[assets]",
    `directory = "${join(root, "www")}"`,
    'not_found_handling = "none"',
    ...RATELIMITS,
    "[vars]",
    ...vars,
  ].join("\n"));
  writeFileSync(join(work, ".dev.vars"), [...REGIONS.map((r) => `${keyVar(r)}=${origins[r].key}`), `HARBOUR_FORM_KEY=${FORM_KEY}`].join("\n"));
  worker = spawnLogged("wrangler", join(root, "node_modules", ".bin", "wrangler"),
    ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(await freePort()), "--show-interactive-dev-session=false"],
    { cwd: work, env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" } });
  base = `http://127.0.0.1:${port}`;
  await waitFor("wrangler dev", async () => (await fetch(`${base}/api/campaigns/spring-launch`)).ok, 120_000);
  await launchBrowser();
});

after(async () => {
  await closeBrowser();
  await stopProcess(worker);
  for (const port of [...running.keys()]) await stopOrigin(port);
});

/** A session that also visits the campaign page. */
class CampaignSession extends Session {
  /** A watched page in a context of its own, on the campaign page, from `country`. */
  async visit(country, { query = "", locale = "en-US" } = {}) {
    const context = await this.context({ country, viewport: { width: 390, height: 844 }, locale });
    const page = await context.newPage();
    await page.goto(base + "/" + query);
    await page.locator("#f-name").waitFor();
    await page.locator("#submit:not([disabled])").waitFor();
    return page;
  }
}

/** A browser test of the campaign page: its session can `visit` (see watch.mjs). */
export function browserTest(name, fn) {
  watchedTest(name, fn, () => new CampaignSession());
}
