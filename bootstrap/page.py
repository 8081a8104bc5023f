"""The bootstrap's live stats page: one self-contained HTML document served at `/`.

It holds no data. Its script polls `api/stats` every second and re-renders the counters and the
node and job tables in place, so the page stays live without a reload. Nothing outside the page
is loaded (no CDN, no fonts, no images): a bootstrap may run where there is no internet.

Job names, images and peer ids come from strangers. The script only ever puts them into the
document with `textContent` (never `innerHTML`), and the page's Content-Security-Policy allows
no script or style but the two inline blocks below (by hash) and no connection but to its own
origin, so even a mistake in the script could not run a peer-supplied string as code.
"""

from __future__ import annotations

import base64
import hashlib

POLL_INTERVAL_MS = 1000
POLL_TIMEOUT_MS = 5000

STYLE = """
:root {
  --bg: #f4f6f9; --card: #fff; --ink: #1b2330; --muted: #667085; --line: #e3e7ee;
  --accent: #2f5bea; --ok: #1a7f4b; --ok-bg: #e3f5ea; --bad: #b42318; --bad-bg: #fdecea;
  --warn: #9a5b00; --warn-bg: #fff3dc; --info: #344054; --info-bg: #eef1f6;
  color-scheme: light;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", sans-serif; }
header { background: #141b2d; color: #fff; padding: 14px 28px; display: flex; align-items: center;
  gap: 18px; flex-wrap: wrap; }
header h1 { font-size: 19px; margin: 0; font-weight: 650; letter-spacing: .2px; }
header h1 span { color: #9fb3ff; font-weight: 400; }
#bootstrap-id { font: 12px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; color: #c5cee0;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 60ch; }
#conn { margin-left: auto; font-size: 12.5px; display: flex; align-items: center; gap: 7px; color: #c5cee0; }
#conn .dot { width: 9px; height: 9px; border-radius: 50%; background: #8a93a6; }
#conn.live .dot { background: #3ddc84; box-shadow: 0 0 0 3px rgba(61,220,132,.22); }
#conn.down .dot { background: #ff6b5e; }
main { padding: 22px 28px 40px; max-width: 1400px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-top: 3px solid var(--line);
  border-radius: 10px; padding: 10px 14px 12px; }
.card .label { color: var(--muted); font-size: 12.5px; font-weight: 600; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.card .value { font-size: 26px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.card.ok .value { color: var(--ok); } .card.bad .value { color: var(--bad); }
.card.warn .value { color: var(--warn); }
.card.ok { border-top-color: var(--ok); } .card.bad { border-top-color: var(--bad); }
.card.warn { border-top-color: var(--warn); }
section { margin-top: 24px; }
section h2 { font-size: 15px; margin: 0 0 8px; display: flex; gap: 10px; align-items: baseline; }
section h2 small { color: var(--muted); font-weight: 400; font-size: 12.5px; }
.table-wrap { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 7px 12px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: 11.5px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted);
  background: #fafbfd; font-weight: 600; }
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover td { background: #f8faff; }
td.num, th.num { text-align: right; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.name { max-width: 28ch; overflow: hidden; text-overflow: ellipsis; unicode-bidi: isolate; }
.muted { color: var(--muted); }
.empty td { color: var(--muted); text-align: center; padding: 18px; font-style: italic; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.st-verified { color: var(--ok); background: var(--ok-bg); }
.st-failed { color: var(--bad); background: var(--bad-bg); }
.st-nondeterministic { color: var(--warn); background: var(--warn-bg); }
.st-announced { color: var(--info); background: var(--info-bg); }
.online { color: var(--ok); font-weight: 600; } .offline { color: var(--muted); }
.online::before, .offline::before { content: ""; display: inline-block; width: 8px; height: 8px;
  border-radius: 50%; margin-right: 6px; background: currentColor; vertical-align: 1px; }
.pos { color: var(--ok); } .neg { color: var(--bad); }
.agree { color: var(--ok); font-weight: 600; } .nondet { color: var(--warn); font-weight: 600; } .dissent { color: var(--bad); font-weight: 600; }
footer { color: var(--muted); font-size: 12px; margin-top: 22px; }
footer a { color: var(--accent); }
"""

SCRIPT = """
"use strict";
const POLL_MS = %(poll)d, TIMEOUT_MS = %(timeout)d;
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
function tone(id, v, cls) { setText(id, v); $(id).parentElement.className = v > 0 ? "card " + cls : "card"; }
function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
function str(v) { return typeof v === "string" ? v : ""; }
// Strangers' text (job names, images) with control, zero-width and bidi-override characters shown
// as U+FFFD: an override could make a row read as something it is not.
const HIDDEN = /[\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200b-\\u200f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]/g;
function clean(v) { return str(v).replace(HIDDEN, "\\ufffd"); }
function shortPeer(pid) { pid = str(pid); return pid.length > 14 ? "\\u2026" + pid.slice(-10) : pid; }
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
function duration(s) {
  s = Math.floor(num(s));
  const d = Math.floor(s / 86400), h = Math.floor(s %% 86400 / 3600), m = Math.floor(s %% 3600 / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + (s %% 60) + "s" : s + "s";
}
function emptyRow(cols, text) {
  const tr = el("tr", null, "empty"), td = el("td", text);
  td.colSpan = cols; tr.append(td); return tr;
}

function renderNodes(s) {
  const rows = Array.isArray(s.nodes_detail) ? s.nodes_detail : [];
  const now = num(s.now);
  const body = rows.map((n) => {
    const tr = el("tr");
    tr.dataset.peerId = str(n.peer_id);
    const status = el("td", n.online ? "online" : "offline", n.online ? "online" : "offline");
    const peer = el("td", str(n.peer_id), "mono");
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

function renderJobs(s) {
  const jobs = Array.isArray(s.recent_jobs) ? s.recent_jobs : [];
  const now = num(s.now);
  const body = jobs.map((j) => {
    const tr = el("tr");
    const id = str(j.job_id), status = str(j.status) || "announced";
    tr.dataset.jobId = id;
    const idCell = el("td", id.slice(0, 16) + (id.length > 16 ? "\\u2026" : ""), "mono");
    idCell.title = id;
    const name = el("td", clean(j.name) || "\\u2014", "name");
    name.title = clean(j.name) + (j.image ? "  (" + clean(j.image) + ")" : "");
    const st = el("td"); st.append(el("span", status, "badge st-" + status.replace(/[^a-z]/g, "")));
    const how = el("td");
    if (status === "nondeterministic") {
      how.append(el("span", num(j.revealed) + " results, no two alike", "nondet"),
        el("span", " \\u00b7 " + num(j.executors) + " executors, k=" + num(j.quorum), "muted"));
    } else if (typeof j.executors === "number") {
      how.append(el("span", num(j.agreeing) + " agree", "agree"), el("span", " \\u00b7 "),
        el("span", num(j.dissenting) + " dissent", num(j.dissenting) ? "dissent" : "muted"),
        el("span", " \\u00b7 " + num(j.executors) + " executors, k=" + num(j.quorum), "muted"));
    } else {
      how.append(el("span", "awaiting certificate (n=" + num(j.replicas) + ", k=" + num(j.quorum) + ")", "muted"));
    }
    const submitter = el("td", shortPeer(j.submitter) || "\\u2014", "mono");
    submitter.title = str(j.submitter);
    const t = typeof j.updated_at === "number" ? j.updated_at : j.certified_at;
    const when = el("td", ago(t, now), "muted"); when.title = clock(t);
    tr.append(idCell, name, st, how, submitter, when);
    return tr;
  });
  $("jobs-body").replaceChildren(...(body.length ? body : [emptyRow(6, "no jobs yet")]));
  setText("jobs-note", "last " + jobs.length + " (at most 100), newest first");
}

function render(s) {
  setText("bootstrap-id", str(s.peer_id));
  $("bootstrap-id").title = Array.isArray(s.multiaddrs) ? s.multiaddrs.map(str).join("\\n") : "";
  setText("c-online", num(s.nodes_online));
  setText("c-announced", num(s.jobs_announced));
  tone("c-verified", num(s.jobs_verified), "ok");
  tone("c-failed", num(s.jobs_failed), "bad");
  tone("c-nondet", num(s.jobs_nondeterministic), "warn");
  const pm = s.jobs_per_minute || {};
  setText("c-rate", num(pm.certified));
  setText("c-rate-sub", "certified in the last 60 s; " + num(pm.announced) + " announced");
  const rejected = s.rejected && typeof s.rejected === "object" ? s.rejected : {};
  const reasons = Object.keys(rejected).sort();
  setText("c-rejected", reasons.reduce((a, k) => a + num(rejected[k]), 0));
  setText("c-rejected-sub", reasons.length ? reasons.map((k) => k + " " + num(rejected[k])).join(", ") : "none");
  setText("c-uptime", duration(s.uptime_s));
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
    setText("conn-text", "live \\u00b7 updated " + new Date().toLocaleTimeString());
  } catch (e) {
    $("conn").className = "down";
    setText("conn-text", "cannot reach the bootstrap (" + (e && e.message ? e.message : e) + "); retrying");
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}
poll();
""" % {"poll": POLL_INTERVAL_MS, "timeout": POLL_TIMEOUT_MS}


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = ("default-src 'none'; connect-src 'self'; img-src 'self'; "
       f"style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; base-uri 'none'; form-action 'none'")

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>DistributeAI bootstrap</title>
<style>{STYLE}</style>
</head>
<body>
<header>
  <h1>DistributeAI <span>bootstrap</span></h1>
  <div id="bootstrap-id"></div>
  <div id="conn"><span class="dot"></span><span id="conn-text">connecting&hellip;</span></div>
</header>
<main>
  <noscript><p>This page needs JavaScript to show live figures; the same data is at
    <a href="api/stats">/api/stats</a> (JSON).</p></noscript>
  <div class="cards">
    <div class="card"><div class="label">Nodes online</div><div class="value" id="c-online">&ndash;</div>
      <div class="sub">connected to the bootstrap</div></div>
    <div class="card"><div class="label">Jobs per minute</div><div class="value" id="c-rate">&ndash;</div>
      <div class="sub" id="c-rate-sub">&nbsp;</div></div>
    <div class="card"><div class="label">Announced</div><div class="value" id="c-announced">&ndash;</div>
      <div class="sub">signed job announcements</div></div>
    <div class="card"><div class="label">Verified</div><div class="value" id="c-verified">&ndash;</div>
      <div class="sub">k-of-n results agreed</div></div>
    <div class="card"><div class="label">Failed</div><div class="value" id="c-failed">&ndash;</div>
      <div class="sub">no quorum reached</div></div>
    <div class="card"><div class="label">Nondeterministic</div><div class="value" id="c-nondet">&ndash;</div>
      <div class="sub">no two results alike</div></div>
    <div class="card"><div class="label">Rejected gossip</div><div class="value" id="c-rejected">&ndash;</div>
      <div class="sub" id="c-rejected-sub">&nbsp;</div></div>
    <div class="card"><div class="label">Uptime</div><div class="value" id="c-uptime">&ndash;</div>
      <div class="sub">of this bootstrap</div></div>
  </div>

  <section>
    <h2>Nodes <small id="nodes-note"></small></h2>
    <div class="table-wrap"><table>
      <thead><tr><th>status</th><th>peer id</th><th class="num">reputation</th><th class="num">credits</th>
        <th class="num">jobs run</th><th>last seen</th></tr></thead>
      <tbody id="nodes-body"><tr class="empty"><td colspan="6">loading&hellip;</td></tr></tbody>
    </table></div>
  </section>

  <section>
    <h2>Recent jobs <small id="jobs-note"></small></h2>
    <div class="table-wrap"><table>
      <thead><tr><th>job id</th><th>name</th><th>status</th><th>how verified</th><th>submitter</th>
        <th>when</th></tr></thead>
      <tbody id="jobs-body"><tr class="empty"><td colspan="6">loading&hellip;</td></tr></tbody>
    </table></div>
  </section>

  <footer>Figures are this bootstrap's view: it re-verifies every announcement and certificate it
    receives over gossip and folds reputation and credits from the certificates, as every node does.
    Refreshed every second from <a href="api/stats">/api/stats</a>.</footer>
</main>
<script>{SCRIPT}</script>
</body>
</html>
""".encode()


def page_response() -> tuple[int, str, bytes]:
    """The `/` route's response: the page never changes; its script fetches the figures."""
    return 200, "text/html; charset=utf-8", PAGE
