"""The stats page's script, second part: the last hour's two charts (inline SVG) and the job view
(a dialog opened by clicking a job: spec, executors, bids and declines, timeline). See
`page_script.py` for the first part and the rule that values reach the page only as text.
"""

SCRIPT_VIEWS = r"""
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const k in attrs) e.setAttribute(k, String(attrs[k]));
  if (text !== undefined) e.textContent = String(text);
  return e;
}
// The smallest 1, 2 or 5 times a power of ten at or above v (and at least `floor`).
function niceMax(v, floor) {
  v = Math.max(v, floor);
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v - 1e-9) return m * p;
  return 10 * p;
}
function minuteLabel(t) { return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

// One bar chart over the hour: `stacks` are stacked bars (key, class, label), `line` an optional
// polyline over them; `fmt` writes a y value; `tip(i)` is the hover text of minute i.
function barChart(id, h, stacks, line, fmt, floor, tip) {
  const box = $(id), W = Math.max(240, Math.round(box.clientWidth || 480)), H = 150;
  const L = 38, R = 6, T = 8, B = 20, n = list(h[stacks[0].key]).length || 60;
  const vals = (k, i) => num(list(h[k])[i]);
  let top = 0, total = 0;
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (const s of stacks) sum = s.max ? Math.max(sum, vals(s.key, i)) : sum + vals(s.key, i);
    top = Math.max(top, sum, line ? vals(line.key, i) : 0);
    total += sum + (line ? vals(line.key, i) : 0);
  }
  const ymax = niceMax(top, floor), pw = W - L - R, ph = H - T - B, bw = pw / n;
  const y = (v) => T + ph - (v / ymax) * ph;
  const out = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
  for (const f of [0, 0.5, 1]) {
    out.append(svg("line", { x1: L, x2: W - R, y1: y(ymax * f), y2: y(ymax * f), class: f ? "grid" : "axis" }));
    out.append(svg("text", { x: L - 5, y: y(ymax * f) + 3.5, "text-anchor": "end" }, fmt(ymax * f)));
  }
  const start = num(h.start), step = num(h.step_s) || 60;
  [[0, "start", "60 min ago"], [n / 2, "middle", "30 min ago"], [n, "end", "now"]].forEach(([i, a, t]) =>
    out.append(svg("text", { x: L + i * bw, y: H - 5, "text-anchor": a }, t)));
  let bars = 0;
  for (let i = 0; i < n; i++) {
    const g = svg("g", {});
    let base = 0;
    for (const s of stacks) {
      const v = vals(s.key, i);
      if (!v) continue;
      const from = s.max ? 0 : base, to = s.max ? v : base + v;
      g.append(svg("rect", { x: L + i * bw + bw * 0.12, width: Math.max(1, bw * 0.76), y: y(to),
        height: Math.max(1, y(from) - y(to)), class: "bar " + s.cls, rx: 1 }));
      if (!s.max) base += v;
      bars += 1;
    }
    if (g.childNodes.length) { g.append(svg("title", {}, minuteLabel(start + i * step) + "  " + tip(i))); out.append(g); }
  }
  if (line) {
    const pts = [];
    for (let i = 0; i < n; i++) pts.push((L + (i + 0.5) * bw).toFixed(1) + "," + y(vals(line.key, i)).toFixed(1));
    if (total) out.append(svg("polyline", { points: pts.join(" "), class: "line " + line.cls }));
  }
  out.dataset.bars = String(bars);
  box.replaceChildren(out);
  return total;
}

function renderCharts(s) {
  const h = s.last_hour && typeof s.last_hour === "object" ? s.last_hour : {};
  const sum = (k) => list(h[k]).reduce((a, v) => a + num(v), 0);
  barChart("chart-jobs", h,
    [{ key: "verified", cls: "verified" }, { key: "failed", cls: "failed" }, { key: "nondeterministic", cls: "nondet" }],
    { key: "announced", cls: "announced" }, (v) => String(Math.round(v)), 2,
    (i) => [["verified", "verified"], ["failed", "failed"], ["nondeterministic", "nondeterministic"],
      ["announced", "announced"]].map(([k, w]) => num(list(h[k])[i]) + " " + w).join(", "));
  const certified = sum("verified") + sum("failed") + sum("nondeterministic");
  setText("chart-jobs-total", plural(certified, "verdict") + ", " + num(sum("announced")) + " announced");
  barChart("chart-verdict", h,
    [{ key: "verdict_max_s", cls: "max", max: true }, { key: "verdict_p50_s", cls: "p50", max: true }], null,
    (v) => v >= 10 ? Math.round(v) + " s" : (Math.round(v * 10) / 10) + " s", 1,
    (i) => "median " + seconds(list(h.verdict_p50_s)[i]) + ", slowest " + seconds(list(h.verdict_max_s)[i]));
  const slowest = Math.max(0, ...list(h.verdict_max_s).map(num));
  setText("chart-verdict-total", slowest ? "slowest " + seconds(slowest) : "no verdicts yet");
}

// The job view: a dialog over the page, kept up to date while open, linkable as #job=ID.
const CODES = { image_missing: "image missing", not_enough_memory: "not enough memory",
  not_enough_cpu: "not enough CPU", busy: "busy", no_gpu: "no GPU", no_sandbox: "no suitable sandbox",
  disk_low: "low on disk", output_too_large: "no room for the output", submitter_cannot_pay: "submitter cannot pay" };
const VERDICTS = { agreed: "agrees", dissented: "different result", no_result: "no result", split: "no majority" };
let openJob = null, shownJob = "";

// An argument as a shell would need it typed: bare, in double quotes (when that changes nothing),
// or in single quotes.
function quoteArg(a) {
  a = clean(a);
  if (/^[A-Za-z0-9_@%+=:,.\/-]+$/.test(a)) return a;
  if (a.includes("'") && !/["$`\\!]/.test(a)) return '"' + a + '"';
  return "'" + a.replace(/'/g, "'\\''") + "'";
}
function cpus(m) { m = num(m); return (m / 1000).toString() + (m === 1000 ? " CPU" : " CPUs"); }
function table(head, rows, empty) {
  const wrap = el("div", null, "table-wrap"), t = el("table"), th = el("tr"), tb = el("tbody");
  head.forEach((h) => th.append(el("th", h)));
  const thead = el("thead"); thead.append(th);
  tb.append(...(rows.length ? rows : [emptyRow(head.length, empty)]));
  t.append(thead, tb); wrap.append(t); return wrap;
}
function row(...cells) { const tr = el("tr"); tr.append(...cells); return tr; }
function cell(content, cls) {
  const td = el("td", null, cls);
  if (content instanceof Node) td.append(content); else td.textContent = String(content);
  return td;
}
function verdictBadge(v, label, status) {
  const b = badge(label, "v-" + v.replace(/[^a-z_]/g, ""));
  if (v === "no_result") b.title = status === "verified" ? "no result in the certificate: not needed once a quorum agreed, or none came"
    : "no result in the certificate: the executor never revealed one";
  if (v === "split") b.title = "no result was returned by two executors without a tie: none to agree or dissent with";
  return b;
}
function peerCell(pid) { const td = cell(shortPeer(pid), "mono"); td.title = str(pid); return td; }
function heading(text, note) { const h = el("h3", text); if (note) h.append(el("small", note)); return h; }

function renderJob(j) {
  const status = statusOf(j), d = j.detail && typeof j.detail === "object" ? j.detail : {};
  const spec = d.spec && typeof d.spec === "object" ? d.spec : {};
  const head = el("div", null, "jv-head"), title = el("div", null, "jv-title");
  const name = el("h2", clean(j.name) || "(unnamed job)"); name.title = clean(j.name);
  const close = el("button", "Close"); close.type = "button"; close.id = "job-close";
  close.addEventListener("click", () => $("job-view").close());
  title.append(name, badge(status, "st-" + status), close);
  const meta = ["submitted by " + shortPeer(spec.submitter || j.submitter)];
  if (typeof j.announced_at === "number") meta.push("announced " + clock(j.announced_at));
  if (typeof j.verdict_s === "number") meta.push(status + " after " + seconds(j.verdict_s));
  head.append(title, el("div", str(j.job_id), "jv-id"), el("div", meta.join(" \u00b7 "), "jv-meta"));

  const body = el("div", null, "jv-body");
  if (status === "failed" || status === "nondeterministic") {
    const r = el("div", status === "failed" ? "Failed: " : "Nondeterministic: ", "jv-reason " + status);
    r.append(el("span", clean(j.reason) || "no reason given"));
    body.append(r);
  }
  if (j.verification_note && (j.rejected || j.verification === "single" || j.verification === "spot_checked")) {
    body.append(el("div", clean(j.verification_note), "jv-reason " + (j.rejected ? "failed" : "nondeterministic")));
  }
  const dl = el("dl", null, "spec");
  const add = (k, v, cls) => { dl.append(el("dt", k), el("dd", v, cls)); };
  add("runs", clean(spec.runs) || clean(j.image) || "\u2014", "mono");
  add("command", list(spec.command).map(quoteArg).join(" ") + (num(spec.command_more) ? " \u2026 (+" +
    plural(spec.command_more, "argument") + ")" : "") || "\u2014", "mono");
  if (num(spec.tasks)) add("tasks", plural(spec.tasks, "task") + ", each tallied on its own");
  add("verification", plural(spec.replicas ?? j.replicas, "replica") + ", quorum " + num(spec.quorum ?? j.quorum) +
    " (" + num(spec.quorum ?? j.quorum) + " matching results verify it)" + (spec.verification === "adaptive" ?
    "; adaptive: a bidder with " + num(spec.trust_threshold) + " consecutive valid results runs it alone, spot-checked " +
    "with probability at least " + num(spec.spot_check_floor) : "") +
    (spec.compare && spec.compare !== "exact" ? "; results compared as " + clean(spec.compare) : ""));
  add("resources", cpus(spec.cpu_millis) + ", " + num(spec.memory_mb) + " MiB" + (spec.gpu ? ", a GPU" : "") +
    ", " + str(spec.sandbox) + " sandbox");
  add("timeout", num(spec.timeout_s) + " s");
  add("price", plural(spec.price, "credit") + " to each agreeing executor");
  add("submitter", str(spec.submitter || j.submitter), "mono");
  body.append(heading("Spec"), dl);

  const exRows = list(d.executors).map((e) => {
    const flags = [e.timed_out ? "timed out" : "", e.oom_killed ? "OOM killed" : ""].filter(Boolean).join(", ");
    const v = str(e.verdict);
    const label = v === "agreed" && status !== "verified" ? "with the majority" : VERDICTS[v] || v;
    return row(cell(num(e.slot)), peerCell(e.peer_id), cell(e.result ? str(e.result) + "\u2026" : "\u2014", "mono"),
      cell(typeof e.exit_code === "number" ? e.exit_code + (flags ? " (" + flags + ")" : "") : "\u2014"),
      cell(verdictBadge(v, label, status)));
  });
  const ex = list(d.executors), count = (v) => ex.filter((e) => e.verdict === v).length;
  const parts = [[count("agreed"), " agree", " agrees"], [count("dissented"), " different results", " different result"],
    [count("no_result"), " without a result", " without a result"], [count("split"), " with no majority", " with no majority"]]
    .filter(([n]) => n).map(([n, many, one]) => n + (n === 1 ? one : many));
  body.append(heading("Executors", ex.length ? plural(ex.length, "executor") + ": " + parts.join(", ") : ""),
    table(["slot", "peer", "result", "exit code", "verdict"], exRows,
      status === "announced" ? "known once the certificate arrives" : "no executor was awarded"));

  const answers = list(d.bids).map((b) => row(peerCell(b.peer_id), cell(badge("bid", "a-bid")),
    cell("price " + num(b.price) + " \u00b7 " + cpus(b.cpu_millis) + ", " + num(b.memory_mb) + " MiB \u00b7 " +
      list(b.sandboxes).map(clean).join(", "), "wrap")));
  for (const x of list(d.declines)) {
    const what = el("span"); what.append(el("b", CODES[str(x.code)] || clean(x.code)), el("span", ": " + clean(x.detail)));
    answers.push(row(peerCell(x.peer_id), cell(badge("declined", "a-declined")), cell(what, "wrap")));
  }
  body.append(heading("Bids and declines", plural(list(d.bids).length, "bid") + ", " +
    plural(list(d.declines).length, "decline") + " (as the certificate carries them)"),
    table(["peer", "answer", "detail"], answers,
      status === "announced" ? "known once the certificate arrives" : "the certificate carries none"));

  const events = list(d.timeline), t0 = events.length ? num(events[0].at) : 0;
  const ol = el("ol", null, "timeline");
  for (const e of events) {
    const li = el("li", null, "ev-" + str(e.event).replace(/[^a-z]/g, ""));
    const t = el("span", (num(e.at) - t0 >= 0 ? "+" : "") + (num(e.at) - t0).toFixed(2) + " s", "t");
    t.title = clock(e.at);
    const what = el("span", null, "d");
    if (e.peer_id) what.append(el("span", shortPeer(e.peer_id) + "  ", "mono"));
    what.append(el("span", clean(e.text)));
    li.append(t, el("span", str(e.event), "e"), what);
    ol.append(li);
  }
  body.append(heading("Timeline", "times as each party signed them, from the announcement"), ol);
  $("job-view").replaceChildren(head, body);
}

function jobMessage(text) {
  const head = el("div", null, "jv-head"), title = el("div", null, "jv-title");
  const close = el("button", "Close"); close.type = "button";
  close.addEventListener("click", () => $("job-view").close());
  title.append(el("h2", "Job " + (openJob || "").slice(0, 12)), close);
  const body = el("div", null, "jv-body"); body.append(el("p", text, "muted"));
  head.append(title); $("job-view").replaceChildren(head, body);
}

async function refreshJob(signal) {
  const id = openJob;
  if (!id) return;
  const r = await fetch("api/jobs/" + id, { cache: "no-store", signal });
  if (id !== openJob) return;
  if (r.status === 404) { shownJob = ""; jobMessage("This bootstrap no longer holds this job (it keeps the last 100)."); return; }
  if (!r.ok) throw new Error("HTTP " + r.status);
  const j = await r.json();
  delete j.now;
  const text = JSON.stringify(j);
  if (text !== shownJob) { shownJob = text; renderJob(j); }
}

function openJobView(id) {
  if (!/^[0-9a-f]{8,64}$/.test(id)) return;
  openJob = id; shownJob = "";
  history.replaceState(null, "", "#job=" + id);
  const d = $("job-view");
  if (!d.open) { jobMessage("loading\u2026"); d.showModal(); }
  const ctl = new AbortController(), timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  refreshJob(ctl.signal).catch((e) => jobMessage("cannot load the job (" + (e && e.message ? e.message : e) + ")"))
    .finally(() => clearTimeout(timer));
}

$("job-view").addEventListener("close", () => {
  openJob = null; shownJob = "";
  history.replaceState(null, "", location.pathname + location.search);
});
$("jobs-body").addEventListener("click", (ev) => {
  const tr = ev.target.closest("tr[data-job-id]");
  if (tr) openJobView(tr.dataset.jobId);
});
$("jobs-body").addEventListener("keydown", (ev) => {
  const tr = ev.target.closest("tr[data-job-id]");
  if (tr && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); openJobView(tr.dataset.jobId); }
});
window.addEventListener("resize", () => { if (lastStats) renderCharts(lastStats); });
const linked = /^#job=([0-9a-f]{8,64})$/.exec(location.hash);
if (linked) openJobView(linked[1]);
poll();
"""
