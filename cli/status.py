"""`distributeai status`: a live view of the local node and the network it is in.

A snapshot is gathered from the node's control API (ops info, peers, list) and the bootstrap's
`/api/stats`, then drawn with rich. Live, it is redrawn every REFRESH_S on the terminal's
alternate screen until `q` or Ctrl-C; `--once` (or stdout not being a terminal) prints one
snapshot, `--json` prints it as JSON. A bootstrap that cannot be reached is one line in the view,
never a crash; a node that cannot be reached is one line and exit 1 at the start, and one line in
the view (retried at each refresh) once the view is running.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .common import safe
from .progress import elapsed_s

REFRESH_S = 0.5  # the view is at most this old; the issue asks for at least once a second
STATS_TIMEOUT_S = 1.0  # a bootstrap slower than this is shown as unreachable, not waited for
CONTROL_TIMEOUT_S = 5.0  # the node answers these ops from memory and its store; more is a hung node
ROWS = 6  # rows per table, newest first: the whole view then fits a 40-line terminal
JOB_LIMIT = 50  # jobs asked of the node (op list) per snapshot
FINAL = ("verified", "failed", "nondeterministic")
LABEL_CHARS = 24  # a job's name, or its command when it has none, cut to this


def label(job: dict) -> str:
    """What to call a job in a table: its name, else its command."""
    text = safe(job.get("name") or " ".join(job.get("command") or []))
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


class NodeUnreachable(ConnectionError):
    pass


def fetch_network(url: str | None) -> dict:
    """The bootstrap's totals, or {"url", "error"} saying why there are none."""
    if not url:
        return {"url": None, "error": "no bootstrap stats URL configured (bootstrap_http, or --bootstrap-http URL)"}
    target = url + "/api/stats"
    try:
        with urllib.request.urlopen(target, timeout=STATS_TIMEOUT_S) as reply:
            stats = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return {"url": url, "error": f"cannot reach the bootstrap at {target}: {reason}"}
    if not isinstance(stats, dict):
        return {"url": url, "error": f"{target} answered something that is not a JSON object"}
    return {"url": url, **{k: stats.get(k) for k in ("nodes_online", "jobs_announced", "jobs_verified", "jobs_failed")}}


def gather(data_dir: Path, bootstrap_http: str | None) -> dict:
    """One snapshot of the node and the network. Raises NodeUnreachable naming the socket."""
    from distributeai.node.control import call
    from distributeai.node.paths import control_path

    sock = control_path(data_dir)

    def ask(request: dict) -> dict:
        try:
            answer = call(sock, request, timeout=CONTROL_TIMEOUT_S)
        except (ConnectionError, OSError, ValueError) as exc:
            raise NodeUnreachable(f"cannot reach the node: {exc}") from None
        if "error" in answer:
            raise NodeUnreachable(f"the node at {sock} refused {request['op']}: {answer['error']}")
        return answer

    info = ask({"op": "info"})
    peers = ask({"op": "peers"})["peers"]
    jobs = [j for j in ask({"op": "list", "limit": JOB_LIMIT})["jobs"] if j]
    at_ms = int(time.time() * 1000)
    return {
        "at_ms": at_ms,
        "data_dir": str(data_dir),
        "node": {k: info.get(k) for k in ("peer_id", "multiaddrs", "sandbox", "reputation", "credits",
                                          "jobs_running", "active_jobs")},
        "peers": sorted(({"peer_id": p["peer_id"], "connected": p["connected"], "reputation": p["reputation"]}
                         for p in peers), key=lambda p: (not p["connected"], p["peer_id"])),
        "submitted": [{
            "job_id": j["job_id"], "name": label(j), "status": j["status"], "reason": j.get("reason"),
            "awarded": len(j.get("executors") or []),
            "agreeing": sum(1 for e in j.get("executors") or [] if e.get("agreed")),
            "verification": j.get("verification"), "rejected": j.get("rejected"),
            "quorum": j["quorum"], "elapsed_s": elapsed_s(j, at_ms),  # ticks until the verdict
        } for j in jobs if j["role"] == "submitter"],
        "running": [{
            "job_id": j["job_id"], "name": label(j), "submitter": j["submitter"],
            "execution": j["execution"]["status"], "reason": j["execution"].get("reason"), "status": j["status"],
        } for j in jobs if j.get("execution")],
        "network": fetch_network(bootstrap_http),
    }


STATUS_STYLE = {"verified": "green", "failed": "red", "nondeterministic": "yellow", "revealed": "green",
                "executed": "cyan", "running": "cyan", "committed": "cyan"}


def _status(value: str | None, reason: str | None = None) -> Text:
    return Text(safe(f"{value}{f' ({reason})' if reason else ''}"), style=STATUS_STYLE.get(value or "", ""))


def agreeing_cell(j: dict) -> str:
    """Agreeing executors of the awarded and k; a single run or a spot check says which it was."""
    if j.get("rejected"):
        return f"rejected: {j['rejected']}"
    if j.get("verification") == "single":
        return "single run (not checked)"
    if j.get("verification") == "spot_checked":
        return "2/2 (spot-checked)"
    return f"{j['agreeing']}/{j['awarded']} (k={j['quorum']})"


def _table(title: str, *columns: str | tuple[str, int]) -> Table:
    """Columns are names, or (name, width it keeps); on a narrow terminal the others are cut."""
    t = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
              show_edge=False, pad_edge=False, expand=False)
    for c in columns:
        name, keep = c if isinstance(c, tuple) else (c, None)
        t.add_column(name, no_wrap=True, overflow="ellipsis", min_width=keep)
    return t


def _more(rows: list, table: Table) -> list:
    if len(rows) > ROWS:
        table.caption = f"+{len(rows) - ROWS} more"
        table.caption_justify = "left"
    return rows[:ROWS]


def render(snap: dict, *, error: str | None = None, live: bool = False) -> RenderableType:
    """The snapshot as rich renderables. `error`: why this snapshot is not fresh (node unreachable)."""
    node = snap["node"]
    head = Text.assemble(("DistributeAI node ", "bold"), (node["peer_id"] or "", "bold cyan"))
    facts = Text(f"reputation {node['reputation']}   credits {node['credits']}   sandbox {node['sandbox']}   "
                 f"jobs running {node['jobs_running']}   updated {time.strftime('%H:%M:%S', time.localtime(snap['at_ms'] / 1000))}")
    where = f"data {snap['data_dir']}" + (f"   ·   q or Ctrl-C quits, redrawn every {REFRESH_S} s" if live else "")
    parts: list[RenderableType] = [head, Text(where, style="dim"), facts]
    net = snap["network"]  # near the top: on a short terminal the tables' ends are cut, not this
    if "error" in net:
        parts.append(Text(f"Network: {net['error']}", style="yellow"))
    else:
        parts.append(Text.assemble(("Network ", "bold"), f"({net['url']}): ",
                                   f"{net['nodes_online']} nodes online · {net['jobs_announced']} jobs announced · "
                                   f"{net['jobs_verified']} verified · {net['jobs_failed']} failed"))
    if error:
        parts.append(Text(f"{error} (retrying)", style="bold red"))

    connected = sum(1 for p in snap["peers"] if p["connected"])
    peers = _table(f"Peers ({connected} connected, {len(snap['peers'])} known)", ("peer id", 52), "connected",
                   "reputation")
    for p in _more(snap["peers"], peers):
        peers.add_row(p["peer_id"], "yes" if p["connected"] else "no", str(p["reputation"]))
    parts.append(peers)

    mine = _table(f"Jobs submitted here ({len(snap['submitted'])})", ("job", 16), "name", ("status", 8),
                  ("agreeing", 9), "elapsed")
    for j in _more(snap["submitted"], mine):
        mine.add_row(j["job_id"][:16], j["name"], _status(j["status"], j["reason"]),
                     agreeing_cell(j), f"{j['elapsed_s']} s")
    parts.append(mine)

    runs = _table(f"Jobs run here ({len(snap['running'])})", ("job", 16), "name", ("submitter", 12),
                  ("execution", 9), ("job status", 10))
    for j in _more(snap["running"], runs):
        submitter = "this node" if j["submitter"] == node["peer_id"] else "…" + j["submitter"][-11:]
        runs.add_row(j["job_id"][:16], j["name"], submitter, _status(j["execution"], j["reason"]),
                     _status(j["status"]))
    parts.append(runs)
    return Group(*parts)


@contextmanager
def keypresses() -> Iterator:
    """A function `read(timeout) -> str` returning the keys typed (cbreak mode), or '' when stdin
    is not a terminal (then only Ctrl-C or SIGTERM end the view)."""
    if not sys.stdin.isatty():
        def wait(timeout: float) -> str:
            time.sleep(timeout)  # the refresh pace; nothing to read
            return ""

        yield wait
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # keys arrive one by one, unechoed; Ctrl-C still raises SIGINT

    def read(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 64).decode(errors="replace") if ready else ""

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_live(data_dir: Path, bootstrap_http: str | None, first: dict) -> None:
    """Redraw every REFRESH_S until q, Ctrl-C or SIGTERM."""
    from rich.live import Live

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    snap, error = first, None
    try:
        with keypresses() as read, Live(render(snap, live=True), console=Console(), screen=True,
                                        auto_refresh=False, redirect_stderr=False) as live:
            while True:
                next_at = time.monotonic() + REFRESH_S
                while (left := next_at - time.monotonic()) > 0:
                    if "q" in read(left).lower():
                        return
                try:
                    snap, error = gather(data_dir, bootstrap_http), None
                except NodeUnreachable as exc:
                    error = str(exc)
                live.update(render(snap, error=error, live=True), refresh=True)
    except KeyboardInterrupt:
        return


def print_once(snap: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(snap))
        return
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(render(snap))
