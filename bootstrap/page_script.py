"""The stats page's script, first part: helpers, the cards, the nodes and jobs tables, and the
poll loop. `page_views.py` holds the rest (charts and the job view); `page.py` joins them into one
inline block and pins its hash in the page's CSP.

Every value reaches the document as text (`textContent`, SVG attributes set one by one), never
as markup.
"""

SCRIPT_CORE = r"""
"use strict";
const POLL_MS = %POLL_MS%, TIMEOUT_MS = %TIMEOUT_MS%;
const $ = (id) => document.getElementById(id);

// Every value reaches the document as text: el(tag, text, className) never parses HTML.
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function setText(id, text) { const e = $(id); if (e.textContent !== String(text)) e.textContent = String(text); }
// A counter's card is coloured only when its count is not zero.
function tone(id, v, cls) { setText(id, v); $(id).parentElement.classList.toggle(cls, v > 0); }
function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
function str(v) { return typeof v === "string" ? v : ""; }
function list(v) { return Array.isArray(v) ? v : []; }
// "1 node", "2 nodes": a count with its noun, singular only for exactly one.
function plural(n, one, many) { n = num(n); return n + " " + (n === 1 ? one : (many || one + "s")); }
// Strangers' text (job names, images, reasons) with control, zero-width and bidi-override
// characters shown as U+FFFD: an override could make a row read as something it is not.
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
function clean(v) { return str(v).replace(HIDDEN, "\ufffd"); }
function shortPeer(pid) { pid = str(pid); return pid.length > 14 ? "\u2026" + pid.slice(-10) : pid; }
function ago(t, now) {
  if (typeof t !== "number") return "never";
  const s = Math.max(0, Math.round(now - t));
  if (s < 2) return "just now";
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}
function clock(t) { return typeof t === "number" ? new Date(t * 1000).toLocaleString() : ""; }
function seconds(s) {
  if (typeof s !== "number") return "\u2014";
  return s < 10 ? s.toFixed(2) + " s" : s < 120 ? s.toFixed(1) + " s" : Math.round(s / 60) + " min";
}
function duration(s) {
  s = Math.floor(num(s));
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + (s % 60) + "s" : s + "s";
}
function emptyRow(cols, text) {
  const tr = el("tr", null, "empty"), td = el("td", text);
  td.colSpan = cols; tr.append(td); return tr;
}
function badge(text, cls) { return el("span", text, "badge " + cls); }
function statusOf(j) { const s = str(j.status) || "announced"; return s.replace(/[^a-z]/g, ""); }

function renderNodes(s) {
  const rows = list(s.nodes_detail);
  const now = num(s.now);
  const body = rows.map((n) => {
    const tr = el("tr");
    tr.dataset.peerId = str(n.peer_id);
    const status = el("td", n.online ? "online" : "offline", n.online ? "online" : "offline");
    const peer = el("td", str(n.peer_id), "mono");
    peer.title = str(n.peer_id);
    const rep = num(n.reputation);
    const seen = el("td", n.online ? "now" : ago(n.last_seen, now), n.online ? "" : "muted");
    seen.title = clock(n.last_seen);
    tr.append(status, peer,
      el("td", rep > 0 ? "+" + rep : rep, "num " + (rep > 0 ? "pos" : rep < 0 ? "neg" : "")),
      el("td", num(n.credits), "num"), el("td", num(n.jobs_run), "num"), seen);
    return tr;
  });
  $("nodes-body").replaceChildren(...(body.length ? body : [emptyRow(6, "no nodes seen yet")]));
  const known = num(s.nodes_known);
  setText("nodes-note", num(s.nodes_online) + " online of " + known + " seen" +
    (known > rows.length ? " (showing " + rows.length + ")" : ""));
}

// How a job ended, in a few words: agreement counted as it is, "different result" only for one.
function outcome(j) {
  const status = statusOf(j), cell = el("td", null, "outcome");
  if (status === "announced") {
    cell.append(el("span", "waiting for a verdict \u00b7 " + plural(j.replicas, "replica") +
      ", quorum " + num(j.quorum), "muted"));
  } else if (status === "nondeterministic") {
    cell.append(el("span", plural(j.revealed, "result") + ", no two alike", "nondet"));
  } else {
    if (j.rejected) cell.append(el("span", "rejected: " + clean(j.rejected), "fail"));
    else if (status === "verified" && (j.verification === "single" || j.verification === "spot_checked"))
      cell.append(el("span", clean(j.verification_note), "agree"));
    else if (status === "verified") cell.append(el("span", num(j.agreeing) + " of " + num(j.executors) + " agree", "agree"));
    else cell.append(el("span", clean(j.reason) || "failed", "fail"));
    if (num(j.dissenting)) cell.append(el("span", " \u00b7 "), el("span", plural(j.dissenting, "different result"), "dissent"));
  }
  cell.title = cell.textContent;
  return cell;
}

function renderJobs(s) {
  const jobs = list(s.recent_jobs);
  const now = num(s.now);
  const body = jobs.map((j) => {
    const tr = el("tr");
    const id = str(j.job_id), status = statusOf(j);
    tr.dataset.jobId = id;
    tr.tabIndex = 0;
    const idCell = el("td", id.slice(0, 12) + (id.length > 12 ? "\u2026" : ""), "mono");
    idCell.title = id;
    const name = el("td", clean(j.name) || "\u2014", "name");
    name.title = clean(j.name) + (j.image ? "  (" + clean(j.image) + ")" : "");
    const st = el("td"); st.append(badge(status, "st-" + status));
    const took = el("td", seconds(j.verdict_s), "num hide-narrow");
    took.title = "from the announcement to the certificate, as this bootstrap saw them";
    const submitter = el("td", shortPeer(j.submitter) || "\u2014", "mono hide-narrow");
    submitter.title = str(j.submitter);
    const t = typeof j.updated_at === "number" ? j.updated_at : j.certified_at;
    const when = el("td", ago(t, now), "muted"); when.title = clock(t);
    tr.append(idCell, name, st, outcome(j), took, submitter, when);
    return tr;
  });
  $("jobs-body").replaceChildren(...(body.length ? body : [emptyRow(7, "no jobs yet")]));
  setText("jobs-note", jobs.length ? plural(jobs.length, "job") + ", newest first (the last 100 are kept) \u00b7 " +
    "click one for its detail" : "the last 100 are kept");
}

function renderFailed(s) {
  const reasons = list(s.failure_reasons);
  const ul = $("c-failed-reasons");
  if (!reasons.length) {
    ul.replaceChildren();
    setText("c-failed-sub", num(s.jobs_failed) ? "no recent failure" : "none so far");
    return;
  }
  setText("c-failed-sub", "why, among the recent jobs:");
  ul.replaceChildren(...reasons.map((r) => {
    const li = el("li"), text = clean(r.reason);
    li.append(el("span", num(r.count) + "\u00d7", "n"), el("span", text, "t"));
    li.title = plural(r.count, "job") + ": " + text;
    return li;
  }));
}

let lastStats = null, uptime = "";
function render(s) {
  lastStats = s;
  setText("bootstrap-id", str(s.peer_id));
  $("bootstrap-id").title = list(s.multiaddrs).map(str).join("\n");
  setText("c-online", num(s.nodes_online));
  setText("c-online-sub", "of " + plural(s.nodes_known, "node") + " seen");
  setText("c-announced", num(s.jobs_announced));
  tone("c-verified", num(s.jobs_verified), "ok");
  tone("c-failed", num(s.jobs_failed), "bad");
  tone("c-nondet", num(s.jobs_nondeterministic), "warn");
  renderFailed(s);
  const pm = s.jobs_per_minute || {};
  setText("c-rate", num(pm.certified));
  setText("c-rate-sub", "certified in the last 60 s \u00b7 " + num(pm.announced) + " announced");
  const rejected = s.rejected && typeof s.rejected === "object" ? s.rejected : {};
  const reasons = Object.keys(rejected).sort();
  setText("c-rejected", reasons.reduce((a, k) => a + num(rejected[k]), 0));
  setText("c-rejected-sub", reasons.length ? reasons.map((k) => k + " " + num(rejected[k])).join(", ") : "none");
  uptime = "up " + duration(s.uptime_s);
  renderCharts(s);
  renderNodes(s);
  renderJobs(s);
}

let polls = 0;
async function poll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  try {
    const r = await fetch("api/stats", { cache: "no-store", signal: ctl.signal });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    polls += 1;
    document.body.dataset.polls = String(polls);
    $("conn").className = "live";
    setText("conn-text", "live \u00b7 " + uptime + " \u00b7 updated " + new Date().toLocaleTimeString());
    await refreshJob(ctl.signal);
  } catch (e) {
    $("conn").className = "down";
    setText("conn-text", "cannot reach the bootstrap (" + (e && e.message ? e.message : e) + "); retrying");
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}
"""
