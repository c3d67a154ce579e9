// A stand-in for Workers Analytics Engine, for the local stacks that run under `workerd serve`
// (the bench and its rehearsal, the end-to-end tests): workerd's own `analyticsEngine` binding
// (behind `--experimental`) forwards each `writeDataPoint` to this worker as a POST whose body is
// the event in Cap'n Proto's JSON (index and blobs as byte arrays, doubles as numbers). It keeps
// the latest points in memory, as `writeDataPoint` took them, and serves them on its own loopback
// socket to whatever reads the edge's figures locally (harbour-live, the rehearsal's report):
//   GET /points?since_s=S   {"points":[{"indexes":[..],"blobs":[..],"doubles":[..]}]} whose
//                           first double (the second a point covers) is S or later
// wrangler dev does not simulate Analytics Engine, so its stacks have no such figures.
"use strict";

const KEPT = 50_000;
const FIELDS = 20;
const points = [];
const decoder = new TextDecoder();
const text = (bytes) => (Array.isArray(bytes) ? decoder.decode(new Uint8Array(bytes)) : "");

// The event's numbered fields as arrays, up to the last one present.
function numbered(event, prefix, read) {
  const values = [];
  for (let i = 1; i <= FIELDS; i++) values.push(event[`${prefix}${i}`]);
  while (values.length && values.at(-1) === undefined) values.pop();
  return values.map(read);
}

function record(event) {
  const index = text(event.index1);
  points.push({
    indexes: index === "" ? [] : [index],
    blobs: numbered(event, "blob", text),
    doubles: numbered(event, "double", (value) => Number(value ?? 0)),
  });
  if (points.length > KEPT) points.splice(0, points.length - KEPT);
}

export default {
  async fetch(request) {
    if (request.method === "POST") {
      record(await request.json());
      return new Response(null, { status: 204 });
    }
    const url = new URL(request.url);
    if (request.method === "GET" && url.pathname === "/points") {
      const since = Number(url.searchParams.get("since_s") ?? 0);
      const found = points.filter((point) => (point.doubles[0] ?? 0) >= since);
      return Response.json({ points: found });
    }
    return new Response("not found\n", { status: 404 });
  },
};
