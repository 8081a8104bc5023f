"""`submit`'s live progress on a terminal: bids, awards, commits, reveals, verdict, elapsed time.

Shown on stderr with `rich.live.Live` only when stderr is a terminal and `--json` is off, so what
`submit` prints on stdout is the same with or without it. The node is asked with the control op
`wait` and a short timeout: it answers at once when the job reaches a verdict, else after
POLL_S, so the display follows the job at that pace without the client sleeping. The elapsed
time is read from the clock each time the display is drawn (10 times a second), so it ticks even
while the node is slow to answer.

`elapsed_s(view, now_ms)` is a job's elapsed time as every view shows it: until its verdict, the
time since it was created; after, the time it took (the node's `elapsed_s`).
"""

from __future__ import annotations

import time
from typing import Callable, Iterator

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .jobview import bidding_line, job_failure

POLL_S = 0.2  # a display refreshed five times a second reads as live; each poll is one small request
FINAL = ("verified", "failed", "nondeterministic")


def elapsed_s(view: dict, now_ms: int) -> float | None:
    """Seconds since the job was created while it has no verdict; the node's figure after."""
    if view.get("status") in FINAL or view.get("created_ms") is None:
        return view.get("elapsed_s")
    return round(max(now_ms - view["created_ms"], (view.get("elapsed_s") or 0) * 1000) / 1000, 1)


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


def verdict_cell(view: dict, status: str, agreeing: int, quorum: int) -> str:
    """`verdict ...`: a verified job's agreement, or how its certificate reached it when that was not
    k-of-n (a single run, a spot check) or this node's ledger rejects it (`verification_note`)."""
    note = view.get("verification_note") or ""
    if view.get("rejected") or (note and view.get("verification") != "replicated"):
        return f"verdict {note}"
    return f"verdict {status}" + (f" ({agreeing} agree, {quorum} needed)" if status == "verified" else "")


def render(view: dict, elapsed: float, quorum: int, replicas: int) -> Group:
    c = counts(view)
    status = view.get("status", "submitted")
    done = status in FINAL
    failure = job_failure(view) if status == "verified" else None  # agreed on, but the job failed
    colour = "yellow" if failure else {"verified": "green", "failed": "red", "nondeterministic": "yellow"}.get(status, "cyan")
    head = Text.assemble(("job ", "bold"), (view.get("job_id", "")[:16], "bold"), "  ",
                         (status, f"bold {colour}"),
                         (f" ({view['reason']})" if view.get("reason") else "", colour),
                         (f": the executors agree that the job failed ({failure})" if failure else "", colour))
    line = Table.grid(padding=(0, 2))
    for _ in range(6):
        line.add_column()
    line.add_row(f"bids {c['bids']}", f"awarded {c['awarded']}/{replicas}", f"commits {c['commits']}",
                 f"reveals {c['reveals']}", verdict_cell(view, status if done else "—", c["agreeing"], quorum),
                 f"elapsed {elapsed:.1f} s")
    if not done:
        spinning = Table.grid(padding=(0, 1))
        spinning.add_row(Spinner("dots"), head)
    executors = [Text(f"  slot {e['slot']}  {e['peer_id']}  {e['state']}" + ("  agrees" if e.get("agreed") else ""))
                 for e in view.get("executors") or []]
    bidding = [Text(bidding_line(view))] if view.get("share") is not None and view["share"] < 1 else []
    return Group(head if done else spinning, line, *bidding, *executors)


def wall_ms() -> int:
    return int(time.time() * 1000)


class Ticking:
    """The progress of the job in `view` (replaced by `update` as polls answer), drawn with the
    elapsed time read from `now_ms` (wall clock, milliseconds: the job's `created_ms` is one) at
    each draw: what `Live` shows. Before the node's first answer, the time since this began."""

    def __init__(self, view: dict, quorum: int, replicas: int, now_ms: Callable[[], int] = wall_ms):
        self.view, self.quorum, self.replicas, self.now_ms = view, quorum, replicas, now_ms
        self.started_ms = now_ms()

    def elapsed(self) -> float:
        now = self.now_ms()
        if self.view.get("created_ms") is None:
            return (now - self.started_ms) / 1000
        return elapsed_s(self.view, now) or 0.0

    def update(self, view: dict) -> None:
        self.view = view

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield render(self.view, self.elapsed(), self.quorum, self.replicas)


def wait_with_progress(poll: Callable[[float], dict], first: dict, quorum: int, replicas: int,
                       deadline: float) -> dict:
    """Poll (`poll(timeout)` returns the job view) until a verdict or `deadline` (monotonic),
    showing progress on stderr; returns the last view. KeyboardInterrupt (Ctrl-C) ends the
    display, drawn as it last was, and propagates."""
    shown = Ticking(first, quorum, replicas)
    with Live(shown, console=Console(stderr=True), refresh_per_second=10, transient=False):
        for view in polls(poll, deadline):
            shown.update(view)
    return shown.view


def polls(poll: Callable[[float], dict], deadline: float) -> Iterator[dict]:
    """Each answer of `poll(POLL_S)` until one has a verdict or `deadline` (monotonic) passes."""
    while time.monotonic() < deadline:
        view = poll(POLL_S)
        yield view
        if view.get("status") in FINAL:
            return
