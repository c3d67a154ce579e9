// The peer for the benchmark: harbour's whole job written in plain JavaScript, as a careful
// engineer would write it for Workers, reading the same policy file harbour compiles in (a JSON
// module here). It answers the same requests with the same statuses, problem codes, headers and
// body shapes, and forwards the same signed body, which the reference origins verify and store:
// - routes, 404/405, the form description (its fields, the campaign's notice with the version of
//   each locale, where an entry is stored for each country the visitor may declare, and a
//   proof-of-work challenge of its own, MACed with HARBOUR_FORM_KEY), CORS and the preflight;
//   `x-content-type-options: nosniff` on every answer;
// - content type (415) and size (413) before the body is read;
// - the proof of work (`Harbour-Challenge: {token}.{nonce}` covering the Idempotency-Key),
//   checked before the body is parsed, length, shape and campaign before the MAC: 400
//   challenge_required, 403 challenge_expired / challenge_invalid, in the order of
//   crates/core/src/phase/challenge.rs;
// - the isolate's memory of solved challenges (crates/core/src/replays.rs): a resend while the
//   first is under way is 503 entry_in_progress, after it was accepted the first receipt again
//   (`Idempotent-Replayed: true`, no binding call, no origin), with another body 409
//   idempotency_key_reused; forgotten when the first did not end accepted; bounded;
// - the field rules (every error at once, 422), the notice the visitor was shown
//   (`Harbour-Notice: {locale}.{version}`, 422 notice_required / notice_outdated), the residency
//   rule incl. `on_conflict`, `declared_move` (a declared country moves an entry to another
//   region only with `confirm_region` naming it, 422 storage_unconfirmed otherwise) and the
//   policy's signal fallbacks;
// - GCRA limits in Maps: per client (IPv4 / IPv6 /64, per campaign and surge window), per
//   campaign and per region budget, charged to all or none; then the location's rate-limiting
//   binding (HARBOUR_RL_<limit>_PER_<period>S, keyed by campaign, window and an HMAC of the
//   client under the form key, never the address) with a 500 ms timeout and the campaign's
//   fail_open / fail_closed, the isolate's charges given back on a refusal;
// - the honeypot (a decoy receipt of the same shape, sent after about as long as a real forward
//   takes here, and remembered like one), the idempotency key, the HMAC signature over harbour's
//   canonical request, the notice in the forwarded entry, a timeout per attempt under one
//   deadline, failover inside the region only, and a 202 with the same headers and body.
// Tuned for the platform: SHA-256 and HMAC in JS (measured cheaper here than five crypto.subtle
// promises per submission), routes remembered per URL, regexes and per-limit strings built once
// per isolate, random bytes from a pool, no per-request closures on the success path.
// Left out, because a plain worker of this kind would not have them or the bench does not reach
// them: the origins' circuit breakers and shedding (503 region_busy before any attempt; an
// origin's `origin_busy` answer is passed on as 503 origins_busy with the wait it asked for),
// the shadow evaluation of a candidate policy, log summaries (it logs 5xx and an unavailable
// binding only; request ids are random rather than from a seeded counter), the recovery
// from a trapped module, duplicate JSON keys (JSON.parse keeps the last one; harbour answers 400
// duplicate_key) and `1.0` as an integer (JSON.parse cannot tell it from `1`), a region's own ingress
// hostname (421 wrong_ingress; the bench's policy names none, so every choice is sent to the
// campaign's path, as the description says), the line and
// column in a JSON syntax error's detail, the content-derived idempotency key (unreachable:
// the proof of work requires the client's key), and a body sent without Content-Length that is
// too large or incomplete (harbour reads every body before the proof of work and answers 413 or
// 400 first; the peer reads none before the proof of work passed).
import policy from "./policy.json";

const ATTEMPT_TIMEOUT_MS = 3000;
const DEADLINE_MS = 8000;
const MIN_ATTEMPT_MS = 200;
const CONSULT_TIMEOUT_MS = 500;
const UNAVAILABLE_RETRY_S = 5;
const BUSY_DEFAULT_MS = 1000;
const MAX_CLIENT_KEYS = 200_000;
const MAX_KEYS = 64;
// A campaign id (64), an expiry (20 digits), a difficulty (3), a salt (32), a MAC (32), a nonce
// (16) and five dots: anything longer is refused before any hashing.
const MAX_SOLUTION_LENGTH = 64 + 20 + 3 + 32 + 32 + 16 + 5;
const DEFAULT_MAX_LENGTH = 200;
const DEFAULT_CHALLENGE = { difficulty_bits: 20, valid_ms: 30 * 60 * 1000 };
const LOCALES = ["en", "zh-CN", "ru", "it", "de", "fr"];
const PROBLEM = "application/problem+json";
const ASSIGNED = ("AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ " +
  "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH " +
  "ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE " +
  "IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC " +
  "MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE " +
  "PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV " +
  "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE " +
  "YT ZA ZM ZW").split(" ");
const COUNTRIES = new Set(ASSIGNED);
const FORBIDDEN = /[\p{Cc}\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF\uFFF9-\uFFFB]/u;
const KEY_SHAPE = /^[A-Za-z0-9_-]{16,64}$/;
const HEX = /^[0-9a-f]+$/;
const EMAIL_LOCAL = /^(?:[^\x00-\x7f]|[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.])+$/u;
const LABEL = /^(?:[A-Za-z0-9-]|[^\x00-\x7f\s])+$/u;
const RATE_EXPOSED = "retry-after, ratelimit, ratelimit-policy, idempotency-key, idempotent-replayed";
const NOSNIFF = "nosniff";
const CONFIRM_REGION = "confirm_region";
const CLIENT_DIGEST_PREFIX = "harbour-client-v1\n";
// Solutions remembered: at most this many, each at most as long as a challenge can be valid, and
// counted as under way until past its forward's deadline.
const MAX_SEEN = 50_000;
const SEEN_FOR_MS = 24 * 60 * 60 * 1000;
const IN_FLIGHT_MS = DEADLINE_MS + 2000;
const FIRST_FORWARD_MS = 40;
const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const HEX_BYTE = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
// Hex of the first `count` bytes (all when omitted).
const hex = (buffer, count) => {
  const bytes = new Uint8Array(buffer);
  const n = count ?? bytes.length;
  let out = "";
  for (let i = 0; i < n; i++) out += HEX_BYTE[bytes[i]];
  return out;
};
// Every regular expression once per isolate: a literal in a function is a new object per call.
const ROUTE = /^\/api\/campaigns\/(?:([^/]+)\/submissions|([^/]+))$/;
const DIGITS = /^\d{1,20}$/;
const BITS = /^\d{1,3}$/;
const RECEIPT_ID = /^[A-Za-z0-9_-]{1,100}$/;
const ASCII = /^[\x00-\x7f]*$/;
const IP_CHARS = /^[0-9A-Fa-f:.]+$/;
const DOUBLE_COLON = /::/g;
const GROUP = /^[0-9A-Fa-f]{1,4}$/;
const ALL_DIGITS = /^\d+$/;
const UPPER = /[A-Z]+/g;
const SIGNED_INTEGER = /^[+-]?\d+$/;
const ALPHA2 = /^[A-Za-z]{2}$/;
const LOCALE_TAG = /^[A-Za-z0-9-]*$/;
const NO_SLASHES_AT_END = /\/+$/;
const LIST = /[ ,]+/;
// Text to hash or sign, written into one reused buffer (the hashes read it before they return).
let scratch = new Uint8Array(1024);
function utf8(text) {
  if (text.length * 3 > scratch.length) scratch = new Uint8Array(text.length * 3);
  return scratch.subarray(0, encoder.encodeInto(text, scratch).written);
}
// SHA-256 and HMAC-SHA-256 in JS (FIPS 180-4, RFC 2104): synchronous, so a submission's five
// hashes cost no promise, no await and no copy into the platform each. An HMAC key is kept as
// the hash states after its inner and outer pad blocks.
const IV = Int32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);
const K = Int32Array.of(
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
  0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
  0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
  0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
  0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2);
const W = new Int32Array(64);
const H = new Int32Array(8);
const tail = new Uint8Array(128);

// The 64-byte blocks of bytes[at..end] into the state h.
function blocks(h, bytes, at, end) {
  let h0 = h[0], h1 = h[1], h2 = h[2], h3 = h[3], h4 = h[4], h5 = h[5], h6 = h[6], h7 = h[7];
  for (; at < end; at += 64) {
    for (let i = 0, j = at; i < 16; i++, j += 4) W[i] = (bytes[j] << 24) | (bytes[j + 1] << 16) | (bytes[j + 2] << 8) | bytes[j + 3];
    for (let i = 16; i < 64; i++) {
      const x = W[i - 15], y = W[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
    }
    let a = h0, b = h1, c = h2, d = h3, e = h4, f = h5, g = h6, k = h7;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      const t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0; h1 = (h1 + b) | 0; h2 = (h2 + c) | 0; h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0; h5 = (h5 + f) | 0; h6 = (h6 + g) | 0; h7 = (h7 + k) | 0;
  }
  h[0] = h0; h[1] = h1; h[2] = h2; h[3] = h3; h[4] = h4; h[5] = h5; h[6] = h6; h[7] = h7;
}

// The digest of `bytes` hashed on from `start`, a state after `before` bytes (whole blocks).
function sha256(bytes, start = IV, before = 0) {
  H.set(start);
  const full = bytes.length - (bytes.length % 64);
  blocks(H, bytes, 0, full);
  const rest = bytes.length - full;
  tail.fill(0);
  tail.set(bytes.subarray(full), 0);
  tail[rest] = 0x80;
  const end = rest + 9 > 64 ? 128 : 64;
  const bits = (before + bytes.length) * 8;
  const high = Math.floor(bits / 0x100000000), low = bits >>> 0;
  tail[end - 8] = high >>> 24; tail[end - 7] = high >>> 16; tail[end - 6] = high >>> 8; tail[end - 5] = high;
  tail[end - 4] = low >>> 24; tail[end - 3] = low >>> 16; tail[end - 2] = low >>> 8; tail[end - 1] = low;
  blocks(H, tail, 0, end);
  const out = new Uint8Array(32);
  for (let i = 0; i < 8; i++) {
    out[4 * i] = H[i] >>> 24; out[4 * i + 1] = H[i] >>> 16; out[4 * i + 2] = H[i] >>> 8; out[4 * i + 3] = H[i];
  }
  return out;
}

function hmacKey(secret) {
  const raw = encoder.encode(secret);
  const key = new Uint8Array(64);
  key.set(raw.length > 64 ? sha256(raw) : raw);
  const state = (pad) => {
    const block = key.map((b) => b ^ pad);
    const h = IV.slice();
    blocks(h, block, 0, 64);
    return h;
  };
  return { inner: state(0x36), outer: state(0x5c) };
}

const hmac = (key, bytes) => sha256(sha256(bytes, key.inner, 64), key.outer, 64);

// Random bytes as hex from a pool refilled 4 KB at a time: one platform call per 512 ids.
const pool = new Uint8Array(4096);
let poolAt = pool.length;
function randomHex(count) {
  if (poolAt + count > pool.length) {
    crypto.getRandomValues(pool);
    poolAt = 0;
  }
  let out = "";
  for (const end = poolAt + count; poolAt < end; poolAt++) out += HEX_BYTE[pool[poolAt]];
  return out;
}
function randomWord() {
  if (poolAt + 4 > pool.length) {
    crypto.getRandomValues(pool);
    poolAt = 0;
  }
  const word = (pool[poolAt] | (pool[poolAt + 1] << 8) | (pool[poolAt + 2] << 16) | (pool[poolAt + 3] << 24)) >>> 0;
  poolAt += 4;
  return word;
}
const seconds = (ms) => Math.max(1, Math.ceil(ms / 1000));

// The policy, indexed once per isolate.
const regions = policy.regions.map((r, index) => ({ ...r, index, law: r.id !== policy.rest_of_world, quotedId: JSON.stringify(r.id) }));
const regionById = new Map(regions.map((r) => [r.id, r]));
const regionOf = new Map();
for (const r of regions) for (const c of r.countries) regionOf.set(c, r);
const restOfWorld = regionById.get(policy.rest_of_world);
const declaredMoves = (policy.declared_move ?? "confirm") === "confirm";
// A country that stands for each region when the page asks what declaring it would do.
for (const r of regions) r.example = ASSIGNED.find((c) => (regionOf.get(c) ?? restOfWorld) === r) ?? null;
const quota = (q) => ({ burst: q.burst, window: q.window_ms, tolerance: q.burst * q.window_ms });
const campaigns = new Map(policy.campaigns.map((c) => {
  const perClient = quota(c.limits.per_client);
  const challenge = c.challenge ?? DEFAULT_CHALLENGE;
  return [c.id, {
    ...c,
    fieldByName: new Map(c.fields.map((f, index) => [f.name, Object.assign(f, { index, quotedName: `${JSON.stringify(f.name)}:` })])),
    sortedFields: [...c.fields].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    signal: c.fields.find((f) => f.residency_signal)?.name,
    perClient,
    campaignQuota: quota(c.limits.campaign),
    failClosed: c.limits.on_location_unavailable === "fail_closed",
    challenge,
    windows: (c.surge_windows ?? []).map((w, i) => ({
      id: w.id, period: i + 1, start: Date.parse(w.start), end: Date.parse(w.end), perClient: quota(w.per_client),
      failClosed: (w.on_location_unavailable ?? c.limits.on_location_unavailable) === "fail_closed",
      bits: w.difficulty_bits ?? challenge.difficulty_bits,
    })),
    campaignCell: { tat: null },
    endsMs: Date.parse(c.ends),
    challengeUrl: `/api/campaigns/${c.id}`,
    quotedId: JSON.stringify(c.id),
    // The notice version of each locale, filled in by `setup`.
    versions: new Map(),
  }];
}));
const regionCells = regions.map(() => ({ tat: null }));
for (const r of regions) r.budget &&= quota(r.budget);
// Per limit in force, what a request under it reads: the binding's name, the location's
// scope and the rate headers' policy parts.
function limitsOf(campaign, force) {
  const q = force.perClient;
  force.binding = bindingName(q);
  force.scope = force.id === null ? campaign.id : `${campaign.id}@${force.id}`;
  const location = force.binding !== "HARBOUR_RL_INEXPRESSIBLE" ? `, "location";q=${q.burst};w=${q.window / 1000}` : "";
  force.clientPolicy = `"client";q=${q.burst};w=${seconds(q.window)}`;
  force.admittedPolicy = force.clientPolicy + location;
  return force;
}
for (const campaign of campaigns.values()) {
  campaign.ownLimits = limitsOf(campaign, {
    id: null, period: 0, perClient: campaign.perClient, failClosed: campaign.failClosed, bits: campaign.challenge.difficulty_bits,
  });
  for (const w of campaign.windows) limitsOf(campaign, w);
}

// The limits in force for a campaign at `now`: its own or a surge window's.
function inForce(campaign, now) {
  const windows = campaign.windows;
  for (let i = 0; i < windows.length; i++) if (windows[i].start <= now && now < windows[i].end) return windows[i];
  return campaign.ownLimits;
}

function bindingName(q) {
  const period = q.window / 1000;
  return q.window % 1000 === 0 && (period === 10 || period === 60) ? `HARBOUR_RL_${q.burst}_PER_${period}S` : "HARBOUR_RL_INEXPRESSIBLE";
}

function problem(status, code, title, detail, extra, headers) {
  const body = JSON.stringify({ type: `urn:harbour:problem:${code}`, title, status, code, detail, ...extra });
  return new Response(body, { status, headers: { "content-type": PROBLEM, "cache-control": "no-store", "x-content-type-options": NOSNIFF, ...headers } });
}

// The 202, its headers written straight into one object: the rate headers (`rate` may be null)
// and the CORS ones (none when `cors` is NO_CORS) after the fixed ones.
function accepted(id, region, key, replayed, rate, cors) {
  const body = `{"status":"accepted","receipt":{"id":${JSON.stringify(id)},"region":${JSON.stringify(region)}},"idempotency_key":${JSON.stringify(key)}}`;
  const h = { "content-type": "application/json", "cache-control": "no-store", "idempotency-key": key, "x-content-type-options": NOSNIFF };
  if (replayed) h["idempotent-replayed"] = "true";
  if (rate !== null) {
    h["ratelimit-policy"] = rate.policy;
    h.ratelimit = rate.limit;
  }
  if (cors !== NO_CORS) {
    h["access-control-allow-origin"] = cors["access-control-allow-origin"];
    h["access-control-expose-headers"] = RATE_EXPOSED;
    h.vary = "origin";
  }
  return new Response(body, { status: 202, headers: h });
}

// Secrets imported once per isolate (the environment is only known at the first request).
let secrets = null;
async function setup(env) {
  const targets = [];
  for (const region of regions) {
    const name = region.id.toUpperCase().replaceAll("-", "_");
    const urls = (env[`HARBOUR_ORIGINS_${name}`] ?? "").split(LIST).filter(Boolean)
      .map((base) => base.replace(NO_SLASHES_AT_END, "") + "/v1/submissions");
    if (!urls.length) throw new Error(`HARBOUR_ORIGINS_${name} is empty`);
    targets.push({ key: hmacKey(env[`HARBOUR_KEY_${name}`]), urls, path: new URL(urls[0]).pathname });
  }
  bodySeed = crypto.getRandomValues(new Uint32Array(1))[0];
  for (const campaign of campaigns.values()) {
    for (const locale of LOCALES) campaign.versions.set(locale, await noticeVersion(campaign, locale));
  }
  const pageOrigins = new Set((env.HARBOUR_PAGE_ORIGINS ?? "").split(LIST).filter(Boolean));
  return { form: hmacKey(env.HARBOUR_FORM_KEY), targets, pageOrigins };
}

const purposeIn = (campaign, locale) => campaign.texts?.[locale]?.notice?.purpose ?? campaign.notice.purpose;
const labelIn = (campaign, field, locale) => campaign.texts?.[locale]?.labels?.[field.name] ?? field.label;

// The version of a campaign's notice in `locale` (crates/policy/src/notice.rs): the first 16
// bytes of SHA-256 over the texts shown in that locale, each with its length as a u64 before it.
async function noticeVersion(campaign, locale) {
  const parts = [
    "harbour-notice", "v1", "locale", locale, "controller", campaign.notice.controller, "contact", campaign.notice.contact,
    "purpose", purposeIn(campaign, locale), "link", campaign.notice.link,
    "retention_days", String(campaign.retention.days_after_end), "ends_ms", String(campaign.endsMs),
  ];
  for (const f of campaign.fields) if (f.type === "bool") parts.push(f.name, labelIn(campaign, f, locale));
  const texts = parts.map((p) => encoder.encode(p));
  const bytes = new Uint8Array(texts.reduce((n, t) => n + 8 + t.length, 0));
  let at = 0;
  for (const t of texts) {
    new DataView(bytes.buffer).setBigUint64(at, BigInt(t.length), true);
    bytes.set(t, at + 8);
    at += 8 + t.length;
  }
  return hex(sha256(bytes), 16);
}

// GCRA in integer units (ms × burst) counted from the isolate's first request, exact like
// harbour's u128 arithmetic while it stays below 2^53 (years).
let epoch = -1;
// The cell's next theoretical arrival time when admitted (never negative), or minus the wait in ms.
function gcra(q, tat, now) {
  const nowU = (now - epoch) * q.burst;
  const next = Math.max(tat ?? nowU, nowU) + q.window;
  const ahead = next - nowU;
  return ahead > q.tolerance ? -Math.ceil((ahead - q.tolerance) / q.burst) : next;
}
const refund = (q, tat, now) => Math.max(tat - q.window, (now - epoch) * q.burst);
const clients = new Map(); // key → [tat, expires ms]

// The client's, the campaign's and the region's limits, charged to all or none: the grant, or
// the refusal of the layer that waits longest (of equal waits, the later layer).
function admit(campaign, region, client, now) {
  const force = inForce(campaign, now);
  const slot = `${campaign.id}|${force.period}|${client}`;
  const cell = clients.get(slot);
  const q = force.perClient;
  const own = gcra(q, cell === undefined ? undefined : cell[0], now);
  const shared = gcra(campaign.campaignQuota, campaign.campaignCell.tat, now);
  const budget = region.budget;
  const regional = budget ? gcra(budget, regionCells[region.index].tat, now) : 0;
  if (own < 0 || shared < 0 || regional < 0) {
    const refusal = { refusal: true, layer: "client", q, wait: own < 0 ? -own : 0 };
    if (shared < 0 && -shared >= refusal.wait) [refusal.layer, refusal.q, refusal.wait] = ["campaign", campaign.campaignQuota, -shared];
    if (regional < 0 && -regional >= refusal.wait) [refusal.layer, refusal.q, refusal.wait] = ["region", budget, -regional];
    return refusal;
  }
  const ahead = own - (now - epoch) * q.burst;
  const reset = Math.ceil(ahead / q.burst);
  if (cell !== undefined) {
    // In place: the Map keeps a key where it was first set, as set() on it would.
    cell[0] = own;
    cell[1] = now + reset;
  } else {
    if (clients.size >= MAX_CLIENT_KEYS) {
      for (const [k, [, expires]] of clients) if (expires <= now) clients.delete(k);
      if (clients.size >= MAX_CLIENT_KEYS) clients.delete(clients.keys().next().value);
    }
    clients.set(slot, [own, now + reset]);
  }
  campaign.campaignCell.tat = shared;
  if (budget) regionCells[region.index].tat = regional;
  return { refusal: false, force, slot, client, remaining: Math.floor((q.tolerance - ahead) / q.window), reset };
}

function giveBack(campaign, region, grant, now) {
  const entry = clients.get(grant.slot);
  if (entry) entry[0] = refund(grant.force.perClient, entry[0], now);
  campaign.campaignCell.tat = refund(campaign.campaignQuota, campaign.campaignCell.tat, now);
  if (region.budget) regionCells[region.index].tat = refund(region.budget, regionCells[region.index].tat, now);
}

function rateLimited(layer, q, waitMs, cors) {
  const s = seconds(waitMs);
  return problem(429, "rate_limited", "Too many submissions", `please wait ${s} s and try again`, { retry_after_s: s }, {
    "retry-after": String(s), "ratelimit-policy": `"${layer}";q=${q.burst};w=${seconds(q.window)}`, ratelimit: `"${layer}";r=0;t=${s}`, ...cors,
  });
}

// The location's binding: admitted, refused, or unavailable (a throw, or no answer in time).
const SILENT = {};
async function consultLocation(env, grant) {
  // 128 bits of HMAC under the form key: the same client is the same key in every location, and
  // the platform's counter never sees an address.
  const digest = hmac(secrets.form, utf8(CLIENT_DIGEST_PREFIX + grant.client));
  const key = `${grant.force.scope} ${hex(digest, 16)}`;
  let timer;
  try {
    const silence = new Promise((resolve) => { timer = setTimeout(resolve, CONSULT_TIMEOUT_MS, SILENT); });
    const o = await Promise.race([env[grant.force.binding].limit({ key }), silence]);
    return o?.success === true ? "admitted" : o?.success === false ? "refused" : "unavailable";
  } catch {
    return "unavailable";
  } finally {
    clearTimeout(timer);
  }
}

// IPv4 as dotted text, IPv6 as its /64, an IPv4-mapped IPv6 as the IPv4; "unknown" otherwise.
const V4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
function clientText(raw) {
  const ip = raw?.trim();
  if (!ip) return "unknown";
  if (V4.test(ip)) return ip;
  if (!ip.includes(":") || !IP_CHARS.test(ip) || (ip.match(DOUBLE_COLON)?.length ?? 0) > 1) return "unknown";
  let [head, tail] = ip.includes("::") ? ip.split("::") : [ip, null];
  const parts = (s) => (s ? s.split(":") : []);
  let h = parts(head), t = parts(tail ?? "");
  const last = (tail === null ? h : t).at(-1) ?? "";
  let v4 = null;
  if (last.includes(".")) {
    if (!V4.test(last)) return "unknown";
    v4 = last;
    (tail === null ? h : t).pop();
  }
  const groupsWanted = v4 ? 6 : 8;
  const fill = groupsWanted - h.length - t.length;
  if ((tail === null && fill !== 0) || (tail !== null && fill < 1)) return "unknown";
  const groups = [...h, ...Array(tail === null ? 0 : fill).fill("0"), ...t];
  if (!groups.every((g) => GROUP.test(g))) return "unknown";
  const n = groups.map((g) => parseInt(g, 16));
  // An IPv4-mapped address (::ffff:a.b.c.d, also written in hex) is its IPv4 client.
  if (n.slice(0, 5).every((x) => x === 0) && n[5] === 0xffff) {
    return v4 ?? [n[6] >> 8, n[6] & 255, n[7] >> 8, n[7] & 255].join(".");
  }
  return n.slice(0, 4).map((x) => x.toString(16)).join(":") + "::/64";
}

const utf8Length = (s) => (ASCII.test(s) ? s.length : encoder.encode(s).length);
// Code points, counted only when UTF-16 units could exceed them (never more units than points).
function codePoints(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xdc00 || c > 0xdfff || i === 0 || (s.charCodeAt(i - 1) & 0xfc00) !== 0xd800) n++;
  }
  return n;
}
const blank = (v) => v === null || v === undefined || (typeof v === "string" && v.trim() === "");

function fieldError(field, code, detail) {
  return { field: [...field].slice(0, 64).join(""), code, detail };
}

function cleanText(f, value, errors) {
  const t = value.trim();
  if (FORBIDDEN.test(t)) return void errors.push(fieldError(f.name, "invalid_characters", "remove control or invisible formatting characters"));
  const max = f.max_length ?? DEFAULT_MAX_LENGTH;
  if (t.length > max && codePoints(t) > max) return void errors.push(fieldError(f.name, "too_long", `use at most ${max} characters`));
  return t;
}

function normaliseEmail(t) {
  const at = t.lastIndexOf("@");
  if (at < 0) return undefined;
  const local = t.slice(0, at), domain = t.slice(at + 1);
  if (!local || utf8Length(local) > 64 || utf8Length(domain) > 253 || utf8Length(t) > 254) return undefined;
  if (!EMAIL_LOCAL.test(local) || FORBIDDEN.test(local) || local.startsWith(".") || local.endsWith(".") || local.includes("..")) return undefined;
  const labels = domain.split(".");
  if (labels.length < 2) return undefined;
  for (const l of labels) {
    if (!l || utf8Length(l) > 63 || l.startsWith("-") || l.endsWith("-") || !LABEL.test(l)) return undefined;
  }
  const tld = labels[labels.length - 1];
  if ((tld.length < 4 && codePoints(tld) < 2) || ALL_DIGITS.test(tld)) return undefined;
  // Only ASCII letters are lowered (toLowerCase would lower others too).
  return `${local}@${ASCII.test(domain) ? domain.toLowerCase() : domain.replace(UPPER, lower)}`;
}

const lower = (s) => s.toLowerCase();

const TRUE_WORDS = new Map([["true", true], ["on", true], ["1", true], ["yes", true], ["false", false], ["off", false], ["0", false], ["no", false]]);

// One present, non-blank value against its field; undefined (and an error pushed) when refused.
function checkField(f, value, errors) {
  const wrong = () => void errors.push(fieldError(f.name, "invalid_type", `expected a ${f.type} value`));
  switch (f.type) {
    case "string":
      return typeof value === "string" ? cleanText(f, value, errors) : wrong();
    case "email": {
      if (typeof value !== "string") return wrong();
      const t = cleanText(f, value, errors);
      if (t === undefined) return undefined;
      const email = normaliseEmail(t);
      if (email === undefined) errors.push(fieldError(f.name, "invalid_email", "enter an address like name@example.com"));
      return email;
    }
    case "enum": {
      if (typeof value !== "string") return wrong();
      const t = value.trim();
      if (f.values.includes(t)) return t;
      return void errors.push(fieldError(f.name, "not_allowed", `choose one of: ${f.values.join(", ")}`));
    }
    case "bool": {
      const flag = typeof value === "boolean" ? value : typeof value === "string" ? TRUE_WORDS.get(value.trim()) : undefined;
      if (flag === undefined) return wrong();
      if (!flag && f.must_be_true) return void errors.push(fieldError(f.name, "must_be_true", "this box must be ticked to take part"));
      return flag;
    }
    case "integer": {
      const n = typeof value === "number" ? (Number.isInteger(value) ? value : NaN)
        : typeof value === "string" && SIGNED_INTEGER.test(value.trim()) ? Number(value.trim()) : NaN;
      if (!Number.isSafeInteger(n)) return wrong();
      const min = f.min ?? null, max = f.max ?? null;
      if ((min !== null && n < min) || (max !== null && n > max)) {
        const range = min !== null && max !== null ? `between ${min} and ${max}` : min !== null ? `at least ${min}` : `at most ${max}`;
        return void errors.push(fieldError(f.name, "out_of_range", `enter a number ${range}`));
      }
      return n;
    }
    case "country": {
      if (typeof value !== "string") return wrong();
      const code = value.trim();
      if (ALPHA2.test(code) && COUNTRIES.has(code.toUpperCase())) return code.toUpperCase();
      return void errors.push(fieldError(f.name, "invalid_country", "choose a country (ISO 3166-1 alpha-2 code)"));
    }
  }
  return wrong();
}

// The body as key/value pairs, or a 400 problem [code, detail].
function parseBody(json, bytes) {
  let text;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return { error: ["invalid_utf8", "the body is not valid UTF-8"] };
  }
  let pairs;
  if (json) {
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      return { error: ["malformed_body", "the body is not valid JSON"] };
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) return { error: ["malformed_body", "the body must be one JSON object"] };
    // The object itself, not its entries as arrays: validate reads its members in order.
    let count = 0;
    for (const _ in value) count++;
    if (count > MAX_KEYS) return { error: ["too_many_keys", `a submission has at most ${MAX_KEYS} keys`] };
    return { object: value };
  } else {
    pairs = [];
    for (const part of text.split("&")) {
      if (!part) continue;
      const eq = part.indexOf("=");
      try {
        pairs.push([eq < 0 ? part : part.slice(0, eq), eq < 0 ? "" : part.slice(eq + 1)].map((s) => decodeURIComponent(s.replaceAll("+", " "))));
      } catch {
        return { error: ["malformed_body", "the form encoding has a broken percent escape"] };
      }
    }
    const seen = new Set();
    for (const [k] of pairs) {
      if (seen.has(k)) return { error: ["duplicate_key", `the key ${JSON.stringify([...k].slice(0, 64).join(""))} appears more than once`] };
      seen.add(k);
    }
  }
  if (pairs.length > MAX_KEYS) return { error: ["too_many_keys", `a submission has at most ${MAX_KEYS} keys`] };
  return { pairs };
}

// The fields against the campaign's rules and the notice against its current version: every
// error at once, the notice's last.
// One member of the body: a field's value, the honeypot, the confirmed region, or an error.
function take(campaign, entry, key, value) {
  if (key === campaign.honeypot) entry.honeypot ||= !blank(value);
  // A reserved member, not a field: the region the visitor confirmed storage in.
  else if (key === CONFIRM_REGION) entry.confirmed = typeof value === "string" ? value : null;
  else {
    const f = campaign.fieldByName.get(key);
    if (f !== undefined) entry.values[f.index] = value;
    else entry.errors.push(fieldError(key, "unknown_field", "this field is not part of the form"));
  }
}

function validate(campaign, parsed, noticeHeader) {
  const entry = { errors: [], values: new Array(campaign.fields.length), declared: null, honeypot: false, confirmed: null, notice: null, fieldsJson: "" };
  if (parsed.object !== undefined) {
    const object = parsed.object;
    for (const key in object) take(campaign, entry, key, object[key]);
  } else {
    for (const [key, value] of parsed.pairs) take(campaign, entry, key, value);
  }
  const { errors, values } = entry;
  const fields = campaign.fields;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    const value = values[i];
    if (blank(value)) {
      values[i] = undefined;
      if (f.required) errors.push(fieldError(f.name, "required", "this field is required"));
      continue;
    }
    const clean = checkField(f, typeof value === "object" ? Symbol.for("nested") : value, errors);
    values[i] = clean;
    if (clean !== undefined && f.residency_signal) entry.declared = clean;
  }
  const notice = noticeShown(campaign, noticeHeader);
  if (notice.error) errors.push(notice.error);
  entry.notice = notice;
  if (errors.length === 0) {
    // The fields as the forwarded JSON object, keys sorted (harbour's canonical order).
    let json = "{";
    for (const f of campaign.sortedFields) {
      const clean = values[f.index];
      if (clean === undefined) continue;
      json += (json.length > 1 ? "," : "") + f.quotedName + JSON.stringify(clean);
    }
    entry.fieldsJson = json + "}";
  }
  return entry;
}

// The notice a submission says its visitor was shown (`{locale}.{version}`), as
// crates/core/src/phase/validate.rs reads it: a locale harbour knows and its current version.
function noticeShown(campaign, header) {
  const dot = header === null ? -1 : header.indexOf(".");
  if (dot < 0) return { error: fieldError("notice", "notice_required", "send Harbour-Notice: {lang}.{version} from the form description") };
  const locale = header.slice(0, dot);
  if (!LOCALES.includes(locale)) return { error: fieldError("notice", "notice_required", "the notice's locale is not one of harbour's") };
  const version = header.slice(dot + 1);
  if (version !== campaign.versions.get(locale)) {
    return { error: fieldError("notice", "notice_outdated", "the notice changed since this form was loaded; show the current one and send again") };
  }
  return { locale, version };
}

function invalidFields(errors, cors) {
  return problem(422, "validation_failed", "The submission has errors", `${errors.length} field(s) need attention`, { errors }, cors);
}

const UNPLACEABLE = { unknown: "country_unknown", tor: "country_anonymised", missing: "country_missing" };

// The residency rule of crates/core/src/phase/residency.rs: a region, or the refusal's code.
function place(platformRaw, declared) {
  const p = platformRaw?.trim() ?? "";
  let signal = null, region;
  if (p === "") signal = "missing";
  else if (p === "T1") signal = "tor";
  // The set holds only assigned two-letter codes in capitals.
  else if (!COUNTRIES.has(p)) signal = "unknown";
  let basis = "platform";
  if (signal) {
    const action = policy.signals[signal];
    if (!action || action === "refuse") return { refused: UNPLACEABLE[signal] };
    region = regionById.get(action.slice("region:".length));
    basis = "policy_fallback";
  } else {
    region = regionOf.get(p) ?? restOfWorld;
  }
  const platform = signal === "unknown" ? "XX" : signal === "tor" ? "T1" : p;
  if (declared) {
    const other = regionOf.get(declared) ?? restOfWorld;
    if (other !== region) {
      const rule = policy.on_conflict ?? "refuse";
      let wins = null;
      if (rule === "stricter" && other.strictness > region.strictness) wins = "declared_stricter";
      else if (rule === "refuse") {
        if (region.law && other.law) return { refused: "residency_conflict" };
        if (!region.law && other.law) wins = "declared_law";
      }
      // Under `declared_move: platform` a declared country never moves an entry.
      if (wins !== null && declaredMoves) [region, basis] = [other, wins];
    }
  }
  return { region, basis, platform, moved: basis === "declared_stricter" || basis === "declared_law" };
}

// The proof of work, checked as crates/core/src/phase/challenge.rs does; null when it passes, else the answer.
function refuseWork(campaign, cors, status, code, title, detail) {
  return problem(status, code, title, detail, { challenge_url: campaign.challengeUrl }, cors);
}
function invalidWork(campaign, cors, why) {
  return refuseWork(campaign, cors, 403, "challenge_invalid", "Proof of work not accepted", why);
}

async function checkChallenge(form, campaign, solution, key, now, cors) {
  if (solution === null) {
    return refuseWork(campaign, cors, 400, "challenge_required", "Proof of work required",
      "solve the challenge from the form description and send Harbour-Challenge: {token}.{nonce} with your Idempotency-Key");
  }
  // The cheap checks first: length and shape, then the campaign, and only then the MAC.
  const text = solution.trim();
  const parts = text.split(".");
  const [id, expires, bits, salt, mac, nonce] = parts;
  const well = text.length <= MAX_SOLUTION_LENGTH && parts.length === 6 && id.length >= 1 && id.length <= 64 &&
    DIGITS.test(expires) && (expires.length < 20 || expires <= "18446744073709551615") && BITS.test(bits) &&
    Number(bits) <= 255 && salt.length === 32 && HEX.test(salt) && mac.length === 32 && HEX.test(mac) &&
    nonce.length >= 1 && nonce.length <= 16 && HEX.test(nonce);
  if (!well) return invalidWork(campaign, cors, "the Harbour-Challenge header is not {token}.{nonce}");
  if (id !== campaign.id) return invalidWork(campaign, cors, "the challenge was issued for another campaign");
  const signed = `${id}.${expires}.${bits}.${salt}`;
  // The MAC compared as lowercase hex (the shape check above), every character looked at.
  const expected = hex(hmac(form, utf8(`harbour-challenge-v1\n${signed}`)), 16);
  let difference = 0;
  for (let i = 0; i < 32; i++) difference |= expected.charCodeAt(i) ^ mac.charCodeAt(i);
  if (difference !== 0) return invalidWork(campaign, cors, "the challenge was not issued here");
  if (now > Number(expires) || Number(bits) < inForce(campaign, now).bits) {
    return refuseWork(campaign, cors, 403, "challenge_expired", "Challenge expired",
      "fetch a fresh challenge from the form description, solve it and send again with the same Idempotency-Key");
  }
  if (key === null || !KEY_SHAPE.test(key)) {
    return invalidWork(campaign, cors, "a solution covers the Idempotency-Key it was solved for: send that key (16-64 of A-Z a-z 0-9 - _)");
  }
  const digest = sha256(utf8(`${signed}.${mac}\n${key}\n${nonce}`));
  let zeros = 0;
  for (let i = 0; i < digest.length; i++) {
    zeros += Math.clz32(digest[i]) - 24;
    if (digest[i] !== 0) break;
  }
  return zeros >= Number(bits) ? null : invalidWork(campaign, cors, "the solution does not meet the challenge's difficulty for this Idempotency-Key");
}

// The value of `name` in a URL's query when it is made of plain characters (a locale tag), as
// crates/core/src/phase/request.rs reads it: the first pair with that name, not decoded.
function queryParam(url, name) {
  const q = url.indexOf("?");
  if (q < 0) return null;
  const hash = url.indexOf("#", q);
  for (const pair of url.slice(q + 1, hash < 0 ? url.length : hash).split("&")) {
    const eq = pair.indexOf("=");
    if (eq >= 0 && pair.slice(0, eq) === name) {
      const value = pair.slice(eq + 1);
      return LOCALE_TAG.test(value) ? value : null;
    }
  }
  return null;
}

// Where an entry is stored for each country the visitor may declare, worked out by the residency
// rule for this visitor's platform country: per region, its countries and what declaring one does.
function storage(platformRaw, locale, submit) {
  const choices = [];
  for (const r of regions) {
    if (r.example === null) continue;
    const placed = place(platformRaw, r.example);
    const then = placed.refused
      ? { refused: placed.refused }
      : { region: placed.region.id, name: placed.region.names?.[locale] ?? placed.region.name, confirm: placed.moved, submit };
    choices.push({ region: r.id, countries: r.countries, then });
  }
  return { choices, rest_of_world: policy.rest_of_world };
}

async function describe(form, campaign, request, now) {
  const asked = queryParam(request.url, "lang") ?? "en";
  const lang = LOCALES.find((l) => l.toLowerCase() === asked.toLowerCase()) ?? "en";
  const texts = campaign.texts?.[lang];
  const fields = campaign.fields.map((f) => {
    const out = { name: f.name, label: texts?.labels?.[f.name] ?? f.label, type: f.type, required: !!f.required };
    out.input = { string: "text", email: "email", enum: "select", bool: "checkbox", integer: "number", country: "select" }[f.type];
    if (f.type === "string" || f.type === "email") out.max_length = f.max_length ?? DEFAULT_MAX_LENGTH;
    if (f.type === "email") out.autocomplete = "email";
    if (f.type === "country") Object.assign(out, { autocomplete: "country", values: ASSIGNED, value_names: "region" });
    if (f.type === "enum") out.values = f.values;
    if (f.type === "integer") Object.assign(out, { min: f.min ?? null, max: f.max ?? null });
    if (f.must_be_true) out.must_be_true = true;
    if (f.consent === "marketing") out.consent = "marketing";
    if (f.residency_signal) out.residency_signal = true;
    return out;
  });
  const bits = inForce(campaign, now).bits;
  const salt = randomHex(16);
  const signed = `${campaign.id}.${now + campaign.challenge.valid_ms}.${bits}.${salt}`;
  const mac = hex(hmac(form, utf8(`harbour-challenge-v1\n${signed}`)), 16);
  const notice = campaign.notice;
  const body = {
    id: campaign.id, lang, title: texts?.title ?? campaign.title, intro: texts?.intro ?? campaign.intro ?? null, fields,
    honeypot: campaign.honeypot ?? null, submit: `/api/campaigns/${campaign.id}/submissions`,
    notice: {
      controller: notice.controller, contact: notice.contact, purpose: purposeIn(campaign, lang), link: notice.link,
      retention_days: campaign.retention.days_after_end, ends: new Date(campaign.endsMs).toISOString(),
      version: campaign.versions.get(lang),
    },
    storage: storage(request.cf?.country, lang, `/api/campaigns/${campaign.id}/submissions`),
    challenge: { token: `${signed}.${mac}`, difficulty_bits: bits, expires_in_ms: campaign.challenge.valid_ms },
  };
  return new Response(JSON.stringify(body), {
    headers: { "content-type": "application/json", "cache-control": "no-store", "x-content-type-options": NOSNIFF },
  });
}

// One origin attempt: [status, body text], or null for no answer within `timeout`.
async function attempt(url, timeout, headers, body) {
  try {
    const response = await fetch(url, { method: "POST", headers, body, redirect: "manual", signal: AbortSignal.timeout(timeout) });
    return [response.status, await response.text()];
  } catch {
    return null;
  }
}

function json(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

// Solutions seen lately and what each one bought (crates/core/src/replays.rs), by solution and
// key, oldest first: { body: the body's digest, since: ms, receipt: id | null, region }.
const seen = new Map();
// Seeded at the first request (random values are not available in the global scope).
let bodySeed = 0;

// A 53-bit digest of the body's bytes (two 32-bit FNV-style lanes, seeded per isolate).
function bodyDigest(bytes) {
  let a = 0x811c9dc5 ^ bodySeed, b = 0x01000193 ^ bodySeed;
  for (let i = 0; i < bytes.length; i++) {
    a = Math.imul(a ^ bytes[i], 0x01000193);
    b = Math.imul(b ^ bytes[i], 0x5bd1e995);
  }
  return (b >>> 0) * 0x200000 + ((a >>> 0) & 0x1fffff);
}

function forgetOld(now) {
  if (seen.size === 0) return;
  for (const [slot, memory] of seen) {
    if (memory.since + SEEN_FOR_MS > now) break;
    seen.delete(slot);
  }
}

// What memory says of this solution: undefined (new: go on), or the answer.
function recall(slot, digest, key, cors, now) {
  forgetOld(now);
  const memory = seen.get(slot);
  if (memory === undefined) return undefined;
  if (memory.receipt === null) {
    // Past its forward's deadline it ended one way or another.
    if (now - memory.since >= IN_FLIGHT_MS) return void seen.delete(slot);
    return problem(503, "entry_in_progress", "This entry is being stored",
      "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
      { idempotency_key: key }, { "retry-after": "1", "idempotency-key": key, ...cors });
  }
  if (memory.body !== digest) {
    return problem(409, "idempotency_key_reused", "This key was already used for a different entry",
      "Start a new entry; the key belongs to an earlier, different submission.", {}, cors);
  }
  return accepted(memory.receipt, memory.region, key, true, null, cors);
}

// The request with this solution was admitted and is under way (`recall` just forgot the old
// ones at the same `now`).
function start(slot, digest, now) {
  while (seen.size >= MAX_SEEN) seen.delete(seen.keys().next().value);
  seen.set(slot, { body: digest, since: now, receipt: null, region: null });
}

// It ended accepted (a receipt id), or otherwise (null: forgotten, so a retry goes through).
function end(slot, receipt, region) {
  if (receipt === null) return void seen.delete(slot);
  const memory = seen.get(slot);
  if (memory !== undefined) [memory.receipt, memory.region] = [receipt, region];
}

// How long a stored entry's forward takes here, smoothed over the last dozens: what a decoy waits.
let forwardMs = FIRST_FORWARD_MS;

// Signs and forwards to the region's origins in order, and answers as harbour does: the answer,
// and the receipt id when it was accepted.
async function forward(target, region, campaign, entry, ctx, rate) {
  const { key, received, placed, cors } = ctx;
  const requestId = received.toString(16).padStart(11, "0") + randomHex(8);
  const notice = `{"locale":${JSON.stringify(entry.notice.locale)},"version":${JSON.stringify(entry.notice.version)}}`;
  const body = `{"campaign":${campaign.quotedId},"fields":${entry.fieldsJson},"notice":${notice},"received_at_ms":${received},"region":${region.quotedId},` +
    `"request_id":"${requestId}","signals":{"basis":"${placed.basis}","declared_country":${entry.declared ? `"${entry.declared}"` : "null"},"platform_country":${JSON.stringify(placed.platform)}}}`;
  const digest = hex(sha256(utf8(body)));
  const canonical = `harbour-v1\nPOST\n${target.path}\n${received}\n${region.id}\n${key}\n${digest}`;
  const mac = hex(hmac(target.key, utf8(canonical)));
  const headers = { "content-type": "application/json", "idempotency-key": key, "x-harbour-signature": `t=${received},r=${region.id},v1=${mac}` };
  let busyMs = null;
  for (let i = 0; i < target.urls.length; i++) {
    const left = received + DEADLINE_MS - Date.now();
    if (i > 0 && left < MIN_ATTEMPT_MS) break;
    const answer = await attempt(target.urls[i], i === 0 ? ATTEMPT_TIMEOUT_MS : Math.min(left, ATTEMPT_TIMEOUT_MS), headers, body);
    if (answer === null || (answer[0] >= 502 && answer[0] <= 504)) {
      const busy = answer?.[0] === 503 && answer[1].includes("origin_busy") ? json(answer[1]) : null;
      busyMs = busy?.code === "origin_busy" ? (busy.retry_after_ms ?? (busy.retry_after_s ?? 1) * 1000) : null;
      continue;
    }
    const [status, text] = answer;
    if (status === 200 || status === 201) {
      const receipt = json(text)?.receipt;
      if (receipt?.region === region.id && typeof receipt.id === "string" && RECEIPT_ID.test(receipt.id)) {
        const took = Math.min(Math.max(Date.now() - received, 0), DEADLINE_MS);
        forwardMs = Math.floor((forwardMs * 15 + took) / 16);
        return [accepted(receipt.id, region.id, key, status === 200, rate, cors), receipt.id];
      }
    } else if (status === 409) {
      return [json(text)?.code === "already_entered"
        ? problem(409, "already_entered", "You have already entered", "This campaign takes one entry per person, and we already have yours.", {}, finish(rate, cors))
        : problem(409, "idempotency_key_reused", "This key was already used for a different entry", "Start a new entry; the key belongs to an earlier, different submission.", {}, finish(rate, cors)), null];
    }
    console.error(JSON.stringify({ msg: "peer.origin_refused", status, region: region.id }));
    return [problem(502, "origin_error", "Your entry could not be stored", "The storage service did not accept it. Please try again later with the same Idempotency-Key.",
      { idempotency_key: key }, { ...retryable(key), ...finish(rate, cors) }), null];
  }
  console.error(JSON.stringify({ msg: "peer.origins_unavailable", region: region.id, busy: busyMs !== null }));
  if (busyMs !== null) {
    giveBack(campaign, region, ctx.grant, Date.now());
    const s = seconds(busyMs || BUSY_DEFAULT_MS);
    return [problem(503, "origins_busy", "Lots of entries right now",
      "Your entry was not stored yet. Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
      { idempotency_key: key, retry_after_s: s }, { "retry-after": String(s), "idempotency-key": key, ...finish(rate, cors) }), null];
  }
  return [problem(503, "region_unavailable", "Your entry could not be stored right now",
    "Please try again shortly with the same Idempotency-Key; it will not be stored twice.", { idempotency_key: key }, { ...retryable(key), ...finish(rate, cors) }), null];
}

// A failed forward's headers, built only when one fails.
const finish = (rate, cors) => ({ "ratelimit-policy": rate.policy, ratelimit: rate.limit, ...cors });
const retryable = (key) => ({ "retry-after": String(UNAVAILABLE_RETRY_S), "idempotency-key": key });

const ACCEPT_POST = { "accept-post": "application/json, application/x-www-form-urlencoded" };
// The media type a submission's Content-Type names (JSON or form), or null when it is neither or
// not UTF-8.
function mediaOf(type) {
  if (type === "application/json") return "application/json";
  if (type === null) return null;
  const [essence, ...params] = type.split(";");
  const media = essence.trim().toLowerCase();
  const utf8 = params.every((p) => {
    const eq = p.indexOf("=");
    return eq < 0 || p.slice(0, eq).trim().toLowerCase() !== "charset" || p.slice(eq + 1).trim().replaceAll('"', "").toLowerCase() === "utf-8";
  });
  return utf8 && (media === "application/json" || media === "application/x-www-form-urlencoded") ? media : null;
}

async function submit(request, headers, env, campaign, cors, now) {
  const media = mediaOf(headers.get("content-type"));
  if (media === null) {
    return problem(415, "unsupported_media_type", "Unsupported content type", "send application/json or application/x-www-form-urlencoded (UTF-8)", {},
      { ...ACCEPT_POST, ...cors });
  }
  const declaredLength = headers.get("content-length");
  if (declaredLength !== null && !(Number(declaredLength) <= policy.max_body_bytes)) return tooLarge(cors);
  const key = headers.get("idempotency-key");
  const solution = headers.get("harbour-challenge");
  const refused = await checkChallenge(secrets.form, campaign, solution, key, now, cors);
  if (refused) return refused;
  let bytes;
  try {
    bytes = new Uint8Array(await request.arrayBuffer());
  } catch {
    return problem(400, "body_incomplete", "Incomplete submission", "the body ended early; please send it again", {}, cors);
  }
  if (bytes.byteLength > policy.max_body_bytes) return tooLarge(cors);
  // The work covers the key, but two keys can share a token and a nonce: both make the slot.
  const slot = `${solution}\n${key}`;
  const digest = bodyDigest(bytes);
  const remembered = recall(slot, digest, key, cors, now);
  if (remembered) return remembered;
  const parsed = parseBody(media === "application/json", bytes);
  if (parsed.error) return problem(400, parsed.error[0], "Unreadable submission", parsed.error[1], {}, cors);
  const entry = validate(campaign, parsed, headers.get("harbour-notice"));
  if (entry.errors.length) return invalidFields(entry.errors, cors);
  const placed = place(request.cf?.country, entry.declared);
  const signal = campaign.signal ?? "country";
  if (placed.refused === "residency_conflict") {
    return invalidFields([fieldError(signal, "residency_conflict",
      "entries from where you are cannot be stored under the data-protection law of the country you chose; choose the country you are in")], cors);
  }
  if (placed.refused) return problem(403, placed.refused, "Entries cannot be accepted from here", "this campaign cannot determine where your entry may be stored", {}, cors);
  const region = placed.region;
  if (placed.moved && entry.confirmed !== region.id) {
    return invalidFields([fieldError(signal, "storage_unconfirmed",
      "entries for the country you chose are stored in another region than the one you are connecting from; confirm where your entry will be stored to go on")], cors);
  }
  const grant = admit(campaign, region, clientText(headers.get("cf-connecting-ip")), now);
  if (grant.refusal) return rateLimited(grant.layer, grant.q, grant.wait, cors);
  start(slot, digest, now);
  let receipt = null;
  try {
    const [answer, id] = await admitted(env, campaign, region, entry, { key, slot, received: now, placed, cors, grant });
    receipt = id;
    return answer;
  } finally {
    end(slot, receipt, region.id);
  }
}

function tooLarge(cors) {
  return problem(413, "body_too_large", "Submission too large", `a submission is at most ${policy.max_body_bytes} bytes`, {}, cors);
}

// An entry the isolate's limits admitted: the location's binding, then the decoy or the forward.
async function admitted(env, campaign, region, entry, ctx) {
  const { key, grant, cors } = ctx;
  const location = await consultLocation(env, grant);
  const force = grant.force;
  const q = force.perClient;
  if (location === "refused") {
    giveBack(campaign, region, grant, Math.max(Date.now(), ctx.received));
    return [rateLimited("location", q, q.window, cors), null];
  }
  if (location === "unavailable") {
    console.error(JSON.stringify({ msg: "peer.location_limit_unavailable", binding: force.binding }));
    if (force.failClosed) {
      giveBack(campaign, region, grant, Math.max(Date.now(), ctx.received));
      return [problem(503, "location_limit_unavailable", "Your entry could not be taken right now",
        "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
        { idempotency_key: key, retry_after_s: UNAVAILABLE_RETRY_S }, { "retry-after": String(UNAVAILABLE_RETRY_S), "idempotency-key": key, ...cors }), null];
    }
  }
  const rate = {
    policy: location === "admitted" ? force.admittedPolicy : force.clientPolicy,
    limit: `"client";r=${grant.remaining};t=${seconds(grant.reset)}`,
  };
  if (entry.honeypot) {
    // A decoy: remembered like a real receipt (a resend gets the same id), sent after about as
    // long as a real forward takes here (±25 %), or its speed would tell it apart.
    const id = `${region.id}-${randomHex(8)}`;
    end(ctx.slot, id, region.id);
    const spread = randomWord() % 51;
    await new Promise((resolve) => setTimeout(resolve, Math.floor(forwardMs * (75 + spread) / 100)));
    return [accepted(id, region.id, key, false, rate, cors), id];
  }
  return forward(secrets.targets[region.index], region, campaign, entry, ctx, rate);
}

// Routes by URL, remembered: a campaign's page sends every submission to one URL, so each is
// parsed once. Bounded; the oldest goes first.
const NO_ROUTE = { campaign: null, describe: false, origin: "" };
const routes = new Map();
const MAX_ROUTES = 256;
function route(url) {
  let found = routes.get(url);
  if (found !== undefined) return found;
  const parsed = new URL(url);
  const match = ROUTE.exec(parsed.pathname);
  if (match === null) found = NO_ROUTE;
  else {
    const campaign = campaigns.get(match[1] ?? match[2]);
    found = campaign === undefined ? { campaign: null, describe: false, origin: "" }
      : { campaign, describe: match[2] !== undefined, origin: parsed.origin };
  }
  if (routes.size >= MAX_ROUTES) routes.delete(routes.keys().next().value);
  routes.set(url, found);
  return found;
}

const NO_CORS = Object.freeze({});
const PREFLIGHT = {
  "access-control-allow-methods": "POST", "access-control-allow-headers": "content-type, idempotency-key, harbour-challenge, harbour-notice",
  "access-control-max-age": "600", "x-content-type-options": NOSNIFF,
};

let latest = 0;
export default {
  async fetch(request, env) {
    // Limits never see the clock go backwards.
    latest = Math.max(latest, Date.now());
    const now = latest;
    if (epoch < 0) epoch = now;
    try {
      secrets ??= await setup(env);
    } catch (error) {
      console.error(JSON.stringify({ msg: "peer.config_invalid", error: String(error) }));
      return problem(500, "config_invalid", "Service misconfigured", "This service cannot accept entries right now.", {}, {});
    }
    const found = route(request.url);
    if (found === NO_ROUTE) return problem(404, "not_found", "Not found", "no such resource", {}, {});
    const campaign = found.campaign;
    if (campaign === null) return problem(404, "not_found", "Not found", "no such campaign", {}, {});
    const method = request.method;
    if (found.describe) {
      if (method !== "GET" && method !== "HEAD") return problem(405, "method_not_allowed", "Method not allowed", "use GET, HEAD", {}, { allow: "GET, HEAD" });
      return describe(secrets.form, campaign, request, now);
    }
    if (method !== "POST" && method !== "OPTIONS") return problem(405, "method_not_allowed", "Method not allowed", "use POST, OPTIONS", {}, { allow: "POST, OPTIONS" });
    const headers = request.headers;
    const origin = headers.get("origin");
    let cors = NO_CORS;
    if (origin !== null && origin !== found.origin) {
      if (!campaign.allowed_origins?.includes(origin) && !secrets.pageOrigins.has(origin)) {
        return problem(403, "origin_not_allowed", "Cross-origin submission refused", "this page is not allowed to submit to this campaign", {}, {});
      }
      cors = { "access-control-allow-origin": origin, "access-control-expose-headers": RATE_EXPOSED, vary: "origin" };
    }
    if (method === "OPTIONS") return new Response(null, { status: 204, headers: { ...PREFLIGHT, ...cors } });
    return submit(request, headers, env, campaign, cors, now);
  },
};
