// otelflow ui: the browser side. Plain ES2020, no libraries, no build step.
// Everything the API returns is treated as hostile text: the DOM is built with createElement and
// textContent only, links made from data are checked, long strings are cut.
"use strict";
const app = document.getElementById("app");
const errorBox = document.getElementById("error");
const warnBox = document.getElementById("spool-warning");
const ROW_H = 24, WINDOW_AT = 1500, NAME_MAX = 200, MSG_MAX = 20000;
const LINK_SCHEMES = ["http:", "https:", "mailto:"], WEB_SCHEMES = ["http:", "https:"];
let page = null;
let netDown = false;

// ---- values from the API
const num = (v) => (typeof v === "number" && isFinite(v) ? v : null);
const int = (v) => { const n = num(v); return n == null ? 0 : Math.trunc(n); };
const arr = (v) => (Array.isArray(v) ? v : []);
const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : null);
const enc = encodeURIComponent;
const json = (v, indent) => { try { const s = JSON.stringify(v, null, indent); return s == null ? String(v) : s; } catch (e) { return "[unprintable]"; } };
const str = (v) => (typeof v === "string" ? v : v == null ? "" : typeof v === "object" ? json(v) : String(v));
// control characters, bidi overrides and invisible characters are shown as \uXXXX escapes
const CTRL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]/g;
const escCtl = (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0");
const cut = (v, max) => { const s = str(v); return s.length > max ? [s.slice(0, max), s.length - max] : [s, 0]; };
function one(v, max = NAME_MAX) {
  const [s, more] = cut(v, max);
  const t = s.replace(/[\t\n\r]+/g, " ").replace(CTRL, escCtl);
  return more ? t + "…" : t;
}
function multi(v, max = MSG_MAX, cutBefore = 0) {
  const [s, cutNow] = cut(v, max), more = cutNow + cutBefore;
  const t = s.replace(/\r\n?/g, "\n").replace(CTRL, escCtl);
  return more ? [t, h("span", "note", `\n… (${more.toLocaleString()} more characters)`)] : [t];
}
function safeUrl(u, schemes = LINK_SCHEMES) {
  if (typeof u !== "string" || !u || u.length > 8000) return null;
  try { const x = new URL(u.trim()); return schemes.includes(x.protocol) ? x.href : null; } catch (e) { return null; }
}
const stKey = (s) => str(s).toLowerCase().replace(/[^a-z0-9]+/g, "").slice(0, 32) || "unknown";
const FAILED = new Set(["failed", "crashed", "timedout"]);

// ---- DOM
function add(el, kids) {
  for (const c of kids) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) add(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
  return el;
}
const put = (el, ...kids) => { el.replaceChildren(); return add(el, kids); };
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  if (typeof props === "string") el.className = props;
  else if (props) for (const k of Object.keys(props)) {
    const v = props[k];
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "data") { for (const d of Object.keys(v)) if (v[d] != null) el.dataset[d] = v[d]; }
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "href") el.href = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  return add(el, kids);
}
const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVGNS, tag);
  for (const k of Object.keys(attrs || {})) el.setAttribute(k, attrs[k]);
  return add(el, kids);
}
const fN = (n) => int(n).toLocaleString();
const tagList = (t, n = 50) => arr(t).slice(0, n).map((x) => h("span", "tag", one(x, 60)));
const linkBtn = (text, onclick, cls, title) => h("button", { type: "button", class: "linkish " + (cls || ""), onclick, title }, text);
const extLink = (href, text, cls = "ext", id) => h("a", { href, target: "_blank", rel: "noopener noreferrer", class: cls, id }, text);
const badge = (state, extra) => h("span", { class: `state state-${stKey(state)}`, ...extra }, one(state || "Unknown", 40));
const flowHref = (f) => "/flows/" + enc(str(f));
const runHref = (id) => "/runs/" + enc(str(id));
const kv = (rows) => h("dl", "kv", rows.filter((r) => r && r[1] != null && r[1] !== "").map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
function debounce(fn, ms) { let t = 0; return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); }; }
function copyButton(text) {
  const b = h("button", { type: "button", class: "btn small copy", title: "Copy to the clipboard" }, "Copy");
  b.addEventListener("click", () => {
    try { navigator.clipboard.writeText(text).then(() => { b.textContent = "Copied"; setTimeout(() => { b.textContent = "Copy"; }, 1200); }, () => {}); } catch (e) { /* no clipboard */ }
  });
  return b;
}

// ---- formatting
const p2 = (n) => String(n).padStart(2, "0");
const toMs = (ns) => { const n = num(ns); return n == null || n <= 0 ? null : n / 1e6; };
function fmtDur(ms) {
  ms = num(ms);
  if (ms == null || ms < 0) return "–";
  if (ms < 1) return ms.toFixed(2) + " ms";
  if (ms < 10) return ms.toFixed(1) + " ms";
  if (ms < 999.5) return Math.round(ms) + " ms";
  const s = ms / 1000;
  if (s < 59.95) return s.toFixed(1) + " s";
  const t = Math.floor(s);
  if (t < 3600) return `${Math.floor(t / 60)} m ${p2(t % 60)} s`;
  if (t < 86400) return `${Math.floor(t / 3600)} h ${p2(Math.floor(t / 60) % 60)} m`;
  return `${Math.floor(t / 86400)} d ${p2(Math.floor(t / 3600) % 24)} h`;
}
// local time: "2026-12-06 10:00:05", or with clock "10:00:05.123"
function fmtDate(ms, clock) {
  if (ms == null) return "–";
  const d = new Date(ms), t = `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
  return clock ? `${t}.${String(d.getMilliseconds()).padStart(3, "0")}` : `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())} ${t}`;
}
const fullDate = (ms) => (ms == null ? null : new Date(ms).toString());
const timeEl = (ms, clock) => h("time", { title: fullDate(ms) }, fmtDate(ms, clock));
const niceStep = (span, n) => { const raw = span / n, p = 10 ** Math.floor(Math.log10(raw)); for (const m of [1, 2, 5]) if (m * p >= raw) return m * p; return 10 * p; };

// ---- API
class ApiError extends Error { constructor(status, message) { super(message); this.status = status; } }
async function getJSON(url, etag) {
  const headers = { Accept: "application/json" };
  if (etag) headers["If-None-Match"] = etag;
  let res;
  try { res = await fetch(url, { cache: "no-store", headers, credentials: "same-origin" }); } catch (e) { throw new ApiError(0, "Cannot reach the otelflow ui server"); }
  if (res.status === 304) return { status: 304 };
  let data = null;
  try { data = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new ApiError(res.status, obj(data) && typeof data.error === "string" ? one(data.error, 2000) : `HTTP ${res.status} for ${one(url)}`);
  if (!obj(data)) throw new ApiError(res.status, "The server's answer is not a JSON object");
  if ("skipped" in data) showSkipped(data.skipped);
  return { status: res.status, etag: res.headers.get("ETag"), data };
}
function showSkipped(sk) {
  sk = obj(sk);
  warnBox.hidden = !sk;
  if (sk) warnBox.textContent = `Skipped ${fN(sk.count)} damaged spool record(s)` + (sk.first ? ` (first at ${one(sk.first, 500)})` : "");
}
function showError(msg) { errorBox.textContent = msg; errorBox.hidden = false; }
function clearError() { errorBox.hidden = true; errorBox.textContent = ""; netDown = false; }
// A poller: fetches url() now and then every `interval` ms while active() and the tab is visible,
// sending the last ETag (a 304 is "unchanged": onData is not called).
function poller(o) {
  let etag = null, etagUrl = null, timer = 0, busy = false, again = false, stopped = false, failed = false;
  const schedule = () => {
    clearTimeout(timer); timer = 0;
    if (!stopped && !failed && document.visibilityState === "visible" && o.active()) timer = setTimeout(run, o.interval);
  };
  async function run() {
    clearTimeout(timer); timer = 0;
    if (stopped) return;
    if (busy) { again = true; return; }
    busy = true; failed = false;
    const url = o.url();
    try {
      const r = await getJSON(url, etagUrl === url ? etag : null);
      if (!stopped && url === o.url()) {
        if (netDown) clearError();
        if (r.status !== 304) { etag = r.etag; etagUrl = url; o.onData(r.data); }
      }
    } catch (e) {
      if (!stopped) {
        if (e.status === 0 || e.status >= 500) { netDown = true; showError(e.message + ": retrying…"); } else { failed = true; (o.onError || showError)(e.message, e); }
      }
    }
    busy = false;
    if (stopped) return;
    if (again) { again = false; run(); return; }
    schedule();
  }
  const onVis = () => { if (document.visibilityState === "visible" && !timer && !busy && !failed && o.active()) run(); };
  document.addEventListener("visibilitychange", onVis);
  return {
    now: run,
    stop: () => { stopped = true; clearTimeout(timer); document.removeEventListener("visibilitychange", onVis); },
  };
}
let config = null;
getJSON("/api/config").then((r) => {
  config = r.data;
  document.getElementById("spool-path").textContent = one(config.spool, 300);
}, () => {});

// ---- routing
function navigate(url) { history.pushState(null, "", url); route(); window.scrollTo(0, 0); }
function route() {
  if (page) page.stop();
  page = null;
  clearError();
  app.replaceChildren();
  const path = location.pathname;
  let m, arg = null;
  try {
    if ((m = /^\/(flows|runs)\/(?:flow-run\/)?(.+?)\/?$/.exec(path))) arg = decodeURIComponent(m[2]);
  } catch (e) { arg = null; }
  if (/^\/(runs\/?)?$/.test(path)) page = runsPage();
  else if (m && arg != null && m[1] === "flows") page = flowPage(arg);
  else if (m && arg != null) page = runPage(arg);
  else {
    document.title = "Not found · otelflow";
    showError("No page here.");
    app.append(h("p", "empty", h("a", { href: "/" }, "See all runs")));
  }
}
document.addEventListener("click", (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest && e.target.closest("a[href]");
  if (!a || a.target || a.hasAttribute("download")) return;
  const u = new URL(a.href, location.href);
  if (u.origin !== location.origin || !/^\/($|flows\/|runs)/.test(u.pathname)) return;
  e.preventDefault();
  if (u.pathname + u.search !== location.pathname + location.search) navigate(u.pathname + u.search);
});
window.addEventListener("popstate", route);
setInterval(() => { if (page && page.tick && document.visibilityState === "visible") page.tick(); }, 1000);

// ---- the runs table (runs page and flow page)
function runsTable() {
  const tbody = h("tbody");
  const table = h("table", { id: "runs", class: "grid" },
    h("thead", null, h("tr", null, ["State", "Flow", "Run", "Start", "Duration", "Task runs", "Tags"].map((t) => h("th", { scope: "col" }, t)))), tbody);
  return { table, tbody };
}
// ticks: a list of {el, start} whose text is the duration up to now (a running run)
function runRow(r, ticks, now) {
  const state = str(r.state), level = Math.min(int(r.level), 20), start = toMs(r.start_unix_nano);
  const name = h("td", "name");
  if (level) { name.style.paddingLeft = 8 + level * 18 + "px"; name.append(h("span", { class: "sub", title: "subflow" }, "↳ ")); }
  name.append(h("a", { class: "run-link", href: runHref(r.flow_run_id), title: one(r.flow_run_id, 100) }, one(r.flow_run_name || r.flow_run_id)));
  const dur = h("td", "num dur", fmtDur(r.running && start != null ? now - start : r.duration_ms));
  if (r.running && start != null) { dur.classList.add("ticking"); ticks.push({ el: dur, start }); }
  const notDone = int(r.task_runs_not_completed);
  return h("tr", { class: "run" + (r.running ? " running" : ""), data: { runId: str(r.flow_run_id), state, level: String(level) } },
    h("td", null, badge(state)),
    h("td", "flow", h("a", { class: "flow-link", href: flowHref(r.flow) }, one(r.flow))),
    name,
    h("td", "time", timeEl(start)),
    dur,
    h("td", "num", String(int(r.task_runs)), notDone ? h("span", { class: "bad-text", title: "task runs that did not complete" }, ` (${notDone} not completed)`) : null),
    h("td", "tags", tagList(r.tags, 20)));
}
const tickAll = (ticks, now) => { for (const t of ticks) t.el.textContent = fmtDur(now - t.start); };
function setOptions(sel, values, current, anyLabel) {
  const want = [""].concat(values.map((v) => str(v)));
  const cur = str(current);
  let match = want.find((v) => v.toLowerCase() === cur.toLowerCase());
  if (match == null) { want.push(cur); match = cur; }
  const key = want.join("\u0000");
  if (sel._key !== key) {
    sel._key = key;
    put(sel, want.map((v) => h("option", { value: v }, v ? one(v, 80) : anyLabel)));
  }
  sel.value = match;
}

// ---- page: runs
function runsPage() {
  document.title = "Runs · otelflow";
  const qs = new URLSearchParams(location.search);
  const f = { flow: qs.get("flow") || "", state: qs.get("state") || "", since: qs.get("since") || "", q: qs.get("q") || "" };
  let limit = 200, ticks = [], skew = 0, lastKey = "";
  const now = () => Date.now() + skew;
  const flowSel = h("select", { id: "filter-flow", "aria-label": "Flow" });
  const stateSel = h("select", { id: "filter-state", "aria-label": "State" });
  const sinceSel = h("select", { id: "filter-since", "aria-label": "Started within" });
  const qIn = h("input", { id: "filter-q", type: "search", placeholder: "Run name, flow run id or trace id", "aria-label": "Search", autocomplete: "off", spellcheck: "false" });
  qIn.value = f.q;
  setOptions(flowSel, [], f.flow, "any flow");
  setOptions(stateSel, [], f.state, "any");
  sinceSel.append(...[["", "any time"], ["15m", "last 15 min"], ["1h", "last hour"], ["6h", "last 6 hours"], ["24h", "last 24 hours"], ["7d", "last 7 days"]].map(([v, t]) => h("option", { value: v }, t)));
  if (f.since && ![...sinceSel.options].some((o) => o.value === f.since)) sinceSel.append(h("option", { value: f.since }, one(f.since, 40)));
  sinceSel.value = f.since;
  const count = h("span", "muted count");
  const more = h("button", { id: "more", type: "button", class: "btn", hidden: true }, "Load more");
  const capNote = h("p", { class: "muted note", hidden: true }, "Showing the first 5,000 runs: narrow the filters to see others.");
  const empty = h("div", { id: "empty", class: "empty", hidden: true });
  const { table, tbody } = runsTable();
  app.append(h("section", "page runs-page",
    h("div", "toolbar", h("h1", null, "Flow runs"),
      h("label", null, "Flow ", flowSel), h("label", null, "State ", stateSel), h("label", null, "Started ", sinceSel), h("label", "grow", qIn), count),
    empty, h("div", "table-wrap", table), h("div", "more-bar", more, capNote)));
  const params = () => { const p = new URLSearchParams(); for (const k of ["flow", "state", "since", "q"]) if (f[k]) p.set(k, f[k]); return p; };
  const url = () => { const p = params(); p.set("limit", String(limit)); return "/api/runs?" + p; };
  function changed() {
    limit = 200;
    const p = params().toString();
    history.replaceState(null, "", p ? "/?" + p : "/");
    poll.now();
  }
  flowSel.addEventListener("change", () => { f.flow = flowSel.value; changed(); });
  stateSel.addEventListener("change", () => { f.state = stateSel.value; changed(); });
  sinceSel.addEventListener("change", () => { f.since = sinceSel.value; changed(); });
  const typed = debounce(() => { if (f.q !== qIn.value.trim()) { f.q = qIn.value.trim(); changed(); } }, 250);
  qIn.addEventListener("input", typed);
  more.addEventListener("click", () => { limit = Math.min(limit + 200, 5000); more.disabled = true; poll.now(); });
  function render(d) {
    const key = url() + "\u0000" + str(d.version);
    if (d.version != null && key === lastKey) return;
    lastKey = key;
    if (num(d.now_unix_nano)) skew = d.now_unix_nano / 1e6 - Date.now();
    setOptions(flowSel, arr(d.flows), f.flow, "any flow");
    setOptions(stateSel, arr(d.states), f.state, "any");
    const runs = arr(d.runs), total = int(d.total), n = now();
    ticks = [];
    const rows = runs.map((r) => runRow(obj(r) || {}, ticks, n));
    if (!runs.length && total === 0) rows.push(h("tr", "no-match", h("td", { colspan: "7" }, "No flow runs match these filters.")));
    put(tbody, rows);
    const spoolEmpty = total === 0 && !arr(d.flows).length && !params().toString();
    empty.hidden = !spoolEmpty;
    table.hidden = spoolEmpty;
    if (spoolEmpty) {
      const spool = d.spool || (config && config.spool);
      put(empty, h("h2", null, "No flow runs yet"), h("p", null, `No flow runs in ${spool ? one(spool, 500) : "the spool"}. Run a flow first.`));
    }
    more.disabled = false;
    const shown = int(d.offset) + runs.length;
    more.hidden = !(total > shown) || limit >= 5000;
    capNote.hidden = !(total > shown && limit >= 5000);
    count.textContent = total ? `${runs.length.toLocaleString()} of ${total.toLocaleString()}` : "";
  }
  const poll = poller({ url, interval: 2000, active: () => true, onData: render });
  poll.now();
  return { stop: poll.stop, tick: () => tickAll(ticks, now()) };
}

// ---- page: one flow
function flowPage(name) {
  document.title = `${one(name, 80)} · otelflow`;
  let ticks = [], skew = 0, runs = [], stats = {};
  const now = () => Date.now() + skew;
  const statsEl = h("div", { id: "flow-stats", class: "stats" });
  const chartBox = h("div", "chart-box card");
  const { table, tbody } = runsTable();
  app.append(h("section", "page flow-page",
    h("div", "toolbar", h("h1", null, h("span", "muted", "Flow "), one(name)),
      h("a", { href: "/?flow=" + enc(name), class: "btn small" }, "Filter the runs list")),
    statsEl, chartBox, h("div", "table-wrap", table)));
  function render(d) {
    if (num(d.now_unix_nano)) skew = d.now_unix_nano / 1e6 - Date.now();
    runs = arr(d.runs).map((r) => obj(r) || {});
    stats = obj(d.stats) || {};
    const stat = (label, value, cls) => h("div", { class: "stat " + (cls || "") }, h("span", "stat-label", label), h("span", "stat-value", value));
    put(statsEl, stat("Runs", fN(stats.runs)), stat("Failed", fN(stats.failed), int(stats.failed) ? "bad" : ""),
      stat("Running", fN(stats.running)), stat("p50", fmtDur(stats.p50_ms)), stat("p95", fmtDur(stats.p95_ms)), stat("Max", fmtDur(stats.max_ms)));
    drawChart();
    ticks = [];
    const n = now();
    put(tbody, runs.map((r) => runRow(r, ticks, n)));
  }
  function drawChart() {
    const W = Math.max(320, (chartBox.clientWidth || 902) - 2), H = 220, L = 70, R = 40, T = 12, B = 26;
    const pts = [];
    const n = now();
    for (const r of runs) {
      const x = toMs(r.start_unix_nano);
      let y = num(r.duration_ms);
      if (x == null) continue;
      if (r.running) y = n - x;
      if (y == null) continue;
      pts.push({ r, x, y: Math.max(0, y) });
    }
    const chart = svg("svg", { id: "duration-chart", class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Duration of each run by start time" });
    if (!pts.length) {
      chart.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "No runs to chart yet"));
      put(chartBox, chart);
      return;
    }
    let x0 = Infinity, x1 = -Infinity, ymax = 0;
    for (const p of pts) { x0 = Math.min(x0, p.x); x1 = Math.max(x1, p.x); ymax = Math.max(ymax, p.y); }
    if (x1 - x0 < 2000) { x0 -= 30000; x1 += 30000; }
    const padX = (x1 - x0) * 0.03; x0 -= padX; x1 += padX;
    const ys = niceStep(ymax || 1, 4), ytop = Math.max(ys, Math.ceil((ymax * 1.05) / ys) * ys);
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), Y = (y) => H - B - (y / ytop) * (H - T - B);
    const axis = svg("g", { class: "axis" });
    for (let y = 0; y <= ytop + 1e-9; y += ys) {
      axis.append(svg("line", { x1: L, x2: W - R, y1: Y(y), y2: Y(y), class: "gridline" }), svg("text", { x: L - 6, y: Y(y) + 4, "text-anchor": "end" }, y ? fmtDur(y) : "0"));
    }
    const steps = [1e3, 5e3, 15e3, 3e4, 6e4, 3e5, 9e5, 18e5, 36e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5, 2592e6, 31536e6];
    const span = x1 - x0, xs = steps.find((s) => span / s <= 7) || span / 6;
    const tz = new Date().getTimezoneOffset() * 60000;
    for (let t = Math.ceil((x0 - tz) / xs) * xs + tz; t <= x1; t += xs) {
      const d = new Date(t);
      const label = xs >= 864e5 ? `${p2(d.getMonth() + 1)}-${p2(d.getDate())}` : (span > 864e5 ? `${p2(d.getMonth() + 1)}-${p2(d.getDate())} ` : "") + `${p2(d.getHours())}:${p2(d.getMinutes())}` + (xs < 6e4 ? `:${p2(d.getSeconds())}` : "");
      axis.append(svg("line", { x1: X(t), x2: X(t), y1: T, y2: H - B, class: "gridline" }), svg("text", { x: X(t), y: H - 8, "text-anchor": "middle" }, label));
    }
    chart.append(axis);
    let lastY = -99;
    for (const [k, lbl] of [["p50_ms", "p50"], ["p95_ms", "p95"]]) {
      const v = num(stats[k]);
      if (v != null && v <= ytop && Math.abs(Y(v) - lastY) > 11 && (lastY = Y(v))) chart.append(svg("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: "pline" }), svg("text", { x: W - R + 4, y: Y(v) + 4, class: "plabel" }, lbl));
    }
    const dots = svg("g", { class: "points" });
    for (const p of pts) {
      const st = stKey(p.r.state);
      const c = svg("circle", { cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: 4.5, class: "point" + (FAILED.has(st) ? " failed" : "") + (p.r.running ? " running" : ""), "data-run-id": str(p.r.flow_run_id) },
        svg("title", null, `${one(p.r.flow_run_name)} · ${one(p.r.state, 40)} · ${fmtDur(p.y)}\n${fmtDate(p.x)}`));
      c.addEventListener("click", () => navigate(runHref(p.r.flow_run_id)));
      dots.append(c);
    }
    chart.append(dots);
    put(chartBox, chart);
  }
  const onResize = debounce(drawChart, 150);
  window.addEventListener("resize", onResize);
  const poll = poller({ url: () => "/api/flows/" + enc(name), interval: 2000, active: () => true, onData: render });
  poll.now();
  return {
    stop: () => { poll.stop(); window.removeEventListener("resize", onResize); },
    tick: () => { tickAll(ticks, now()); if (stats.running) drawChart(); },
  };
}

// ---- markdown: a small renderer to DOM nodes (no raw HTML, links checked, no images fetched)
const INLINE = [
  [/\\([!-/:-@[-`{-~])/y, (m, p) => p.append(m[1])],
  [/\\\n| {2,}\n/y, (m, p) => p.append(h("br"))],
  [/(`+)([^`]|[^`][\s\S]{0,4000}?[^`])\1(?!`)/y, (m, p) => p.append(h("code", null, m[2].replace(/^ (.+) $/, "$1")))],
  [/!\[([^\]\n]{0,500})\]\(\s*<?((?:[^\s()<>]|\([^\s()<>]*\)){0,2000})>?(?:\s+["'][^"'\n]{0,500}["'])?\s*\)/y,
    (m, p) => { const u = safeUrl(m[2], WEB_SCHEMES); p.append(u ? extLink(u, "image: " + (m[1] || u)) : m[1]); }],
  [/\[((?:[^[\]\n]|\[[^[\]\n]*\]){0,1000})\]\(\s*<?((?:[^\s()<>]|\([^\s()<>]*\)){0,2000})>?(?:\s+["']([^"'\n]{0,500})["'])?\s*\)/y,
    (m, p, d) => { const u = safeUrl(m[2]); const el = u ? extLink(u) : h("span", "md-badlink"); inline(m[1], el, d + 1); if (u && m[3]) el.title = m[3]; p.append(el); }],
  [/<((?:https?:|mailto:)[^\s<>]{1,2000})>/y, (m, p) => { const u = safeUrl(m[1]); p.append(u ? extLink(u, m[1]) : m[0]); }],
  [/\*\*(?=\S)([\s\S]{0,3000}?\S)\*\*/y, (m, p, d) => p.append(inline(m[1], h("strong"), d + 1))],
  [/__(?=\S)([\s\S]{0,3000}?\S)__(?!\w)/y, (m, p, d) => p.append(inline(m[1], h("strong"), d + 1))],
  [/\*(?=[^\s*])([\s\S]{0,3000}?[^\s*])\*/y, (m, p, d) => p.append(inline(m[1], h("em"), d + 1))],
  [/_(?=[^\s_])([\s\S]{0,3000}?[^\s_])_(?!\w)/y, (m, p, d) => p.append(inline(m[1], h("em"), d + 1))],
  [/~~(?=\S)([\s\S]{0,3000}?\S)~~/y, (m, p, d) => p.append(inline(m[1], h("del"), d + 1))],
  [/https?:\/\/[^\s<>"]{1,2000}/y, (m, p) => {
    const t = m[0].replace(/[.,:;!?'")\]]+$/, "");
    const u = safeUrl(t); p.append(u ? extLink(u, t) : t); return t.length;
  }],
];
const INLINE_START = "\\ `![<*_~h";
function inline(text, parent, depth = 0) {
  text = text.replace(CTRL, escCtl);
  if (depth > 8 || text.length > 60000) return add(parent, [text]);
  let i = 0, from = 0;
  outer: while (i < text.length) {
    const c = text[i];
    if (INLINE_START.includes(c)) {
      const wordy = i > 0 && /\w/.test(text[i - 1]);
      for (const [re, fn] of INLINE) {
        if ((c === "_" || c === "h") && wordy) break;
        re.lastIndex = i;
        const m = re.exec(text);
        if (!m) continue;
        if (from < i) parent.append(text.slice(from, i));
        const used = fn(m, parent, depth);
        i += typeof used === "number" ? used : m[0].length;
        from = i;
        continue outer;
      }
    }
    i++;
  }
  if (from < text.length) parent.append(text.slice(from));
  return parent;
}
const LIST = /^( {0,12})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const TABLE_SEP = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;
const blockStart = (l) => FENCE.test(l) || HEADING.test(l) || HR.test(l) || QUOTE.test(l) || LIST.test(l);
function cells(line) {
  let s = line.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}
function markdown(src) {
  const [s, more] = cut(src, 200000);
  const root = h("div", "md");
  blocks(s.replace(/\r\n?/g, "\n").split("\n"), root, 0);
  if (more) root.append(h("p", "note", `… (${more.toLocaleString()} more characters)`));
  return root;
}
function blocks(lines, parent, depth) {
  if (depth > 12) { parent.append(h("pre", null, lines.join("\n"))); return; }
  let i = 0, m;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    if ((m = FENCE.exec(line))) {
      const fence = m[1], code = [];
      for (i++; i < lines.length; i++) {
        const t = lines[i].trim();
        if (t.startsWith(fence) && /^[`~]+$/.test(t)) { i++; break; }
        code.push(lines[i]);
      }
      parent.append(h("pre", "md-code", h("code", null, code.join("\n").replace(CTRL, escCtl))));
      continue;
    }
    if ((m = HEADING.exec(line))) { parent.append(inline(m[2] || "", h("h" + m[1].length))); i++; continue; }
    if (HR.test(line)) { parent.append(h("hr")); i++; continue; }
    if (QUOTE.test(line)) {
      const q = [];
      while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !blockStart(lines[i]))) q.push(lines[i++].replace(QUOTE, ""));
      const bq = h("blockquote");
      blocks(q, bq, depth + 1);
      parent.append(bq);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const head = cells(line), align = cells(lines[i + 1]).map((c) => (c.endsWith(":") ? (c.startsWith(":") ? "center" : "right") : c.startsWith(":") ? "left" : ""));
      const tb = h("tbody");
      const cell = (tag, text, k) => { const el = inline(text, h(tag)); if (align[k]) el.style.textAlign = align[k]; return el; };
      for (i += 2; i < lines.length && lines[i].trim() && lines[i].includes("|"); i++) {
        const c = cells(lines[i]);
        tb.append(h("tr", null, head.map((_, k) => cell("td", c[k] || "", k))));
      }
      parent.append(h("div", "table-wrap", h("table", "md-table", h("thead", null, h("tr", null, head.map((t, k) => cell("th", t, k)))), tb)));
      continue;
    }
    if ((m = LIST.exec(line))) { i = list(lines, i, parent, depth); continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !(para.length && blockStart(lines[i]))) para.push(lines[i++]);
    parent.append(inline(para.join("\n").trim(), h("p")));
  }
}
function list(lines, i, parent, depth) {
  const first = LIST.exec(lines[i]), indent = first[1].length, ordered = /\d/.test(first[2]);
  const el = h(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) el.start = parseInt(first[2], 10);
  let item = null;
  const flush = () => {
    if (!item) return;
    const li = h("li");
    let text = item.text.join("\n");
    const task = /^\[([ xX])\] /.exec(text);
    if (task) { li.append(h("span", "task", task[1] === " " ? "☐ " : "☑ ")); text = text.slice(4); }
    inline(text, li);
    if (item.sub.length) {
      const ind = item.sub.reduce((m, l) => (l.trim() ? Math.min(m, l.length - l.trimStart().length) : m), Infinity);
      blocks(item.sub.map((l) => l.slice(Math.min(ind, l.length - l.trimStart().length))), li, depth + 1);
    }
    el.append(li);
  };
  while (i < lines.length) {
    const line = lines[i], m = LIST.exec(line), lead = line.length - line.trimStart().length;
    if (m && lead === indent) {
      if (/\d/.test(m[2]) !== ordered) break;
      flush(); item = { text: [m[3] || ""], sub: [] }; i++; continue;
    }
    if (!line.trim()) {
      const next = lines[i + 1];
      if (next != null && next.trim() && next.length - next.trimStart().length > indent) { item.sub.push(""); i++; continue; }
      break;
    }
    if (lead > indent) { item.sub.push(line); i++; continue; }
    if (!blockStart(line) && !item.sub.length) { item.text.push(line.trim()); i++; continue; }
    break;
  }
  flush();
  parent.append(el);
  return i;
}

// ---- artifacts
const cellText = (v) => (v == null ? "" : typeof v === "string" ? one(v, 1000) : one(json(v), 1000));
function dataTable(data) {
  if (typeof data === "string") { try { data = JSON.parse(data); } catch (e) { return h("pre", "json", multi(data, 100000)); } }
  let cols = null, rows;
  const isRec = (r) => obj(r) != null;
  if (Array.isArray(data) && data.every(isRec)) {
    const seen = new Set();
    for (const r of data.slice(0, 2000)) for (const k of Object.keys(r)) if (seen.size < 200) seen.add(k);
    cols = [...seen];
    rows = data.map((r) => cols.map((c) => r[c]));
  } else if (Array.isArray(data) && data.every(Array.isArray)) {
    rows = data;
  } else if (obj(data) && Object.values(data).every(Array.isArray)) {
    cols = Object.keys(data).slice(0, 200);
    const n = Math.max(0, ...cols.map((c) => data[c].length));
    rows = [];
    for (let k = 0; k < Math.min(n, 1001); k++) rows.push(cols.map((c) => data[c][k]));
    rows.length = n;
  } else return h("pre", "json", multi(json(data, 2), 100000));
  const shown = rows.slice(0, 1000);
  const t = h("table", "data-table",
    cols ? h("thead", null, h("tr", null, cols.map((c) => h("th", null, one(c, 100))))) : null,
    h("tbody", null, shown.map((r) => h("tr", null, arr(r).slice(0, 200).map((v) => h("td", { class: v == null ? "null" : typeof v === "number" ? "num" : null }, cellText(v)))))));
  return h("div", null, h("div", "table-wrap", t), rows.length > 1000 ? h("p", "note", `… ${(rows.length - 1000).toLocaleString()} more rows`) : null);
}
function renderArtifact(a) {
  const type = str(a.type).toLowerCase();
  let data = a.data, body;
  if (type === "markdown") body = markdown(str(data));
  else if (type === "table") body = dataTable(data);
  else if (type === "progress") {
    const v = Math.min(100, Math.max(0, num(typeof data === "string" ? parseFloat(data) : data) || 0));
    const fill = h("div", "progress-fill");
    fill.style.width = v + "%";
    body = h("div", "progress-wrap", h("div", { class: "progress", role: "progressbar", "aria-valuenow": String(v), "aria-valuemin": "0", "aria-valuemax": "100" }, fill), h("span", null, `${Math.round(v * 10) / 10}%`));
  } else if (type === "link" || type === "image") {
    const raw = obj(data) ? data.link || data.url || data.image_url : data;
    const u = safeUrl(str(raw));
    const label = obj(data) && data.link_text ? one(data.link_text) : one(raw, 500);
    body = u ? h("p", null, extLink(u, label)) : h("p", null, label, h("span", "note", " (not an http(s) or mailto link)"));
  } else body = h("pre", "json", multi(typeof data === "string" ? data : json(data, 2), 100000));
  return h("div", "artifact-view",
    h("div", "artifact-meta muted", one(a.key || a.id, 200), " · ", one(a.type || "artifact", 40), a.created ? " · " + one(a.created, 60) : ""),
    a.description ? h("div", "artifact-desc", markdown(str(a.description))) : null, h("div", "artifact-body", body));
}

// ---- logs
const LEVELS = ["all", "debug", "info", "warning", "error", "critical"];
function logLevel(l) {
  const s = str(l.severity).toLowerCase().replace(/[^a-z]/g, "").slice(0, 12);
  if (s) return s === "warn" ? "warning" : s === "fatal" ? "critical" : s;
  const n = int(l.severity_number);
  return !n ? "info" : n < 5 ? "trace" : n < 9 ? "debug" : n < 13 ? "info" : n < 17 ? "warning" : n < 21 ? "error" : "critical";
}
function excText(e) {
  if (e == null || e === "") return null;
  const o = obj(e);
  if (!o) return str(e);
  return [o.type && o.message != null ? `${str(o.type)}: ${str(o.message)}` : str(o.type || o.message), str(o.stacktrace)].filter(Boolean).join("\n");
}
function logLine(l, onRun) {
  const lvl = logLevel(l), t = toMs(l.time_unix_nano), exc = excText(l.exception);
  return h("div", { class: "log-line lvl-" + lvl, data: { spanId: str(l.span_id), level: lvl } },
    h("span", { class: "log-time", title: fullDate(t) }, fmtDate(t, true)),
    h("span", { class: "log-level level-" + lvl }, lvl.toUpperCase()),
    onRun ? linkBtn(one(l.run_name || l.span_id || "—", 60), () => onRun(str(l.span_id)), "log-run", one(l.run_name || l.span_id, 300)) : null,
    h("span", "log-msg", multi(l.message, MSG_MAX, int(l.message_cut))),
    exc ? h("pre", "log-exc", multi(exc)) : null);
}

// ---- page: one run
const WORST = ["failed", "crashed", "timedout", "running", "retrying", "notready", "cancelling", "cancelled", "paused", "suspended", "pending", "scheduled", "late", "awaitingretry", "cached", "completed"];
function worstState(g) {
  const states = obj(g.states) || {};
  const keys = Object.keys(states).filter((k) => int(states[k]) > 0);
  let best = null, rank = 1e9;
  for (const k of keys) { const r = WORST.indexOf(stKey(k)); const rr = r < 0 ? WORST.length : r; if (rr < rank) { rank = rr; best = k; } }
  if (int(g.running) > 0 && rank > WORST.indexOf("running")) return "Running";
  return best || (int(g.running) ? "Running" : "Completed");
}
const upstreamText = (u) => arr(Array.isArray(u) ? u : u == null ? [] : [u]).map((x) => one(obj(x) ? x.run_name || x.name || x.span_id : x, 120)).join(", ");
const gkey = (g) => str(g.group) || str(g.parent_span_id) + "/" + str(g.name);
const isRunRunning = (d) => !!(d && (d.run.running || arr(d.rows).some((r) => r && (r.kind === "group" ? int(r.running) > 0 : r.running))));

function runPage(ident) {
  document.title = `${one(ident, 80)} · otelflow`;
  let rid = ident, d = null, skew = 0, selected = null, view = [], ticks = [];
  let everLive = false, endedPolls = 0, detailSeq = 0, detailSig = "";
  const expanded = new Map();
  const now = () => Date.now() + skew;
  const header = h("section", { id: "run-header", class: "card" }, h("p", "muted", "Loading…"));
  // waterfall
  const axisEl = h("div", "wf-axis");
  const headRow = h("div", "wf-head", h("div", "wf-label", "Run"), axisEl);
  const grid = h("div", "wf-grid");
  const topSp = h("div", "wf-spacer"), botSp = h("div", "wf-spacer");
  const rowsEl = h("div", { class: "wf-rows", role: "list" });
  const body = h("div", "wf-body", grid, topSp, rowsEl, botSp);
  const scroller = h("div", "wf-scroll", headRow, body);
  const wfInfo = h("div", "wf-info muted");
  const wf = h("section", { id: "waterfall", class: "card" }, h("div", "card-head", h("h2", null, "Waterfall"), wfInfo), scroller);
  const detail = h("section", { id: "run-detail", class: "card" });
  // logs
  const levelSel = h("select", { id: "log-level", "aria-label": "Log level" }, LEVELS.map((l) => h("option", { value: l === "all" ? "" : l }, l)));
  const logQ = h("input", { id: "log-q", type: "search", placeholder: "Filter messages", "aria-label": "Filter log messages", autocomplete: "off", spellcheck: "false" });
  const onlySel = h("input", { id: "log-selected-only", type: "checkbox" });
  const logList = h("div", "log-lines");
  const logsMore = h("button", { id: "logs-more", type: "button", class: "btn", hidden: true }, "Load more logs");
  const logCount = h("span", "muted");
  const logs = h("section", { id: "logs", class: "card" },
    h("div", "card-head", h("h2", null, "Logs"), h("label", null, "Level ", levelSel), logQ,
      h("label", "check", onlySel, " only the selected run"), logCount),
    logList, h("div", "more-bar", logsMore));
  app.append(h("div", "page run-page", header, wf, h("div", "split", detail, logs)));

  // ---- header
  function renderHeader() {
    const r = d.run, L = obj(d.links) || {}, start = toMs(r.start_unix_nano), live = isRunRunning(d) || (everLive && endedPolls < 1);
    document.title = `${one(r.flow_run_name || r.flow_run_id, 80)} · ${one(r.flow, 80)} · otelflow`;
    const dur = h("span", "dur", fmtDur(r.running && start != null ? now() - start : r.duration_ms));
    if (r.running && start != null) ticks.push({ el: dur, start });
    const params = obj(r.parameters) || {}, pkeys = Object.keys(params).slice(0, 100);
    const states = obj(r.states) || {};
    const jaeger = safeUrl(str(L.jaeger), WEB_SCHEMES), grafana = safeUrl(str(L.grafana), WEB_SCHEMES);
    const cmd = one(L.show_command || `otelflow show ${str(r.flow_run_id)}`, 500);
    const services = arr(r.services).length ? arr(r.services) : r.service ? [r.service] : [];
    put(header,
      h("div", "run-title",
        h("a", { class: "flow-link", href: flowHref(r.flow) }, one(r.flow)), h("span", "muted sep", "/"),
        h("h1", null, one(r.flow_run_name || r.flow_run_id)), badge(r.state, { "data-field": "state" }),
        live ? h("span", { id: "live", class: "live", title: "updating while the run is running" }, "live") : null),
      r.state_message ? h("div", "state-msg", multi(r.state_message, 2000)) : null,
      kv([
        ["Flow run id", h("code", null, one(r.flow_run_id, 100))],
        ["Trace id", h("code", null, one(r.trace_id, 100))],
        ["Start", timeEl(start)],
        ["Duration", dur],
        ["Task runs", [fN(r.task_runs), " ", Object.keys(states).slice(0, 20).map((k) => h("span", "count-chip", badge(k), " ", fN(states[k])))]],
        r.parent_flow_run_id ? ["Parent run", h("a", { href: runHref(r.parent_flow_run_id), class: "mono" }, one(r.parent_flow_run_id, 100))] : null,
        [services.length > 1 ? "Services" : "Service", services.length ? services.slice(0, 20).map((s) => one(s, 100)).join(", ") : null],
        ["Tags", arr(r.tags).length ? tagList(r.tags, 50) : null],
        ["Parameters", pkeys.length ? h("ul", "params", pkeys.map((k) => h("li", null, h("code", null, one(k, 100)), " = ", h("span", "mono", one(params[k], 500))))) : null],
      ]),
      h("div", "actions",
        jaeger ? extLink(jaeger, "Open in Jaeger ↗", "btn", "open-jaeger") : null,
        grafana ? extLink(grafana, "Logs in Grafana ↗", "btn", "open-grafana") : null,
        h("span", "cmd", h("code", { id: "show-command" }, cmd), copyButton(cmd))));
  }

  // ---- waterfall
  function axisRange() {
    const a = obj(d.axis) || {};
    const a0 = toMs(a.start_unix_nano) ?? toMs(d.run.start_unix_nano) ?? now();
    let a1 = toMs(a.end_unix_nano) ?? toMs(d.run.end_unix_nano) ?? now();
    if (isRunRunning(d)) a1 = Math.max(a1, now());
    return [a0, Math.max(a1 - a0, 1)];
  }
  function buildView() {
    view = [];
    for (const raw of arr(d.rows)) {
      const r = obj(raw);
      if (!r) continue;
      r._depth = Math.min(int(r.depth), 40);
      view.push(r);
      if (r.kind !== "group") continue;
      const ex = expanded.get(gkey(r));
      if (!ex) continue;
      const base = r._depth + 1;
      let min = Infinity;
      for (const m of ex.rows) min = Math.min(min, int(m.depth));
      for (const m of ex.rows) { m._depth = Math.min(base + int(m.depth) - min, 40); m._member = true; view.push(m); }
      if (ex.loading) view.push({ kind: "note", text: "Loading…", _depth: base });
      else if (ex.err) view.push({ kind: "note", text: ex.err, _depth: base });
      else if (ex.total > ex.rows.length) view.push({ kind: "more", key: gkey(r), group: r, text: `${(ex.total - ex.rows.length).toLocaleString()} more: load them`, _depth: base });
    }
  }
  function place(bar, s, e, a0, span) {
    bar.style.left = Math.max(0, ((s - a0) / span) * 100) + "%";
    bar.style.width = Math.max(0.15, (((e ?? now()) - s) / span) * 100) + "%";
  }
  function wfRow(r, a0, span) {
    const label = h("div", "wf-label"), track = h("div", "wf-track");
    label.style.paddingLeft = 4 + r._depth * 14 + "px";
    if (r.kind === "note" || r.kind === "more") {
      label.append(r.kind === "more" ? linkBtn(r.text) : h("span", "muted", one(r.text, 300)));
      const el = h("div", { class: "wf-row wf-" + r.kind }, label, track);
      el._row = r;
      return el;
    }
    const group = r.kind === "group", state = group ? worstState(r) : str(r.state), st = stKey(state);
    const s = toMs(r.start_unix_nano), e = toMs(r.end_unix_nano);
    const running = group ? int(r.running) > 0 : !!r.running;
    const cls = ["wf-row"];
    if (r.critical) cls.push("critical");
    if (r.cached) cls.push("cached");
    if (int(r.attempts) > 1) cls.push("retried");
    if (running) cls.push("running");
    if (group ? FAILED.has(st) : r.failed || FAILED.has(st)) cls.push("failed");
    if (r._member) cls.push("member");
    if (!group && selected && str(r.span_id) === selected) cls.push("selected");
    const el = h("div", { class: cls.join(" "), role: "listitem", tabindex: "0", data: group ? { group: gkey(r), kind: "group", state } : { spanId: str(r.span_id), kind: "run", state } });
    el._row = r;
    el.append(label, track);
    let durText;
    if (group) {
      const open = expanded.has(gkey(r));
      label.append(h("button", { type: "button", class: "wf-expand", "aria-expanded": open ? "true" : "false", title: open ? "Fold" : "Show each run" }, open ? "▾" : "▸"));
      label.append(h("span", "wf-name", one(r.name), h("span", "count", ` ×${fN(r.count)}`)));
      durText = `p50 ${fmtDur(r.p50_ms)} · max ${fmtDur(r.max_ms)}`;
    } else {
      label.append(h("span", { class: "wf-name", title: one(r.run_name || r.name, 500) }, one(r.run_name || r.name || r.span_id)));
      if (r.cached) label.append(h("span", "flag cached-flag", "cached"));
      if (int(r.attempts) > 1) label.append(h("span", { class: "flag retry", title: `${int(r.attempts)} attempts` }, `retry ×${int(r.attempts) - 1}`));
      durText = fmtDur(running && s != null ? now() - s : r.duration_ms);
    }
    const dur = h("span", "wf-dur", durText);
    label.append(badge(state), dur);
    if (s != null) {
      const bar = h("div", { class: `wf-bar state-${st}`, title: `${one(group ? r.name : r.run_name || r.name)} · ${one(state, 40)} · ${durText}` });
      if (group) {
        const states = obj(r.states) || {};
        for (const k of Object.keys(states).slice(0, 20)) {
          const seg = h("span", { class: `seg state-${stKey(k)}` });
          seg.style.flexGrow = String(Math.max(0, int(states[k])));
          bar.append(seg);
        }
        bar.title = Object.keys(states).slice(0, 20).map((k) => `${one(k, 40)} ${int(states[k])}`).join(", ");
      }
      place(bar, s, running ? null : e ?? s, a0, span);
      track.append(bar);
      el._bar = bar; el._dur = running && !group ? dur : null;
    }
    if (s == null || r.upstream_failed) {
      const note = h("span", "wf-upstream", r.upstream_failed ? "upstream: " + upstreamText(r.upstream_failed) : "not started");
      const at = s == null ? 0 : Math.max(0, ((e ?? s) - a0) / span) * 100;
      if (at < 60) note.style.left = `calc(${at}% + 6px)`; else { note.style.right = `calc(${100 - Math.max(0, (s - a0) / span) * 100}% + 6px)`; note.style.textAlign = "right"; }
      track.append(note);
    }
    return el;
  }
  let rFrom = 0, rTo = 0, raf = 0, cache = new Map();
  // Rows in view (and 40 either side) only, for a long waterfall; rebuilt when the view nears an edge.
  function renderRows(force) {
    const n = view.length;
    let from = 0, to = n;
    if (n > WINDOW_AT) {
      const first = Math.max(0, Math.floor((scroller.scrollTop - headRow.offsetHeight) / ROW_H));
      const last = Math.min(n, first + Math.ceil(scroller.clientHeight / ROW_H) + 1);
      if (!force && rTo > rFrom && (rFrom === 0 || first - 8 >= rFrom) && (rTo === n || last + 8 <= rTo)) return;
      from = Math.max(0, first - 40);
      to = Math.min(n, last + 40);
    } else if (!force) return;
    if (force) cache = new Map();
    rFrom = from; rTo = to;
    const [a0, span] = axisRange(), out = [], kept = new Map();
    topSp.style.height = from * ROW_H + "px";
    botSp.style.height = (n - to) * ROW_H + "px";
    for (let k = from; k < to; k++) {
      const el = cache.get(view[k]) || wfRow(view[k], a0, span);
      kept.set(view[k], el);
      out.push(el);
    }
    cache = kept;
    const focused = document.activeElement && rowsEl.contains(document.activeElement) ? document.activeElement.dataset : null;
    put(rowsEl, out);
    if (focused) {
      const again = focused.spanId ? findRow(focused.spanId) : focused.group ? [...rowsEl.children].find((x) => x.dataset.group === focused.group) : null;
      if (again) again.focus({ preventScroll: true });
    }
  }
  function renderAxis() {
    const [, span] = axisRange();
    const step = niceStep(span, 6), ticks = [], lines = [];
    for (let t = 0; t <= span + 1e-9; t += step) {
      const left = (t / span) * 100 + "%";
      const tk = h("span", "wf-tick", t ? fmtDur(t) : "0");
      tk.style.left = left;
      const ln = h("span", "wf-gridline");
      ln.style.left = left;
      ticks.push(tk); lines.push(ln);
    }
    put(axisEl, ticks);
    put(grid, lines);
  }
  function renderWaterfall() {
    buildView();
    renderAxis();
    renderRows(true);
    const total = int(d.rows_total), nrows = arr(d.rows).length;
    wfInfo.textContent = `${fN(d.run.task_runs)} task run${int(d.run.task_runs) === 1 ? "" : "s"}` + (arr(d.critical_path).length ? " · critical path highlighted" : "") +
      (total > nrows ? ` · showing ${nrows.toLocaleString()} of ${total.toLocaleString()} rows` : "");
    scroller.classList.toggle("windowed", view.length > WINDOW_AT);
    scroller.classList.toggle("has-critical", arr(d.critical_path).length > 0);
  }
  const rebuild = () => { buildView(); renderRows(true); };
  const findRow = (spanId) => { for (const el of rowsEl.children) if (el.dataset.spanId === spanId) return el; return null; };
  function scrollToRow(spanId) {
    const k = view.findIndex((r) => r.kind === "run" && str(r.span_id) === spanId);
    if (k < 0) return;
    const top = headRow.offsetHeight + k * ROW_H, vis = scroller.scrollTop;
    if (top < vis + headRow.offsetHeight || top + ROW_H > vis + scroller.clientHeight) scroller.scrollTop = top - scroller.clientHeight / 2;
    renderRows(false);
  }
  scroller.addEventListener("scroll", () => {
    if (view.length > WINDOW_AT && !raf) raf = requestAnimationFrame(() => { raf = 0; renderRows(false); });
  }, { passive: true });
  function activate(row) {
    if (!row) return;
    const r = row._row;
    if (row.classList.contains("wf-more")) loadGroup(r.key, r.group, expanded.get(r.key), true);
    else if (row.dataset.kind === "group") toggleGroup(r);
    else if (row.dataset.kind === "run") select(row.dataset.spanId, false);
  }
  rowsEl.addEventListener("click", (e) => activate(e.target.closest(".wf-row")));
  rowsEl.addEventListener("keydown", (e) => {
    const row = e.target.closest(".wf-row");
    if (!row || e.target.tagName === "BUTTON") return;
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); activate(row); } else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const next = e.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
      if (next) next.focus();
    }
  });
  function toggleGroup(g) {
    const key = gkey(g);
    if (expanded.has(key)) { expanded.delete(key); rebuild(); return; }
    const ex = { rows: [], total: 0, loading: true, err: null };
    expanded.set(key, ex);
    rebuild();
    loadGroup(key, g, ex, false);
  }
  async function loadGroup(key, g, ex, more, refresh) {
    if (!ex) return;
    const offset = more ? ex.rows.length : 0;
    const limit = more ? 10000 : refresh ? Math.min(Math.max(ex.rows.length, 2000), 10000) : 2000;
    const p = new URLSearchParams({ parent: str(g.parent_span_id), name: str(g.name), offset: String(offset), limit: String(limit) });
    if (more) { ex.loading = true; rebuild(); }
    try {
      const r = await getJSON(`/api/runs/${enc(rid)}/group?${p}`);
      if (expanded.get(key) !== ex) return;
      const rows = arr(r.data.rows).map((x) => obj(x) || {});
      ex.rows = more ? ex.rows.concat(rows) : rows;
      ex.total = Math.max(int(r.data.total), ex.rows.length);
      ex.err = null;
    } catch (e) {
      if (expanded.get(key) !== ex) return;
      ex.err = e.message;
    }
    ex.loading = false;
    rebuild();
  }

  // ---- selection and the detail panel
  function select(spanId, scroll) {
    spanId = str(spanId);
    if (!spanId) return;
    selected = spanId;
    for (const el of rowsEl.querySelectorAll(".wf-row.selected")) el.classList.remove("selected");
    if (selected) {
      const el = findRow(selected);
      if (el) el.classList.add("selected");
      if (scroll) scrollToRow(selected);
    }
    loadDetail();
    if (onlySel.checked) loadLogs(false);
  }
  const rowOf = (spanId) => view.find((r) => r.kind === "run" && str(r.span_id) === spanId) || null;
  const sigOf = (r) => (r ? [r.state, r.end_unix_nano, r.log_count, r.attempts, r.running].map(str).join("|") : "");
  function loadDetail() {
    const seq = ++detailSeq, spanId = selected || str(d.run.span_id);
    const row = selected ? rowOf(selected) : null;
    detailSig = selected ? sigOf(row) : sigOf(d.run);
    if (!selected) renderDetail(Object.assign({}, d.run, { run_name: d.run.flow_run_name, type: "flow" }), true, true);
    else if (row) renderDetail(row, spanId === str(d.run.span_id), true);
    else put(detail, h("p", "muted", "Loading…"));
    if (!spanId) return;
    getJSON(`/api/runs/${enc(rid)}/spans/${enc(spanId)}`).then((r) => {
      if (seq !== detailSeq) return;
      const x = r.data;
      if (!selected) x.run_name = x.run_name || d.run.flow_run_name;
      renderDetail(x, str(x.span_id) === str(d.run.span_id));
    }, (e) => {
      if (seq !== detailSeq || !selected) return;
      put(detail, h("p", "bad-text", e.message));
    });
  }
  function section(title, ...kids) { return h("div", "detail-section", h("h3", null, title), kids); }
  function renderDetail(x, isFlow, partial) {
    const s = toMs(x.start_unix_nano), e = toMs(x.end_unix_nano), exc = obj(x.exception);
    const attrs = obj(x.attributes), akeys = attrs ? Object.keys(attrs).sort().slice(0, 500) : [];
    const status = obj(x.status);
    const logsOmitted = int(x.logs_omitted);
    const cmd = one((obj(d.links) || {}).show_command || `otelflow show ${str(d.run.flow_run_id)}`, 500);
    const upstream = x.upstream_failed;
    put(detail,
      h("div", "card-head", h("h2", null, one(x.run_name || x.name || x.span_id)), badge(x.state),
        h("span", "muted", one(x.type || (isFlow ? "flow" : "run"), 40)), x.cached ? h("span", "flag cached-flag", "cached") : null),
      kv([
        !isFlow && x.task_name ? ["Task", one(x.task_name)] : null,
        ["Start", timeEl(s)],
        ["End", e != null ? timeEl(e) : x.running ? "running" : null],
        ["Duration", fmtDur(x.running && s != null ? now() - s : x.duration_ms)],
        int(x.attempts) > 1 ? ["Attempts", String(int(x.attempts))] : null,
        x.map_index != null ? ["Map index", one(x.map_index, 20)] : null,
        x.state_message && !isFlow ? ["State message", h("span", "pre", multi(x.state_message, 2000))] : null,
        status && status.message && status.message !== x.state_message && status.message !== d.run.state_message ? ["Status", h("span", "pre", multi(status.message, 2000))] : null,
        ["Span id", h("code", null, one(x.span_id, 100))],
        x.run_id ? ["Run id", h("code", null, one(x.run_id, 100))] : null,
        arr(x.tags).length ? ["Tags", tagList(x.tags, 50)] : null,
      ]),
      exc ? h("div", "exception", h("strong", null, one(exc.type || "Exception", 200)), ": ", multi(exc.message, MSG_MAX)) : null,
      exc && exc.stacktrace ? h("pre", "traceback", multi(exc.stacktrace, 100000)) : null,
      upstream ? h("div", "upstream", "Not run: upstream failed: ",
        arr(Array.isArray(upstream) ? upstream : [upstream]).slice(0, 50).map((u, k) => [k ? ", " : "", obj(u) && u.span_id ? linkBtn(one(u.run_name || u.name || u.span_id), () => select(u.span_id, true)) : one(obj(u) ? u.run_name || u.name : u)])) : null,
      arr(x.inputs).length ? section("Inputs", h("ul", "inputs", arr(x.inputs).slice(0, 500).map((i) => obj(i) && h("li", null, h("code", null, one(i.parameter, 100)), " ← ",
        i.span_id ? linkBtn(one(i.run_name || i.span_id), () => select(i.span_id, true)) : one(i.run_name), " ", i.state ? badge(i.state) : null)))) : null,
      arr(x.artifacts).length ? section("Artifacts", h("ul", "artifacts", arr(x.artifacts).slice(0, 200).map((a) => obj(a) && artifactItem(a)))) : null,
      partial ? null : section("Logs", arr(x.logs).length ? h("div", "detail-logs log-lines", arr(x.logs).map((l) => logLine(obj(l) || {}, null))) : h("p", "muted", "No logs."),
        logsOmitted ? h("p", "note", linkBtn(`${fN(logsOmitted)} more: see the logs panel`, showSelectedLogs)) : null),
      akeys.length ? section("Attributes", h("table", "attrs", h("tbody", null, akeys.map((k) => h("tr", null, h("th", null, one(k, 200)), h("td", null, multi(typeof attrs[k] === "string" ? attrs[k] : json(attrs[k]), 5000))))))) : null,
      section("Command", h("span", "cmd", h("code", null, cmd), copyButton(cmd))));
  }
  function showSelectedLogs() {
    onlySel.checked = true;
    loadLogs(false);
    logs.scrollIntoView({ block: "start", behavior: "smooth" });
  }
  function artifactItem(a) {
    const view = h("div", "artifact-slot");
    const b = linkBtn(one(a.key || a.id || "artifact", 200), null, "artifact");
    b.addEventListener("click", async () => {
      if (view.firstChild) { view.replaceChildren(); return; }
      view.append(h("p", "muted", "Loading…"));
      try { const r = await getJSON("/api/artifacts/" + enc(str(a.id))); put(view, renderArtifact(r.data)); } catch (e) { put(view, h("p", "bad-text", e.message)); }
    });
    return h("li", null, b, " ", h("span", "tag", one(a.type || "artifact", 40)), a.description ? h("span", "muted", " " + one(a.description, 300)) : null, view);
  }

  // ---- logs panel
  let logNext = null, logPages = 0, logEtag = null, logEtagUrl = "", logSeq = 0;
  function logsUrl(offset) {
    const p = new URLSearchParams();
    if (levelSel.value) p.set("level", levelSel.value);
    if (logQ.value.trim()) p.set("q", logQ.value.trim());
    if (onlySel.checked && (selected || d.run.span_id)) p.set("span", selected || str(d.run.span_id));
    p.set("offset", String(offset));
    p.set("limit", "500");
    return `/api/runs/${enc(rid)}/logs?${p}`;
  }
  async function loadLogs(refresh) {
    if (!d) return;
    if (refresh && logPages > 1) return;
    const seq = ++logSeq, url = logsUrl(0);
    try {
      const r = await getJSON(url, refresh && logEtagUrl === url ? logEtag : null);
      if (seq !== logSeq || r.status === 304) return;
      logEtag = r.etag; logEtagUrl = url;
      const atBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 30, top = logList.scrollTop;
      const lines = arr(r.data.logs);
      put(logList, lines.map((l) => logLine(obj(l) || {}, selectFromLog)));
      if (!lines.length) logList.append(h("p", "muted empty-logs", "No log records" + (levelSel.value || logQ.value.trim() || onlySel.checked ? " match." : ".")));
      logList.scrollTop = refresh && atBottom && top > 0 ? logList.scrollHeight : refresh ? top : 0;
      logPages = 1;
      setNext(r.data.next_offset, lines.length);
    } catch (e) {
      if (seq === logSeq) put(logList, h("p", "bad-text", e.message));
    }
  }
  function setNext(next, n) {
    logNext = num(next);
    logsMore.hidden = logNext == null;
    logCount.textContent = `${logList.querySelectorAll(".log-line").length.toLocaleString()}${logNext != null ? "+" : ""} records`;
    return n;
  }
  logsMore.addEventListener("click", async () => {
    if (logNext == null) return;
    const seq = logSeq;
    logsMore.disabled = true;
    try {
      const r = await getJSON(logsUrl(logNext));
      if (seq !== logSeq) return;
      logList.append(...arr(r.data.logs).map((l) => logLine(obj(l) || {}, selectFromLog)));
      logPages++;
      setNext(r.data.next_offset);
    } catch (e) { showError(e.message); }
    logsMore.disabled = false;
  });
  function selectFromLog(spanId) { select(spanId, true); }
  levelSel.addEventListener("change", () => loadLogs(false));
  onlySel.addEventListener("change", () => loadLogs(false));
  logQ.addEventListener("input", debounce(() => loadLogs(false), 250));

  // ---- data
  function onData(nd) {
    if (!obj(nd.run)) { showError("The server's answer has no run"); return; }
    const first = !d;
    const prevRunSig = d ? sigOf(d.run) : "";
    d = nd;
    if (num(d.now_unix_nano)) skew = d.now_unix_nano / 1e6 - Date.now();
    if (first) rid = str(d.run.flow_run_id) || rid;
    if (isRunRunning(d)) { everLive = true; endedPolls = 0; }
    ticks = [];
    renderHeader();
    // keep only groups that are still there; refresh their members
    const keys = new Set(arr(d.rows).filter((r) => r && r.kind === "group").map(gkey));
    for (const k of [...expanded.keys()]) if (!keys.has(k)) expanded.delete(k);
    renderWaterfall();
    if (!first) for (const r of arr(d.rows)) if (r && r.kind === "group" && expanded.has(gkey(r))) loadGroup(gkey(r), r, expanded.get(gkey(r)), false, true);
    if (first) { loadDetail(); loadLogs(false); return; }
    const sig = selected ? sigOf(rowOf(selected)) : sigOf(d.run);
    if (sig !== detailSig && (selected ? rowOf(selected) : true)) loadDetail();
    else if (!selected && prevRunSig !== sigOf(d.run)) loadDetail();
    loadLogs(true);
  }
  const poll = poller({
    url: () => `/api/runs/${enc(rid)}`,
    interval: 1000,
    active: () => {
      if (!d) return false;
      if (isRunRunning(d)) return true;
      if (everLive && endedPolls < 1) { endedPolls++; return true; }
      const l = document.getElementById("live");
      if (l) l.remove();
      return false;
    },
    onData,
    onError: (msg, e) => {
      if (!d) { header.replaceChildren(); wf.hidden = logs.hidden = detail.hidden = true; }
      showError(e.status === 404 && !/no flow run/i.test(msg) ? `No flow run matching “${one(ident, 200)}”` : msg);
    },
  });
  poll.now();
  return {
    stop: poll.stop,
    tick: () => {
      if (!d) return;
      const n = now();
      tickAll(ticks, n);
      if (!isRunRunning(d)) return;
      const [a0, span] = axisRange();
      renderAxis();
      for (const el of rowsEl.children) {
        if (!el._bar) continue;
        const r = el._row, s = toMs(r.start_unix_nano);
        const running = r.kind === "group" ? int(r.running) > 0 : r.running;
        place(el._bar, s, running ? null : toMs(r.end_unix_nano) ?? s, a0, span);
        if (el._dur) el._dur.textContent = fmtDur(n - s);
      }
    },
  };
}

route();
