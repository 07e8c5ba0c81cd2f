// The race viewer: lists races from /v1/races, shows one race's frames from
// /v1/races/{id}/frames/{step} with its step data from /v1/races/{id}/steps.
// Plain JS, no build step. With a token (from "#token=..." in the URL or the
// token box) every request carries "Authorization: Bearer <token>"; frames are
// fetched, not <img src>-loaded, so they can carry it too.
"use strict";

const $ = (sel) => document.querySelector(sel);
const PAGE = 50;
const state = {
  token: null, races: [], total: 0, limit: PAGE, race: null, steps: null, step: 0,
  playing: false, timer: null, frameUrl: null, want: -1, shown: -1, loading: false,
};

function readToken() {
  const m = /(?:^|[#&])token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("replay-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("replay-token");
}

function message(text) {
  const el = $("#message");
  el.textContent = text || "";
  el.hidden = !text;
}

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

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtTime(s) {
  const m = Math.floor(s / 60);
  return `${m}:${(s - 60 * m).toFixed(1).padStart(4, "0")}`;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function loadTotals() {
  const s = await api("/v1/stats");
  $("#totals").textContent =
    `${s.races} races · ${s.frames} frames · ${fmtBytes(s.nbytes)} on disk · ${s.compression}x`;
}

async function loadRaces() {
  const q = new URLSearchParams({ limit: String(state.limit) });
  const env = $("#filter-env").value.trim();
  const status = $("#filter-status").value;
  if (env) q.set("env", env);
  if (status) q.set("status", status);
  const page = await api(`/v1/races?${q}`);
  state.races = page.items;
  state.total = page.total;
  renderRaces();
  const current = state.race && page.items.find((r) => r.race_id === state.race.race_id);
  if (current && current.length !== state.race.length) updateRace(current);
}

function renderRaces() {
  const body = $("#races tbody");
  body.replaceChildren(...state.races.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.raceId = r.race_id;
    if (state.race && state.race.race_id === r.race_id) tr.className = "selected";
    const status = cell("");
    const badge = document.createElement("span");
    badge.className = `status ${r.status}`;
    badge.textContent = r.status;
    status.append(badge);
    tr.append(
      cell(r.race_id.slice(-10)), cell(r.env), cell(r.map), status,
      cell(String(r.length), "num"), cell(fmtTime(r.duration_s), "num"),
      cell(r.started_at.replace("T", " ").slice(0, 19)),
    );
    tr.title = r.race_id;
    tr.addEventListener("click", () => selectRace(r.race_id));
    return tr;
  }));
  $("#count").textContent = `${state.races.length} of ${state.total}`;
  $("#more").hidden = state.races.length >= state.total;
}

async function selectRace(raceId) {
  stop();
  const race = await api(`/v1/races/${raceId}`);
  state.race = race;
  state.steps = null;
  state.step = 0;
  state.shown = -1;
  $("#race").hidden = false;
  $("#race-title").textContent = race.race_id;
  $("#race-meta").textContent =
    `${race.env} · ${race.map || "-"} · ${race.policy || "-"} · ${race.width}x${race.height} @ ${race.fps} fps · ` +
    `${race.length} steps · ${fmtBytes(race.nbytes)} (${race.compression}x) · ${race.status}`;
  for (const tr of document.querySelectorAll("#races tbody tr")) {
    tr.classList.toggle("selected", tr.dataset.raceId === raceId);
  }
  updateRace(race);
  await loadSteps();
  show(0);
}

function updateRace(race) {
  state.race = { ...state.race, ...race };
  const scrubber = $("#scrubber");
  scrubber.max = String(Math.max(0, race.length - 1));
  scrubber.disabled = race.length === 0;
  renderStep();
  if (state.steps && state.steps.stop < race.length) loadSteps();
}

async function loadSteps() {
  const r = state.race;
  const q = new URLSearchParams();
  for (const name of ["action", "reward", "terminated", "truncated"]) q.append("names", name);
  const steps = await api(`/v1/races/${r.race_id}/steps?${q}`);
  let acc = 0;
  steps.arrays.return = steps.arrays.reward.map((x) => (acc += x || 0));
  state.steps = steps;
  renderStep();
}

function num(x) {
  return x === null ? "NaN" : Number(x).toFixed(3);
}

function renderStep() {
  const r = state.race;
  if (!r) return;
  const i = state.step;
  $("#scrubber").value = String(i);
  $("#step").textContent = `${r.length ? i : "-"} / ${Math.max(0, r.length - 1)}`;
  const s = state.steps;
  const has = s && i >= s.start && i < s.stop;
  const get = (name) => (has ? s.arrays[name][i - s.start] : undefined);
  const action = get("action");
  $("#sd-action").textContent = action === undefined ? "" :
    Array.isArray(action) ? `[${action.map(num).join(", ")}]` : num(action);
  $("#sd-reward").textContent = has ? num(get("reward")) : "";
  $("#sd-return").textContent = has ? num(get("return")) : "";
  $("#sd-terminated").textContent = has ? String(get("terminated")) : "";
  $("#sd-truncated").textContent = has ? String(get("truncated")) : "";
}

// Show `step`: the step data at once, the frame when it arrives. While a
// frame loads, newer requests only replace the wanted step (no pile-up).
function show(step) {
  const r = state.race;
  if (!r || r.length === 0) return;
  state.step = Math.max(0, Math.min(step, r.length - 1));
  renderStep();
  state.want = state.step;
  if (!state.loading) fetchFrame();
}

async function fetchFrame() {
  const r = state.race;
  const step = state.want;
  if (step === state.shown) return;
  state.loading = true;
  try {
    const blob = await api(`/v1/races/${r.race_id}/frames/${step}`, true);
    const url = URL.createObjectURL(blob);
    const img = $("#frame");
    img.onload = () => {
      if (state.frameUrl) URL.revokeObjectURL(state.frameUrl);
      state.frameUrl = url;
      img.dataset.step = String(step);
      img.dataset.raceId = r.race_id;
    };
    img.src = url;
    state.shown = step;
  } catch (err) {
    message(String(err.message || err));
  } finally {
    state.loading = false;
  }
  if (state.want !== state.shown && state.race === r) fetchFrame();
}

function stop() {
  state.playing = false;
  clearTimeout(state.timer);
  $("#play").textContent = "play";
}

function play() {
  const r = state.race;
  if (!r) return;
  if (state.playing) { stop(); return; }
  state.playing = true;
  $("#play").textContent = "pause";
  const tick = () => {
    if (!state.playing) return;
    if (state.step >= state.race.length - 1) { stop(); return; }
    show(state.step + 1);
    state.timer = setTimeout(tick, 1000 / (state.race.fps || 30));
  };
  tick();
}

async function refresh() {
  try {
    await Promise.all([loadTotals(), loadRaces()]);
    message("");
  } catch (err) {
    message(String(err.message || err));
  }
}

function main() {
  readToken();
  $("#token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.token = $("#token-input").value;
    sessionStorage.setItem("replay-token", state.token);
    $("#token-form").hidden = true;
    refresh();
  });
  $("#scrubber").addEventListener("input", (ev) => { stop(); show(Number(ev.target.value)); });
  $("#prev").addEventListener("click", () => { stop(); show(state.step - 1); });
  $("#next").addEventListener("click", () => { stop(); show(state.step + 1); });
  $("#play").addEventListener("click", play);
  $("#more").addEventListener("click", () => { state.limit += PAGE; refresh(); });
  $("#filter-env").addEventListener("change", refresh);
  $("#filter-status").addEventListener("change", refresh);
  document.addEventListener("keydown", (ev) => {
    if (!state.race || ev.target.tagName === "INPUT") return;  // a range input steps itself
    if (ev.key === "ArrowLeft") { stop(); show(state.step - 1); ev.preventDefault(); }
    if (ev.key === "ArrowRight") { stop(); show(state.step + 1); ev.preventDefault(); }
    if (ev.key === " ") { play(); ev.preventDefault(); }
  });
  refresh();
  setInterval(refresh, 3000);  // races being recorded appear and grow
}

main();
