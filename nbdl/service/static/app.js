// The nbdl service page: the queue, live from the event stream (no polling), a page at a time.
"use strict";

const API = "/api/v1";
const PAGE = 100;
const ACTIONS = {
  queued: ["pause", "cancel"],
  pending: ["pause", "cancel"],
  in_progress: ["pause", "cancel"],
  paused: ["resume", "cancel"],
  failed: ["retry"],
  cancelled: ["retry"],
  completed: [],
};
const state = { filter: "", cursors: [0], next: null, rows: new Map(), loading: null };
const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const resp = await fetch(API + path, options);
  const data = resp.status === 204 ? null : await resp.json();
  if (!resp.ok) throw new Error((data && (data.detail || data.title)) || `HTTP ${resp.status}`);
  return data;
}

function matches(item) {
  return !state.filter || state.filter.split(",").includes(item.status);
}

function cell(row, name) {
  return row.querySelector(`[data-cell="${name}"]`);
}

function makeRow(item) {
  const row = document.createElement("tr");
  row.dataset.id = String(item.id);
  for (const name of ["file", "progress", "size", "speed", "eta", "status", "priority", "actions"]) {
    const td = document.createElement("td");
    td.dataset.cell = name;
    if (["size", "speed", "eta", "priority"].includes(name)) td.className = "num";
    if (name === "file") td.className = "file";
    if (name === "actions") td.className = "actions";
    row.appendChild(td);
  }
  const bar = document.createElement("progress");
  bar.max = 1;
  cell(row, "progress").appendChild(bar);
  fillRow(row, item);
  return row;
}

function button(action, label, item) {
  const b = document.createElement("button");
  b.type = "button";
  b.dataset.action = action;
  b.textContent = label;
  b.setAttribute("aria-label", `${label} ${item.filename}`);
  return b;
}

function fillRow(row, item) {
  const file = cell(row, "file");
  file.textContent = item.filename;
  file.title = item.url;
  const bar = cell(row, "progress").firstChild;
  const fraction = item.status === "completed" ? 1
    : item.total_bytes ? item.bytes_downloaded / item.total_bytes : null;
  if (fraction === null) bar.removeAttribute("value"); else bar.value = fraction;
  bar.setAttribute("aria-label", `${item.filename}: ${fraction === null ? "size unknown" : Math.round(fraction * 100) + "%"}`);
  cell(row, "size").textContent = item.total_bytes !== null
    ? `${bytes(item.bytes_downloaded)} / ${bytes(item.total_bytes)}` : bytes(item.bytes_downloaded);
  cell(row, "speed").textContent = item.speed ? `${bytes(item.speed)}/s` : "";
  cell(row, "eta").textContent = duration(item.eta_seconds);
  const status = cell(row, "status");
  status.textContent = item.status.replace("_", " ");
  status.className = `status-${item.status}`;
  if (item.error || item.note) {
    const detail = document.createElement("span");
    detail.className = item.error ? "error" : "muted";
    detail.textContent = item.error || item.note;
    status.appendChild(detail);
  }
  cell(row, "priority").textContent = String(item.priority);
  const actions = cell(row, "actions");
  actions.replaceChildren();
  for (const action of ACTIONS[item.status] || []) {
    actions.appendChild(button(action, action[0].toUpperCase() + action.slice(1), item));
  }
  actions.appendChild(button("up", "Priority up", item));
  actions.appendChild(button("down", "Priority down", item));
  actions.appendChild(button("remove", "Remove", item));
  row.item = item;
  row.dataset.status = item.status;
  row.dataset.priority = String(item.priority);
}

async function load() {
  const cursor = state.cursors[state.cursors.length - 1];
  const query = new URLSearchParams({ limit: String(PAGE), cursor: String(cursor) });
  if (state.filter) query.set("status", state.filter);
  const page = await api("GET", `/downloads?${query}`);
  const body = $("rows");
  body.replaceChildren();
  state.rows.clear();
  for (const item of page.items) {
    const row = makeRow(item);
    state.rows.set(item.id, row);
    body.appendChild(row);
  }
  state.next = page.next_cursor;
  const first = (state.cursors.length - 1) * PAGE;
  $("page-info").textContent = page.total
    ? `${first + 1}–${first + page.items.length} of ${page.total}` : "nothing here yet";
  $("prev").disabled = state.cursors.length === 1;
  $("next").disabled = state.next === null;
}

function reload() {
  // One reload at a time; a request while one runs makes one more afterwards.
  if (state.loading) { state.again = true; return state.loading; }
  state.loading = load().catch(showError).finally(() => {
    state.loading = null;
    if (state.again) { state.again = false; reload(); }
  });
  return state.loading;
}

function onItem(item) {
  const row = state.rows.get(item.id);
  if (row) {
    if (matches(item)) fillRow(row, item); else { row.remove(); state.rows.delete(item.id); }
    return;
  }
  // A new or newly matching item belongs on this page if it is the last page and has room.
  if (matches(item) && state.next === null && state.rows.size < PAGE) {
    const last = Math.max(0, ...state.rows.keys());
    if (item.id > last) {
      const fresh = makeRow(item);
      state.rows.set(item.id, fresh);
      $("rows").appendChild(fresh);
    } else {
      reload();
    }
  }
}

function onStats(stats) {
  const text = `${stats.total} downloads: ${stats.running} running, ${stats.queued} queued, ` +
    `${stats.paused} paused, ${stats.completed} completed, ${stats.failed} failed, ` +
    `${stats.cancelled} cancelled`;
  if ($("totals").textContent !== text) $("totals").textContent = text;
  $("connection").textContent = `${bytes(stats.speed)}/s`;
}

function showError(error) {
  $("add-message").textContent = String(error.message || error);
}

function connect() {
  const source = new EventSource(`${API}/events`);
  source.addEventListener("snapshot", (event) => { onStats(JSON.parse(event.data).stats); reload(); });
  source.addEventListener("item", (event) => onItem(JSON.parse(event.data)));
  source.addEventListener("progress", (event) => {
    // Only the changed fields of a running item: merge them into the row's copy.
    const change = JSON.parse(event.data);
    const row = state.rows.get(change.id);
    if (row && row.item) onItem({ ...row.item, ...change });
  });
  source.addEventListener("stats", (event) => onStats(JSON.parse(event.data)));
  source.addEventListener("removed", (event) => {
    const id = JSON.parse(event.data).id;
    const row = state.rows.get(id);
    if (row) { row.remove(); state.rows.delete(id); }
  });
  source.addEventListener("open", () => { $("connection").textContent = "live"; });
  source.addEventListener("error", () => { $("connection").textContent = "reconnecting…"; });
}

async function onAction(event) {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const row = target.closest("tr");
  const id = row.dataset.id;
  const action = target.dataset.action;
  target.disabled = true;
  try {
    if (action === "remove") {
      await api("DELETE", `/downloads/${id}`);
    } else if (action === "up" || action === "down") {
      const priority = Number(row.dataset.priority) + (action === "up" ? 1 : -1);
      fillRow(row, await api("PATCH", `/downloads/${id}`, { priority }));
    } else {
      fillRow(row, await api("POST", `/downloads/${id}/${action}`));
    }
    $("add-message").textContent = "";
  } catch (error) {
    showError(error);
  } finally {
    target.disabled = false;
  }
}

async function onAdd(event) {
  event.preventDefault();
  const text = $("add-text").value;
  if (!text.trim()) return;
  $("add-button").disabled = true;
  try {
    const added = await api("POST", "/downloads/batch", { manifest: text });
    $("add-message").textContent = `Added ${added.items.length}.`;
    $("add-text").value = "";
    reload();
  } catch (error) {
    showError(error);
  } finally {
    $("add-button").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("add-form").addEventListener("submit", onAdd);
  $("rows").addEventListener("click", onAction);
  $("filter").addEventListener("change", () => {
    state.filter = $("filter").value;
    state.cursors = [0];
    reload();
  });
  $("next").addEventListener("click", () => {
    if (state.next !== null) { state.cursors.push(state.next); reload(); }
  });
  $("prev").addEventListener("click", () => {
    if (state.cursors.length > 1) { state.cursors.pop(); reload(); }
  });
  $("purge").addEventListener("click", () => api("POST", "/purge").then(reload, showError));
  connect();
});
