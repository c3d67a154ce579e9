// The peer for the benchmark: harbour's whole job written in plain JavaScript, as a careful
// engineer would write it for Workers. Same route, method, content-type and size checks, the
// same field rules, the same residency rule, GCRA limits in a Map, the client's or a derived
// idempotency key, the same signature (crypto.subtle), a timeout per attempt, failover inside
// the region, and a 202 with the same headers. The reference origins verify and store what it
// sends. It reads the same policy file harbour compiles in (a JSON module here).
import policy from "./policy.json";

const ATTEMPT_TIMEOUT_MS = 3000;
const DEADLINE_MS = 8000;
const MIN_ATTEMPT_MS = 200;
const MAX_CLIENT_KEYS = 200_000;
const JSON_HEADERS = { "content-type": "application/json", "cache-control": "no-store" };
const PROBLEM = "application/problem+json";
const ISO = new Set(("AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ " +
  "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH " +
  "ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE " +
  "IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC " +
  "MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE " +
  "PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV " +
  "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT " +
  "ZA ZM ZW").split(" "));
const FORBIDDEN = /[\p{Cc}\u200B-\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF\uFFF9-\uFFFB]/u;
const EMAIL_LOCAL = /^[^\s@]*$/u;
const KEY_SHAPE = /^[A-Za-z0-9_-]{16,64}$/;
const encoder = new TextEncoder();

// Per isolate: the policy indexed once, signing keys imported once, limiter state.
const campaigns = new Map(policy.campaigns.map((c) => [c.id, c]));
const regionOf = new Map();
policy.regions.forEach((r) => r.countries.forEach((c) => regionOf.set(c, r)));
const restOfWorld = policy.regions.find((r) => r.id === policy.rest_of_world);
let regionSetup = null;
const tats = new Map();

function problem(status, code, title, detail, extra = {}, headers = {}) {
  const body = JSON.stringify({ type: `urn:harbour:problem:${code}`, title, status, code, detail, ...extra });
  return new Response(body, { status, headers: { "content-type": PROBLEM, "cache-control": "no-store", ...headers } });
}

async function setup(env) {
  const out = new Map();
  for (const region of policy.regions) {
    const name = region.id.toUpperCase().replaceAll("-", "_");
    const key = await crypto.subtle.importKey("raw", encoder.encode(env[`HARBOUR_KEY_${name}`]),
      { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    const origins = env[`HARBOUR_ORIGINS_${name}`].split(/[ ,]+/).filter(Boolean)
      .map((base) => base.replace(/\/+$/, "") + "/v1/submissions");
    out.set(region.id, { key, origins, path: new URL(origins[0]).pathname });
  }
  return out;
}

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");

// GCRA: state is the theoretical arrival time; admit when it is at most `burst` intervals ahead.
function gcra(key, quota, now, commit) {
  const interval = quota.window_ms / quota.burst;
  const tat = Math.max(tats.get(key) ?? now, now) + interval;
  const ahead = tat - now;
  if (ahead > quota.window_ms + 1e-9) return { ok: false, wait: Math.ceil(ahead - quota.window_ms) };
  if (commit) {
    if (tats.size >= MAX_CLIENT_KEYS && !tats.has(key)) {
      for (const [k, t] of tats) if (t <= now) tats.delete(k);
    }
    tats.set(key, tat);
  }
  return { ok: true, remaining: Math.floor((quota.window_ms - ahead) / interval), reset: Math.ceil(ahead) };
}

function clientKey(ip) {
  if (!ip) return "?";
  if (!ip.includes(":")) return ip;
  if (ip.startsWith("::ffff:") && ip.includes(".")) return ip.slice(7);
  // The /64: expand "::" and keep the first four groups.
  const [head, tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill("0"), ...t];
  return groups.slice(0, 4).map((g) => parseInt(g || "0", 16).toString(16)).join(":");
}

function checkField(f, value, errors) {
  const blank = value === undefined || value === null || (typeof value === "string" && value.trim() === "");
  if (blank) {
    if (f.required) errors.push({ field: f.name, code: "required", detail: "this field is required" });
    return undefined;
  }
  const wrong = () => errors.push({ field: f.name, code: "invalid_type", detail: `expected a ${f.type} value` });
  const text = () => {
    const t = value.trim();
    if (FORBIDDEN.test(t)) { errors.push({ field: f.name, code: "invalid_characters", detail: "remove control or invisible formatting characters" }); return undefined; }
    const max = f.max_length ?? 200;
    if ([...t].length > max) { errors.push({ field: f.name, code: "too_long", detail: `use at most ${max} characters` }); return undefined; }
    return t;
  };
  switch (f.type) {
    case "string": return typeof value === "string" ? text() : wrong();
    case "email": {
      if (typeof value !== "string") return wrong();
      const t = text();
      if (t === undefined) return undefined;
      const at = t.lastIndexOf("@");
      const local = t.slice(0, at), domain = t.slice(at + 1);
      const labels = domain.split(".");
      const ok = at > 0 && local.length <= 64 && t.length <= 254 && EMAIL_LOCAL.test(local) &&
        !local.startsWith(".") && !local.endsWith(".") && !local.includes("..") && labels.length >= 2 &&
        labels.every((l) => l && l.length <= 63 && !l.startsWith("-") && !l.endsWith("-") && /^[\p{L}\p{N}-]+$/u.test(l) && !/_/.test(l)) &&
        [...labels.at(-1)].length >= 2 && !/^\d+$/.test(labels.at(-1));
      if (!ok) { errors.push({ field: f.name, code: "invalid_email", detail: "enter an address like name@example.com" }); return undefined; }
      return `${local}@${domain.toLowerCase()}`;
    }
    case "enum": {
      if (typeof value !== "string") return wrong();
      if (f.values.includes(value.trim())) return value.trim();
      errors.push({ field: f.name, code: "not_allowed", detail: `choose one of: ${f.values.join(", ")}` });
      return undefined;
    }
    case "bool": {
      const flag = typeof value === "boolean" ? value
        : ({ true: true, on: true, 1: true, yes: true, false: false, off: false, 0: false, no: false })[String(value).trim()];
      if (flag === undefined) return wrong();
      if (!flag && f.must_be_true) { errors.push({ field: f.name, code: "must_be_true", detail: "this box must be ticked to take part" }); return undefined; }
      return flag;
    }
    case "integer": {
      const n = typeof value === "number" ? value : typeof value === "string" && /^\s*-?\d+\s*$/.test(value) ? Number(value) : NaN;
      if (!Number.isSafeInteger(n)) return wrong();
      if ((f.min != null && n < f.min) || (f.max != null && n > f.max)) {
        errors.push({ field: f.name, code: "out_of_range", detail: "enter a number in range" });
        return undefined;
      }
      return n;
    }
    case "country": {
      if (typeof value !== "string") return wrong();
      const code = value.trim().toUpperCase();
      if (ISO.has(code)) return code;
      errors.push({ field: f.name, code: "invalid_country", detail: "choose a country (ISO 3166-1 alpha-2 code)" });
      return undefined;
    }
  }
  return wrong();
}

function place(platform, declared) {
  let region, basis = "platform";
  if (!platform) region = policy.signals.missing;
  else if (platform === "T1") region = policy.signals.tor;
  else if (!ISO.has(platform)) region = policy.signals.unknown;
  else region = regionOf.get(platform) ?? restOfWorld;
  if (typeof region === "string") {
    if (region === "refuse") return { refused: !platform ? "country_missing" : platform === "T1" ? "country_anonymised" : "country_unknown" };
    region = policy.regions.find((r) => `region:${r.id}` === region);
    basis = "policy_fallback";
  }
  if (declared) {
    const other = regionOf.get(declared) ?? restOfWorld;
    if (other.strictness > region.strictness) { region = other; basis = "declared_stricter"; }
  }
  return { region, basis };
}

async function forward(url, headers, body, deadline) {
  const left = deadline - Date.now();
  if (left < MIN_ATTEMPT_MS) return null;
  try {
    const response = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(Math.min(left, ATTEMPT_TIMEOUT_MS)) });
    return { status: response.status, text: await response.text() };
  } catch {
    return null;
  }
}

async function submit(request, env, campaign, cors) {
  const type = (request.headers.get("content-type") ?? "").toLowerCase();
  const [essence, ...params] = type.split(";").map((s) => s.trim());
  const utf8 = params.every((p) => !p.startsWith("charset=") || p.slice(8).replaceAll('"', "") === "utf-8");
  if (!utf8 || (essence !== "application/json" && essence !== "application/x-www-form-urlencoded")) {
    return problem(415, "unsupported_media_type", "Unsupported content type", "send application/json or application/x-www-form-urlencoded (UTF-8)", {}, cors);
  }
  const declared = Number(request.headers.get("content-length") ?? "0");
  if (declared > policy.max_body_bytes) return problem(413, "body_too_large", "Submission too large", `a submission is at most ${policy.max_body_bytes} bytes`, {}, cors);
  const raw = await request.text();
  if (raw.length > policy.max_body_bytes) return problem(413, "body_too_large", "Submission too large", `a submission is at most ${policy.max_body_bytes} bytes`, {}, cors);
  let input;
  try {
    input = essence === "application/json" ? JSON.parse(raw) : Object.fromEntries(new URLSearchParams(raw));
  } catch {
    return problem(400, "malformed_body", "Unreadable submission", "the body is not valid JSON", {}, cors);
  }
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    return problem(400, "malformed_body", "Unreadable submission", "the body must be one JSON object", {}, cors);
  }
  const errors = [];
  const fields = {};
  let declaredCountry = null;
  for (const key of Object.keys(input)) {
    if (key !== campaign.honeypot && key !== "_form" && !campaign.fields.some((f) => f.name === key)) {
      errors.push({ field: key.slice(0, 64), code: "unknown_field", detail: "this field is not part of the form" });
    }
  }
  for (const f of campaign.fields) {
    const clean = checkField(f, input[f.name], errors);
    if (clean !== undefined) {
      fields[f.name] = clean;
      if (f.residency_signal) declaredCountry = clean;
    }
  }
  if (errors.length) {
    return problem(422, "validation_failed", "The submission has errors", `${errors.length} field(s) need attention`, { errors }, cors);
  }
  const placed = place(request.cf?.country, declaredCountry);
  if (placed.refused) return problem(403, placed.refused, "Entries cannot be accepted from here", "this campaign cannot determine where your entry may be stored", {}, cors);
  const now = Date.now();
  const client = `${campaign.id}|${clientKey(request.headers.get("cf-connecting-ip"))}`;
  const layers = [
    ["client", client, campaign.limits.per_client],
    ["campaign", `c|${campaign.id}`, campaign.limits.campaign],
  ];
  if (placed.region.budget) layers.push(["region", `r|${placed.region.id}`, placed.region.budget]);
  const checks = layers.map(([, key, quota]) => gcra(key, quota, now, false));
  const refused = checks.findIndex((c) => !c.ok);
  if (refused >= 0) {
    const [name, , quota] = layers[refused];
    const seconds = Math.max(1, Math.ceil(checks[refused].wait / 1000));
    return problem(429, "rate_limited", "Too many submissions", `please wait ${seconds} s and try again`, { retry_after_s: seconds }, {
      ...cors, "retry-after": String(seconds), "ratelimit-policy": `"${name}";q=${quota.burst};w=${Math.max(1, Math.ceil(quota.window_ms / 1000))}`,
      ratelimit: `"${name}";r=0;t=${seconds}`,
    });
  }
  const admitted = layers.map(([, key, quota]) => gcra(key, quota, now, true))[0];
  const q = campaign.limits.per_client;
  const rate = {
    "ratelimit-policy": `"client";q=${q.burst};w=${Math.max(1, Math.ceil(q.window_ms / 1000))}`,
    ratelimit: `"client";r=${admitted.remaining};t=${Math.max(1, Math.ceil(admitted.reset / 1000))}`,
  };
  const sorted = Object.keys(fields).sort();
  const canonical = JSON.stringify(Object.fromEntries(sorted.map((k) => [k, fields[k]])));
  const clientGiven = request.headers.get("idempotency-key");
  const key = clientGiven && KEY_SHAPE.test(clientGiven) ? clientGiven
    : "h-" + hex(await crypto.subtle.digest("SHA-256", encoder.encode(`${campaign.id}\n${canonical}`))).slice(0, 32);
  const region = placed.region;
  const requestId = now.toString(16).padStart(11, "0") + hex(crypto.getRandomValues(new Uint8Array(8)));
  if (String(input[campaign.honeypot] ?? "").trim() !== "") {
    const id = `${region.id}-${hex(crypto.getRandomValues(new Uint8Array(8)))}`;
    return new Response(JSON.stringify({ status: "accepted", receipt: { id, region: region.id }, idempotency_key: key }),
      { status: 202, headers: { ...JSON_HEADERS, "idempotency-key": key, ...rate, ...cors } });
  }
  regionSetup ??= await setup(env);
  const target = regionSetup.get(region.id);
  const body = JSON.stringify({
    campaign: campaign.id, fields: JSON.parse(canonical), received_at_ms: now, region: region.id, request_id: requestId,
    signals: { basis: placed.basis, declared_country: declaredCountry, platform_country: request.cf?.country ?? "" },
  });
  const digest = hex(await crypto.subtle.digest("SHA-256", encoder.encode(body)));
  const canonicalRequest = `harbour-v1\nPOST\n${target.path}\n${now}\n${region.id}\n${key}\n${digest}`;
  const mac = hex(await crypto.subtle.sign("HMAC", target.key, encoder.encode(canonicalRequest)));
  const headers = { "content-type": "application/json", "idempotency-key": key, "x-harbour-signature": `t=${now},r=${region.id},v1=${mac}` };
  const deadline = now + DEADLINE_MS;
  for (const url of target.origins) {
    const answer = await forward(url, headers, body, deadline);
    if (answer === null || (answer.status >= 502 && answer.status <= 504)) continue;
    if (answer.status === 200 || answer.status === 201) {
      let receipt = null;
      try { receipt = JSON.parse(answer.text).receipt; } catch { /* not a receipt */ }
      if (receipt?.region === region.id && /^[A-Za-z0-9_-]{1,100}$/.test(receipt.id ?? "")) {
        const extra = answer.status === 200 ? { "idempotent-replayed": "true" } : {};
        return new Response(JSON.stringify({ status: "accepted", receipt: { id: receipt.id, region: region.id }, idempotency_key: key }),
          { status: 202, headers: { ...JSON_HEADERS, "idempotency-key": key, ...extra, ...rate, ...cors } });
      }
    }
    if (answer.status === 409) {
      return problem(409, "idempotency_key_reused", "This key was already used for a different entry", "Start a new entry; the key belongs to an earlier, different submission.", {}, { ...rate, ...cors });
    }
    return problem(502, "origin_error", "Your entry could not be stored", "The storage service did not accept it. Please try again later with the same Idempotency-Key.",
      { idempotency_key: key }, { "retry-after": "5", "idempotency-key": key, ...rate, ...cors });
  }
  return problem(503, "region_unavailable", "Your entry could not be stored right now", "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
    { idempotency_key: key }, { "retry-after": "5", "idempotency-key": key, ...rate, ...cors });
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const match = /^\/api\/campaigns\/([^/]+)(\/submissions)?$/.exec(url.pathname);
    if (!match) return problem(404, "not_found", "Not found", "no such resource");
    const campaign = campaigns.get(match[1]);
    if (!campaign) return problem(404, "not_found", "Not found", "no such campaign");
    const method = request.method;
    if (!match[2]) {
      if (method !== "GET" && method !== "HEAD") return problem(405, "method_not_allowed", "Method not allowed", "use GET, HEAD", {}, { allow: "GET, HEAD" });
      return new Response(JSON.stringify({ id: campaign.id, title: campaign.title, fields: campaign.fields, honeypot: campaign.honeypot,
        submit: `/api/campaigns/${campaign.id}/submissions` }), { headers: JSON_HEADERS });
    }
    if (method !== "POST" && method !== "OPTIONS") return problem(405, "method_not_allowed", "Method not allowed", "use POST, OPTIONS", {}, { allow: "POST, OPTIONS" });
    const origin = request.headers.get("origin");
    let cors = {};
    if (origin && origin !== url.origin) {
      if (!campaign.allowed_origins?.includes(origin)) return problem(403, "origin_not_allowed", "Cross-origin submission refused", "this page is not allowed to submit to this campaign");
      cors = { "access-control-allow-origin": origin, "access-control-expose-headers": "retry-after, ratelimit, ratelimit-policy, idempotency-key, idempotent-replayed", vary: "origin" };
    }
    if (method === "OPTIONS") {
      return new Response(null, { status: 204, headers: { "access-control-allow-methods": "POST", "access-control-allow-headers": "content-type, idempotency-key", "access-control-max-age": "600", ...cors } });
    }
    return submit(request, env, campaign, cors);
  },
};
