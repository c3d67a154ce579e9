// The live view: asks harbour-live for the last minutes' series every second and redraws.
"use strict";

const REFRESH_MS = 1000;

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/data", { cache: "no-store" });
    if (!response.ok) throw new Error(`the live view answered ${response.status}`);
    const data = await response.json();
    const updated = new Date().toISOString().slice(11, 19);
    const problems = data.problems.length ? ` Not read: ${data.problems.join("; ")}.` : "";
    status.textContent = `Updated ${updated} UTC. The edge's figures: ${data.series.edge_source}.${problems}`;
    if (data.series.x.length) HarbourCharts.draw(document, data.series);
  } catch (error) {
    status.textContent = `No figures: ${error.message}. Trying again.`;
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
