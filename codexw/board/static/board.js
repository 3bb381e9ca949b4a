// codexw board: renders the cards the server sends over Server-Sent Events, opens a job,
// and posts actions. Everything from a job (task, action, reason, log) goes in as text
// (textContent), never as HTML; the one exception is the report, which the server renders
// from Markdown with raw HTML escaped, and the stats charts, which the server draws.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
let clockOffset = 0; // server time minus browser time, seconds
let cards = new Map(); // id -> card data
let openJob = null; // id of the job in the dialog
let detailTimer = null;

function fmtDuration(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(s / 3600);
  return `${h}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

function fmtTokens(n) {
  if (!n) return "";
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M tok` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k tok` : `${n} tok`;
}

function now() { return Date.now() / 1000 + clockOffset; }

function timeText(c) {
  if (c.state === "running" && c.started_at) return `running ${fmtDuration(now() - c.started_at)}`;
  if (c.duration !== null && c.duration !== undefined) return `took ${fmtDuration(c.duration)}`;
  if (c.column === "queued") return `queued ${fmtDuration(now() - c.queued_at)}`;
  return "";
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function fillCard(node, c, showProject) {
  node.replaceChildren();
  node.dataset.state = c.state;
  node.appendChild(el("div", "head", `#${c.id} ${c.task}`));
  const meta = el("div", "meta");
  const tags = [c.level, c.type];
  if (showProject) tags.push(c.project_name);
  if (c.branch) tags.push(`⎇ ${c.branch}`);
  for (const t of tags) meta.appendChild(el("span", "tag", t));
  const bits = [];
  if (c.column !== "running" && c.state !== c.column) bits.push(c.state.replace("_", " "));
  bits.push(timeText(c));
  if (c.tokens) bits.push(fmtTokens(c.tokens));
  if (c.max_attempts > 1 || c.attempt > 1) bits.push(`attempt ${c.attempt}/${c.max_attempts}`);
  if (c.batch_id) bits.push(`batch ${c.batch_id}`);
  const time = el("span", "time", bits.filter(Boolean).join(" · "));
  meta.appendChild(time);
  node.appendChild(meta);
  if (c.column === "queued" && c.waiting) {
    node.appendChild(el("div", "why", c.waiting.startsWith("waiting") ? c.waiting : `waiting: ${c.waiting}`));
  }
  if (c.column === "running" && c.last_action) node.appendChild(el("div", "action", c.last_action));
  if ((c.column === "failed" || c.column === "stopped") && c.reason) node.appendChild(el("div", "reason", c.reason));
  node.setAttribute("aria-label", `job ${c.id}, ${c.state}: ${c.task}`);
}

function render(board) {
  clockOffset = board.now - Date.now() / 1000;
  $("#scope").textContent = board.all_projects ? "all projects" : (board.project || "");
  const seen = new Set();
  const byColumn = {};
  for (const col of board.columns) byColumn[col] = [];
  for (const c of board.cards) {
    seen.add(String(c.id));
    (byColumn[c.column] || byColumn.failed).push(c);
    cards.set(String(c.id), c);
  }
  for (const node of document.querySelectorAll(".card[data-job]")) {
    if (!seen.has(node.dataset.job)) { node.remove(); cards.delete(node.dataset.job); }
  }
  for (const [col, list] of Object.entries(byColumn)) {
    const column = $(`.column[data-column="${col}"]`);
    const holder = $(".cards", column);
    $(".count", column).textContent = list.length ? `(${list.length})` : "";
    list.forEach((c, i) => {
      let node = document.querySelector(`.card[data-job="${c.id}"]`);
      if (!node) {
        node = el("article", "card");
        node.dataset.job = String(c.id);
        node.tabIndex = 0;
        node.setAttribute("role", "button");
      }
      fillCard(node, c, board.all_projects);
      if (holder.children[i] !== node) holder.insertBefore(node, holder.children[i] || null);
    });
  }
  // The opened job is read again when its card changed (or while it runs: its processes).
  const shown = openJob !== null ? cards.get(String(openJob)) : undefined;
  if (shown) {
    const key = JSON.stringify(shown);
    if (key !== render.lastShown || shown.state === "running") scheduleDetail();
    render.lastShown = key;
  }
}

function tick() {
  for (const node of document.querySelectorAll('.card[data-state="running"], .column[data-column="queued"] .card')) {
    const c = cards.get(node.dataset.job);
    if (c) fillCard(node, c, document.body.dataset.allProjects === "1");
  }
}

function connect() {
  const live = $("#live");
  const source = new EventSource("/api/events");
  source.addEventListener("board", (ev) => {
    live.textContent = "live"; live.classList.add("on");
    const board = JSON.parse(ev.data);
    document.body.dataset.allProjects = board.all_projects ? "1" : "0";
    render(board);
  });
  source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
}

function flash(text, ok) {
  const f = $("#flash");
  f.textContent = text;
  f.classList.toggle("ok", !!ok);
  f.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.hidden = true; }, ok ? 4000 : 10000);
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const res = await fetch(path, options);
  const data = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.error + (data.hint ? ` (${data.hint})` : ""));
  return data;
}

function scheduleDetail() {
  if (detailTimer) return;
  detailTimer = setTimeout(() => { detailTimer = null; loadDetail(openJob, false); }, 300);
}

async function loadDetail(id, show) {
  let view;
  try { view = await api(`/api/jobs/${id}`); } catch (e) { flash(e.message); return; }
  if (openJob !== id) return;
  const d = $("#job-dialog");
  d.dataset.job = String(id);
  $("#job-title").textContent = `#${view.id} ${view.task}`;
  const meta = [view.state.replace("_", " "), view.level, view.type, timeText(view),
    fmtTokens(view.tokens), `attempt ${view.attempt}/${view.max_attempts}`];
  if (view.branch) meta.push(`branch ${view.branch}`);
  if (view.waiting) meta.push(`waiting: ${view.waiting}`);
  if (view.reason) meta.push(view.reason);
  $("#job-meta").textContent = meta.filter(Boolean).join(" · ");
  $("#job-kill").disabled = !["queued", "running"].includes(view.column);
  $("#job-retry").disabled = ["queued", "running"].includes(view.column);
  const chain = $("#job-chain");
  chain.replaceChildren();
  const links = [];
  for (const a of view.attempts) links.push([a.id, `attempt ${a.attempt} (${a.state})`]);
  for (const c of view.chain) links.push([c.id, `#${c.id} ${c.task} (${c.state})`]);
  if (!links.length) chain.textContent = "one attempt, no follow-ups";
  for (const [jid, label] of links) {
    const b = el("button", "link", label);
    b.type = "button";
    b.addEventListener("click", () => showJob(jid));
    chain.appendChild(b);
  }
  const body = $("#job-procs tbody");
  body.replaceChildren();
  for (const p of view.processes) {
    const tr = document.createElement("tr");
    for (const v of [p.pid, p.role, p.name, p.cpu_percent.toFixed(1), `${(p.rss / 1048576).toFixed(1)} MiB`]) tr.appendChild(el("td", "", String(v)));
    body.appendChild(tr);
  }
  $("#job-procs-section").hidden = !view.processes.length;
  const report = $("#job-report");
  if (view.report_html === null) report.textContent = "no report yet";
  else report.innerHTML = view.report_html; // rendered by the server with raw HTML escaped
  const log = $("#job-log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.textContent = view.log.map((e) => e.text).join("\n") || "no log yet";
  if (atEnd) log.scrollTop = log.scrollHeight;
  if (show && !d.open) d.showModal();
}

function showJob(id) {
  openJob = Number(id);
  render.lastShown = undefined;
  loadDetail(openJob, true);
}

function formData(form) {
  const data = {};
  for (const [k, v] of new FormData(form).entries()) data[k] = v;
  for (const box of form.querySelectorAll('input[type="checkbox"]')) data[box.name] = box.checked;
  return data;
}

function setup() {
  const boardEl = $("#board");
  boardEl.addEventListener("click", (ev) => {
    const card = ev.target.closest(".card[data-job]");
    if (card) showJob(card.dataset.job);
  });
  boardEl.addEventListener("keydown", (ev) => {
    const card = ev.target.closest(".card[data-job]");
    if (card && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); showJob(card.dataset.job); }
  });
  $("#job-dialog").addEventListener("close", () => { openJob = null; });
  $("#job-kill").addEventListener("click", async () => {
    const id = openJob;
    try {
      const r = await api(`/api/jobs/${id}/kill`, {});
      flash(r.killed.map((k) => `job ${k.job_id}: ${k.before} → ${k.after}`).join("; "), true);
    } catch (e) { flash(e.message); }
  });
  $("#job-retry").addEventListener("click", async () => {
    try {
      const r = await api(`/api/jobs/${openJob}/retry`, {});
      flash(r.retried.map((x) => `job ${x.old_id} retried as job ${x.new_id}`).join("; "), true);
    } catch (e) { flash(e.message); }
  });
  $("#continue-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api(`/api/jobs/${openJob}/continue`, formData(ev.target));
      ev.target.reset();
      flash(`job ${r.job_id} continues the conversation`, true);
      showJob(r.job_id);
    } catch (e) { flash(e.message); }
  });
  $("#launch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("/api/launch", formData(ev.target));
      ev.target.reset();
      $("#launch-dialog").close();
      flash(`job ${r.job_id} launched` + (r.waiting_for ? ` (${r.state}: ${r.waiting_for})` : ""), true);
    } catch (e) { flash(e.message); }
  });
  $("#batch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("/api/batch", formData(ev.target));
      ev.target.reset();
      $("#batch-dialog").close();
      flash(`batch ${r.batch_id}: ${r.job_ids.length} jobs queued, at most ${r.max_parallel} at once`, true);
    } catch (e) { flash(e.message); }
  });
  $("#open-launch").addEventListener("click", () => { $("#launch-dialog").showModal(); $("#l-task").focus(); });
  $("#open-batch").addEventListener("click", () => { $("#batch-dialog").showModal(); $("#b-text").focus(); });
  $("#open-stats").addEventListener("click", async () => {
    try {
      const s = await api("/api/stats");
      $("#stats-body").innerHTML = s.html; // plain SVG drawn by the server, labels escaped
      $("#stats-dialog").showModal();
    } catch (e) { flash(e.message); }
  });
  connect();
  setInterval(tick, 1000); // only the clocks on the cards: the data comes from the server's events
}

document.addEventListener("DOMContentLoaded", setup);
