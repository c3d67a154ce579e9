// The watched browser every browser test uses: Debian's chromium driven by playwright-core, and
// pages only through `browserTest`. Every context it makes is watched for uncaught errors
// (`weberror`), console errors (`console` of type error or assert, which includes what Chromium
// logs for a failed load) and CSP violations (the `securitypolicyviolation` event, reported from
// an init script). A test fails on any of them it did not declare with `expectProblem`, and fails
// if a problem it declared never happened. Playwright passes a dedicated worker's uncaught errors
// and console calls on to its page, so a page's workers are watched too; init scripts do not run
// in workers, so a CSP refusal there is seen through the error it throws, not as an event.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
// axe-core, from node_modules (package-lock.json pins it), in the real page.
const AXE = readFileSync(join(root, "node_modules", "axe-core", "axe.min.js"), "utf8");

/** Runs axe-core in `page` at rest; fails on any violation, naming `state`. */
export async function axe(page, state) {
  // The page at rest: an animation under way (a button's fade) is not its colour.
  await page.evaluate(() => Promise.all(document.getAnimations().map((a) => a.finished)));
  // Evaluated through the browser's debugging protocol, which the page's CSP does not govern (a
  // script tag would need the CSP switched off, and the CSP watch with it).
  if (!(await page.evaluate(() => "axe" in window))) await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const found = result.violations.map((v) => `${v.id} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  assert.deepEqual(found, [], `axe violations in ${state}`);
}

let browser;

/** Starts the browser (in a `before` hook of the file that uses it). */
export async function launchBrowser() {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

/** Stops it (in an `after` hook). */
export async function closeBrowser() {
  await browser?.close();
}

// Reports each CSP violation of a page to the test (init scripts and bindings are the
// browser's, not the page's, so the page's own CSP does not stop them).
const CSP_WATCH = `addEventListener("securitypolicyviolation", (e) => {
  globalThis.__harbourCspViolation?.({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber, sample: e.sample });
}, true);`;

let clientNumber = 0;

/** What a test may do with the browser: every page it gets is watched. */
export class Session {
  constructor() {
    this.contexts = [];
    this.problems = []; // one line per uncaught error, console error or CSP violation
    this.expected = []; // { kind, pattern, why, seen }
  }

  /**
   * Declares a problem the test causes on purpose: `kind` is "uncaught", "console" or "csp",
   * `pattern` a RegExp the problem's line must match, `why` the reason. The test fails if it
   * never happens.
   */
  expectProblem(kind, pattern, why) {
    assert.ok(["uncaught", "console", "csp"].includes(kind), `unknown kind ${kind}`);
    assert.ok(pattern instanceof RegExp && why, "a pattern and a reason");
    this.expected.push({ kind, pattern, why, seen: 0 });
  }

  /** A fresh browser context, watched. `options` go to browser.newContext. */
  async context({ country, ...options } = {}) {
    const context = await browser.newContext({
      ...options,
      // The platform's signals, as wrangler dev takes them: request.cf and the client address.
      extraHTTPHeaders: { "mf-cf-blob": JSON.stringify({ country }), "cf-connecting-ip": `203.0.113.${++clientNumber}`, ...options.extraHTTPHeaders },
    });
    this.contexts.push(context);
    const note = (kind, text) => this.problems.push({ kind, text });
    context.on("weberror", (e) => note("uncaught", `uncaught ${e.error().message} (at ${e.page()?.url()})`));
    context.on("console", (m) => {
      if (m.type() === "error" || m.type() === "assert") note("console", `console ${m.type()}: ${m.text()} (at ${m.location().url})`);
    });
    await context.exposeBinding("__harbourCspViolation", (_source, v) =>
      note("csp", `csp violation of ${v.directive}: blocked ${v.blocked || "inline"} (at ${v.source}:${v.line}) ${v.sample ?? ""}`));
    await context.addInitScript(CSP_WATCH);
    return context;
  }

  async close() {
    for (const context of this.contexts) await context.close().catch(() => {});
  }

  /** Matches each problem to an expectation; what is left over fails the test. */
  verdict() {
    const unexpected = [];
    for (const problem of this.problems) {
      const matched = this.expected.filter((e) => e.kind === problem.kind && e.pattern.test(problem.text));
      for (const e of matched) e.seen++;
      if (!matched.length) unexpected.push(`${problem.kind}: ${problem.text}`);
    }
    const missing = this.expected.filter((e) => !e.seen).map((e) => `${e.kind} ${e.pattern} (${e.why})`);
    return { unexpected, missing };
  }
}

/**
 * A browser test: `fn(session)` gets pages only through `session` (made by `makeSession`); after
 * it, every context is closed and the test fails on any uncaught error, console error or CSP
 * violation it did not expect, or on an expected one that did not happen.
 */
export function browserTest(name, fn, makeSession = () => new Session()) {
  test(name, async (t) => {
    const session = makeSession();
    let failure;
    try {
      await fn(session, t);
    } catch (error) {
      failure = error;
    } finally {
      await session.close();
    }
    const { unexpected, missing } = session.verdict();
    if (failure) {
      // The page's own errors are often why a wait timed out: say them with the failure.
      if (unexpected.length) failure.message += `\npage problems:\n  ${unexpected.join("\n  ")}`;
      throw failure;
    }
    assert.deepEqual(unexpected, [], "uncaught errors, console errors or CSP violations the test did not expect");
    assert.deepEqual(missing, [], "problems the test expected that did not happen");
  });
}
