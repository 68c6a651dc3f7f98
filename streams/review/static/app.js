// loopline review: one item at a time, keyboard first. No framework, no build step.
"use strict";

const PREFETCH = 3;
const HISTORY = 10;
const $ = (id) => document.getElementById(id);

const state = {
  token: localStorage.getItem("loopline.token") || "",
  task: null,            // {name, kind, labels, lease_ttl_s}
  buffer: [],            // prefetched leases, next first
  current: null,         // {leased, labels: Set, spans: [], pending: [a, b] | null, edit: entry | null}
  history: [],           // newest first: {leased, body, state, kept, summary}
  filter: "",
  fetching: false,
  session: { answered: 0, kept: 0, keptBefore: 0 },
  shown: [],             // labels listed now, in key order
};
window.looplineTimings = [];  // ms from an answer key to the next item painted

// ---------------------------------------------------------------------------- API

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(method, path, body, extra = {}) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    ...extra,
  });
  if (response.status === 401) {
    showLogin("Your token was not accepted: it is unknown, mistyped or revoked.");
    throw new HttpError(401, "unauthorized");
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    throw new HttpError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

const taskPath = (rest) => `/api/v1/tasks/${encodeURIComponent(state.task.name)}/${rest}`;

// ---------------------------------------------------------------------------- screens

function showOnly(id) {
  for (const section of ["login", "status", "review"]) $(section).hidden = section !== id;
}

function showLogin(reason) {
  showOnly("login");
  $("progress").hidden = true;
  $("login-reason").textContent = reason || "Paste your reviewer token.";
  $("login-reason").classList.toggle("error", Boolean(reason));
  $("token-input").value = "";
  $("token-input").focus();
}

function showStatus(text) {
  showOnly("status");
  $("status-text").textContent = text;
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

// ---------------------------------------------------------------------------- start

async function start() {
  if (!state.token) return showLogin();
  try {
    const { tasks } = await api("GET", "/api/v1/tasks");
    state.task = tasks[0];
  } catch (error) {
    if (error.status !== 401) showStatus(`The service did not answer: ${error.message}`);
    return;
  }
  $("task-name").textContent = `${state.task.name} (${state.task.kind})`;
  $("progress").hidden = false;
  showStatus("Loading items…");
  if (!renewLeases.started) {
    renewLeases.started = true;
    setTimeout(renewLeases, Math.min(60, state.task.lease_ttl_s / 3) * 1000);
  }
  await refill();
  if (!state.current) advance();
  refreshLeft();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  localStorage.setItem("loopline.token", state.token);
  start();
});

// ---------------------------------------------------------------------------- queue

async function refill() {
  if (state.fetching || state.buffer.length >= PREFETCH) return;
  state.fetching = true;
  try {
    const { items } = await api("GET", taskPath(`queue/next?n=${PREFETCH - state.buffer.length}`));
    state.buffer.push(...items);
  } catch (error) {
    if (error.status === 503) showWaiting(error.message);
    else if (error.status !== 401) toast(`Could not fetch items: ${error.message}`);
  } finally {
    state.fetching = false;
  }
  if (!state.current && state.buffer.length) advance();
  else if (!state.current && !state.buffer.length) showWaiting("Nothing to review right now.");
}

function showWaiting(text) {
  if (state.current) return;
  showStatus(`${text} Checking again in a few seconds…`);
  clearTimeout(showWaiting.timer);
  showWaiting.timer = setTimeout(refill, 3000);
}

function advance() {
  const leased = state.buffer.shift();
  if (!leased) { state.current = null; refill(); return; }
  state.current = fresh(leased);
  render();
  refill();
}

function fresh(leased, edit = null) {
  const shown = preselected(leased.item);
  return {
    leased,
    labels: new Set(edit ? edit.body.labels : shown.labels),
    spans: (edit ? edit.body.spans : shown.spans).map((s) => ({ start: s.start, end: s.end, label: s.label })),
    pending: null,
    edit,
  };
}

function preselected(item) {
  const latest = item.suggestions[item.suggestions.length - 1];
  return latest ? latest.annotation : { labels: [], spans: [] };
}

// leases live while the page is open (renewed at a third of their time); given back when it closes
async function renewLeases() {
  const held = [...state.buffer, ...(state.current && !state.current.edit ? [state.current.leased] : [])];
  for (const leased of held) {
    try { await api("POST", taskPath(`leases/${leased.lease_id}/renew`)); }
    catch (error) {
      if (error.status === 409) state.buffer = state.buffer.filter((b) => b !== leased);
    }
  }
  setTimeout(renewLeases, Math.min(60, state.task.lease_ttl_s / 3) * 1000);
}

window.addEventListener("pagehide", () => {
  if (!state.task) return;
  const held = [...state.buffer, ...(state.current && !state.current.edit ? [state.current.leased] : [])];
  for (const leased of held) {
    api("POST", taskPath(`leases/${leased.lease_id}/release`), undefined, { keepalive: true }).catch(() => {});
  }
});

// ---------------------------------------------------------------------------- rendering

function render() {
  const { leased, edit } = state.current;
  const item = leased.item;
  showOnly("review");
  $("card").dataset.id = item.id;
  $("reason").textContent = item.reason;
  $("detail").textContent = item.detail;
  $("editing").hidden = !edit;
  renderSuggestions(item);
  state.filter = "";
  renderText();
  renderLabels();
}

function renderSuggestions(item) {
  const box = $("suggestions");
  box.replaceChildren();
  for (const suggestion of item.suggestions) {
    const a = suggestion.annotation;
    const what = state.task.kind === "ner"
      ? a.spans.map((s) => `${item.item.text.slice(s.start, s.end)}: ${s.label}`).join(", ") || "no entities"
      : a.labels.join(", ") || "no label";
    const chip = document.createElement("span");
    chip.className = "sug";
    chip.innerHTML = `<span class="src"></span><b></b> <span class="conf"></span>`;
    chip.children[0].textContent = suggestion.source === "llm" ? "LLM" : suggestion.source;
    chip.children[1].textContent = what;
    chip.children[2].textContent = `(${a.confidence.toFixed(2)})`;
    box.append(chip);
  }
}

function renderText() {
  const { leased, spans, pending } = state.current;
  const text = leased.item.item.text;
  const box = $("text");
  box.replaceChildren();
  if (state.task.kind !== "ner") { box.textContent = text; return; }
  let cursor = 0;
  let mark = null;  // the entity being filled: {element, span}
  leased.tokens.forEach(([start, end], i) => {
    const span = spans.find((s) => s.start <= start && end <= s.end);
    if (mark && span !== mark.span) { box.append(mark.element); mark = null; }
    if (start > cursor) (mark ? mark.element : box).append(text.slice(cursor, start));
    if (span && !mark) {
      mark = { element: document.createElement("mark"), span };
      mark.element.className = "ent";
      mark.element.dataset.label = span.label;
    }
    const token = document.createElement("span");
    token.className = "tok";
    token.dataset.i = i;
    token.textContent = text.slice(start, end);
    if (pending && pending[0] <= i && i <= pending[1]) token.classList.add("pending");
    (mark ? mark.element : box).append(token);
    cursor = end;
  });
  if (mark) box.append(mark.element);
  if (cursor < text.length) box.append(text.slice(cursor));
}

function orderedLabels() {
  // suggested labels first (latest suggestion first, by score), then the task's order
  const item = state.current.leased.item;
  const scores = new Map();
  for (const suggestion of [...item.suggestions].reverse()) {
    const a = suggestion.annotation;
    for (const label of a.labels) if (!scores.has(label)) scores.set(label, a.scores[label] ?? a.confidence);
    for (const [label, score] of Object.entries(a.scores).sort((x, y) => y[1] - x[1])) {
      if (!scores.has(label)) scores.set(label, score);
    }
  }
  const all = Object.keys(state.task.labels);
  return { order: [...scores.keys()].filter((l) => l in state.task.labels).concat(all.filter((l) => !scores.has(l))), scores };
}

function renderLabels() {
  const { order, scores } = orderedLabels();
  const needle = state.filter.toLowerCase().replace(/[\s_]+/g, " ").trim();
  const matches = needle
    ? order.filter((label) => `${label} ${state.task.labels[label]}`.toLowerCase().replace(/_/g, " ").includes(needle))
    : order;
  const limit = needle ? 30 : (state.task.kind === "ner" ? order.length : 9);
  state.shown = matches.slice(0, limit);
  const list = $("label-list");
  list.replaceChildren();
  state.shown.forEach((label, i) => {
    const li = document.createElement("li");
    li.dataset.label = label;
    li.title = state.task.labels[label];
    li.innerHTML = `<span class="key"></span><span class="name"></span><span class="score"></span>`;
    li.children[0].textContent = i < 9 ? String(i + 1) : "";
    li.children[1].textContent = label;
    li.children[2].textContent = scores.has(label) ? scores.get(label).toFixed(2) : "";
    if (state.task.kind !== "ner" && state.current.labels.has(label)) li.classList.add("on");
    li.addEventListener("click", () => pick(label));
    list.append(li);
  });
  const hidden = matches.length - state.shown.length;
  $("more").textContent = needle
    ? (matches.length ? `${matches.length} match “${state.filter}”` : `no label matches “${state.filter}” (Esc clears)`)
    : (hidden > 0 ? `${hidden} more labels: type to filter` : "");
  $("filter").value = state.filter;
  $("filter").classList.toggle("active", Boolean(state.filter));
}

// ---------------------------------------------------------------------------- choosing

function pick(label) {
  const current = state.current;
  if (state.task.kind === "textcat") current.labels = new Set([label]);
  else if (state.task.kind === "textcat_multilabel") {
    if (current.labels.has(label)) current.labels.delete(label); else current.labels.add(label);
  } else if (current.pending) {
    const [a, b] = current.pending;
    const start = current.leased.tokens[a][0];
    const end = current.leased.tokens[b][1];
    current.spans = current.spans.filter((s) => s.end <= start || s.start >= end);
    current.spans.push({ start, end, label });
    current.spans.sort((x, y) => x.start - y.start);
    current.pending = null;
    renderText();
  } else {
    toast("Select words in the text first, then pick their label.");
  }
  state.filter = "";
  renderLabels();
}

function tokenIndex(node) {
  const element = node && (node.nodeType === 1 ? node : node.parentElement);
  const token = element && element.closest(".tok");
  return token ? Number(token.dataset.i) : null;
}

$("text").addEventListener("mouseup", () => {
  if (!state.current || state.task.kind !== "ner") return;
  const selection = window.getSelection();
  const a = tokenIndex(selection.anchorNode);
  const b = tokenIndex(selection.focusNode);
  if (selection.isCollapsed || a === null || b === null) return;
  state.current.pending = [Math.min(a, b), Math.max(a, b)];
  selection.removeAllRanges();
  renderText();
});

$("text").addEventListener("click", (event) => {
  if (!state.current || state.task.kind !== "ner" || !window.getSelection().isCollapsed) return;
  const i = tokenIndex(event.target);
  if (i === null || state.current.pending) return;
  const [start, end] = state.current.leased.tokens[i];
  const before = state.current.spans.length;
  state.current.spans = state.current.spans.filter((s) => !(s.start <= start && end <= s.end));
  if (state.current.spans.length !== before) renderText();
});

// ---------------------------------------------------------------------------- answering

function answerBody(decision) {
  const { leased, labels, spans } = state.current;
  const kind = state.task.kind;
  return {
    lease_id: leased.lease_id,
    id: leased.item.id,
    decision,
    labels: decision === "accept" && kind !== "ner" ? [...labels] : [],
    spans: decision === "accept" && kind === "ner" ? spans : [],
  };
}

function sameAnswer(body, annotation) {
  if (body.decision !== "accept") return false;
  const key = (labels, spans) => JSON.stringify([[...labels].sort(), spans.map((s) => [s.start, s.end, s.label]).sort()]);
  return key(body.labels, body.spans) === key(annotation.labels, annotation.spans);
}

function answer(decision) {
  const current = state.current;
  if (!current) return;
  if (decision === "accept" && state.task.kind === "textcat" && current.labels.size !== 1) {
    return toast("Pick one label (1–9, or type to filter), then Enter.");
  }
  if (decision === "accept" && state.task.kind === "textcat_multilabel" && current.labels.size === 0) {
    return toast("Pick at least one label, or x to reject.");
  }
  const started = performance.now();
  const body = answerBody(decision);
  const entry = current.edit || { leased: current.leased };
  entry.body = body;
  entry.kept = sameAnswer(body, preselected(current.leased.item));
  entry.state = "saving";
  if (!current.edit) state.history.unshift(entry);
  for (const old of state.history.splice(HISTORY)) state.session.keptBefore += old.counted && old.kept ? 1 : 0;
  // the next item first: the write goes on in the background
  if (current.edit && current.parked) { state.current = current.parked; render(); }
  else advance();
  requestAnimationFrame(() => requestAnimationFrame(() => window.looplineTimings.push(performance.now() - started)));
  renderHistory();
  save(entry);
}

async function save(entry) {
  try {
    await api("POST", taskPath("answers"), entry.body);
    if (!entry.counted) {
      state.session.answered += 1;
      entry.counted = true;
    }
    state.session.kept = state.history.filter((e) => e.counted && e.kept).length + state.session.keptBefore;
    entry.state = "saved";
  } catch (error) {
    entry.state = "failed";
    entry.error = error.message;
    if (error.status !== 401) toast(`Answer not saved (${error.status}): ${error.message}. Click it in the list to try again.`);
  }
  renderHistory();
  renderProgress();
  refreshLeft();
}

function undo(entry = state.history[0]) {
  if (!entry) return toast("Nothing to undo yet.");
  const parked = state.current && state.current.edit ? state.current.parked : state.current;
  state.current = fresh(entry.leased, entry);
  state.current.parked = parked;
  render();
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const entry of state.history) {
    const li = document.createElement("li");
    li.className = entry.state;
    const b = entry.body;
    const what = b.decision !== "accept" ? b.decision
      : state.task.kind === "ner" ? `${b.spans.length} entit${b.spans.length === 1 ? "y" : "ies"}` : b.labels.join(", ");
    li.innerHTML = `<span class="state"></span><span class="what"></span><span class="snippet"></span>`;
    li.children[0].textContent = entry.state === "failed" ? "failed" : entry.state === "saving" ? "…" : "✓";
    li.children[1].textContent = what;
    li.children[2].textContent = entry.leased.item.item.text;
    li.title = entry.error || "click to edit";
    li.addEventListener("click", () => undo(entry));
    list.append(li);
  }
}

function renderProgress() {
  $("answered").textContent = state.session.answered;
  $("kept").textContent = state.session.answered
    ? `${Math.round((100 * state.session.kept) / state.session.answered)}%` : "–";
}

let leftTimer = null;
function refreshLeft() {
  if (leftTimer) return;
  leftTimer = setTimeout(async () => {
    leftTimer = null;
    try {
      const stats = await api("GET", taskPath("stats"));
      $("left").textContent = stats.pending + stats.leased;
    } catch (_) { /* shown elsewhere */ }
  }, 500);
}

// ---------------------------------------------------------------------------- keys

document.addEventListener("keydown", (event) => {
  if (!$("login").hidden || !state.current || event.ctrlKey || event.metaKey || event.altKey) return;
  if (!$("help").hidden) { if (event.key === "Escape" || event.key === "?") $("help").hidden = true; event.preventDefault(); return; }
  const key = event.key;
  const filtering = state.filter.length > 0;
  if (key === "?") { $("help").hidden = false; }
  else if (/^[1-9]$/.test(key)) { const label = state.shown[Number(key) - 1]; if (label) pick(label); }
  else if (key === "Enter") {
    if (filtering) { if (state.shown[0]) pick(state.shown[0]); }
    else answer("accept");
  }
  else if (key === "Escape") { state.filter = ""; state.current.pending = null; renderText(); renderLabels(); }
  else if (key === "Backspace") {
    if (filtering) { state.filter = state.filter.slice(0, -1); renderLabels(); }
    else undo();
  }
  else if (key === " " && !filtering) { answer("ignore"); }
  else if ((key === "x" || key === "X") && !filtering) { answer("reject"); }
  else if (key.length === 1 && /[\p{L}\p{N} _\-]/u.test(key)) { state.filter += key; renderLabels(); }
  else return;
  event.preventDefault();
});

$("accept").addEventListener("click", () => answer("accept"));
$("reject").addEventListener("click", () => answer("reject"));
$("ignore").addEventListener("click", () => answer("ignore"));
$("undo").addEventListener("click", () => undo());
$("help-button").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
$("help").addEventListener("click", () => { $("help").hidden = true; });

start();
