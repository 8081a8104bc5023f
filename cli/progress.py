"""`submit`'s live progress on a terminal: bids, awards, commits, reveals, verdict, elapsed time.

Shown on stderr with `rich.live.Live` only when stderr is a terminal and `--json` is off, so what
`submit` prints on stdout is the same with or without it. The node is asked with the control op
`wait` and a short timeout: it answers at once when the job reaches a verdict, else after
POLL_S, so the display follows the job at that pace without the client sleeping.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

POLL_S = 0.2  # a display refreshed five times a second reads as live; each poll is one small request
FINAL = ("verified", "failed", "nondeterministic")


def counts(view: dict) -> dict:
    """The submitter's view of a job as the numbers the display shows."""
    executors = view.get("executors") or []
    return {
        "bids": view.get("bids", 0),
        "awarded": len(executors),
        "commits": view.get("commits", 0),
        "reveals": sum(1 for e in executors if e.get("result_hash")),
        "agreeing": sum(1 for e in executors if e.get("agreed")),
    }


def render(view: dict, elapsed: float, quorum: int, replicas: int) -> Group:
    c = counts(view)
    status = view.get("status", "submitted")
    done = status in FINAL
    colour = {"verified": "green", "failed": "red", "nondeterministic": "yellow"}.get(status, "cyan")
    head = Text.assemble(("job ", "bold"), (view.get("job_id", "")[:16], "bold"), "  ",
                         (status, f"bold {colour}"),
                         (f" ({view['reason']})" if view.get("reason") else "", colour))
    line = Table.grid(padding=(0, 2))
    for _ in range(6):
        line.add_column()
    line.add_row(f"bids {c['bids']}", f"awarded {c['awarded']}/{replicas}", f"commits {c['commits']}",
                 f"reveals {c['reveals']}", f"verdict {status if done else '—'}"
                 + (f" ({c['agreeing']} agree, {quorum} needed)" if status == "verified" else ""),
                 f"elapsed {elapsed:.1f} s")
    if not done:
        spinning = Table.grid(padding=(0, 1))
        spinning.add_row(Spinner("dots"), head)
    executors = [Text(f"  slot {e['slot']}  {e['peer_id']}  {e['state']}" + ("  agrees" if e.get("agreed") else ""))
                 for e in view.get("executors") or []]
    return Group(head if done else spinning, line, *executors)


def wait_with_progress(poll: Callable[[float], dict], first: dict, quorum: int, replicas: int,
                       deadline: float) -> dict:
    """Poll (`poll(timeout)` returns the job view) until a verdict or `deadline` (monotonic),
    showing progress on stderr; returns the last view."""
    started = time.monotonic()
    view = first
    console = Console(stderr=True)
    with Live(render(view, 0.0, quorum, replicas), console=console, refresh_per_second=10,
              transient=False) as live:
        while time.monotonic() < deadline:
            view = poll(POLL_S)
            live.update(render(view, time.monotonic() - started, quorum, replicas))
            if view.get("status") in FINAL:
                break
    return view
