"""Outputs retention: an executor removes a job's output files some time after the job ended.

Contract:
- Each container job this node ran has `DATA_DIR/outputs/JOB_ID/`, where the sandbox stages its
  files; they are imported into the block store pinned under `outputs:JOB_ID`
  (node/outputs_serving.py: `import_outputs`) and the emptied directory stays as the record.
- A job's part here is over when its certificate is recorded or this node's execution of it
  failed (`Store.jobs_ended`). `keep_s` (`node start --keep-outputs`, default 24 h) after that,
  the sweep unpins `outputs:JOB_ID` (with `blocks`), removes the directory (and what is left in
  it). Unpinned blocks are not deleted: they become evictable, least
  recently used first, when the store needs room. A job whose part is not over is never touched
  (a job whose submitter vanished keeps its outputs until a certificate arrives).
- Pinned while served: `Pins.hold(job)` marks a job as being read for a fetching node; the sweep
  skips a job held now or served within the last `PIN_LINGER_S`.
- `due` is the rule, pure; `sweep` does one pass (real files, real store); `run_sweeper` repeats it
  every `interval_s` on trio's clock (`sweep_interval`: a quarter of the retention, at most
  `SWEEP_INTERVAL_S`). A sweep never raises for a file it cannot remove (logged,
  tried again next time) nor for a full disk (the store's `StoreFull` is the caller's to handle).
"""

from __future__ import annotations

import logging
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import trio

from .store import StoreFull

log = logging.getLogger("distributeai.node.retention")

SWEEP_INTERVAL_S = 300.0  # a sampling period: outputs outlive their retention by at most this
PIN_LINGER_S = 600.0  # a job served this recently is not swept (a fetch asks for each file in turn)


def sweep_interval(keep_s: float) -> float:
    """How often to sweep: a quarter of the retention, between 1 s and SWEEP_INTERVAL_S."""
    return min(SWEEP_INTERVAL_S, max(1.0, keep_s / 4))


def due(ended_ms: int, keep_ms: int, now_ms: int) -> bool:
    """Whether outputs of a job that ended at `ended_ms` may go, `keep_ms` being the retention."""
    return now_ms - ended_ms >= keep_ms


class Pins:
    """Jobs whose outputs are being served, or were a moment ago."""

    def __init__(self, now_ms: Callable[[], int], linger_s: float = PIN_LINGER_S) -> None:
        self.now_ms = now_ms
        self.linger_ms = int(linger_s * 1000)
        self._held: dict[str, int] = {}
        self._last: dict[str, int] = {}

    @contextmanager
    def hold(self, job_id: str) -> Iterator[None]:
        self._held[job_id] = self._held.get(job_id, 0) + 1
        try:
            yield
        finally:
            self._held[job_id] -= 1
            if not self._held[job_id]:
                del self._held[job_id]
            self._last[job_id] = self.now_ms()

    def pinned(self, job_id: str) -> bool:
        last = self._last.get(job_id)
        return job_id in self._held or (last is not None and self.now_ms() - last < self.linger_ms)


async def _on_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


async def inline(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn` on the trio thread: for tests on the autojump clock, which a thread hop would let
    run ahead."""
    out = fn(*args)
    await trio.lowlevel.checkpoint()
    return out


async def sweep(store, outputs_dir: Path, keep_s: float, now_ms: int, pins: Pins | None = None,
                offload: Callable[..., Awaitable[Any]] = _on_thread, blocks=None) -> list[str]:
    """One pass: remove the outputs of every job due (`due`) and not pinned; the job ids removed.
    Its blocks are unpinned in `blocks` (the block store; None: none), its directory removed
    through `offload` (a worker thread; `inline` in tests)."""
    if not outputs_dir.is_dir():
        return []
    names = sorted(p.name for p in outputs_dir.iterdir() if p.is_dir())
    if not names:
        return []
    ended = await store.jobs_ended(names)
    removed = []
    for job_id, ended_ms in sorted(ended.items()):
        if not due(ended_ms, int(keep_s * 1000), now_ms) or (pins is not None and pins.pinned(job_id)):
            continue
        if blocks is not None:
            await blocks.unpin(f"outputs:{job_id}")
        try:
            await offload(shutil.rmtree, outputs_dir / job_id)
        except OSError as exc:
            log.warning("could not remove the outputs of job %s: %s", job_id[:12], exc)
            continue
        removed.append(job_id)
    if removed:
        log.info("removed the outputs of %d job(s) kept %.0f s after they ended", len(removed), keep_s)
    return removed


async def run_sweeper(store, outputs_dir: Path, keep_s: float, now_ms: Callable[[], int], pins: Pins,
                      on_full: Callable[[StoreFull, str], None], interval_s: float = SWEEP_INTERVAL_S,
                      offload: Callable[..., Awaitable[Any]] = _on_thread, blocks=None) -> None:
    """`sweep` every `interval_s` until cancelled. A pass that fails ends there and the next one
    tries again: a `StoreFull` goes to `on_full(exc, what)` (the agent counts it), anything else
    is logged."""
    while True:
        await trio.sleep(interval_s)  # a sampling period, not synchronization
        try:
            await sweep(store, outputs_dir, keep_s, now_ms(), pins, offload, blocks)
        except StoreFull as exc:
            on_full(exc, "an outputs sweep")
        except Exception as exc:  # task boundary: retention must never end the node
            log.warning("outputs sweep failed: %s", exc)
