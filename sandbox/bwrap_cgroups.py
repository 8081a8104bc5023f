"""The cgroup v1 groups of bwrap runs: finding this process's own groups, making one group per
run in each of the memory, pids and cpu hierarchies with the run's limits, killing what runs in
them, reading OOM kills, and removing them (also those left by nodes that died mid-run).

A run's groups are `<mount>/<node's own group>/distributeai/<pid>-<n>-<random>`: memory.limit_in_bytes
(and memory.memsw.limit_in_bytes, = memory: no swap) = memory_mb, pids.max = pids_limit + the two
bwrap processes, cpu.cfs_quota_us = cpu × cfs period. Needs root (or write access to the node's
own groups). Only v1: a cgroup v2 host has none of these files.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import secrets
import signal
import time

from .base import RunRequest, SandboxError

__all__ = ["CGROUP_DIR", "CONTROLLERS", "JobGroups", "find_cgroup_bases", "remove_stale_groups"]

CGROUP_DIR = "distributeai"  # under the node's own group in each hierarchy
CONTROLLERS = ("memory", "pids", "cpu")
# bwrap runs as two processes around the job (the monitor outside the pid namespace and pid 1
# inside); pids.max adds them so the job gets pids_limit for itself, as in Docker.
BWRAP_PIDS = 2
CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000  # the kernel's minimum
KILL_WAIT_S = 2.0  # after SIGKILL the groups empty in milliseconds; this bounds a sick kernel

_names = itertools.count()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def find_cgroup_bases() -> dict[str, str]:
    """For each controller in CONTROLLERS that a cgroup v1 hierarchy holds: the directory of this
    process's own group in that hierarchy. Controllers without a v1 hierarchy are left out."""
    mounts: dict[str, tuple[str, str]] = {}  # controller -> (mount point, root of the mount)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3 or rfields[0] != "cgroup":
                continue
            options = rfields[2].split(",")
            for c in CONTROLLERS:
                if c in options and c not in mounts:
                    mounts[c] = (_unescape(fields[4]), _unescape(fields[3]))
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3 and parts[1]:
                for c in parts[1].split(","):
                    own[c] = parts[2]
    bases = {}
    for c, (mount_point, root) in mounts.items():
        path = own.get(c, "/")
        if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
            path = path[len(root.rstrip("/")) :]  # the mount shows only a subtree
        elif root != "/":
            path = "/"
        bases[c] = os.path.join(mount_point, path.lstrip("/"))
    return bases


def _write(path: str, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read_procs(path: str) -> list[int]:
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ValueError):
        return []


class JobGroups:
    """The cgroups of one run: one directory per hierarchy (co-mounted controllers share one)."""

    def __init__(self, bases: dict[str, str]) -> None:
        name = f"{os.getpid()}-{next(_names)}-{secrets.token_hex(3)}"
        self.parents = sorted({os.path.join(b, CGROUP_DIR) for b in bases.values()})
        self.dirs = {c: os.path.join(b, CGROUP_DIR, name) for c, b in bases.items()}
        self.made: list[str] = []

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.made]

    def create(self, req: RunRequest) -> None:
        try:
            for d in sorted(set(self.dirs.values())):
                for attempt in range(3):
                    os.makedirs(os.path.dirname(d), exist_ok=True)
                    try:
                        os.mkdir(d)
                        break
                    except FileNotFoundError:  # another run removed the empty parent just now
                        if attempt == 2:
                            raise
                self.made.append(d)
        except OSError as e:
            raise SandboxError("limits_unsupported", f"cannot create cgroup {e.filename}: {e}") from e
        mem, pids, cpu = self.dirs["memory"], self.dirs["pids"], self.dirs["cpu"]
        limit = req.memory_mb << 20
        quota = max(MIN_CFS_QUOTA_US, round(req.cpu * CFS_PERIOD_US))
        settings = [
            (os.path.join(mem, "memory.limit_in_bytes"), limit),
            (os.path.join(pids, "pids.max"), req.pids_limit + BWRAP_PIDS),
            (os.path.join(cpu, "cpu.cfs_period_us"), CFS_PERIOD_US),
            (os.path.join(cpu, "cpu.cfs_quota_us"), quota),
        ]
        memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
        if os.path.exists(memsw):  # after memory.limit_in_bytes: memsw may not be below it
            settings.insert(1, (memsw, limit))
        for path, value in settings:
            try:
                _write(path, value)
            except OSError as e:
                raise SandboxError("invalid_request", f"cannot set {path} to {value}: {e}") from e
        if not os.path.exists(memsw):
            try:  # no swap accounting (swapaccount=0): keep the job out of swap instead
                _write(os.path.join(mem, "memory.swappiness"), 0)
            except OSError:
                pass

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs_files:
            found.update(_read_procs(path))
        return found

    def kill_all(self) -> bool:
        """SIGKILL every process of the groups until they are empty; False if they never were."""
        deadline = time.monotonic() + KILL_WAIT_S
        delay = 0.001
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)  # let the killed processes exit (and their parents reap them)
            delay = min(delay * 2, 0.05)

    def oom_kills(self) -> int:
        """OOM kills in the memory group: the oom_kill counter (Linux 4.13+); on older kernels,
        1 when the group hit its limit and is or was under OOM (best effort)."""
        mem = self.dirs["memory"]
        try:
            with open(os.path.join(mem, "memory.oom_control")) as f:
                stats = dict(line.split() for line in f if line.strip())
        except OSError:
            return 0
        if "oom_kill" in stats:
            return int(stats["oom_kill"])
        return 1 if stats.get("under_oom") == "1" else 0

    def remove(self) -> list[str]:
        """Kill what is left, remove the groups and, when idle, their parent dirs; returns errors."""
        errors = []
        if not self.kill_all():
            errors.append(f"processes left in {self.made}: {sorted(self.pids())}")
        for d in self.made:
            deadline = time.monotonic() + KILL_WAIT_S
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                        errors.append(f"cannot remove {d}: {e}")
                        break
                    time.sleep(0.01)  # exited tasks still leaving the group
        self.made = []
        for parent in self.parents:
            try:
                os.rmdir(parent)  # only succeeds when no other run has a group there
            except OSError:
                pass
        return errors


def remove_stale_groups(bases: dict[str, str]) -> list[str]:
    """Remove groups left by nodes that died mid-run (their pid is gone); returns what was removed."""
    removed = []
    for parent in sorted({os.path.join(b, CGROUP_DIR) for b in bases.values()}):
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            path = os.path.join(parent, name)
            owner = name.split("-", 1)[0]
            if not os.path.isdir(path) or not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
                continue
            for pid in _read_procs(os.path.join(path, "cgroup.procs")):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.rmdir(path)
                removed.append(path)
            except OSError:
                pass
    return removed
