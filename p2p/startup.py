"""What a service's start (`node start`, `bootstrap start`) can refuse, as one line for its user.

`StartError` is a foreseeable reason a service cannot start: its text is one line saying what is
wrong and what to do. The CLI prints it as `error: ...` and exits 1 (cli/common.py `run_service`).

- `listen_failed(option, where, exc)`: an address that cannot be bound (the port is taken, the
  host has no such address), naming the option that chose it.
- `check_free(option, host, port)` and `check_listen_free(option, multiaddr)`: the same, found
  by a probe before anything else starts, so that the refusal is the only line a failed start
  prints (the real bind still reports a port taken in between, as `listen_failed`).
- `lock_dir(path, what)`: an exclusive lock on a data directory for the life of the process;
  `DirBusy` (a StartError) when another process holds it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path


class StartError(RuntimeError):
    """A service cannot start, for a reason its user can fix; str() is one line with the fix."""


class DirBusy(StartError):
    """Another process holds the data directory's lock."""


def listen_failed(option: str, where: str, exc: OSError) -> StartError:
    """The one-line StartError for `where` (given by `option`) that could not be bound."""
    reason = os.strerror(exc.errno).lower() if exc.errno else "the host would not bind it"
    if exc.errno == errno.EADDRINUSE:
        fix = f"another process listens there: stop it, or choose another port with {option} (port 0: any free one)"
    elif exc.errno in (errno.EADDRNOTAVAIL, None):
        fix = f"give {option} an address this host has (127.0.0.1 is one)"
    elif exc.errno == errno.EACCES:
        fix = f"ports below 1024 need privileges: choose a higher one with {option}"
    else:
        fix = f"check {option}"
    return StartError(f"cannot listen on {where} ({option}): {reason}; {fix}")


def check_free(option: str, host: str, port: int, where: str | None = None) -> None:
    """StartError (as `listen_failed`) when `host`:`port` cannot be bound now: taken (port 0 is
    never taken), or not an address of this host. Bound with SO_REUSEADDR, so TIME_WAIT is no
    obstacle, and without SO_REUSEPORT, so a listener that set it is found too."""
    where = where or f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return  # a name: left to the real bind, which says what is wrong with it
    family, _, _, _, address = infos[0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    except OSError as exc:
        raise listen_failed(option, where, exc) from None
    finally:
        probe.close()


def check_listen_free(option: str, listen: str) -> None:
    """`check_free` for a libp2p listen multiaddr /ip4|ip6/HOST/tcp/PORT (others are not probed)."""
    parts = listen.strip("/").split("/")
    if len(parts) >= 4 and parts[0] in ("ip4", "ip6") and parts[2] == "tcp" and parts[3].isdigit():
        check_free(option, parts[1], int(parts[3]), listen)


def lock_dir(path: Path, what: str = "this data directory") -> int:
    """Hold an exclusive lock on `path` (its file `lock`) for the life of the process; the fd.
    DirBusy when another process holds it."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DirBusy(f"another process is using {path} (a {what} already runs there: stop it, "
                      f"or give another --data-dir)") from None
    return fd


def make_dir(path: Path, option: str = "--data-dir") -> None:
    """Create the data directory `path` (mode 0700) if absent; StartError when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise StartError(f"{option} {path} is a file, not a directory: give a directory") from None
    except OSError as exc:
        raise StartError(f"cannot create {option} {path}: {exc.strerror or exc}; give a writable directory") from None
