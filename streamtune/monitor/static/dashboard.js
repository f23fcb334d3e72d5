// streamtune monitor: polls /api/state and redraws the charts with Plotly.react.
"use strict";

const POLL_MS = 2000;
const KIND_STYLE = {
  promoted: { color: "#1a8f4c", symbol: "triangle-up" },
  swapped: { color: "#2e86de", symbol: "circle" },
  superseded: { color: "#95a5a6", symbol: "square" },
  rejected: { color: "#c0392b", symbol: "x" },
  gate_rejected: { color: "#e67e22", symbol: "x-open" },
  job_failed: { color: "#8e44ad", symbol: "diamond" },
  job_superseded: { color: "#7f8c8d", symbol: "square-open" },
  rolled_back: { color: "#d35400", symbol: "triangle-down" },
};
const PALETTE = ["#2e86de", "#e67e22", "#16a085", "#8e44ad", "#c0392b", "#7f8c8d"];
const LAYOUT = {
  margin: { l: 50, r: 50, t: 10, b: 40 },
  legend: { orientation: "h", y: -0.18, font: { size: 11 } },
  font: { family: "DejaVu Sans, sans-serif", size: 12 },
  paper_bgcolor: "#fff", plot_bgcolor: "#fff",
  xaxis: { type: "date", gridcolor: "#eef1f5" },
  yaxis: { gridcolor: "#eef1f5", zeroline: false },
};
const CONFIG = { displayModeBar: false, responsive: true };

const dt = (ms) => new Date(ms);
const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const num = (x, d = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const clock = (ms) => new Date(ms).toLocaleTimeString();
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

function layout(extra) {
  return Object.assign({}, LAYOUT, extra, { xaxis: Object.assign({}, LAYOUT.xaxis, (extra || {}).xaxis) });
}

function markers(s) {
  // Vertical lines: drift (red dotted), promotions (green), alerts (orange).
  const shapes = [];
  const line = (ms, color, dash) => shapes.push({
    type: "line", xref: "x", yref: "paper", x0: dt(ms), x1: dt(ms), y0: 0, y1: 1,
    line: { color, width: 1.5, dash },
  });
  s.drift.forEach((d) => line(d.ts_ms, "#c0392b", "dot"));
  s.timeline.filter((e) => e.kind === "promoted" || e.kind === "rolled_back").forEach((e) => line(e.ts_ms, "#1a8f4c", "solid"));
  s.alerts.forEach((a) => line(a.ts_ms, "#e67e22", "dash"));
  return shapes;
}

function kpis(s) {
  const rates = s.throughput.predictions_per_s;
  const rate = rates.length ? rates[rates.length - 1] : 0;
  const p95 = s.latency.p95_ms.length ? s.latency.p95_ms[s.latency.p95_ms.length - 1] : null;
  const lag = Object.values(s.lag).reduce((a, b) => a + b, 0);
  const cards = [
    ["Predictions / s (5 s)", num(rate), `${s.counts.predictions || 0} answered`],
    ["Latency p95", p95 === null ? "–" : `${num(p95, 0)} ms`, "interaction to prediction"],
    ["Consumer lag", String(lag), `${Object.keys(s.lag).length} groups`],
    ["Alerts", String(s.alerts.length), Object.entries(s.alert_kinds).map(([k, v]) => `${k} ${v}`).join(", ") || "none"],
    ["Dead letters", String(Object.values(s.dead_letters).reduce((a, b) => a + b, 0)), Object.keys(s.dead_letters).join(", ") || "none"],
  ];
  for (const [task, t] of Object.entries(s.tasks)) {
    cards.push([`${task}`, `${pct(t.accuracy_now)} / est ${pct(t.estimated_now)}`,
      `live ${s.live[task] || "base"} · F1 ${num(t.macro_f1_now, 3)} · CBPE err ${t.cbpe.mae === null ? "–" : pct(t.cbpe.mae)}`]);
  }
  document.getElementById("kpis").innerHTML = cards.map(([label, value, sub]) =>
    `<div class="kpi"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div><div class="sub">${esc(sub)}</div></div>`).join("");
}

function throughput(s) {
  const traces = [
    { name: "predictions/s", x: s.throughput.t.map(dt), y: s.throughput.predictions_per_s, type: "scatter", mode: "lines", line: { color: "#2e86de" } },
    { name: "interactions/s", x: s.throughput.t.map(dt), y: s.throughput.interactions_per_s, type: "scatter", mode: "lines", line: { color: "#95a5a6", dash: "dot" } },
    { name: "latency p50 (ms)", x: s.latency.t.map(dt), y: s.latency.p50_ms, yaxis: "y2", type: "scatter", mode: "lines", line: { color: "#16a085" } },
    { name: "latency p95 (ms)", x: s.latency.t.map(dt), y: s.latency.p95_ms, yaxis: "y2", type: "scatter", mode: "lines", line: { color: "#e67e22" } },
  ];
  Plotly.react("chart-throughput", traces, layout({
    yaxis: { title: "events / s", gridcolor: "#eef1f5", rangemode: "tozero" },
    yaxis2: { title: "ms", overlaying: "y", side: "right", rangemode: "tozero", showgrid: false },
  }), CONFIG);
}

function accuracy(s) {
  const traces = [];
  Object.entries(s.tasks).forEach(([task, t], i) => {
    const color = PALETTE[i % PALETTE.length];
    traces.push({ name: `${task} accuracy`, x: t.series.t.map(dt), y: t.series.accuracy, mode: "lines", line: { color, width: 2 } });
    traces.push({ name: `${task} macro-F1`, x: t.series.t.map(dt), y: t.series.macro_f1, mode: "lines", line: { color, width: 1, dash: "dot" } });
    traces.push({ name: `${task} estimated`, x: t.estimate_series.t.map(dt), y: t.estimate_series.estimated, mode: "lines", line: { color, width: 1.5, dash: "dash" }, opacity: 0.8 });
  });
  Plotly.react("chart-accuracy", traces, layout({ yaxis: { range: [0, 1], tickformat: ".0%", gridcolor: "#eef1f5" }, shapes: markers(s) }), CONFIG);
}

function cbpe(s) {
  const traces = [];
  Object.entries(s.tasks).forEach(([task, t], i) => {
    const color = PALETTE[i % PALETTE.length];
    traces.push({ name: `${task} estimated`, x: t.cbpe.t.map(dt), y: t.cbpe.estimated, mode: "lines+markers", line: { color, dash: "dash" }, marker: { size: 5 } });
    traces.push({ name: `${task} realised`, x: t.cbpe.t.map(dt), y: t.cbpe.realised, mode: "lines+markers", line: { color }, marker: { size: 5 } });
  });
  Plotly.react("chart-cbpe", traces, layout({ yaxis: { range: [0, 1], tickformat: ".0%", gridcolor: "#eef1f5" } }), CONFIG);
}

function timeline(s) {
  const byKind = {};
  s.timeline.forEach((e) => (byKind[e.kind] = byKind[e.kind] || []).push(e));
  const traces = Object.entries(byKind).map(([kind, events]) => ({
    name: kind, x: events.map((e) => dt(e.ts_ms)), y: events.map((e) => e.task),
    text: events.map((e) => e.version), customdata: events.map((e) => e.detail),
    mode: "markers+text", textposition: "top center", textfont: { size: 10 }, type: "scatter",
    marker: { size: 12, color: (KIND_STYLE[kind] || {}).color || "#555", symbol: (KIND_STYLE[kind] || {}).symbol || "circle" },
    hovertemplate: "%{y} %{text}<br>" + kind + "<br>%{customdata}<extra></extra>",
  }));
  const empty = traces.length ? [] : [{ text: "no adapter published yet: every task serves its seed model", xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false, font: { size: 14, color: "#66758a" } }];
  Plotly.react("chart-timeline", traces, layout({
    yaxis: { type: "category", automargin: true, visible: traces.length > 0 },
    xaxis: { visible: traces.length > 0 }, annotations: empty, margin: { l: 120, r: 20, t: 10, b: 40 },
  }), CONFIG);
}

function lag(s) {
  const t = (s.lag_series.t || []).map(dt);
  const traces = Object.entries(s.lag_series).filter(([k]) => k !== "t").map(([group, ys], i) => ({
    name: group, x: t, y: ys, mode: "lines", line: { color: PALETTE[i % PALETTE.length] },
  }));
  Plotly.react("chart-lag", traces, layout({ yaxis: { title: "records", rangemode: "tozero", gridcolor: "#eef1f5" } }), CONFIG);
}

function entities(s) {
  const names = Object.keys(s.entities).reverse();
  const labels = new Set();
  names.forEach((n) => Object.keys(s.entities[n]).forEach((k) => k !== "n" && labels.add(k)));
  const colors = { bearish: "#c0392b", bullish: "#1a8f4c", neutral: "#95a5a6" };
  const traces = [...labels].map((label, i) => ({
    name: label, type: "bar", orientation: "h", y: names,
    x: names.map((n) => (s.entities[n][label] || 0) / s.entities[n].n),
    marker: { color: colors[label.toLowerCase()] || PALETTE[i % PALETTE.length] },
    hovertemplate: "%{y}: %{x:.0%} " + label + "<extra></extra>",
  }));
  Plotly.react("chart-entities", traces, Object.assign({}, LAYOUT, {
    barmode: "stack", xaxis: { tickformat: ".0%", range: [0, 1] }, yaxis: { automargin: true, dtick: 1, tickfont: { size: 11 } },
    margin: { l: 90, r: 20, t: 10, b: 40 },
  }), CONFIG);
}

function table(id, head, rows) {
  document.getElementById(id).innerHTML =
    `<tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr>` +
    (rows.length ? rows.join("") : `<tr><td colspan="${head.length}">none yet</td></tr>`);
}

function tables(s) {
  table("jobs", ["job", "tasks", "why", "state", "progress", "message"], s.jobs.slice().reverse().map((j) => {
    const cls = j.state === "finished" ? "ok" : j.state === "failed" || j.state === "rejected" ? "bad" : "warn";
    return `<tr><td>${esc(j.job_id)}</td><td>${esc(j.tasks.join(", "))}</td><td>${esc(j.reason)}</td>` +
      `<td class="${cls}">${esc(j.state)}</td><td><span class="bar"><span style="width:${Math.round(100 * (j.progress || 0))}%"></span></span></td>` +
      `<td>${esc((j.message || "").slice(0, 90))}</td></tr>`;
  }));
  table("alerts", ["time", "entity", "kind", "share", "baseline", "n", "message"], s.alerts.slice().reverse().map((a) =>
    `<tr><td>${clock(a.ts_ms)}</td><td><b>${esc(a.entity)}</b></td><td>${esc(a.kind)}</td><td>${pct(a.share)}</td>` +
    `<td>${pct(a.baseline_share)}</td><td>${a.count}</td><td>${esc(a.message)}</td></tr>`));
  table("drift", ["time", "task", "detector", "statistic", "value", "position", "began"], s.drift.slice().reverse().map((d) =>
    `<tr><td>${clock(d.ts_ms)}</td><td>${esc(d.task)}</td><td>${esc(d.detector)}</td><td>${esc(d.statistic)}</td>` +
    `<td>${num(d.value, 3)}</td><td>${d.position}</td>` +
    `<td>${d.examples_since_change == null ? "" : d.examples_since_change + " examples ago"}</td></tr>`));
  table("timeline", ["time", "task", "version", "event", "detail"], s.timeline.slice().reverse().map((e) =>
    `<tr data-version="${esc(e.version)}"><td>${clock(e.ts_ms)}</td><td>${esc(e.task)}</td><td>${esc(e.version)}</td>` +
    `<td style="color:${(KIND_STYLE[e.kind] || {}).color || "inherit"}">${esc(e.kind)}</td><td>${esc(e.detail)}</td></tr>`));
}

// The monitor's token, when it has one (STREAMTUNE_MONITOR_TOKEN): the page was opened with
// ?token=..., and passes it on to /api/state as a bearer header.
const TOKEN = new URLSearchParams(location.search).get("token");
const AUTH = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};

async function refresh() {
  try {
    const response = await fetch("/api/state", { cache: "no-store", headers: AUTH });
    const s = await response.json();
    document.getElementById("meta").textContent =
      `topics ${s.prefix || "(no prefix)"}* · last record ${s.last_ts_ms ? clock(s.last_ts_ms) : "–"} · updated ${clock(Date.now())}`;
    const health = document.getElementById("health");
    health.textContent = s.health.healthy ? "healthy" : `unhealthy: ${s.health.reason}`;
    health.className = "health " + (s.health.healthy ? "ok" : "bad");
    kpis(s); throughput(s); accuracy(s); cbpe(s); timeline(s); lag(s); entities(s); tables(s);
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    document.getElementById("meta").textContent = `cannot reach the monitor: ${err}`;
  }
}

refresh();
setInterval(refresh, POLL_MS);
