"""The bootstrap's live stats page: one self-contained HTML document served at `/`.

It holds no data. Its script polls `api/stats` every second and re-renders the cards, the last
hour's charts (inline SVG) and the node and job tables in place, so the page stays live without
a reload; clicking a job opens its detail (`api/jobs/ID`) in a dialog, kept live while open.
Nothing outside the page is loaded (no CDN, no fonts, no images, no libraries): a bootstrap may
run where there is no internet.

The style is in `page_style.py`, the script in `page_script.py` and `page_views.py`.

Job names, images, reasons and peer ids come from strangers. The script only ever puts them into
the document with `textContent` (never `innerHTML`), and the page's Content-Security-Policy allows
no script or style but the two inline blocks (by hash) and no connection but to its own origin, so
even a mistake in the script could not run a peer-supplied string as code.
"""

from __future__ import annotations

import base64
import hashlib

from .page_script import SCRIPT_CORE
from .page_style import STYLE
from .page_views import SCRIPT_VIEWS

POLL_INTERVAL_MS = 1000
POLL_TIMEOUT_MS = 5000
SCRIPT = (SCRIPT_CORE + SCRIPT_VIEWS).replace("%POLL_MS%", str(POLL_INTERVAL_MS)).replace(
    "%TIMEOUT_MS%", str(POLL_TIMEOUT_MS))


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
      <div class="sub" id="c-online-sub">connected to this bootstrap</div></div>
    <div class="card"><div class="label">Jobs per minute</div><div class="value" id="c-rate">&ndash;</div>
      <div class="sub" id="c-rate-sub">&nbsp;</div></div>
    <div class="card"><div class="label">Announced</div><div class="value" id="c-announced">&ndash;</div>
      <div class="sub">signed job announcements</div></div>
    <div class="card"><div class="label">Verified</div><div class="value" id="c-verified">&ndash;</div>
      <div class="sub">a quorum of results agreed</div></div>
    <div class="card wide" id="failed-card"><div class="label">Failed</div><div class="value" id="c-failed">&ndash;</div>
      <div class="sub" id="c-failed-sub">&nbsp;</div><ul class="reasons" id="c-failed-reasons"></ul></div>
    <div class="card"><div class="label">Nondeterministic</div><div class="value" id="c-nondet">&ndash;</div>
      <div class="sub">no two results alike</div></div>
    <div class="card"><div class="label">Rejected gossip</div><div class="value" id="c-rejected">&ndash;</div>
      <div class="sub" id="c-rejected-sub">&nbsp;</div></div>
  </div>

  <section>
    <h2>Last hour <small>per minute, as this bootstrap saw the gossip</small></h2>
    <div class="charts">
      <div class="chart"><h3>Jobs per minute <span id="chart-jobs-total"></span></h3>
        <div class="caption">verdicts by status, and announcements</div>
        <div id="chart-jobs"></div>
        <div class="legend"><span class="l-verified"><i></i>verified</span><span class="l-failed"><i></i>failed</span>
          <span class="l-nondet"><i></i>nondeterministic</span><span class="l-announced"><i></i>announced</span></div></div>
      <div class="chart"><h3>Time to verdict <span id="chart-verdict-total"></span></h3>
        <div class="caption">from a job's announcement to its certificate</div>
        <div id="chart-verdict"></div>
        <div class="legend"><span class="l-p50"><i></i>median</span><span class="l-max"><i></i>slowest</span></div></div>
    </div>
  </section>

  <section>
    <h2>Recent jobs <small id="jobs-note"></small></h2>
    <div class="table-wrap"><table>
      <thead><tr><th>job id</th><th>name</th><th>status</th><th>outcome</th><th class="num hide-narrow">took</th>
        <th class="hide-narrow">submitter</th><th>when</th></tr></thead>
      <tbody id="jobs-body"><tr class="empty"><td colspan="7">loading&hellip;</td></tr></tbody>
    </table></div>
  </section>

  <section>
    <h2>Nodes <small id="nodes-note"></small></h2>
    <div class="table-wrap"><table>
      <thead><tr><th>status</th><th>peer id</th><th class="num">reputation</th><th class="num">credits</th>
        <th class="num">jobs run</th><th>last seen</th></tr></thead>
      <tbody id="nodes-body"><tr class="empty"><td colspan="6">loading&hellip;</td></tr></tbody>
    </table></div>
  </section>

  <footer>Figures are this bootstrap's view: it re-verifies every announcement and certificate it
    receives over gossip and folds reputation and credits from the certificates, as every node does.
    Refreshed every second from <a href="api/stats">/api/stats</a>; a job's detail is at
    <span class="mono">/api/jobs/ID</span>.</footer>
</main>
<dialog id="job-view" aria-label="job detail"></dialog>
<script>{SCRIPT}</script>
</body>
</html>
""".encode()


def page_response() -> tuple[int, str, bytes]:
    """The `/` route's response: the page never changes; its script fetches the figures."""
    return 200, "text/html; charset=utf-8", PAGE
