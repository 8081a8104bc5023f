"""The progress bar of the CLI's transfers: `blob add|get`, `submit --input`, `job result --out`.

Contract:
- `run_with_bar(directory, request, as_json, timeout=None)` sends one control request (which may
  move data for long) and returns its answer, as `common.control` does (an unreachable node is
  the same one line and exit 1). While it runs, once it has taken over BAR_AFTER_S, on a terminal
  (stderr) and without `--json`, it shows the node's transfers that began with it as a bar on
  stderr, refreshed every POLL_S and erased at the end: each import or fetch with its bytes so
  far (of the total when known), rate and providers. Nothing else is printed: stdout and the
  `--json` output are untouched.
- `transfers(directory, timeout)` is the poller: the node's transfers in progress (the
  `transfers` control op's rows, node/transfer.py), [] when the node cannot say (unreachable, no
  block store). tools/databench.py may poll with it too.
- `bar_lines(rows)` is the bar as text, one line a transfer (pure: the tests read it).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from distributeai.consensus.units import human_bytes, human_rate

from .common import control, safe

BAR_AFTER_S = 1.0  # a transfer shorter than this shows no bar
POLL_S = 0.25  # how often the bar asks the node (a refresh period, not synchronization)
BAR_WIDTH = 20  # characters of the bar drawn for a transfer of known total
SHOWN = 4  # transfers shown at most (the rest are counted)


def transfers(directory: Path, timeout: float = 5.0) -> list[dict]:
    """The node's transfers in progress, [] when it cannot say."""
    from distributeai.node.control import call
    from distributeai.node.paths import control_path

    try:
        answer = call(control_path(directory), {"op": "transfers"}, timeout=timeout)
    except (OSError, ValueError):  # ConnectionError, a timeout, an answer that is not JSON
        return []
    rows = answer.get("transfers") if isinstance(answer, dict) else None
    return rows if isinstance(rows, list) else []


def _short(name: str) -> str:
    name = safe(name or "?")
    return name if len(name) <= 24 else f"{name[:10]}…{name[-10:]}"


def bar_line(row: dict) -> str:
    """One transfer as text: "import data.bin [#####.....] 16 MiB of 64 MiB  32 MiB/s" or
    "fetch bafy…xyz  12 MiB  3 MiB/s  from 2 providers"."""
    done, total = int(row.get("bytes") or 0), row.get("total")
    parts = [f"{row.get('kind', 'fetch')} {_short(row.get('name') or row.get('cid') or '')}"]
    if isinstance(total, int) and total > 0:
        filled = min(BAR_WIDTH, BAR_WIDTH * done // total)
        parts.append(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {human_bytes(done)} of {human_bytes(total)}")
    else:
        parts.append(human_bytes(done))
    parts.append(human_rate(int(row.get("rate") or 0)))
    providers = int(row.get("providers") or 0)
    if row.get("kind") == "fetch":
        parts.append(f"from {providers} provider{'' if providers == 1 else 's'}")
    return "  ".join(parts)


def bar_lines(rows: list[dict]) -> list[str]:
    """The bar: a line a transfer (at most SHOWN, then how many more)."""
    lines = [bar_line(row) for row in rows[:SHOWN]]
    if len(rows) > SHOWN:
        lines.append(f"and {len(rows) - SHOWN} more")
    return lines


def run_with_bar(directory: Path, request: dict, as_json: bool, timeout: float | None = None) -> dict:
    """`control(directory, request, timeout)`, with the bar meanwhile (see the module docstring)."""
    show = not as_json and sys.stderr.isatty()
    before = max((r.get("id", 0) for r in transfers(directory)), default=0) if show else 0
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["answer"] = control(directory, request, timeout=timeout)
        except BaseException as exc:  # typer.Exit from `control` (an unreachable node): raised below
            outcome["error"] = exc

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(BAR_AFTER_S)
    if worker.is_alive() and show:
        _show_bar(directory, worker, before)
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["answer"]


def _show_bar(directory: Path, worker: threading.Thread, before: int) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    started, moved = time.monotonic(), False
    with Live(Text("starting..."), console=Console(stderr=True), refresh_per_second=4, transient=True) as live:
        while worker.is_alive():
            rows = [r for r in transfers(directory) if r.get("id", 0) > before]
            moved = moved or bool(rows)
            # No transfer listed: before the first (a scan, a lookup) or after the last (a file
            # written out, a job announced): the node is still at work on the request.
            idle = f"{'finishing' if moved else 'starting'}... {time.monotonic() - started:.0f} s"
            live.update(Text("\n".join(bar_lines(rows) or [idle])))
            worker.join(POLL_S)
