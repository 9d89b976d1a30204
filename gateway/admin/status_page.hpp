#pragma once
// The status page served at "/": one self-contained HTML file (no external assets, works
// offline). It polls /api/v1/sparks every 2 s; with a token entered, it can wake and sleep sparks.
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
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";

}  // namespace spark::gateway
