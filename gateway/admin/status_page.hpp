#pragma once
// The status page served at "/": one self-contained HTML file (no external assets, works
// offline). It polls /api/v1/sparks every 2 s; with a token entered, it can wake and sleep sparks.
// Below the table, each spark's last 24 hours as an inline SVG timeline (awake and asleep bars,
// sessions, wake markers) and the fleet's share of spark-hours slept, from /api/v1/history
// (polled every 10 s: it changes slowly).
namespace spark::gateway {

inline constexpr const char* kStatusPageHtml = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>spark-gateway</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }
  h1 { font-size: 1.3rem; margin: 0 0 1rem; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  th, td { text-align: left; padding: .45rem .7rem; border-bottom: 1px solid #e4e4e4; }
  th { font-weight: 600; background: #f0f0f0; }
  .state { font-weight: 600; }
  .sleeping { color: #777; } .waking { color: #b36b00; } .running { color: #17803d; }
  .stopping { color: #b36b00; } .failed { color: #c0262d; }
  button { margin-right: .3rem; }
  #bar { margin-bottom: 1rem; display: flex; gap: .5rem; align-items: center; }
  #message { color: #c0262d; }
  .muted { color: #888; }
  h2 { font-size: 1.05rem; margin: 1.6rem 0 .6rem; }
  #fleet { display: flex; gap: 2rem; margin-bottom: .8rem; flex-wrap: wrap; }
  .share { display: flex; align-items: center; gap: .5rem; }
  .share svg { width: 160px; height: 14px; }
  #timelines { background: #fff; padding: .5rem .7rem; border: 1px solid #e4e4e4; }
  .tl-row { display: grid; grid-template-columns: 11rem 1fr 4.5rem; align-items: center; gap: .6rem; }
  .tl-row svg { width: 100%; height: 26px; display: block; }
  .tl-axis svg { height: 16px; }
  .tl-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .tl-awake24 { text-align: right; color: #555; font-variant-numeric: tabular-nums; }
  rect.awake { fill: #3fa55b; } rect.asleep { fill: #d6d6d6; }
  rect.unknown { fill: #fff; stroke: #e4e4e4; stroke-dasharray: 2 2; }
  rect.session { fill: #0d5c26; } path.wake { fill: #b36b00; }
  rect.slept { fill: #8fa9c9; } rect.share-rest { fill: #3fa55b; }
  .legend { display: flex; gap: 1rem; margin-top: .4rem; color: #555; font-size: 12px; }
  .legend i { display: inline-block; width: 12px; height: 10px; margin-right: .3rem; vertical-align: -1px; }
</style>
</head>
<body>
<h1>spark-gateway</h1>
<div id="bar">
  <label>Admin token <input id="token" type="password" size="28" autocomplete="off"></label>
  <span class="muted" id="updated"></span>
  <span id="message"></span>
</div>
<table>
  <thead><tr><th>Spark</th><th>State</th><th>Connections</th><th>Idle for</th><th>Sleeps in</th>
  <th>Keep-awake until</th><th title="connections closed before waking it: bare connects, scans, health checks, not SSH">Turned away</th><th>Listen and ports</th><th></th></tr></thead>
  <tbody id="sparks"><tr><td colspan="9" class="muted">loading…</td></tr></tbody>
</table>
<h2>Last 24 hours</h2>
<div id="fleet"><span class="muted">loading…</span></div>
<div id="timelines"></div>
<div class="legend"><span><i style="background:#3fa55b"></i>awake</span><span><i style="background:#0d5c26"></i>in use (a session open)</span>
  <span><i style="background:#d6d6d6"></i>asleep</span><span><i style="border:1px dashed #ccc"></i>unknown (not served, or the gateway was down)</span>
  <span><i style="background:#b36b00;width:8px"></i>wake</span></div>
<script>
"use strict";
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("spark-gateway-token") || "";
tokenInput.addEventListener("input", () => { sessionStorage.setItem("spark-gateway-token", tokenInput.value); refresh(); });

function human(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
        m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return d + "d" + (h ? h + "h" : "");
  if (h) return h + "h" + (m ? m + "m" : "");
  if (m) return m + "m" + (s ? s + "s" : "");
  return s + "s";
}
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
// The SSH address, then a link per dev port ("web (3000)" to the gateway's address for it).
function listenCell(s) {
  const td = cell(s.listen);
  for (const p of s.ports || []) {
    const a = document.createElement("a");
    a.href = p.url;
    a.textContent = p.name + " (" + p.port + ")";
    a.className = "port";
    td.append(" ", a);
  }
  return td;
}

async function act(name, action) {
  const message = document.getElementById("message");
  message.textContent = "";
  try {
    const res = await fetch("/api/v1/sparks/" + encodeURIComponent(name) + "/" + action,
      { method: "POST", headers: { "Authorization": "Bearer " + tokenInput.value } });
    if (!res.ok) { const body = await res.json().catch(() => ({})); message.textContent = name + ": " + (body.error || res.status); }
  } catch (e) { message.textContent = String(e); }
  refresh();
}

async function refresh() {
  let data;
  try {
    const res = await fetch("/api/v1/sparks", { cache: "no-store" });
    data = await res.json();
  } catch (e) { document.getElementById("updated").textContent = "gateway unreachable"; return; }
  const now = Date.now() / 1000;
  const rows = document.getElementById("sparks");
  rows.replaceChildren();
  if (!data.sparks.length) rows.appendChild(Object.assign(document.createElement("tr"), { innerHTML: '<td colspan="9" class="muted">no sparks configured</td>' }));
  for (const s of data.sparks) {
    const tr = document.createElement("tr");
    tr.dataset.spark = s.name;
    const idle = s.open_connections > 0 || !s.last_activity ? null : now - Date.parse(s.last_activity) / 1000;
    const sleepsIn = s.sleeps_at ? Date.parse(s.sleeps_at) / 1000 - now : null;
    tr.append(cell(s.name), cell(s.state, "state " + s.state), cell(String(s.open_connections)),
              cell(s.open_connections > 0 ? "active" : s.last_activity ? human(idle) : "never used"),
              cell(s.sleeps_at ? human(sleepsIn) : "—"),
              cell(s.keep_awake_until ? new Date(s.keep_awake_until).toLocaleString() : "—"),
              cell(String(s.turned_away ?? 0)), listenCell(s));
    const actions = document.createElement("td");
    if (tokenInput.value) {
      for (const action of ["wake", "sleep"]) {
        const b = document.createElement("button");
        b.textContent = action; b.className = action; b.onclick = () => act(s.name, action);
        actions.appendChild(b);
      }
    }
    tr.appendChild(actions);
    rows.appendChild(tr);
  }
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}
// ---- the last 24 hours, drawn ----
const SVG = "http://www.w3.org/2000/svg";
const DAY = 86400 * 1000;
const WIDTH = 960;  // viewBox units across a day
function svgEl(name, attrs, title) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (title) { const t = document.createElementNS(SVG, "title"); t.textContent = title; e.appendChild(t); }
  return e;
}
function percent(share) { return share === null || share === undefined ? "—" : Math.round(share * 100) + "%"; }
function hours(seconds) { return (seconds / 3600).toFixed(1) + " h"; }
function when(ms) { return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

// The fleet's share of spark-hours slept: a bar per window, the slept part first.
function shareBar(id, label, totals) {
  const div = document.createElement("div");
  div.className = "share";
  div.id = id;
  const share = totals.slept_share;
  div.dataset.share = share === null ? "" : String(share);
  const svg = svgEl("svg", { viewBox: "0 0 100 10", preserveAspectRatio: "none" });
  const slept = share === null ? 0 : share * 100;
  svg.appendChild(svgEl("rect", { class: "slept", x: 0, y: 0, width: slept, height: 10 }));
  if (share !== null) svg.appendChild(svgEl("rect", { class: "share-rest", x: slept, y: 0, width: 100 - slept, height: 10 }));
  const text = document.createElement("span");
  text.textContent = label + ": slept " + percent(share) + " of spark-hours (" + hours(totals.asleep_seconds) +
    " asleep, " + hours(totals.awake_seconds) + " awake" + (totals.unknown_seconds > 0 ? ", " + hours(totals.unknown_seconds) + " unknown" : "") + ")";
  div.append(svg, text);
  return div;
}

// One spark's day: a bar per interval, sessions as a strip along the bottom, a marker per wake.
function timeline(h, from) {
  const x = ms => Math.max(0, Math.min(WIDTH, (ms - from) / DAY * WIDTH));
  const svg = svgEl("svg", { viewBox: "0 0 " + WIDTH + " 26", preserveAspectRatio: "none", class: "timeline" });
  svg.dataset.spark = h.name;
  const now = Date.parse(h.now);
  for (const i of h.intervals) {
    const a = Date.parse(i.from), b = i.to ? Date.parse(i.to) : now;
    const y = i.state === "awake" ? 2 : i.state === "asleep" ? 8 : 6;
    const height = i.state === "awake" ? 22 : i.state === "asleep" ? 10 : 14;
    const r = svgEl("rect", { class: i.state, x: x(a), y, width: Math.max(0.5, x(b) - x(a)), height },
                    i.state + " " + when(a) + "–" + (i.to ? when(b) : "now"));
    r.dataset.from = i.from; r.dataset.to = i.to || h.now;
    svg.appendChild(r);
  }
  for (const s of h.in_use) {
    const a = Date.parse(s.from), b = s.to ? Date.parse(s.to) : now;
    const r = svgEl("rect", { class: "session", x: x(a), y: 18, width: Math.max(1, x(b) - x(a)), height: 6 },
                    "in use " + when(a) + "–" + (s.to ? when(b) : "now"));
    r.dataset.from = s.from; r.dataset.to = s.to || h.now;
    svg.appendChild(r);
  }
  for (const w of h.wakes) {
    const at = x(Date.parse(w.at));
    const m = svgEl("path", { class: "wake", d: "M" + (at - 4) + " 0 L" + (at + 4) + " 0 L" + at + " 7 Z" },
                    "woken at " + when(Date.parse(w.at)) + " for " + w.cause);
    m.dataset.at = w.at;
    svg.appendChild(m);
  }
  return svg;
}

// Hour marks every 3 hours (local time) over the same day.
function axis(from) {
  const svg = svgEl("svg", { viewBox: "0 0 " + WIDTH + " 16", preserveAspectRatio: "none" });
  const first = new Date(from); first.setMinutes(0, 0, 0);
  for (let t = first.getTime() + 3600 * 1000; t < from + DAY; t += 3600 * 1000) {
    const d = new Date(t);
    if (d.getHours() % 3) continue;
    const at = (t - from) / DAY * WIDTH;
    svg.appendChild(svgEl("line", { x1: at, x2: at, y1: 11, y2: 16, stroke: "#999" }));
    svg.appendChild(Object.assign(svgEl("text", { x: at + 2, y: 10, "font-size": 10, fill: "#777" }), { textContent: String(d.getHours()).padStart(2, "0") + ":00" }));
  }
  return svg;
}

async function refreshHistory() {
  let data;
  try {
    const res = await fetch("/api/v1/history?hours=24", { cache: "no-store" });
    data = await res.json();
  } catch (e) { return; }
  const from = Date.parse(data.now) - DAY;
  document.getElementById("fleet").replaceChildren(shareBar("fleet-24h", "last 24 hours", data.totals["24h"]),
                                                   shareBar("fleet-7d", "last 7 days", data.totals["7d"]));
  const rows = [];
  const head = document.createElement("div");
  head.className = "tl-row tl-axis";
  head.append(document.createElement("span"), axis(from), Object.assign(document.createElement("span"), { className: "tl-awake24 muted", textContent: "awake" }));
  rows.push(head);
  for (const h of data.sparks) {
    const row = document.createElement("div");
    row.className = "tl-row";
    row.dataset.spark = h.name;
    const name = Object.assign(document.createElement("span"), { className: "tl-name", textContent: h.name });
    const awake = Object.assign(document.createElement("span"), { className: "tl-awake24", textContent: hours(h.totals["24h"].awake_seconds) });
    row.append(name, timeline(h, from), awake);
    rows.push(row);
  }
  document.getElementById("timelines").replaceChildren(...rows);
}

refresh();
setInterval(refresh, 2000);
refreshHistory();
setInterval(refreshHistory, 10000);
</script>
</body>
</html>
)HTML";

}  // namespace spark::gateway
