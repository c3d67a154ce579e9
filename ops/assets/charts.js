// A broadcast's charts, drawn with uPlot from the series harbour-live serves (`/data`) or a
// broadcast report carries inline (harbour_ops::recording::Recording::series): per region, the
// entries a second by outcome; the edge's time to answer; each origin's submissions in flight and
// what it turned away; the edge's breaker openings. Times are UTC; every axis names its unit.
"use strict";

const HarbourCharts = (() => {
  // Okabe-Ito, readable with the common colour-vision deficiencies.
  const COLOURS = ["#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];
  const GROUP_COLOURS = { accepted: "#009E73", refused: "#E69F00", shed: "#CC79A7", failed: "#D55E00" };
  const charts = new Map(); // chart id -> { plot, labels }

  const utc = (seconds) => uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC");
  // Ticks on whole seconds: the figures are per second.
  const SECOND_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600];
  // 24-hour UTC clock time, as the rest of harbour writes times.
  const clock = (seconds) => new Date(seconds * 1000).toISOString().slice(11, 19);
  const whole = (n) => Math.round(n).toLocaleString("en-GB");

  function element(tag, attributes = {}, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function colourOf(label, i) {
    const group = label.split(":")[0];
    return GROUP_COLOURS[group] && i < 12 ? shade(GROUP_COLOURS[group], i) : COLOURS[i % COLOURS.length];
  }

  // The same hue a little darker for each further series of a group, so they stay apart.
  function shade(hex, i) {
    const factor = 1 - Math.min(i, 4) * 0.12;
    const channel = (at) => Math.round(parseInt(hex.slice(at, at + 2), 16) * factor).toString(16).padStart(2, "0");
    return `#${channel(1)}${channel(3)}${channel(5)}`;
  }

  // One chart: a section with its title, a sentence saying what it shows, and the plot.
  function section(root, id, title) {
    let box = root.querySelector(`#${id}`);
    if (!box) {
      box = element("section", { id, class: "chart", "aria-labelledby": `${id}-title` });
      box.append(element("h3", { id: `${id}-title` }, title));
      box.append(element("p", { class: "summary" }));
      box.append(element("div", { class: "plot", role: "img", "aria-label": title }));
      root.append(box);
    }
    return box;
  }

  // The canvas is hidden from assistive technology; the chart's label says what its axes are.
  const described = (spec) => `${spec.title}: ${spec.unit} (vertical axis) against time in UTC (horizontal axis). ${spec.summary}`;

  function plot(root, id, spec, x) {
    const box = section(root, id, spec.title);
    box.querySelector(".summary").textContent = spec.summary;
    box.querySelector(".plot").setAttribute("aria-label", described(spec));
    const labels = spec.series.map((s) => s.label).join("\n");
    const data = [x, ...spec.series.map((s) => s.values)];
    const known = charts.get(id);
    if (known && known.labels === labels) {
      known.plot.setData(data);
      return;
    }
    known?.plot.destroy();
    const target = box.querySelector(".plot");
    target.replaceChildren();
    const width = Math.max(320, Math.min(target.clientWidth || 900, 1100));
    const options = {
      width,
      height: 220,
      tzDate: utc,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { label: "time (UTC)", stroke: "#222", grid: { stroke: "#e3e3e3" }, values: (_u, ticks) => ticks.map(clock), incrs: SECOND_STEPS },
        { label: spec.unit, stroke: "#222", grid: { stroke: "#e3e3e3" }, size: 60 },
      ],
      series: [
        { label: "time (UTC)" },
        ...spec.series.map((s, i) => ({
          label: s.label,
          stroke: s.colour ?? colourOf(s.label, i),
          width: s.width ?? 1.5,
          dash: s.dash,
          spanGaps: false,
          points: { show: false },
        })),
      ],
    };
    const made = new uPlot(options, data, target);
    made.root.querySelector("canvas")?.setAttribute("aria-hidden", "true");
    charts.set(id, { plot: made, labels });
  }

  const sum = (values) => values.reduce((a, b) => a + (b ?? 0), 0);

  function regionSpec(region) {
    const series = [];
    if (region.id !== "") {
      series.push({ label: "stored (the origins' own count)", values: region.stored, colour: "#0072B2", width: 2.5 });
    }
    for (const s of region.edge) series.push({ label: s.label, values: s.values });
    const accepted = sum(region.edge.filter((s) => s.label.startsWith("accepted")).map((s) => s.total));
    const refused = sum(region.edge.filter((s) => s.label.startsWith("refused")).map((s) => s.total));
    const shed = sum(region.edge.filter((s) => s.label.startsWith("shed")).map((s) => s.total));
    const failed = sum(region.edge.filter((s) => s.label.startsWith("failed")).map((s) => s.total));
    const name = region.id === "" ? region.name : `${region.name} (${region.id})`;
    const summary = region.id === ""
      ? `Refused before a region was chosen: ${whole(refused)} entries.`
      : `Over these minutes the origins stored ${whole(region.stored_total)} entries; the edge accepted ${whole(accepted)}, refused ${whole(refused)}, shed ${whole(shed)} (asked to retry) and failed ${whole(failed)}.`;
    return { title: `${name}: entries per second`, unit: "entries per second", summary, series };
  }

  function draw(root, data) {
    const x = data.x;
    const regions = root.querySelector("#regions");
    data.regions.forEach((region, i) => plot(regions, `region-${i}`, regionSpec(region), x));
    const edge = root.querySelector("#edge");
    const last = (values) => values.filter((v) => v !== null).at(-1);
    const p99 = last(data.latency.p99);
    plot(edge, "latency", {
      title: "Time to answer a submission at the edge",
      unit: "milliseconds",
      summary: p99 === undefined
        ? "No answers from the edge yet."
        : `Half of the answers came within the first line, 99 in 100 within the second; the latest second's 99th percentile: ${whole(p99)} ms.`,
      series: [
        { label: "p50: half answered within", values: data.latency.p50, colour: "#0072B2" },
        { label: "p99: 99 in 100 answered within", values: data.latency.p99, colour: "#D55E00" },
      ],
    }, x);
    plot(edge, "breakers", {
      title: "Breaker openings at the edge (an origin said it was full)",
      unit: "openings per second",
      summary: `Openings over these minutes: ${data.breakers.map((b) => `${b.label} ${whole(b.total)}`).join(", ")}.`,
      series: data.breakers.map((b) => ({ label: b.label, values: b.values })),
    }, x);
    const origins = root.querySelector("#origins");
    plot(origins, "in-flight", {
      title: "Submissions in flight at each origin (the most in each second)",
      unit: "submissions",
      summary: `${data.origins.length} origins.`,
      series: data.origins.map((o) => ({ label: o.label, values: o.in_flight })),
    }, x);
    plot(origins, "shed", {
      title: "Submissions each origin turned away as full",
      unit: "submissions per second",
      summary: `Turned away over these minutes: ${whole(sum(data.origins.map((o) => o.shed_total)))}.`,
      series: data.origins.map((o) => ({ label: o.label, values: o.shed })),
    }, x);
  }

  return { draw, element };
})();
