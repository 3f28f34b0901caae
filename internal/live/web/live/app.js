// The live page of one baton node. Once a second it fetches this node's
// /status (members, leader, batons) and /history (hop rates per node and
// events over the last minutes) and draws them: a table, a few counters
// and a hand-written SVG chart. Nothing comes from anywhere else.
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const W = 960, H = 320;                         // the chart's viewBox
const PAD = { left: 60, right: 16, top: 14, bottom: 26 };
const PALETTE = ["#2f6fdf", "#e07b00", "#2a9d4b", "#9b4fd0", "#c23b5a",
                 "#0097a7", "#8d6e00", "#5d6b82", "#d45d00", "#4a8f2c"];

// Each node keeps its colour for as long as the page is open, even when
// nodes join or leave.
const colours = new Map();
function colour(node) {
  if (!colours.has(node)) colours.set(node, PALETTE[colours.size % PALETTE.length]);
  return colours.get(node);
}

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

let lostSince = null;

async function poll() {
  try {
    const [status, history] = await Promise.all([getJSON("status"), getJSON("history")]);
    lostSince = null;
    showError("");
    render(status, history);
  } catch (err) {
    // Keep the last picture: a node that stopped is worth seeing too.
    lostSince = lostSince || new Date();
    showError(`Cannot reach this node since ${clock(lostSince)}: ${err.message}`);
  }
  setTimeout(poll, POLL_MS);
}

function render(status, history) {
  const rates = lastRates(history);
  renderSummary(status);
  renderChart(history);
  renderMembers(status, rates);
  renderBatons(status);
  renderEvents(history);
}

// lastRates maps each node to its latest plotted rate (null in a gap).
function lastRates(history) {
  const out = new Map();
  for (const s of history.series) {
    const last = s.points[s.points.length - 1];
    out.set(s.node, last ? last[1] : null);
  }
  return out;
}

function renderSummary(st) {
  const alive = (st.members || []).length;
  document.getElementById("summary").textContent =
    `cluster ${st.cluster} · seen from ${st.node} · leader ${st.leader || "none"} · ` +
    `${alive} alive · up ${duration(st.uptime_seconds)} · ${st.version}`;
  document.title = `baton · ${st.cluster} · ${st.node}`;
}

// ---- the chart -------------------------------------------------------

function renderChart(h) {
  const svg = document.getElementById("chart");
  svg.replaceChildren();

  // The x axis ends now and reaches back as far as the history goes:
  // at least a minute, at most the node's window.
  const now = h.now_ms;
  let oldest = now;
  for (const s of h.series) if (s.points.length) oldest = Math.min(oldest, s.points[0][0]);
  const span = Math.min(h.window_s * 1000, Math.max(60000, now - oldest));
  const t0 = now - span;

  let top = 0;
  for (const s of h.series)
    for (const [t, r] of s.points) if (r !== null && t >= t0) top = Math.max(top, r);
  top = niceCeil(top * 1.1);

  const x = t => PAD.left + (t - t0) / span * (W - PAD.left - PAD.right);
  const y = r => H - PAD.bottom - r / top * (H - PAD.top - PAD.bottom);
  svg.dataset.t0 = t0;
  svg.dataset.now = now;

  drawAxes(svg, t0, now, span, top, x, y);
  const rows = [-Infinity, -Infinity, -Infinity, -Infinity]; // label rows: where each ends
  for (const e of h.events) if (e.t >= t0) drawEvent(svg, e, x, rows);
  for (const s of h.series) drawSeries(svg, s, t0, x, y);
  if (!h.series.some(s => s.points.length))
    add(svg, "text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
        "waiting for the first heartbeats…");
  renderLegend(h);
}

function drawAxes(svg, t0, now, span, top, x, y) {
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4;
    add(svg, "line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" });
    add(svg, "text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, short(v));
  }
  const step = span > 180000 ? 60000 : span > 90000 ? 30000 : 15000;
  for (let t = Math.ceil(t0 / step) * step; t <= now; t += step)
    add(svg, "text", { x: x(t), y: H - 8, "text-anchor": "middle", class: "axis" }, clock(new Date(t)));
}

// drawSeries draws one node's line; a null rate breaks it. The data-*
// attributes say what is plotted, for tests and for curious readers.
function drawSeries(svg, s, t0, x, y) {
  let d = "", pen = false, shown = 0, last = null;
  for (const [t, r] of s.points) {
    if (t < t0 || r === null) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(r).toFixed(1)}`;
    pen = true;
    shown++;
    last = [t, r];
  }
  const path = add(svg, "path", { d: d || "M0,0", class: "series", stroke: colour(s.node) });
  path.dataset.node = s.node;
  path.dataset.points = shown;
  if (last) {
    path.dataset.lastT = last[0];
    path.dataset.lastRate = last[1];
  }
}

// drawEvent marks a loss (red) or a change of leader (blue, dashed).
// Member state changes are listed under Events, not drawn: a flapping
// member would bury the chart. Labels go in the first of a few rows
// with room for them; a marker with no room gets only its line (and a
// tooltip), so close events never print over each other.
function drawEvent(svg, e, x, rows) {
  if (e.kind !== "loss" && e.kind !== "leader") return;
  const g = add(svg, "g", { class: `event ${e.kind}` });
  const at = x(e.t);
  add(g, "line", { x1: at, x2: at, y1: PAD.top, y2: H - PAD.bottom });
  const label = e.kind === "loss" ? lossText(e, true) : `leader ${e.node}`;
  add(g, "title", {}, `${clock(new Date(e.t))} ${e.kind === "loss" ? lossText(e, false) : label}`);

  // Near the right edge the label goes to the left of its line.
  const width = 7 * label.length + 8;
  const left = at + width > W - PAD.right;
  const start = left ? at - width : at;
  const row = rows.findIndex(end => start > end + 4);
  if (row < 0) return;
  add(g, "text", { x: left ? at - 4 : at + 4, y: PAD.top + 10 + 14 * row,
                   "text-anchor": left ? "end" : "start" }, label);
  rows[row] = left ? at : at + width;
}

function renderLegend(h) {
  const ul = document.getElementById("legend");
  ul.replaceChildren();
  for (const s of h.series) {
    const li = el("li");
    const sw = el("span", "swatch");
    sw.style.background = colour(s.node);
    li.append(sw, s.node);
    ul.append(li);
  }
}

// ---- tables ----------------------------------------------------------

function renderMembers(st, rates) {
  const body = document.querySelector("#members tbody");
  body.replaceChildren();
  for (const m of st.member_states || []) {
    const tr = el("tr");
    tr.dataset.node = m.name;
    const name = el("td");
    name.append(m.name);
    if (m.name === st.leader) name.append(el("span", "tag", "leader"));
    if (m.name === st.node) name.append(el("span", "tag", "this node"));
    // A member that is not alive relays nothing now, whatever its last
    // heartbeat said.
    const rate = m.state === "alive" ? rates.get(m.name) : null;
    const beat = m.last_heartbeat_ms === undefined ? "" : `${m.last_heartbeat_ms} ms ago`;
    tr.append(name,
      el("td", `state state-${m.state}`, m.state),
      el("td", "num", rate === null || rate === undefined ? "–" : Math.round(rate).toLocaleString("en")),
      el("td", "num", m.hops.toLocaleString("en")),
      el("td", "num", beat));
    body.append(tr);
  }
}

function renderBatons(st) {
  const b = st.batons;
  const rows = [
    ["in flight", b.in_flight ? "yes" : "no"],
    ["moving", b.moving === undefined ? "(leader only)" : b.moving],
    ["lost", b.lost, b.lost > 0],
    ["re-injected", b.reinjected],
    ["fenced copies", b.fenced],
    ["parked", b.parked, b.parked > 0],
    ["latency p50 / p99", st.latency && st.latency.samples
      ? `${st.latency.p50_us.toFixed(0)} / ${st.latency.p99_us.toFixed(0)} µs` : "–"],
  ];
  const dl = document.getElementById("batons");
  dl.replaceChildren();
  for (const [name, value, bad] of rows) {
    dl.append(el("dt", "", name), el("dd", bad ? "bad" : "", String(value)));
  }
}

function renderEvents(h) {
  const ol = document.getElementById("events");
  ol.replaceChildren();
  const recent = h.events.slice(-20).reverse();
  if (!recent.length) ol.append(el("li", "", "nothing happened yet"));
  for (const e of recent) {
    const li = el("li", e.kind);
    const time = el("time", "", clock(new Date(e.t)));
    li.append(time, eventText(e));
    ol.append(li);
  }
}

function eventText(e) {
  switch (e.kind) {
    case "loss": return lossText(e, false);
    case "leader": return `${e.node} leads`;
    default: return `${e.node} is ${e.state}`;
  }
}

// lossText says what was lost: this node's own counts when it leads, or
// the re-injections it learned of (the leader announces every one).
function lossText(e, brief) {
  if (e.lost) return brief ? `${e.lost} lost` :
    `${e.lost} baton(s) lost, ${e.reinjected || 0} re-injected by this node`;
  if (e.reinjected) return `${e.reinjected} re-injected`;
  return brief ? `${e.seen} re-injected` : `${e.seen} baton(s) re-injected (a new epoch was announced)`;
}

// ---- helpers ---------------------------------------------------------

function add(parent, tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  parent.append(node);
  return node;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

// niceCeil rounds up to 1, 2 or 5 times a power of ten, so the y axis
// reads 0, 5k, 10k, 15k, 20k rather than 0, 4.6k, 9.2k ...
function niceCeil(v) {
  if (!(v > 0)) return 10;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function short(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${Math.round(v)}`;
}

function clock(d) {
  const two = n => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function duration(s) {
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function showError(text) {
  const p = document.getElementById("error");
  p.textContent = text;
  p.hidden = !text;
}

poll();
