// harbour's entry module, bundled by worker-build (CUSTOM_SHIM). It moves bytes between the
// platform and the Rust decision functions in ./index_bg.js and decides nothing itself: one
// synchronous call per request (`decide`) and one per origin attempt (`conclude`).
import * as harbour from "./index_bg.js";
import wasmModule from "./index.wasm";
$SNIPPET_JS_IMPORTS

const instance = new WebAssembly.Instance(wasmModule, {
  "./index_bg.js": harbour,
  $SNIPPET_WASM_IMPORTS
});
harbour.__wbg_set_wasm(instance.exports);
instance.exports.__wbindgen_start?.();

// Must match src/edge/mod.rs.
const BODY_UNREAD = 0;
const BODY_BYTES = 1;
const BODY_TOO_LARGE = 2;
const BODY_INCOMPLETE = 3;
const EMPTY = new Uint8Array(0);

let maxBodyBytes = -1; // -1 until this isolate has read its environment
// Set after a WebAssembly trap: the module's state can no longer be trusted.
let poisoned = false;

function configure(env) {
  // Two independent seeds (the limiter's hash key, request ids) from the platform's CSPRNG.
  const answer = JSON.parse(harbour.configure(env, crypto.getRandomValues(new Uint8Array(16))));
  maxBodyBytes = answer.ok ? answer.max_body_bytes : 0;
  if (!answer.ok) console.error(JSON.stringify({ msg: "harbour.config_invalid", error: answer.error }));
  if (answer.candidate_error) console.error(JSON.stringify({ msg: "harbour.candidate_invalid", error: answer.candidate_error }));
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

// An answer is `META \n LOG \n BODY` (see `decide` in src/edge/mod.rs).
function read(answer) {
  const metaEnd = answer.indexOf("\n");
  const logEnd = answer.indexOf("\n", metaEnd + 1);
  if (metaEnd < 0 || logEnd < 0) throw new Error("malformed decision");
  return [JSON.parse(answer.slice(0, metaEnd)), answer.slice(metaEnd + 1, logEnd), answer.slice(logEnd + 1)];
}

function respond(meta, log, body) {
  if (log !== "") console.log(log);
  if (meta.summary !== undefined) console.log(meta.summary);
  const { status, headers } = meta;
  return new Response(status === 204 || body === "" ? null : body, { status, headers });
}

function emergency(status, code) {
  return new Response(
    JSON.stringify({ type: `urn:harbour:problem:${code}`, title: "Service unavailable", status, code }),
    { status, headers: { "content-type": "application/problem+json", "retry-after": "1" } },
  );
}

async function handle(request, env) {
  if (maxBodyBytes < 0) configure(env);
  const headers = request.headers;
  const method = request.method;
  const [bodyState, bodyBytes] =
    method === "POST" ? await readBody(request, maxBodyBytes) : [BODY_UNREAD, EMPTY];
  let [meta, log, body] = read(
    harbour.decide(
      method,
      request.url,
      headers.get("content-type") ?? undefined,
      bodyState,
      bodyBytes,
      request.cf?.country ?? undefined,
      headers.get("cf-connecting-ip") ?? undefined,
      headers.get("idempotency-key") ?? undefined,
      headers.get("origin") ?? undefined,
      Date.now(),
    ),
  );
  if (meta.url === undefined) return respond(meta, log, body);
  // The headers and body of the first attempt serve every attempt.
  const forwardHeaders = meta.headers;
  const forwardBody = body;
  for (;;) {
    const [status, answer] = await attempt(meta.url, meta.timeout_ms, forwardHeaders, forwardBody);
    [meta, log, body] = read(harbour.conclude(meta.ticket, status, answer, Date.now()));
    if (meta.url === undefined) return respond(meta, log, body);
  }
}

export default {
  async fetch(request, env) {
    if (poisoned) return emergency(503, "edge_restarting");
    try {
      return await handle(request, env);
    } catch (error) {
      if (error instanceof WebAssembly.RuntimeError) poisoned = true;
      console.error(JSON.stringify({ msg: "harbour.edge_failure", error: String(error) }));
      return emergency(poisoned ? 503 : 500, poisoned ? "edge_restarting" : "internal_error");
    }
  },
};
