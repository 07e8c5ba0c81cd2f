// The race viewer: lists races from /v1/races, shows one race's frames from
// /v1/races/{id}/frames/{step}, its step data from /v1/races/{id}/steps and
// plots of it (uPlot, vendored under /static/vendor/uplot). A second race can be
// shown beside it, scrubbed to the same step.
//
// Plain JS, no build step. With a token (from "#token=..." in the URL or the
// token box) every request carries "Authorization: Bearer <token>"; frames are
// fetched, not <img src>-loaded, so they can carry it too.
//
// The address follows what is shown: "#race=<id>&step=<n>[&with=<id>]" opens
// that frame (any unique start of an id works: the service resolves it).
"use strict";

const $ = (sel) => document.querySelector(sel);
const PAGE = 50;
const LIVE_POLL_MS = 1000;
const LIST_POLL_MS = 3000;

const state = {
  token: null, races: [], total: 0, limit: PAGE, sort: null, desc: false,
  a: null, b: null,  // the shown race and the compared one: {race, steps, pane}
  step: 0, playing: false, timer: null, plots: [],
  messageFrom: null,  // what the shown message is about: "list", "live" or "user"
  listAsked: 0,  // the race list requests made, so a late answer never replaces a newer one
  press: null,  // where the last press on the race list was, to tell a click from a drag
};

// ---------------------------------------------------------------- requests

function readToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("token")) {
    sessionStorage.setItem("replay-token", params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  }
  state.token = sessionStorage.getItem("replay-token");
}

// A message stays until the user acts (opens a race, filters, dismisses it), or,
// for a failed background poll ("list", "live"), until that poll succeeds again.
function message(text, from = "user") {
  $("#message-text").textContent = text || "";
  $("#message").hidden = !text;
  state.messageFrom = text ? from : null;
}

function recovered(from) { if (state.messageFrom === from) message(""); }

function acted() { message(""); }

async function api(path, asBlob = false) {
  const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
  const res = await fetch(path, { headers });
  if (res.status === 401) {
    $("#token-form").hidden = false;
    throw new Error("this service needs a token");
  }
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${res.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return asBlob ? res.blob() : res.json();
}

function report(err, from = "user") { message(String((err && err.message) || err), from); }

// ---------------------------------------------------------------- formatting

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function fmtTime(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function num(x) {
  return x === null || x === undefined ? "NaN" : Number(x).toFixed(3);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// ---------------------------------------------------------------- the address

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  const step = Number(p.get("step"));
  return { race: p.get("race"), step: Number.isInteger(step) && step >= 0 ? step : 0, with: p.get("with") };
}

function writeHash() {
  if (!state.a) return;
  const p = new URLSearchParams({ race: state.a.race.race_id, step: String(state.step) });
  if (state.b) p.set("with", state.b.race.race_id);
  const hash = `#${p}`;
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

async function followHash() {
  const want = readHash();
  if (!want.race) return;
  try {
    if (!state.a || !state.a.race.race_id.startsWith(want.race.toUpperCase())) {
      await selectRace(want.race, want.step);
    } else if (want.step !== state.step) {
      show(want.step);
    }
    if (want.with && (!state.b || !state.b.race.race_id.startsWith(want.with.toUpperCase()))) {
      await compareWith(want.with);
    } else if (!want.with && state.b) {
      closeCompare();
    }
  } catch (err) { report(err); }
}

// ---------------------------------------------------------------- the race list

async function loadTotals() {
  const s = await api("/v1/stats");
  $("#totals").textContent =
    `${plural(s.races, "race")} · ${plural(s.frames, "frame")} · ${fmtBytes(s.nbytes)} on disk · ${s.compression}x`;
}

async function loadRaces() {
  const q = new URLSearchParams({ limit: String(state.limit) });
  const text = $("#filter").value.trim();
  const status = $("#filter-status").value;
  if (text) q.set("q", text);
  if (status) q.set("status", status);
  if (state.sort) { q.set("sort", state.sort); q.set("desc", String(state.desc)); }
  const asked = ++state.listAsked;
  const page = await api(`/v1/races?${q}`);
  if (asked !== state.listAsked) return;  // a newer filter's answer is (or will be) shown
  state.races = page.items;
  state.total = page.total;
  renderRaces();
}

function renderRaces() {
  const body = $("#races tbody");
  body.replaceChildren(...state.races.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.raceId = r.race_id;
    const status = cell("");
    const badge = document.createElement("span");
    badge.className = `status ${r.status}`;
    badge.textContent = r.status;
    status.append(badge);
    const compare = cell("");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "vs";
    button.className = "compare";
    button.title = "compare: show beside the selected race, scrubbed together";
    button.addEventListener("click", (ev) => {
      ev.stopPropagation();
      acted();
      (state.a ? compareWith(r.race_id) : selectRace(r.race_id, 0)).catch(report);
    });
    compare.append(button);
    tr.append(
      cell(r.race_id, "id"), compare, cell(r.env), cell(r.map), cell(r.policy), status,
      cell(String(r.length), "num"),
      cell(r.total_return === null || r.total_return === undefined ? "-" : r.total_return.toFixed(1), "num"),
      cell(fmtTime(r.duration_s), "num"),
      cell(r.started_at.replace("T", " ").slice(0, 19)),
    );
    tr.addEventListener("mousedown", (ev) => { state.press = [ev.clientX, ev.clientY]; });
    tr.addEventListener("click", (ev) => {
      if (selectedText(ev)) return;  // the user dragged over the row to copy its text
      acted();
      selectRace(r.race_id, 0).catch(report);
    });
    return tr;
  }));
  markRows();
  $("#count").textContent = `${state.races.length} of ${state.total}`;
  $("#more").hidden = state.races.length >= state.total;
  for (const th of document.querySelectorAll("#races th[data-sort]")) {
    if (th.dataset.sort === state.sort) th.setAttribute("aria-sort", state.desc ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
}

// A click that ended a drag which selected text is a copy, not a choice.
function selectedText(ev) {
  const p = state.press;
  const moved = p && Math.hypot(ev.clientX - p[0], ev.clientY - p[1]) > 4;
  return !!moved && getSelection().toString() !== "";
}

// Marks the shown and the compared race; their "vs" buttons are disabled (a race
// is never compared with itself, nor opened twice).
function markRows() {
  for (const tr of document.querySelectorAll("#races tbody tr")) {
    const shown = !!state.a && tr.dataset.raceId === state.a.race.race_id;
    const compared = !!state.b && tr.dataset.raceId === state.b.race.race_id;
    tr.classList.toggle("selected", shown);
    tr.classList.toggle("compared", compared);
    tr.querySelector("button.compare").disabled = shown || compared;
  }
}

function sortBy(key) {
  if (state.sort === key) state.desc = !state.desc;
  else { state.sort = key; state.desc = key === "return" || key === "length" || key === "started"; }
  acted();
  refresh();
}

// ---------------------------------------------------------------- one race

// A pane shows one race's frames; while a frame loads, newer requests only
// replace the wanted step (no pile-up).
class Pane {
  constructor(img) { this.img = img; this.race = null; this.want = -1; this.shown = -1; this.loading = false; this.url = null; }

  setRace(race) { this.race = race; this.want = -1; this.shown = -1; }

  show(step) {
    if (!this.race || this.race.length === 0) return;
    this.want = Math.max(0, Math.min(step, this.race.length - 1));
    if (!this.loading) this.fetch();
  }

  async fetch() {
    const race = this.race;
    const step = this.want;
    if (step === this.shown && this.img.dataset.raceId === race.race_id) return;
    this.loading = true;
    try {
      const display = race.codec && race.codec.name !== "jpeg" ? "?format=jpeg" : "";
      const blob = await api(`/v1/races/${race.race_id}/frames/${step}${display}`, true);
      const url = URL.createObjectURL(blob);
      this.img.onload = () => {
        if (this.url) URL.revokeObjectURL(this.url);
        this.url = url;
        this.img.dataset.step = String(step);
        this.img.dataset.raceId = race.race_id;
      };
      this.img.src = url;
      this.shown = step;
    } catch (err) {
      report(err);
    } finally {
      this.loading = false;
    }
    if (this.race === race && this.want !== this.shown) this.fetch();
  }
}

function describe(race) {
  return `${race.env} · ${race.map || "-"} · ${race.policy || "-"} · ${race.width}x${race.height} @ ${race.fps} fps · ` +
    `${race.length} steps · return ${race.total_return === null ? "-" : race.total_return.toFixed(1)} · ` +
    `${fmtBytes(race.nbytes)} (${race.compression}x) · ${race.status}`;
}

function findRace(ref) { return api(`/v1/races/${encodeURIComponent(ref)}`); }

function isShown(view, race) { return !!view && view.race.race_id === race.race_id; }

// The frame's box takes the race's aspect ratio (viewer.css sizes it from --aspect).
async function openRace(race, img) {
  img.width = race.width;
  img.height = race.height;
  img.style.setProperty("--aspect", String(race.width / race.height));
  const view = { race, steps: null, pane: new Pane(img) };
  view.pane.setRace(race);
  await loadSteps(view);
  return view;
}

async function selectRace(ref, step) {
  const race = await findRace(ref);
  if (isShown(state.a, race)) return;  // already shown: keep its step
  stop();
  const view = await openRace(race, $("#frame"));
  if (isShown(state.b, race)) hideCompare();
  state.a = view;
  $("#race").hidden = false;
  $("#race-title").textContent = view.race.race_id;
  $("#race-meta").textContent = $("#race-meta").title = describe(view.race);
  markRows();
  setLength();
  buildPlots();
  show(step);
}

// Shows race `ref` beside the shown one; the shown or compared race itself is not
// opened again (a link saying so is corrected).
async function compareWith(ref) {
  const race = await findRace(ref);
  if (isShown(state.a, race) || isShown(state.b, race)) { writeHash(); return; }
  const view = await openRace(race, $("#frame-b"));
  state.b = view;
  $("#pane-b").hidden = false;
  $("#race-title-b").textContent = view.race.race_id;
  $("#race-meta-b").textContent = $("#race-meta-b").title = describe(view.race);
  $("#sd-row-b").hidden = false;
  $("#sd-head-a").textContent = "left";
  markRows();
  setLength();
  buildPlots();
  show(state.step);
}

function hideCompare() {
  state.b = null;
  $("#pane-b").hidden = true;
  $("#sd-row-b").hidden = true;
  $("#sd-head-a").textContent = "race";
}

function closeCompare() {
  hideCompare();
  markRows();
  setLength();
  buildPlots();
  show(state.step);
}

// Steps go from 0 to the longer race's last one; the shorter race stays on its last frame.
function length() {
  return Math.max(state.a ? state.a.race.length : 0, state.b ? state.b.race.length : 0);
}

function setLength() {
  const n = length();
  const scrubber = $("#scrubber");
  scrubber.max = String(Math.max(0, n - 1));
  scrubber.disabled = n === 0;
  $("#follow-label").hidden = !(state.a && state.a.race.status === "recording");
}

// Loads the steps not loaded yet (all of them the first time), so a race
// being recorded costs only its new steps each poll.
async function loadSteps(view) {
  const r = view.race;
  const start = view.steps ? view.steps.stop : 0;
  if (view.steps && start >= r.length) return;
  const q = new URLSearchParams({ start: String(start) });
  for (const name of ["action", "reward", "terminated", "truncated"]) {
    if (r.step_arrays.includes(name)) q.append("names", name);
  }
  const got = await api(`/v1/races/${r.race_id}/steps?${q}`);
  if (!view.steps) {
    view.steps = { start: 0, stop: 0, arrays: { action: [], reward: [], terminated: [], truncated: [], return: [] } };
  }
  const s = view.steps;
  let acc = s.arrays.return.length ? s.arrays.return[s.arrays.return.length - 1] : 0;
  for (const name of ["action", "reward", "terminated", "truncated"]) {
    const values = got.arrays[name] || new Array(got.stop - got.start).fill(null);
    s.arrays[name].push(...values);
  }
  for (const x of got.arrays.reward || []) s.arrays.return.push(acc += x || 0);
  s.stop = got.stop;
}

function stepValues(view, i) {
  const s = view && view.steps;
  if (!s || i < 0 || i >= s.stop) return null;
  const get = (name) => s.arrays[name][i];
  return { action: get("action"), reward: get("reward"), return: get("return"), terminated: get("terminated"), truncated: get("truncated") };
}

function renderStep() {
  if (!state.a) return;
  const n = length();
  const i = state.step;
  $("#scrubber").value = String(i);
  $("#step").textContent = `${n ? i : "-"} / ${Math.max(0, n - 1)}`;
  for (const [view, suffix] of [[state.a, ""], [state.b, "-b"]]) {
    if (!view && suffix) continue;
    const v = stepValues(view, Math.min(i, view.race.length - 1));
    const a = v && v.action;
    $(`#sd-action${suffix}`).textContent = !v ? "" : Array.isArray(a) ? `[${a.map(num).join(", ")}]` : num(a);
    $(`#sd-reward${suffix}`).textContent = v ? num(v.reward) : "";
    $(`#sd-return${suffix}`).textContent = v ? num(v.return) : "";
    $(`#sd-terminated${suffix}`).textContent = v ? String(v.terminated) : "";
    $(`#sd-truncated${suffix}`).textContent = v ? String(v.truncated) : "";
  }
  for (const plot of state.plots) {
    plot.redraw(false, false);
    if (plot.cursor.idx === null || plot.cursor.idx === undefined) legendAtStep(plot);
  }
  writeHash();
}

// Show `step` in both panes: the step data and plots at once, frames when they arrive.
function show(step) {
  const n = length();
  if (!state.a || n === 0) return;
  state.step = Math.max(0, Math.min(step, n - 1));
  renderStep();
  state.a.pane.show(state.step);
  if (state.b) state.b.pane.show(state.step);
}

// ---------------------------------------------------------------- plots

// Every plot reserves the same room for a y axis on each side (the return's axis is
// on the right of the first), so their step axes line up: one step is at the same x
// in every plot, and so are the cursor lines.
const AXIS_PX = 56;
const HEIGHT_SHARES = [2, 2, 1];  // reward and return, action, terminated / truncated
const FIXED_HEIGHTS = [160, 160, 110];  // narrow windows, where the page scrolls

// A uPlot plugin that draws the current step as a vertical line and keeps the
// legend on the current step while the pointer is not over a plot.
function stepCursor() {
  return {
    hooks: {
      draw: [(u) => {
        const x = Math.round(u.valToPos(state.step, "x", true));
        const { top, height } = u.bbox;
        u.ctx.save();
        u.ctx.strokeStyle = "#d22";
        u.ctx.lineWidth = 2 * devicePixelRatio;
        u.ctx.beginPath();
        u.ctx.moveTo(x, top);
        u.ctx.lineTo(x, top + height);
        u.ctx.stroke();
        u.ctx.restore();
      }],
      setCursor: [(u) => { if (u.cursor.idx === null || u.cursor.idx === undefined) legendAtStep(u); }],
    },
  };
}

function legendAtStep(u) {
  if (u.data[0].length) u.setLegend({ idx: Math.min(state.step, u.data[0].length - 1) }, false);
}

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];

function column(view, name, n, pick = (x) => x) {
  const out = new Array(n).fill(null);
  if (!view || !view.steps) return out;
  const values = view.steps.arrays[name];
  for (let i = 0; i < Math.min(n, values.length); i++) {
    const v = values[i];
    out[i] = v === null || v === undefined ? null : pick(v);
  }
  return out;
}

// The plotted series of each view: reward and return, each action component,
// termination; the compared race's are dashed.
function plotGroups(n) {
  const views = [[state.a, "", []], ...(state.b ? [[state.b, " (right)", [6, 4]]] : [])];
  const groups = [
    { title: "reward and return", series: [] },
    { title: "action", series: [] },
    { title: "terminated / truncated", series: [] },
  ];
  for (const [view, label, dash] of views) {
    groups[0].series.push(
      { label: `reward${label}`, values: column(view, "reward", n), stroke: COLOURS[0], dash, scale: "y" },
      { label: `return${label}`, values: column(view, "return", n), stroke: COLOURS[1], dash, scale: "ret" },
    );
    const dims = view.race.action_shape.reduce((a, b) => a * b, 1);
    for (let k = 0; k < dims; k++) {
      groups[1].series.push({
        label: `action[${k}]${label}`, dash, stroke: COLOURS[(k + 2) % COLOURS.length], scale: "y",
        values: column(view, "action", n, (a) => (Array.isArray(a) ? a.flat()[k] : a)),
      });
    }
    groups[2].series.push(
      { label: `terminated${label}`, values: column(view, "terminated", n, Number), stroke: "#d62728", dash, scale: "y", flag: true },
      { label: `truncated${label}`, values: column(view, "truncated", n, Number), stroke: "#7f7f7f", dash, scale: "y", flag: true },
    );
  }
  return groups;
}

const shownValue = (u, v) => (v === null || v === undefined ? "-" : num(v));
const shownFlag = (u, v) => (v === null || v === undefined ? "-" : String(v === 1));

function plotOptions(group, g, width) {
  const twoAxes = group.series.some((s) => s.scale === "ret");
  const blank = (u, splits) => splits.map(() => "");
  const right = twoAxes
    ? { scale: "ret", side: 1, size: AXIS_PX, grid: { show: false } }
    : { scale: "y", side: 1, size: AXIS_PX, grid: { show: false }, ticks: { show: false }, values: blank };
  return {
    title: group.title,
    width,
    height: FIXED_HEIGHTS[g],
    cursor: { drag: { x: false, y: false }, sync: { key: "replay-steps" } },
    scales: { x: { time: false }, ...(g === 2 ? { y: { range: [-0.1, 1.1] } } : {}) },
    legend: { live: true },
    series: [{ label: "step", value: (u, v) => (v === null || v === undefined ? "-" : String(v)) },
      ...group.series.map((s) => ({
        label: s.label, stroke: s.stroke, dash: s.dash, scale: s.scale, width: 1.5,
        value: s.flag ? shownFlag : shownValue,
        paths: g === 2 ? uPlot.paths.stepped({ align: 1 }) : undefined,
        points: { show: false },
      }))],
    axes: [{ size: 32 }, { scale: "y", size: AXIS_PX }, right],
    plugins: [stepCursor()],
  };
}

// The plots of the shown race (and of the compared one). Rebuilt when races change
// or grow, and when the window is resized.
function buildPlots() {
  for (const plot of state.plots) plot.destroy();
  state.plots = [];
  const box = $("#plots");
  box.replaceChildren();
  delete box.dataset.fitted;
  if (!state.a || typeof uPlot === "undefined") return;
  const n = length();
  const x = Array.from({ length: n }, (_, i) => i);
  const width = Math.max(300, box.clientWidth || 600);
  for (const [g, group] of plotGroups(n).entries()) {
    const div = document.createElement("div");
    div.className = "plot";
    div.dataset.plot = String(g);
    box.append(div);
    const plot = new uPlot(plotOptions(group, g, width), [x, ...group.series.map((s) => s.values)], div);
    plot.over.addEventListener("click", (ev) => {
      stop();
      show(Math.round(plot.posToVal(ev.offsetX, "x")));
    });
    state.plots.push(plot);
  }
  for (const plot of state.plots) legendAtStep(plot);
  const built = state.plots;
  requestAnimationFrame(() => { if (state.plots === built) fitPlots(box, width); });
}

// Shares the plot column's height among the plots, after their titles and legends
// (which wrap with the width), once uPlot has laid them out (it does so after a
// microtask). Where the column has no height of its own (narrow windows: the page
// scrolls), the plots keep their fixed heights.
function fitPlots(box, width) {
  if (getComputedStyle(box).overflow !== "hidden") { box.dataset.fitted = boxSize(box); return; }
  const outside = (p) => p.root.querySelector(".u-title").offsetHeight + p.root.querySelector(".u-legend").offsetHeight;
  const chrome = state.plots.reduce((sum, p) => sum + outside(p), 0);
  const gaps = parseFloat(getComputedStyle(box).rowGap) * (state.plots.length - 1);
  const free = box.clientHeight - chrome - gaps - 2;
  const shares = HEIGHT_SHARES.reduce((a, b) => a + b, 0);
  for (const [g, plot] of state.plots.entries()) {
    plot.setSize({ width, height: Math.max(70, Math.floor((free * HEIGHT_SHARES[g]) / shares)) });
  }
  box.dataset.fitted = boxSize(box);
}

function boxSize(box) {
  const r = box.getBoundingClientRect();
  return `${Math.round(r.width)}x${Math.round(r.height)}`;
}

// ---------------------------------------------------------------- playing

function stop() {
  state.playing = false;
  clearTimeout(state.timer);
  $("#play").textContent = "play";
}

function play() {
  if (!state.a) return;
  if (state.playing) { stop(); return; }
  state.playing = true;
  $("#play").textContent = "pause";
  const tick = () => {
    if (!state.playing) return;
    if (state.step >= length() - 1) { stop(); return; }
    show(state.step + 1);
    state.timer = setTimeout(tick, 1000 / (state.a.race.fps || 30));
  };
  tick();
}

// ---------------------------------------------------------------- live growth

// A race being recorded grows: its new steps are loaded, the plots rebuilt, and
// with "follow live" on (and the last step shown) the newest frame is shown.
async function pollLive() {
  for (const view of [state.a, state.b]) {
    if (!view || view.race.status !== "recording") continue;
    const atEnd = state.step >= length() - 1;
    const race = await api(`/v1/races/${view.race.race_id}`);
    if (race.length === view.race.length && race.status === view.race.status) continue;
    view.race = race;
    view.pane.race = race;
    await loadSteps(view);
    const meta = view === state.a ? "#race-meta" : "#race-meta-b";
    $(meta).textContent = $(meta).title = describe(race);
    setLength();
    buildPlots();
    if (atEnd && $("#follow").checked) show(length() - 1);
    else renderStep();
  }
}

async function refresh() {
  try {
    await Promise.all([loadTotals(), loadRaces()]);
    recovered("list");
  } catch (err) {
    report(err, "list");
  }
}

// ---------------------------------------------------------------- keys and start

function copyId() {
  if (!state.a) return;
  const id = state.a.race.race_id;
  if (navigator.clipboard) navigator.clipboard.writeText(id).catch(() => {});
  const sel = getSelection();
  sel.selectAllChildren($("#race-title"));
}

function onKey(ev) {
  const help = $("#help");
  if (ev.key === "?" && ev.target.tagName !== "INPUT") {
    if (help.open) help.close(); else help.showModal();
    ev.preventDefault();
    return;
  }
  if (help.open) return;
  if (ev.key === "/" && ev.target.tagName !== "INPUT") { $("#filter").focus(); ev.preventDefault(); return; }
  if (!state.a || ev.target.tagName === "INPUT") return;  // a range input steps itself
  const by = ev.shiftKey ? 10 : 1;
  const keys = {
    ArrowLeft: () => show(state.step - by),
    ArrowRight: () => show(state.step + by),
    Home: () => show(0),
    End: () => show(length() - 1),
  };
  if (keys[ev.key]) { stop(); keys[ev.key](); ev.preventDefault(); }
  else if (ev.key === " ") { play(); ev.preventDefault(); }
  else if (ev.key === "c" && !ev.ctrlKey && !ev.metaKey) copyId();
  else if (ev.key === "x" && state.b) closeCompare();
}

function main() {
  readToken();
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token-input").value;
    sessionStorage.setItem("replay-token", state.token);
    $("#token-form").hidden = true;
    acted();
    refresh().then(followHash);
  });
  $("#scrubber").addEventListener("input", (ev) => { stop(); show(Number(ev.target.value)); });
  $("#prev").addEventListener("click", () => { stop(); show(state.step - 1); });
  $("#next").addEventListener("click", () => { stop(); show(state.step + 1); });
  $("#play").addEventListener("click", play);
  $("#more").addEventListener("click", () => { acted(); state.limit += PAGE; refresh(); });
  $("#filter").addEventListener("input", () => { acted(); refresh(); });
  $("#filter-status").addEventListener("change", () => { acted(); refresh(); });
  $("#message-close").addEventListener("click", acted);
  $("#compare-close").addEventListener("click", closeCompare);
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  $('button[data-copy="a"]').addEventListener("click", copyId);
  for (const th of document.querySelectorAll("#races th[data-sort]")) {
    th.addEventListener("click", () => sortBy(th.dataset.sort));
  }
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => { acted(); followHash(); });
  // The plots fill their column: rebuilt when it changes size (the window, a message).
  let resize = null;
  const box = $("#plots");
  const outOfFit = () => state.a && box.dataset.fitted !== boxSize(box);
  new ResizeObserver(() => {
    clearTimeout(resize);
    resize = setTimeout(() => { if (outOfFit()) buildPlots(); }, 150);
  }).observe(box);
  refresh().then(followHash);
  setInterval(refresh, LIST_POLL_MS);  // races being recorded appear and grow
  setInterval(() => pollLive().then(() => recovered("live"), (err) => report(err, "live")), LIVE_POLL_MS);
}

main();
