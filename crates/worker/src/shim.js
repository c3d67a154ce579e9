// harbour's entry module, bundled by worker-build (CUSTOM_SHIM). It moves bytes between the
// platform and the Rust decision functions in ./index_bg.js and decides nothing itself: one
// synchronous call per request (`decide`), one after the location's rate-limiting binding was
// consulted (`consulted`), and one per origin attempt (`conclude`, or `orphaned` when the
// instance that filed the forward is gone).
import * as harbour from "./index_bg.js";
import wasmModule from "./index.wasm";
$SNIPPET_JS_IMPORTS

const imports = {
  "./index_bg.js": harbour,
  $SNIPPET_WASM_IMPORTS
};

// wire: begin
// Generated from crates/worker/src/wire.rs (`js_protocol`); a test there keeps it current.
const ABSENT = "\0";
// The Analytics Engine binding a reply's `points` are written to.
const ANALYTICS_BINDING = "HARBOUR_ANALYTICS";
const BODY_UNREAD = 0;
const BODY_BYTES = 1;
const BODY_TOO_LARGE = 2;
const BODY_INCOMPLETE = 3;
const LOCATION_ADMITTED = 1;
const LOCATION_REFUSED = 2;
const LOCATION_FAILED = 3;
const LOCATION_TIMED_OUT = 4;
// The request's text facts, in the order `decide` reads them.
function requestFacts(request, headers) {
  return (
    (request.method ?? ABSENT) + "\n" +
    (request.url ?? ABSENT) + "\n" +
    (headers.get("content-type") ?? ABSENT) + "\n" +
    (request.cf?.country ?? ABSENT) + "\n" +
    (headers.get("cf-connecting-ip") ?? ABSENT) + "\n" +
    (headers.get("idempotency-key") ?? ABSENT) + "\n" +
    (headers.get("harbour-challenge") ?? ABSENT) + "\n" +
    (headers.get("origin") ?? ABSENT) + "\n" +
    (headers.get("harbour-notice") ?? ABSENT)
  );
}
// Each answer's fields, in the order the shell writes them.
const READERS = {
  reply: (a) => ({ status: a.number(), headers: a.headers(), log: a.field(), summary: a.field(), points: a.field(), delayMs: a.number(), body: a.body() }),
  consult: (a) => ({ hold: a.number(), binding: a.field(), key: a.field(), timeoutMs: a.number() }),
  forward: (a) => ({ key: a.field(), url: a.field(), timeoutMs: a.number(), ticket: a.number(), headers: a.headers(), body: a.body() }),
  retry: (a) => ({ url: a.field(), timeoutMs: a.number(), ticket: a.number() }),
};
// wire: end
const EMPTY = new Uint8Array(0);

let maxBodyBytes = -1; // -1 until the current instance has read its environment

// The module instance decisions run in, and how many instances came before it. A WebAssembly
// trap (a panic aborts) leaves the instance's memory in an unknown state, so the shell stops
// using it and the next request makes a new one from the same module (`restart`).
let instance = instantiate();
let generation = 0;
let trapped = false;

function instantiate() {
  const next = new WebAssembly.Instance(wasmModule, imports);
  harbour.__wbg_set_wasm(next.exports);
  next.exports.__wbindgen_start?.();
  return next;
}

function restart() {
  // The glue in ./index_bg.js caches views of the old memory and renews one only once it is
  // detached. Growing a memory, even by zero pages, detaches its buffer.
  const old = instance.exports.memory;
  const buffer = old.buffer;
  old.grow(0);
  if (buffer.byteLength !== 0) throw new Error("the trapped instance's memory is still attached");
  instance = instantiate();
  generation += 1;
  trapped = false;
  maxBodyBytes = -1;
  console.error(JSON.stringify({ msg: "harbour.edge_restarted", generation }));
}

function configure(env) {
  // Three independent seeds (the limiter's hash key, request ids, challenge salts) from the
  // platform's CSPRNG.
  const configured = JSON.parse(harbour.configure(env, crypto.getRandomValues(new Uint8Array(24))));
  maxBodyBytes = configured.ok ? configured.max_body_bytes : 0;
  if (!configured.ok) console.error(JSON.stringify({ msg: "harbour.config_invalid", error: configured.error }));
  if (configured.candidate_error) console.error(JSON.stringify({ msg: "harbour.candidate_invalid", error: configured.candidate_error }));
}

// Reads at most `max` bytes; never buffers a body that declares or turns out to be larger.
async function readBody(request, max) {
  const declared = request.headers.get("content-length");
  try {
    // The usual case first: `request.body` is not touched (its getter makes a stream object).
    if (declared !== null) {
      if (!(Number(declared) <= max)) return [BODY_TOO_LARGE, EMPTY];
      const bytes = new Uint8Array(await request.arrayBuffer());
      return bytes.length > max ? [BODY_TOO_LARGE, EMPTY] : [BODY_BYTES, bytes];
    }
    if (request.body === null) return [BODY_BYTES, EMPTY];
    const reader = request.body.getReader();
    const chunks = [];
    let total = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > max) {
        await drain(reader, total);
        return [BODY_TOO_LARGE, EMPTY];
      }
      chunks.push(value);
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, at);
      at += chunk.byteLength;
    }
    return [BODY_BYTES, bytes];
  } catch {
    return [BODY_INCOMPLETE, EMPTY];
  }
}

// Reads and drops the rest of an oversize streamed body, up to a bound, so the connection it
// came on stays usable (a half-read body stalls the next request on it); past the bound, cancel.
const DRAIN_LIMIT_BYTES = 1 << 20;
async function drain(reader, seen) {
  while (seen <= DRAIN_LIMIT_BYTES) {
    const { done, value } = await reader.read();
    if (done) return;
    seen += value.byteLength;
  }
  await reader.cancel().catch(() => {});
}

// One origin attempt. Status 0 reports a connection failure or the attempt's timeout. The answer
// is read as bytes: `conclude` takes bytes, so it is never decoded to a string and encoded back.
const NO_ANSWER = [0, EMPTY];
async function attempt(url, timeoutMs, headers, body) {
  try {
    const response = await fetch(url, {
      method: "POST",
      headers,
      body,
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    return [response.status, new Uint8Array(await response.arrayBuffer())];
  } catch {
    return NO_ANSWER;
  }
}

// Asks the location's rate-limiting binding (`env[binding].limit({ key })`). A throw and no
// answer within `timeoutMs` are answers too: Rust applies the campaign's fail_open/fail_closed.
const SILENCE = {};
async function consult(env, binding, key, timeoutMs) {
  let timer;
  try {
    const silence = new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs, SILENCE);
    });
    const outcome = await Promise.race([env[binding].limit({ key }), silence]);
    if (outcome === SILENCE) return LOCATION_TIMED_OUT;
    return outcome?.success === true ? LOCATION_ADMITTED : outcome?.success === false ? LOCATION_REFUSED : LOCATION_FAILED;
  } catch {
    return LOCATION_FAILED;
  } finally {
    clearTimeout(timer);
  }
}

// A decision is lines of text (the line protocol of crates/worker/src/wire.rs): its notes (log
// lines of state changes, such as a breaker opening), written at once, then its kind and the
// kind's fields (`READERS`), one a line, and a body as the rest. Nothing is parsed as JSON.
class Decision {
  constructor(text) {
    this.text = text;
    this.at = 0;
    const notes = this.number();
    for (let i = 0; i < notes; i++) console.log(this.field());
    this.kind = this.field();
    const read = READERS[this.kind];
    if (read === undefined) throw new Error(`malformed decision: ${this.kind}`);
    this.fields = read(this);
  }
  field() {
    const end = this.text.indexOf("\n", this.at);
    if (end < 0) throw new Error("malformed decision");
    const value = this.text.slice(this.at, end);
    this.at = end + 1;
    return value;
  }
  number() {
    return Number(this.field());
  }
  // One object, not an array of pairs: the platform converts a record with fewer steps than a
  // sequence of sequences. A name given twice reads as Headers.append leaves it: values joined.
  headers() {
    const headers = {};
    for (let i = this.number(); i > 0; i--) {
      const name = this.field();
      const value = this.field();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    return headers;
  }
  body() {
    return this.text.slice(this.at);
  }
}

// Every API answer: a browser never reads one as anything but its declared type.
const NOSNIFF = "nosniff";

// The data points Rust made due (a JSON array of `writeDataPoint` arguments, at most 25), written
// as given; the platform sends them on after the response. Rust counts none without the binding.
// Analytics never costs a visitor their answer: a refused write is logged, not thrown.
function writePoints(env, points) {
  try {
    const dataset = env[ANALYTICS_BINDING];
    for (const point of JSON.parse(points)) dataset.writeDataPoint(point);
  } catch (error) {
    console.error(JSON.stringify({ msg: "harbour.points_unwritten", error: String(error) }));
  }
}

async function respond(decision, env) {
  if (decision.kind !== "reply") throw new Error(`malformed decision: ${decision.kind}`);
  const { status, headers, log, summary, points, delayMs, body } = decision.fields;
  if (log !== "") console.log(log);
  if (summary !== "") console.log(summary);
  if (points !== "") writePoints(env, points);
  if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
  headers["x-content-type-options"] = NOSNIFF;
  return new Response(status === 204 || body === "" ? null : body, { status, headers });
}

// The answer when the module cannot give one. A forward under way carries its idempotency key:
// the origin may have stored the entry, and a retry with that key is stored at most once.
function emergency(status, code, key) {
  const problem = { type: `urn:harbour:problem:${code}`, title: "Service unavailable", status, code };
  const headers = { "content-type": "application/problem+json", "retry-after": "1", "x-content-type-options": NOSNIFF };
  if (key !== undefined) {
    problem.idempotency_key = key;
    headers["idempotency-key"] = key;
  }
  return new Response(JSON.stringify(problem), { status, headers });
}

// Before any call into the module: a new instance after a trap, configured before first use.
function ready(env) {
  if (trapped) restart();
  if (maxBodyBytes < 0) configure(env);
}

async function handle(request, env, forward) {
  ready(env);
  const headers = request.headers;
  const [bodyState, bodyBytes] =
    request.method === "POST" ? await readBody(request, maxBodyBytes) : [BODY_UNREAD, EMPTY];
  ready(env);
  // The request's text facts as one string: one copy into wasm memory instead of eight.
  const facts = requestFacts(request, headers);
  let decision = new Decision(harbour.decide(facts, bodyState, bodyBytes, Date.now()));
  if (decision.kind === "consult") {
    const { hold, binding, key, timeoutMs } = decision.fields;
    const heldIn = generation;
    const outcome = await consult(env, binding, key, timeoutMs);
    ready(env);
    // The held request lived in the trapped instance's memory. Nothing was forwarded: the
    // visitor retries, with the same key if it has one.
    if (generation !== heldIn) return emergency(503, "edge_restarting", undefined);
    decision = new Decision(harbour.consulted(hold, outcome, Date.now()));
  }
  if (decision.kind !== "forward") return respond(decision, env);
  let { url, timeoutMs, ticket } = decision.fields;
  forward.key = decision.fields.key;
  // The headers and body of the first attempt serve every attempt.
  const { headers: forwardHeaders, body: forwardBody } = decision.fields;
  // The ticket lives in this instance's memory; after a restart it means nothing (or another
  // request's forward) to the new one.
  const filedIn = generation;
  for (;;) {
    const [status, reply] = await attempt(url, timeoutMs, forwardHeaders, forwardBody);
    ready(env);
    decision = new Decision(
      generation === filedIn
        ? harbour.conclude(ticket, status, reply, Date.now())
        : harbour.orphaned(forward.key, Date.now()),
    );
    if (decision.kind !== "retry") return respond(decision, env);
    ({ url, timeoutMs, ticket } = decision.fields);
  }
}

export default {
  async fetch(request, env) {
    const forward = { key: undefined };
    try {
      return await handle(request, env, forward);
    } catch (error) {
      if (error instanceof WebAssembly.RuntimeError) trapped = true;
      console.error(JSON.stringify({ msg: "harbour.edge_failure", error: String(error) }));
      // After a trap (or a restart that failed after one) the next request makes a new instance.
      return trapped
        ? emergency(503, "edge_restarting", forward.key)
        : emergency(500, "internal_error", forward.key);
    }
  },
};
