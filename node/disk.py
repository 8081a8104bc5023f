"""The disk guard: whether the node's data directory has room for more work.

Disk is a resource like CPU: a node keeps `reserve` bytes free on its data directory's filesystem
(`node start --disk-reserve`) and bids on no job while it has less. The guard reads the free space
(statvfs, what an unprivileged process may use) every `CHECK_INTERVAL_S` on trio's clock, and at
once after a store write failed (`write_failed`, from a `StoreFull` at a task boundary). Its state
is `ok` or `low`:

- `low` when free < reserve, or when a write failed and no reading since has shown free at or
  above reserve + `FAILED_WRITE_MARGIN` (a failed write proves the disk was full a moment ago; the
  margin keeps the node from bidding again on the first byte that frees up);
- each transition is logged once, as one line ("data dir DIR is full: not bidding until space
  returns (free X, reserve Y)" / "... has room again"); the failed writes of an episode are
  counted (`store_full`) and logged at DEBUG only; a write that fails with room on the disk (an
  I/O error, which no statvfs shows) is a WARNING line each time.

Nothing here ends the process: a statvfs that fails counts as no free space. `rule` is the
decision, pure; `DiskGuard` is its shell. With no path (tests of protocol logic) the guard is
always ok.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import trio

from distributeai.consensus.units import human_bytes

log = logging.getLogger("distributeai.node.disk")

CHECK_INTERVAL_S = 2.0  # a sampling period: free space is polled, nothing notifies of it
FAILED_WRITE_MARGIN = 16 * 1024 * 1024  # after a failed write, ok only once this much above the reserve
DEFAULT_RESERVE = 1024 ** 3  # 1 GiB: room for the rest of the machine, the store and one job's outputs
DEFAULT_MAX_OUTPUT = 1024 ** 3  # the largest per-job output quota (JobSpec.out_max_bytes) accepted
DEFAULT_KEEP_OUTPUTS_S = 24 * 3600.0  # outputs kept this long after a job ended


def rule(free: int, reserve: int, failed: bool) -> bool:
    """Whether the disk is low (`failed`: a write failed and no reading has cleared the margin
    since): the one rule of this module."""
    return free < reserve or (failed and free < reserve + FAILED_WRITE_MARGIN)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on `path`'s filesystem (0 if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


@dataclass
class DiskGuard:
    """`low`, `free` and `store_full` (writes that failed) are read by bidding and `node info`."""

    path: Path | None
    reserve: int = DEFAULT_RESERVE
    statvfs_free: Callable[[Path], int] = free_bytes
    free: int = 0
    low: bool = False
    store_full: int = 0  # store writes that failed for want of disk, since start
    episodes: int = 0  # times the guard went low, since start
    _failed: bool = False

    def __post_init__(self) -> None:
        if self.path is not None:
            self.check()

    def check(self) -> bool:
        """Read the free space and update the state; returns `low`."""
        if self.path is None:
            return False
        return self.update(self.statvfs_free(self.path))

    def update(self, free: int) -> bool:
        """The state for `free` bytes free (logging a transition once); returns `low`."""
        self.free = free
        low = rule(free, self.reserve, self._failed)
        if not low:
            self._failed = False
        if low and not self.low:
            self.episodes += 1
            log.warning("data dir %s is full: not bidding until space returns (free %s, reserve %s)",
                        self.path, human_bytes(free), human_bytes(self.reserve))
        elif self.low and not low:
            log.warning("data dir %s has room again: bidding (free %s, reserve %s)",
                        self.path, human_bytes(free), human_bytes(self.reserve))
        self.low = low
        return low

    def write_failed(self, exc: BaseException | None = None, what: str = "an input") -> None:
        """A store write failed (`exc`) and `what` was dropped: count it and check at once (low
        unless free is at least reserve + margin). While low, the episode's line says it all;
        a failure with room on the disk (an I/O error) is logged each time."""
        self.store_full += 1
        if self.path is not None:
            self._failed = True  # until a reading clears reserve + margin
            self.check()
        log.log(logging.DEBUG if self.low else logging.WARNING, "dropped %s: %s", what, exc)

    def headroom(self) -> int:
        """Bytes a job may still write before the reserve is reached (as of the last check)."""
        return max(0, self.free - self.reserve)

    def view(self) -> dict:
        """For `node info`: the state, free bytes, reserve, failed writes, low episodes."""
        return {"path": str(self.path) if self.path else None, "low": self.low, "free": self.free,
                "reserve": self.reserve, "store_full": self.store_full, "low_episodes": self.episodes}

    async def run(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        """Check every `interval_s` until cancelled. statvfs is a quick local call: it runs on the
        trio thread (as in `write_failed`), so the loop keeps to trio's clock."""
        if self.path is None:
            return
        while True:
            await trio.sleep(interval_s)  # a sampling period: nothing notifies of free space
            self.check()
