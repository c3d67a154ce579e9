// The peer for the benchmark: harbour's whole job written in plain JavaScript, as a careful
// engineer would write it for Workers, reading the same policy file harbour compiles in (a JSON
// module here). It answers the same requests with the same statuses, problem codes, headers and
// body shapes, and forwards the same signed body, which the reference origins verify and store:
// - routes, 404/405, the form description (with a proof-of-work challenge of its own, MACed with
//   HARBOUR_FORM_KEY), CORS and the preflight;
// - content type (415) and size (413) before the body is read;
// - the proof of work (`Harbour-Challenge: {token}.{nonce}` covering the Idempotency-Key),
//   checked with crypto.subtle before the body is parsed: 400 challenge_required, 403
//   challenge_expired / challenge_invalid, the same order of checks as crates/core/src/phase/challenge.rs;
// - the field rules (every error at once, 422), the residency rule incl. `on_conflict` and the
//   policy's signal fallbacks;
// - GCRA limits in Maps: per client (IPv4 / IPv6 /64, per campaign and surge window), per
//   campaign and per region budget, charged to all or none; then the location's rate-limiting
//   binding (HARBOUR_RL_<limit>_PER_<period>S) with a 500 ms timeout and the campaign's
//   fail_open / fail_closed, the isolate's charges given back on a refusal;
// - the honeypot (a decoy receipt of the same shape), the idempotency key, the HMAC signature
//   (crypto.subtle) over harbour's canonical request, a timeout per attempt under one deadline,
//   failover inside the region only, and a 202 with the same headers and body.
// Left out, because a plain worker of this kind would not have them or the bench does not reach
// them: the origins' circuit breakers and shedding (503 region_busy before any attempt; an
// origin's `origin_busy` answer is passed on as 503 origins_busy with the wait it asked for),
// the shadow evaluation of a candidate policy, log summaries (it logs 5xx and an unavailable
// binding only; request ids are random rather than from a seeded counter), the recovery
// from a trapped module, duplicate JSON keys (JSON.parse keeps the last one; harbour answers 400
// duplicate_key) and `1.0` as an integer (JSON.parse cannot tell it from `1`), the line and
// column in a JSON syntax error's detail, and the content-derived idempotency key (unreachable:
// the proof of work requires the client's key).
import policy from "./policy.json";

const ATTEMPT_TIMEOUT_MS = 3000;
const DEADLINE_MS = 8000;
const MIN_ATTEMPT_MS = 200;
const CONSULT_TIMEOUT_MS = 500;
const UNAVAILABLE_RETRY_S = 5;
const BUSY_DEFAULT_MS = 1000;
const MAX_CLIENT_KEYS = 200_000;
const MAX_KEYS = 64;
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
const encoder = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
const HEX_BYTE = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const hex = (bytes) => {
  let out = "";
  for (const b of new Uint8Array(bytes)) out += HEX_BYTE[b];
  return out;
};
const seconds = (ms) => Math.max(1, Math.ceil(ms / 1000));

// The policy, indexed once per isolate.
const regions = policy.regions.map((r, index) => ({ ...r, index, law: r.id !== policy.rest_of_world }));
const regionById = new Map(regions.map((r) => [r.id, r]));
const regionOf = new Map();
for (const r of regions) for (const c of r.countries) regionOf.set(c, r);
const restOfWorld = regionById.get(policy.rest_of_world);
const quota = (q) => ({ burst: q.burst, window: q.window_ms, tolerance: q.burst * q.window_ms });
const campaigns = new Map(policy.campaigns.map((c) => {
  const perClient = quota(c.limits.per_client);
  const challenge = c.challenge ?? DEFAULT_CHALLENGE;
  return [c.id, {
    ...c,
    fieldByName: new Map(c.fields.map((f) => [f.name, f])),
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
  }];
}));
const regionCells = regions.map(() => ({ tat: null }));
for (const r of regions) r.budget &&= quota(r.budget);

// The limits in force for a campaign at `now`: its own or a surge window's.
function inForce(campaign, now) {
  for (const w of campaign.windows) if (w.start <= now && now < w.end) return w;
  return { id: null, period: 0, perClient: campaign.perClient, failClosed: campaign.failClosed, bits: campaign.challenge.difficulty_bits };
}

function bindingName(q) {
  const period = q.window / 1000;
  return q.window % 1000 === 0 && (period === 10 || period === 60) ? `HARBOUR_RL_${q.burst}_PER_${period}S` : "HARBOUR_RL_INEXPRESSIBLE";
}

function problem(status, code, title, detail, extra, headers) {
  const body = JSON.stringify({ type: `urn:harbour:problem:${code}`, title, status, code, detail, ...extra });
  return new Response(body, { status, headers: { "content-type": PROBLEM, "cache-control": "no-store", ...headers } });
}

function accepted(id, region, key, replayed, headers) {
  const body = JSON.stringify({ status: "accepted", receipt: { id, region }, idempotency_key: key });
  const h = { "content-type": "application/json", "cache-control": "no-store", "idempotency-key": key };
  if (replayed) h["idempotent-replayed"] = "true";
  return new Response(body, { status: 202, headers: { ...h, ...headers } });
}

// Secrets imported once per isolate (the environment is only known at the first request).
let secrets = null;
async function setup(env) {
  const hmac = (secret) => crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const targets = [];
  for (const region of regions) {
    const name = region.id.toUpperCase().replaceAll("-", "_");
    const urls = (env[`HARBOUR_ORIGINS_${name}`] ?? "").split(/[ ,]+/).filter(Boolean)
      .map((base) => base.replace(/\/+$/, "") + "/v1/submissions");
    if (!urls.length) throw new Error(`HARBOUR_ORIGINS_${name} is empty`);
    targets.push({ key: await hmac(env[`HARBOUR_KEY_${name}`]), urls, path: new URL(urls[0]).pathname });
  }
  const pageOrigins = new Set((env.HARBOUR_PAGE_ORIGINS ?? "").split(/[ ,]+/).filter(Boolean));
  return { form: await hmac(env.HARBOUR_FORM_KEY), targets, pageOrigins };
}

// GCRA in integer units (ms × burst) counted from the isolate's first request, exact like
// harbour's u128 arithmetic while it stays below 2^53 (years).
let epoch = -1;
function gcra(q, tat, now) {
  const nowU = (now - epoch) * q.burst;
  const next = Math.max(tat ?? nowU, nowU) + q.window;
  const ahead = next - nowU;
  if (ahead > q.tolerance) return { ok: false, wait: Math.ceil((ahead - q.tolerance) / q.burst) };
  return { ok: true, next, remaining: Math.floor((q.tolerance - ahead) / q.window), reset: Math.ceil(ahead / q.burst) };
}
const refund = (q, tat, now) => Math.max(tat - q.window, (now - epoch) * q.burst);
const clients = new Map(); // key → [tat, expires ms]

function admit(campaign, region, client, now) {
  const force = inForce(campaign, now);
  const slot = `${campaign.id}|${force.period}|${client}`;
  const layers = [["client", force.perClient, clients.get(slot)?.[0]], ["campaign", campaign.campaignQuota, campaign.campaignCell.tat]];
  if (region.budget) layers.push(["region", region.budget, regionCells[region.index].tat]);
  const checks = layers.map(([, q, tat]) => gcra(q, tat, now));
  let refused = -1;
  checks.forEach((c, i) => { if (!c.ok && (refused < 0 || c.wait >= checks[refused].wait)) refused = i; });
  if (refused >= 0) return { refusal: [layers[refused][0], layers[refused][1], checks[refused].wait] };
  if (clients.size >= MAX_CLIENT_KEYS && !clients.has(slot)) {
    for (const [k, [, expires]] of clients) if (expires <= now) clients.delete(k);
    if (clients.size >= MAX_CLIENT_KEYS) clients.delete(clients.keys().next().value);
  }
  clients.set(slot, [checks[0].next, now + checks[0].reset]);
  campaign.campaignCell.tat = checks[1].next;
  if (region.budget) regionCells[region.index].tat = checks[2].next;
  let key = campaign.id;
  if (force.id !== null) key += `@${force.id}`;
  return { force, slot, remaining: checks[0].remaining, reset: checks[0].reset, consult: { binding: bindingName(force.perClient), key: `${key} ${client}` } };
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
async function consultLocation(env, { binding, key }) {
  let timer;
  const silence = new Promise((resolve) => { timer = setTimeout(() => resolve("unavailable"), CONSULT_TIMEOUT_MS); });
  try {
    const asked = env[binding].limit({ key }).then((o) => o?.success === true ? "admitted" : o?.success === false ? "refused" : "unavailable");
    return await Promise.race([asked, silence]);
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
  if (!ip.includes(":") || !/^[0-9A-Fa-f:.]+$/.test(ip) || (ip.match(/::/g)?.length ?? 0) > 1) return "unknown";
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
  if (!groups.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g))) return "unknown";
  const n = groups.map((g) => parseInt(g, 16));
  // An IPv4-mapped address (::ffff:a.b.c.d, also written in hex) is its IPv4 client.
  if (n.slice(0, 5).every((x) => x === 0) && n[5] === 0xffff) {
    return v4 ?? [n[6] >> 8, n[6] & 255, n[7] >> 8, n[7] & 255].join(".");
  }
  return n.slice(0, 4).map((x) => x.toString(16)).join(":") + "::/64";
}

const utf8Length = (s) => (/^[\x00-\x7f]*$/.test(s) ? s.length : encoder.encode(s).length);
const blank = (v) => v === null || v === undefined || (typeof v === "string" && v.trim() === "");

function fieldError(field, code, detail) {
  return { field: [...field].slice(0, 64).join(""), code, detail };
}

function cleanText(f, value, errors) {
  const t = value.trim();
  if (FORBIDDEN.test(t)) return void errors.push(fieldError(f.name, "invalid_characters", "remove control or invisible formatting characters"));
  const max = f.max_length ?? DEFAULT_MAX_LENGTH;
  if ([...t].length > max) return void errors.push(fieldError(f.name, "too_long", `use at most ${max} characters`));
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
  const tld = labels.at(-1);
  if ([...tld].length < 2 || /^\d+$/.test(tld)) return undefined;
  return `${local}@${domain.replace(/[A-Z]+/g, (s) => s.toLowerCase())}`;
}

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
        : typeof value === "string" && /^[+-]?\d+$/.test(value.trim()) ? Number(value.trim()) : NaN;
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
      if (/^[A-Za-z]{2}$/.test(code) && COUNTRIES.has(code.toUpperCase())) return code.toUpperCase();
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
    pairs = Object.entries(value);
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

function validate(campaign, pairs) {
  const errors = [];
  const values = new Map();
  let honeypot = false;
  for (const [key, value] of pairs) {
    if (key === campaign.honeypot) honeypot ||= !blank(value);
    else if (campaign.fieldByName.has(key)) values.set(key, value);
    else errors.push(fieldError(key, "unknown_field", "this field is not part of the form"));
  }
  const fields = [];
  let declared = null;
  for (const f of campaign.fields) {
    const value = values.get(f.name);
    if (blank(value)) {
      if (f.required) errors.push(fieldError(f.name, "required", "this field is required"));
      continue;
    }
    const clean = checkField(f, typeof value === "object" ? Symbol.for("nested") : value, errors);
    if (clean === undefined) continue;
    fields.push([f.name, clean]);
    if (f.residency_signal) declared = clean;
  }
  return { errors, fields, declared, honeypot };
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
  else if (!/^[A-Z]{2}$/.test(p) || !COUNTRIES.has(p)) signal = "unknown";
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
      if (rule === "stricter" && other.strictness > region.strictness) [region, basis] = [other, "declared_stricter"];
      else if (rule === "refuse") {
        if (region.law && other.law) return { refused: "residency_conflict" };
        if (!region.law && other.law) [region, basis] = [other, "declared_law"];
      }
    }
  }
  return { region, basis, platform };
}

// The proof of work, checked as crates/core/src/phase/challenge.rs does; null when it passes, else the answer.
async function checkChallenge(form, campaign, solution, key, now, cors) {
  const refuse = (status, code, title, detail) =>
    problem(status, code, title, detail, { challenge_url: `/api/campaigns/${campaign.id}` }, cors);
  const invalid = (why) => refuse(403, "challenge_invalid", "Proof of work not accepted", why);
  if (solution === null) {
    return refuse(400, "challenge_required", "Proof of work required",
      "solve the challenge from the form description and send Harbour-Challenge: {token}.{nonce} with your Idempotency-Key");
  }
  const parts = solution.trim().split(".");
  const [id, expires, bits, salt, mac, nonce] = parts;
  const well = parts.length === 6 && salt.length === 32 && HEX.test(salt) && mac.length === 32 && HEX.test(mac) &&
    nonce.length >= 1 && nonce.length <= 16 && HEX.test(nonce) && /^\+?\d+$/.test(expires) && /^\+?\d+$/.test(bits) && Number(bits) <= 255;
  if (!well) return invalid("the Harbour-Challenge header is not {token}.{nonce}");
  const signed = `${id}.${expires}.${bits}.${salt}`;
  const expected = new Uint8Array(await crypto.subtle.sign("HMAC", form, encoder.encode(`harbour-challenge-v1\n${signed}`)));
  let difference = 0;
  for (let i = 0; i < 16; i++) difference |= expected[i] ^ parseInt(mac.slice(2 * i, 2 * i + 2), 16);
  if (difference !== 0) return invalid("the challenge was not issued here");
  if (id !== campaign.id) return invalid("the challenge was issued for another campaign");
  if (now > Number(expires) || Number(bits) < inForce(campaign, now).bits) {
    return refuse(403, "challenge_expired", "Challenge expired",
      "fetch a fresh challenge from the form description, solve it and send again with the same Idempotency-Key");
  }
  if (key === null || !KEY_SHAPE.test(key)) {
    return invalid("a solution covers the Idempotency-Key it was solved for: send that key (16-64 of A-Z a-z 0-9 - _)");
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(`${signed}.${mac}\n${key}\n${nonce}`)));
  let zeros = 0;
  for (const byte of digest) {
    zeros += Math.clz32(byte) - 24;
    if (byte !== 0) break;
  }
  return zeros >= Number(bits) ? null : invalid("the solution does not meet the challenge's difficulty for this Idempotency-Key");
}

async function describe(form, campaign, url, now) {
  const asked = url.searchParams.get("lang") ?? "en";
  const lang = LOCALES.find((l) => l.toLowerCase() === (/^[A-Za-z0-9-]*$/.test(asked) ? asked : "en").toLowerCase()) ?? "en";
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
    return out;
  });
  const bits = inForce(campaign, now).bits;
  const salt = hex(crypto.getRandomValues(new Uint8Array(16)));
  const signed = `${campaign.id}.${now + campaign.challenge.valid_ms}.${bits}.${salt}`;
  const mac = hex(await crypto.subtle.sign("HMAC", form, encoder.encode(`harbour-challenge-v1\n${signed}`))).slice(0, 32);
  const body = {
    id: campaign.id, lang, title: texts?.title ?? campaign.title, intro: texts?.intro ?? campaign.intro ?? null, fields,
    honeypot: campaign.honeypot ?? null, submit: `/api/campaigns/${campaign.id}/submissions`,
    challenge: { token: `${signed}.${mac}`, difficulty_bits: bits, expires_in_ms: campaign.challenge.valid_ms },
  };
  return new Response(JSON.stringify(body), { headers: { "content-type": "application/json", "cache-control": "no-store" } });
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

// Signs and forwards to the region's origins in order, and answers as harbour does.
async function forward(target, region, campaign, entry, ctx) {
  const { key, fieldsJson, received, placed, rate, cors } = ctx;
  const requestId = received.toString(16).padStart(11, "0") + hex(crypto.getRandomValues(new Uint8Array(8)));
  const body = `{"campaign":${JSON.stringify(campaign.id)},"fields":${fieldsJson},"received_at_ms":${received},"region":${JSON.stringify(region.id)},` +
    `"request_id":"${requestId}","signals":{"basis":"${placed.basis}","declared_country":${entry.declared ? `"${entry.declared}"` : "null"},"platform_country":${JSON.stringify(placed.platform)}}}`;
  const digest = hex(await crypto.subtle.digest("SHA-256", encoder.encode(body)));
  const canonical = `harbour-v1\nPOST\n${target.path}\n${received}\n${region.id}\n${key}\n${digest}`;
  const mac = hex(await crypto.subtle.sign("HMAC", target.key, encoder.encode(canonical)));
  const headers = { "content-type": "application/json", "idempotency-key": key, "x-harbour-signature": `t=${received},r=${region.id},v1=${mac}` };
  const finish = { ...rate, ...cors };
  const retryable = { "retry-after": String(UNAVAILABLE_RETRY_S), "idempotency-key": key };
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
      if (receipt?.region === region.id && typeof receipt.id === "string" && /^[A-Za-z0-9_-]{1,100}$/.test(receipt.id)) {
        return accepted(receipt.id, region.id, key, status === 200, finish);
      }
    } else if (status === 409) {
      return json(text)?.code === "already_entered"
        ? problem(409, "already_entered", "You have already entered", "This campaign takes one entry per person, and we already have yours.", {}, finish)
        : problem(409, "idempotency_key_reused", "This key was already used for a different entry", "Start a new entry; the key belongs to an earlier, different submission.", {}, finish);
    }
    console.error(JSON.stringify({ msg: "peer.origin_refused", status, region: region.id }));
    return problem(502, "origin_error", "Your entry could not be stored", "The storage service did not accept it. Please try again later with the same Idempotency-Key.",
      { idempotency_key: key }, { ...retryable, ...finish });
  }
  console.error(JSON.stringify({ msg: "peer.origins_unavailable", region: region.id, busy: busyMs !== null }));
  if (busyMs !== null) {
    giveBack(campaign, region, ctx.grant, Date.now());
    const s = seconds(busyMs || BUSY_DEFAULT_MS);
    return problem(503, "origins_busy", "Lots of entries right now",
      "Your entry was not stored yet. Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
      { idempotency_key: key, retry_after_s: s }, { "retry-after": String(s), "idempotency-key": key, ...finish });
  }
  return problem(503, "region_unavailable", "Your entry could not be stored right now",
    "Please try again shortly with the same Idempotency-Key; it will not be stored twice.", { idempotency_key: key }, { ...retryable, ...finish });
}

async function submit(request, env, campaign, cors, now) {
  const type = request.headers.get("content-type");
  const [essence, ...params] = (type ?? "").split(";");
  const media = essence.trim().toLowerCase();
  const utf8 = params.every((p) => {
    const eq = p.indexOf("=");
    return eq < 0 || p.slice(0, eq).trim().toLowerCase() !== "charset" || p.slice(eq + 1).trim().replaceAll('"', "").toLowerCase() === "utf-8";
  });
  if (type === null || !utf8 || (media !== "application/json" && media !== "application/x-www-form-urlencoded")) {
    return problem(415, "unsupported_media_type", "Unsupported content type", "send application/json or application/x-www-form-urlencoded (UTF-8)", {},
      { "accept-post": "application/json, application/x-www-form-urlencoded", ...cors });
  }
  const tooLarge = () => problem(413, "body_too_large", "Submission too large", `a submission is at most ${policy.max_body_bytes} bytes`, {}, cors);
  const declaredLength = request.headers.get("content-length");
  if (declaredLength !== null && !(Number(declaredLength) <= policy.max_body_bytes)) return tooLarge();
  const key = request.headers.get("idempotency-key");
  const refused = await checkChallenge(secrets.form, campaign, request.headers.get("harbour-challenge"), key, now, cors);
  if (refused) return refused;
  let bytes;
  try {
    bytes = await request.arrayBuffer();
  } catch {
    return problem(400, "body_incomplete", "Incomplete submission", "the body ended early; please send it again", {}, cors);
  }
  if (bytes.byteLength > policy.max_body_bytes) return tooLarge();
  const parsed = parseBody(media === "application/json", bytes);
  if (parsed.error) return problem(400, parsed.error[0], "Unreadable submission", parsed.error[1], {}, cors);
  const entry = validate(campaign, parsed.pairs);
  if (entry.errors.length) return invalidFields(entry.errors, cors);
  const placed = place(request.cf?.country, entry.declared);
  if (placed.refused === "residency_conflict") {
    return invalidFields([fieldError(campaign.signal ?? "country", "residency_conflict",
      "entries from where you are cannot be stored under the data-protection law of the country you chose; choose the country you are in")], cors);
  }
  if (placed.refused) return problem(403, placed.refused, "Entries cannot be accepted from here", "this campaign cannot determine where your entry may be stored", {}, cors);
  const region = placed.region;
  const grant = admit(campaign, region, clientText(request.headers.get("cf-connecting-ip")), now);
  if (grant.refusal) return rateLimited(...grant.refusal, cors);
  const location = await consultLocation(env, grant.consult);
  const later = Math.max(Date.now(), now);
  const q = grant.force.perClient;
  if (location === "refused") {
    giveBack(campaign, region, grant, later);
    return rateLimited("location", q, q.window, cors);
  }
  if (location === "unavailable") {
    console.error(JSON.stringify({ msg: "peer.location_limit_unavailable", binding: grant.consult.binding }));
    if (grant.force.failClosed) {
      giveBack(campaign, region, grant, later);
      return problem(503, "location_limit_unavailable", "Your entry could not be taken right now",
        "Please try again shortly with the same Idempotency-Key; it will not be stored twice.",
        { idempotency_key: key, retry_after_s: UNAVAILABLE_RETRY_S }, { "retry-after": String(UNAVAILABLE_RETRY_S), "idempotency-key": key, ...cors });
    }
  }
  const locationPolicy = location === "admitted" && bindingName(q) !== "HARBOUR_RL_INEXPRESSIBLE" ? `, "location";q=${q.burst};w=${q.window / 1000}` : "";
  const rate = {
    "ratelimit-policy": `"client";q=${q.burst};w=${seconds(q.window)}${locationPolicy}`,
    ratelimit: `"client";r=${grant.remaining};t=${seconds(grant.reset)}`,
  };
  if (entry.honeypot) return accepted(`${region.id}-${hex(crypto.getRandomValues(new Uint8Array(8)))}`, region.id, key, false, { ...rate, ...cors });
  const sorted = entry.fields.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const fieldsJson = JSON.stringify(Object.fromEntries(sorted));
  return forward(secrets.targets[region.index], region, campaign, entry, { key, fieldsJson, received: now, placed, rate, cors, grant });
}

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
    const url = new URL(request.url);
    const match = /^\/api\/campaigns\/(?:([^/]+)\/submissions|([^/]+))$/.exec(url.pathname);
    if (!match) return problem(404, "not_found", "Not found", "no such resource", {}, {});
    const campaign = campaigns.get(match[1] ?? match[2]);
    if (!campaign) return problem(404, "not_found", "Not found", "no such campaign", {}, {});
    const method = request.method;
    if (match[2] !== undefined) {
      if (method !== "GET" && method !== "HEAD") return problem(405, "method_not_allowed", "Method not allowed", "use GET, HEAD", {}, { allow: "GET, HEAD" });
      return describe(secrets.form, campaign, url, now);
    }
    if (method !== "POST" && method !== "OPTIONS") return problem(405, "method_not_allowed", "Method not allowed", "use POST, OPTIONS", {}, { allow: "POST, OPTIONS" });
    const origin = request.headers.get("origin");
    let cors = {};
    if (origin !== null && origin !== url.origin) {
      if (!campaign.allowed_origins?.includes(origin) && !secrets.pageOrigins.has(origin)) {
        return problem(403, "origin_not_allowed", "Cross-origin submission refused", "this page is not allowed to submit to this campaign", {}, {});
      }
      cors = { "access-control-allow-origin": origin, "access-control-expose-headers": RATE_EXPOSED, vary: "origin" };
    }
    if (method === "OPTIONS") {
      return new Response(null, {
        status: 204,
        headers: { "access-control-allow-methods": "POST", "access-control-allow-headers": "content-type, idempotency-key, harbour-challenge", "access-control-max-age": "600", ...cors },
      });
    }
    return submit(request, env, campaign, cors, now);
  },
};
