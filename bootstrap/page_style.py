"""The stats page's stylesheet (one inline block; `page.py` pins its hash in the page's CSP)."""

STYLE = r"""
:root {
  --bg: #f4f6f9; --card: #fff; --ink: #1b2330; --muted: #667085; --line: #e3e7ee;
  --accent: #2f5bea; --ok: #1a7f4b; --ok-bg: #e3f5ea; --bad: #b42318; --bad-bg: #fdecea;
  --warn: #9a5b00; --warn-bg: #fff3dc; --info: #344054; --info-bg: #eef1f6;
  --c-verified: #2e9e62; --c-failed: #d64535; --c-nondet: #e0a020; --c-announced: #2f5bea;
  --c-p50: #2f5bea; --c-max: #b9c7f5;
  color-scheme: light;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Liberation Sans", "DejaVu Sans", sans-serif; }
header { background: #141b2d; color: #fff; padding: 14px 28px; display: flex; align-items: center; gap: 18px; }
header h1 { flex: none; }
header h1 { font-size: 19px; margin: 0; font-weight: 650; letter-spacing: .2px; }
header h1 span { color: #9fb3ff; font-weight: 400; }
#bootstrap-id { font: 12px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; color: #c5cee0;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 60ch; min-width: 0; flex: 0 1 auto; }
#conn { margin-left: auto; flex: none; font-size: 12.5px; display: flex; align-items: center; gap: 7px; color: #c5cee0; }
#conn .dot { width: 9px; height: 9px; border-radius: 50%; background: #8a93a6; }
#conn.live .dot { background: #3ddc84; box-shadow: 0 0 0 3px rgba(61,220,132,.22); }
#conn.down .dot { background: #ff6b5e; }
main { padding: 22px 28px 40px; max-width: 1400px; margin: 0 auto; }
.cards { display: grid; grid-template-columns: repeat(8, minmax(0, 1fr)); gap: 10px; }
.card { background: var(--card); border: 1px solid var(--line); border-top: 3px solid var(--line);
  border-radius: 10px; padding: 10px 12px 12px; min-width: 0; }
.card .label { color: var(--muted); font-size: 12px; font-weight: 600; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.card .value { font-size: 26px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.card .sub { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.card.ok .value { color: var(--ok); } .card.bad .value { color: var(--bad); }
.card.warn .value { color: var(--warn); }
.card.ok { border-top-color: var(--ok); } .card.bad { border-top-color: var(--bad); }
.card.warn { border-top-color: var(--warn); }
.card.wide { grid-column: span 2; }
.reasons { list-style: none; margin: 2px 0 0; padding: 0; font-size: 12px; }
.reasons li { display: flex; gap: 6px; align-items: baseline; min-width: 0; }
.reasons .n { flex: none; font-weight: 650; color: var(--bad); font-variant-numeric: tabular-nums; }
.reasons .t { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: var(--ink); }
section { margin-top: 24px; }
section h2 { font-size: 15px; margin: 0 0 8px; display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; }
section h2 small { color: var(--muted); font-weight: 400; font-size: 12.5px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 12px; }
.chart { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px 8px; min-width: 0; }
.chart h3 { font-size: 13px; margin: 0; display: flex; justify-content: space-between; gap: 8px; }
.chart h3 span { color: var(--muted); font-weight: 400; font-size: 12px; }
.chart .caption { color: var(--muted); font-size: 12px; margin: 1px 0 4px; }
.chart svg { display: block; width: 100%; height: 150px; }
.chart svg text { font-size: 10.5px; fill: var(--muted); font-family: inherit; }
.chart svg .grid { stroke: var(--line); stroke-width: 1; }
.chart svg .axis { stroke: #c9d0dc; stroke-width: 1; }
.chart svg .bar.verified { fill: var(--c-verified); } .chart svg .bar.failed { fill: var(--c-failed); }
.chart svg .bar.nondet { fill: var(--c-nondet); } .chart svg .bar.p50 { fill: var(--c-p50); }
.chart svg .bar.max { fill: var(--c-max); }
.chart svg .line.announced { fill: none; stroke: var(--c-announced); stroke-width: 1.5; stroke-linejoin: round; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 12px; color: var(--muted); margin-top: 2px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.legend .l-verified i { background: var(--c-verified); } .legend .l-failed i { background: var(--c-failed); }
.legend .l-nondet i { background: var(--c-nondet); }
.legend .l-announced i { background: none; border-top: 2px solid var(--c-announced); height: 0; width: 14px; vertical-align: 3px; }
.legend .l-p50 i { background: var(--c-p50); } .legend .l-max i { background: var(--c-max); }
.table-wrap { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 7px 12px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { font-size: 11.5px; text-transform: uppercase; letter-spacing: .5px; color: var(--muted);
  background: #fafbfd; font-weight: 600; }
tbody tr:last-child td { border-bottom: 0; }
tbody tr:hover td { background: #f8faff; }
#jobs-body tr[data-job-id] { cursor: pointer; }
#jobs-body tr[data-job-id]:focus { outline: 2px solid var(--accent); outline-offset: -2px; }
td.num, th.num { text-align: right; }
.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.name { max-width: 28ch; overflow: hidden; text-overflow: ellipsis; unicode-bidi: isolate; }
.outcome { max-width: 46ch; overflow: hidden; text-overflow: ellipsis; }
.muted { color: var(--muted); }
.empty td { color: var(--muted); text-align: center; padding: 18px; font-style: italic; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 600; }
.st-verified, .v-agreed, .a-bid { color: var(--ok); background: var(--ok-bg); }
.st-failed, .v-dissented, .a-declined { color: var(--bad); background: var(--bad-bg); }
.st-nondeterministic, .v-split { color: var(--warn); background: var(--warn-bg); }
.st-announced, .v-no_result { color: var(--info); background: var(--info-bg); }
.online { color: var(--ok); font-weight: 600; } .offline { color: var(--muted); }
.online::before, .offline::before { content: ""; display: inline-block; width: 8px; height: 8px;
  border-radius: 50%; margin-right: 6px; background: currentColor; vertical-align: 1px; }
.pos { color: var(--ok); } .neg { color: var(--bad); }
.agree { color: var(--ok); font-weight: 600; } .nondet { color: var(--warn); font-weight: 600; }
.dissent { color: var(--bad); font-weight: 600; } .fail { color: var(--bad); }
footer { color: var(--muted); font-size: 12px; margin-top: 22px; }
footer a { color: var(--accent); }
dialog#job-view { border: 0; border-radius: 12px; padding: 0; width: min(900px, calc(100vw - 24px));
  max-height: calc(100vh - 32px); box-shadow: 0 20px 60px rgba(15,20,35,.35); color: var(--ink); }
dialog#job-view::backdrop { background: rgba(15,20,35,.5); }
.jv-head { position: sticky; top: 0; background: #141b2d; color: #fff; padding: 14px 20px 12px; z-index: 1; }
.jv-title { display: flex; align-items: center; gap: 10px; }
.jv-title h2 { margin: 0; font-size: 17px; font-weight: 650; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; unicode-bidi: isolate; min-width: 0; }
.jv-title button { margin-left: auto; background: none; border: 1px solid #4a5670; color: #fff; border-radius: 8px;
  font: inherit; font-size: 13px; padding: 3px 11px; cursor: pointer; }
.jv-title button:hover { background: #26304a; }
.jv-id { font: 12px/1.5 ui-monospace, "DejaVu Sans Mono", monospace; color: #c5cee0; word-break: break-all; margin-top: 4px; }
.jv-meta { font-size: 12.5px; color: #c5cee0; margin-top: 2px; }
.jv-body { padding: 4px 20px 20px; }
.jv-body h3 { font-size: 13.5px; margin: 18px 0 6px; display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.jv-body h3 small { color: var(--muted); font-weight: 400; font-size: 12px; }
.jv-reason { margin-top: 14px; border-radius: 8px; padding: 9px 12px; font-weight: 600; }
.jv-reason.failed { background: var(--bad-bg); color: var(--bad); }
.jv-reason.nondeterministic { background: var(--warn-bg); color: var(--warn); }
.jv-reason span { font-weight: 400; color: var(--ink); }
dl.spec { display: grid; grid-template-columns: max-content 1fr; gap: 5px 16px; margin: 0; align-items: baseline; }
dl.spec dt { color: var(--muted); font-size: 12.5px; }
dl.spec dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
.jv-body .table-wrap td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 16ch; }
ol.timeline { list-style: none; margin: 0; padding: 0 0 0 4px; }
ol.timeline li { position: relative; display: grid; grid-template-columns: 8ch 9ch 1fr; gap: 10px;
  padding: 3px 0 3px 18px; align-items: baseline; }
ol.timeline li::before { content: ""; position: absolute; left: 3px; top: 0; bottom: 0; width: 2px; background: var(--line); }
ol.timeline li::after { content: ""; position: absolute; left: 0; top: 9px; width: 8px; height: 8px; border-radius: 50%;
  background: var(--muted); }
ol.timeline li.ev-bid::after, ol.timeline li.ev-verified::after { background: var(--ok); }
ol.timeline li.ev-declined::after, ol.timeline li.ev-failed::after { background: var(--bad); }
ol.timeline li.ev-awarded::after, ol.timeline li.ev-announced::after { background: var(--accent); }
ol.timeline li.ev-nondeterministic::after { background: var(--c-nondet); }
ol.timeline .t { font-variant-numeric: tabular-nums; color: var(--muted); text-align: right; font-size: 12.5px; }
ol.timeline .e { font-weight: 600; }
ol.timeline .d { overflow-wrap: anywhere; min-width: 0; }
@media (max-width: 1100px) { .cards { grid-template-columns: repeat(4, minmax(0, 1fr)); } }
@media (max-width: 880px) {
  header { padding: 12px 16px; } main { padding: 16px 14px 32px; }
  .cards { grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 10px; }
  .card.wide { grid-column: 1 / -1; order: 9; }
  .hide-narrow { display: none; }
  .name { max-width: 14ch; } .outcome { max-width: 30ch; }
  #nodes-body td.mono { max-width: 24ch; overflow: hidden; text-overflow: ellipsis; }
  .jv-head, .jv-body { padding-left: 14px; padding-right: 14px; }
}
@media (max-width: 560px) {
  ol.timeline li { grid-template-columns: 7ch 1fr; } ol.timeline .d { grid-column: 2; }
  .cards { grid-template-columns: repeat(2, minmax(0, 1fr)); }
}
"""
