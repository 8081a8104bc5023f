"""The job's /out: a size-limited filesystem of its own while it runs, described and kept afterwards.

`OutStage(req, owner=..., log=...)`, used as a context manager around one run:
  - on enter: checks `req.out_dir` (an existing directory, else SandboxError("invalid_request")) and
    creates a staging directory beside it, `<parent>/.stage-<name>-<pid>-<hex>`. When this process
    may mount (root), a tmpfs is mounted there (nosuid, nodev) of `tmpfs_size(...)` bytes and
    `out_max_files + 2` inodes: a job within its quota never meets ENOSPC (every small file costs a
    page), one past it does, while it writes, at most one entry past out_max_files (the root takes
    an inode, hard links take one each) and a page-rounded few MiB past out_max_bytes. A mount
    refused for want of privilege (EPERM, EACCES): the stage is a plain directory (`enforced`
    False; one warning per process) and nothing limits what the job writes until it ends. Any
    other failure (EINVAL: a quota too large for a tmpfs) is a SandboxError: never unlimited. The backend shows `path` to the job as /out (process
    backend: $OUT_DIR), owned by `owner` (uid, gid; None: this process's own).
  - `collect()`, once the job has ended (nothing writes there any more): describes what the job left,
    without judging it, and copies what may be kept into out_dir; see `walk` and `describe`.
  - on exit, always (errors and cancel too): unmounts the tmpfs (MNT_DETACH) and removes the stage.
    A stage left by a process that died is removed the first time this process stages beside it.

The pages of a tmpfs are charged to the memory cgroup of the process that writes them: what a job
leaves in /out counts against its memory limit while it runs (measured: docs/sandbox.md).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import heapq
import os
import re
import secrets
import shutil
import stat
import threading
from collections import deque
from collections.abc import Callable

from .base import Hasher, LogSink, OutEntry, RunRequest, SandboxError, warn

__all__ = ["OutStage", "WALK_PATH_MAX", "describe", "tmpfs_size", "walk"]

PAGE = 4096  # tmpfs gives every non-empty file at least one page
SLACK = 1 << 20  # the root directory, long symlinks' pages, rounding
CHUNK = 1 << 20
# Directories whose path (relative to /out) is longer are described but not entered: it bounds the
# memory of a walk (names of at most WALK_PATH_MAX + 256 bytes) and keeps every path below PATH_MAX.
WALK_PATH_MAX = 1024
# Larger values wrap around in the kernel's option parser (nr_inodes=2**64+2 mounts with 2 inodes).
MAX_TMPFS_BYTES, MAX_TMPFS_INODES = 1 << 62, (1 << 31) - 1
STAGE_PREFIX = ".stage-"
_STAGE_NAME = re.compile(rb"^\.stage-.*-(\d+)-[0-9a-f]{8}$", re.DOTALL)
_FS_NAME = b"dai-out"  # the tmpfs's source in /proc/self/mountinfo

_libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV = 0x2, 0x4
MNT_DETACH, UMOUNT_NOFOLLOW = 0x2, 0x8

_lock = threading.Lock()
_warned = False  # the one warning that /out cannot be limited while jobs run
_swept: set[str] = set()  # parents already cleared of stages left by dead processes

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def tmpfs_size(max_bytes: int, max_files: int) -> int:
    """Bytes of the stage's tmpfs: the quota, a page per entry and 1 MiB, rounded up to a page."""
    size = max_bytes + max_files * PAGE + SLACK
    return -(-size // PAGE) * PAGE


class OutStage:
    """The staging /out of one run (see the module docstring). Not thread-safe; one per run."""

    def __init__(self, req: RunRequest, *, owner: tuple[int, int] | None, log: LogSink) -> None:
        if req.out_dir is None:
            raise ValueError("OutStage needs a RunRequest with out_dir")
        self.out_dir = os.path.realpath(req.out_dir)
        self.max_bytes = req.out_max_bytes
        self.max_files = req.out_max_files
        self.keep_free = req.out_keep_free
        self.hasher = req.out_hasher or hashlib.sha256
        self.owner = owner
        self.path = ""  # set on enter: what the job sees as /out
        self.enforced = False  # a tmpfs is (or was, after exit) mounted at path
        self._log = log

    def __enter__(self) -> OutStage:
        if not os.path.isdir(self.out_dir):
            raise SandboxError("invalid_request", f"out_dir is not a directory: {self.out_dir}")
        parent, name = os.path.split(self.out_dir)
        _sweep(parent, self._log)
        path = os.path.join(parent, f"{STAGE_PREFIX}{name[:64]}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.mkdir(path, 0o700)
        except OSError as e:
            raise SandboxError("backend_error", f"cannot create {path}: {e}") from e
        self.path = path
        try:
            self._prepare()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prepare(self) -> None:
        uid, gid = self.owner if self.owner is not None else (os.geteuid(), os.getegid())
        size, inodes = tmpfs_size(self.max_bytes, self.max_files), self.max_files + 2
        if size > MAX_TMPFS_BYTES or inodes > MAX_TMPFS_INODES:  # the kernel would wrap them around
            raise SandboxError("invalid_request", f"/out quota too large for a tmpfs: {size} bytes, {inodes} inodes")
        options = f"size={size},nr_inodes={inodes},mode=0755,uid={uid},gid={gid}".encode()
        if _libc.mount(_FS_NAME, os.fsencode(self.path), b"tmpfs", MS_NOSUID | MS_NODEV, options) == 0:
            self.enforced = True
            return
        err = ctypes.get_errno()
        if err not in (errno.EPERM, errno.EACCES):  # it may mount, but not this: never run unlimited
            reason = "invalid_request" if err == errno.EINVAL else "backend_error"
            raise SandboxError(reason, f"cannot mount a tmpfs of {size} bytes, {inodes} inodes for /out: "
                                       f"{os.strerror(err)}")
        _warn_once(self._log, f"cannot mount a tmpfs for /out ({os.strerror(err)}): output quotas are "
                              "checked only after each job, and jobs write to the disk of out_dir")
        if self.owner is None:
            return  # the job runs as this user
        try:
            os.chown(self.path, uid, gid)
        except PermissionError:
            os.chmod(self.path, 0o777)  # not root: let the job's uid in by mode; the stage is private
        except OSError as e:
            raise SandboxError("backend_error", f"cannot open {self.path} to the job: {e}") from e

    def collect(self) -> tuple[OutEntry, ...]:
        """Every entry the job left (at most out_max_files + 1), sorted by name, with the regular
        files within out_max_bytes hashed and copied into out_dir (see `describe`). Call it once the
        job has ended. SandboxError("backend_error") if the stage or out_dir cannot be opened."""
        try:
            root = os.open(self.path, _DIR_FLAGS)
            try:
                out = os.open(self.out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    return describe(root, walk(root, self.max_files + 1), self.max_bytes, out, self.keep_free,
                                    self.hasher)
                finally:
                    os.close(out)
            finally:
                os.close(root)
        except OSError as e:
            raise SandboxError("backend_error", f"cannot describe {self.path} into {self.out_dir}: {e}") from e

    def close(self) -> None:
        """Unmount and remove the stage; idempotent, never raises (a failure is logged)."""
        if not self.path:
            return
        path, self.path = self.path, ""
        if self.enforced and _libc.umount2(os.fsencode(path), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
            warn(self._log, f"cannot unmount {path}: {os.strerror(ctypes.get_errno())}")
            return  # removing would only empty the tmpfs; it goes with the node's next start
        shutil.rmtree(path, onerror=lambda _f, p, e: warn(self._log, f"cannot remove {p!r}: {e[1]}"))


def walk(root: int, limit: int) -> list[tuple[bytes, os.stat_result]]:
    """The first `limit` entries below the directory fd `root`, depth first with each directory's
    names in byte order, as (path relative to root, lstat). Links are never followed; directories
    whose path is longer than WALK_PATH_MAX are listed but not entered. Memory stays bounded by
    `limit` names: a directory lists only the smallest names that can still be among the first."""
    found: list[tuple[bytes, os.stat_result]] = []
    stack: list[tuple[bytes, deque[bytes]]] = []
    pending = 0  # names in the stack, each an entry to come

    def enter(rel: bytes) -> None:
        nonlocal pending
        names = _smallest_names(root, rel, limit - len(found))
        stack.append((rel, deque(names)))
        pending += len(names)
        excess = len(found) + pending - limit
        for _, queue in stack:  # the bottom's names come last in the walk: drop those first
            while excess > 0 and queue:
                queue.pop()
                pending -= 1
                excess -= 1

    enter(b"")
    while stack and len(found) < limit:
        prefix, queue = stack[-1]
        if not queue:
            stack.pop()
            continue
        name = queue.popleft()
        pending -= 1
        rel = prefix + b"/" + name if prefix else name
        try:
            st = os.lstat(rel, dir_fd=root)
        except OSError:
            continue  # gone meanwhile (only a process-backend job can still change it)
        found.append((rel, st))
        if stat.S_ISDIR(st.st_mode) and len(rel) <= WALK_PATH_MAX and len(found) < limit:
            enter(rel)
    return found


def _smallest_names(root: int, rel: bytes, n: int) -> list[bytes]:
    if n <= 0:
        return []
    try:
        fd = os.open(rel or b".", _DIR_FLAGS, dir_fd=root)
    except OSError:
        return []
    try:
        with os.scandir(fd) as entries:  # names as str with surrogateescape: fsencode restores them
            return heapq.nsmallest(n, (os.fsencode(e.name) for e in entries))
    except OSError:
        return []
    finally:
        os.close(fd)


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def describe(
    root: int, found: list[tuple[bytes, os.stat_result]], max_bytes: int, out: int, keep_free: int,
    hasher: Callable[[], Hasher] = hashlib.sha256,
) -> tuple[OutEntry, ...]:
    """The OutEntry of each found entry, sorted by name. Regular files are hashed (a fresh
    `hasher()` each, its `digest()` the entry's) in that order while the running total of their
    sizes stays <= max_bytes (later ones: digest None, so a sparse 2 GiB file costs no reading
    past the budget). Each hashed file is copied, in the same pass, into the
    directory fd `out` at the same relative path (directories made as needed, no link followed,
    nothing existing replaced), unless out's filesystem would then have less than keep_free bytes
    free, or the copy fails (the partial file is removed): then kept=False."""
    entries = []
    total = 0
    for rel, st in sorted(found, key=lambda item: item[0]):
        kind = kind_of(st.st_mode)
        if kind != "file":
            entries.append(OutEntry(name=rel, kind=kind, size=0))
            continue
        total += st.st_size
        digest, kept = _hash_and_copy(root, rel, st, out, keep_free, hasher) if total <= max_bytes else (None, False)
        entries.append(OutEntry(name=rel, kind=kind, size=st.st_size, digest=digest, kept=kept))
    return tuple(entries)


def _hash_and_copy(root: int, rel: bytes, st: os.stat_result, out: int, keep_free: int,
                   hasher: Callable[[], Hasher]) -> tuple[bytes | None, bool]:
    # O_NOFOLLOW|O_NONBLOCK and a check of the open file: never a link's target, never a FIFO's wait.
    try:
        fd = os.open(rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root)
    except OSError:
        return None, False
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return None, False
        dest = _Copy.open(out, rel, st.st_size, keep_free)
        digest = hasher()
        read = 0
        try:
            while read <= st.st_size and (chunk := os.read(fd, min(CHUNK, st.st_size + 1 - read))):
                digest.update(chunk)
                read += len(chunk)
                if dest is not None and not dest.write(chunk):
                    dest = None
        except OSError:
            read = -1
        if read != st.st_size:  # unreadable, or changed since the walk (a process-backend job can)
            if dest is not None:
                dest.abort()
            return None, False
        return digest.digest(), dest is not None and dest.finish()
    finally:
        os.close(fd)


class _Copy:
    """One file being copied into out_dir; removed again if anything fails."""

    def __init__(self, parent: int, name: bytes, fd: int) -> None:
        self.parent, self.name, self.fd = parent, name, fd

    @classmethod
    def open(cls, out: int, rel: bytes, size: int, keep_free: int) -> _Copy | None:
        try:
            vfs = os.fstatvfs(out)
        except OSError:
            return None
        if vfs.f_bavail * vfs.f_frsize - size < keep_free:
            return None
        *dirs, name = rel.split(b"/")
        if any(part in (b"", b".", b"..") for part in (*dirs, name)):
            return None  # not from a directory listing: never a path out of out_dir
        parent = os.dup(out)
        try:
            for part in dirs:
                try:
                    os.mkdir(part, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass
                child = os.open(part, _DIR_FLAGS, dir_fd=parent)
                os.close(parent)
                parent = child
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o644, dir_fd=parent)
        except OSError:
            os.close(parent)
            return None
        return cls(parent, name, fd)

    def write(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:  # ENOSPC, EIO, ...
            self.abort()
            return False
        return True

    def finish(self) -> bool:
        fd, self.fd = self.fd, -1
        try:
            os.close(fd)  # may report a delayed write error (EIO, ENOSPC on some filesystems)
        except OSError:
            self.abort()
            return False
        os.close(self.parent)
        return True

    def abort(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self.name, dir_fd=self.parent)
        except OSError:
            pass
        os.close(self.parent)


def _warn_once(log: LogSink, message: str) -> None:
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warn(log, message)


def _sweep(parent: str, log: LogSink) -> None:
    """Remove, once per parent and process, the stages beside out_dir of processes no longer alive."""
    with _lock:
        if parent in _swept:
            return
        _swept.add(parent)
    remove_stale_stages(parent, log)


def remove_stale_stages(parent: str | os.PathLike, log: LogSink) -> list[str]:
    """Unmount and remove every stage under `parent` whose process is no longer alive (a node
    killed mid-run leaves its tmpfs mounted); the paths removed. A node calls it at start for its
    outputs directory, so a stage's memory is not held until the next run happens beside it."""
    try:
        names = os.listdir(os.fsencode(parent))
    except OSError:
        return []
    removed = []
    for name in names:
        match = _STAGE_NAME.match(name)
        if match is None or pid_alive(int(match[1])):
            continue
        path = os.path.join(os.fsencode(parent), name)
        _libc.umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW)  # not a mount point: EINVAL, harmless
        shutil.rmtree(path, ignore_errors=True)
        warn(log, f"removed {os.fsdecode(path)!r}, the /out of a run whose process died")
        removed.append(os.fsdecode(path))
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
