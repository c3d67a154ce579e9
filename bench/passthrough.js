// Baseline for the benchmark: a plain-JS worker that forwards each submission to its region's
// origin with no checks at all (no validation, limits, signature or failover). It is the floor
// for any worker that must forward: harbour's cost is reported as a ratio to it. It signs
// nothing, so the origins refuse its requests at once (401) without storing them.
const EU = new Set(["AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
  "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"]);
const REGION = { CN: "CN", RU: "RU", AU: "AU" };

export default {
  async fetch(request, env) {
    const country = request.cf?.country ?? "";
    const region = REGION[country] ?? (EU.has(country) ? "EU" : "GLOBAL");
    const origin = env[`HARBOUR_ORIGINS_${region}`].split(" ")[0];
    const response = await fetch(origin + "/v1/submissions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: await request.arrayBuffer(),
    });
    return new Response(await response.arrayBuffer(), { status: response.status });
  },
};
