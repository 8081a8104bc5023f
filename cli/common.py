"""What every command shares: one-line errors, the merged config, talking to the node, running
a service (`node start`, `bootstrap start`) until SIGINT or SIGTERM.

Conventions (cli/README.md): a user's mistake is one line on stderr and exit code 2; a node or
bootstrap that cannot be reached is one line naming what was tried and exit code 1; `--json`
prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

from distributeai.consensus.outputs import is_control
try:  # recent typer vendors click as typer._click; older ones depend on click itself
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exc

from .config import Config, ConfigError, DataDirOption, JsonOption, load_config  # noqa: F401 (re-exported)


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    return safe("; ".join(part.strip() for part in str(message).strip().splitlines() if part.strip()))


def safe(text: object) -> str:
    """`text` with every control character (C0, DEL, C1: ESC among them) shown as \\xNN, so
    nothing a job or a peer chose (a file name, a reason) can drive the user's terminal. Every
    name the CLI prints from a node's answer goes through it."""
    return "".join(f"\\x{ord(ch):02x}" if is_control(ch) else ch for ch in str(text))


def settings(**flags: Any) -> Config:
    """The merged config for this command (defaults < file < environment < `flags`)."""
    try:
        return load_config(flags)
    except ConfigError as exc:
        fail(str(exc))


def data_dir_of(cfg: Config) -> Path:
    """The configured data directory; one line and exit 2 if there is none."""
    try:
        return cfg.require_data_dir()
    except ConfigError as exc:
        fail(str(exc))


def node_dir(data_dir: Optional[Path]) -> Path:
    """--data-dir, else the configured one; one line and exit 2 if neither."""
    return data_dir_of(settings(data_dir=data_dir))


def control(data_dir: Path, request: dict, timeout: float | None = 30.0) -> dict:
    """One control-API request; an unreachable node is one line naming its socket, exit 1."""
    from distributeai.node.control import call
    from distributeai.node.paths import control_path

    try:
        return call(control_path(data_dir), request, timeout=timeout)
    except (ConnectionError, OSError) as exc:
        fail(f"cannot reach the node: {exc} (start one with `distributeai node start --data-dir {data_dir}`)", 1)
    except json.JSONDecodeError as exc:
        fail(f"the node at {control_path(data_dir)} answered something that is not JSON: {exc}", 1)


MIN_JOB_PREFIX = 8  # as node/control_request.py: the node resolves a prefix, the CLI only checks its form


def check_job_id(job_id: str) -> str:
    """A job id, or a prefix of one of at least MIN_JOB_PREFIX hex digits (the node resolves it,
    as git resolves a commit's); anything else is one line and exit 2."""
    text = job_id.lower()
    if not MIN_JOB_PREFIX <= len(text) <= 64 or any(ch not in "0123456789abcdef" for ch in text):
        fail(f"job id must be 64 hex characters or a unique prefix of at least {MIN_JOB_PREFIX} of them, "
             f"got {job_id!r}")
    return text


def job_error_code(answer: dict) -> int:
    """The exit code for a node's error answer about a job id: 2 for an id that names no single
    job by its form (an ambiguous or too short prefix: the user's to fix), else 1."""
    return 2 if answer.get("code") in ("ambiguous_job", "bad_job_id") else 1


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value))


def run(app: typer.Typer, args: list[str] | None = None) -> NoReturn:
    """Run the typer app with click's usage errors made one line on stderr (exit 2).

    Click prints a usage box of several lines for a missing option, a bad value or an unknown
    command; here every such error is `error: MESSAGE (see `PROG --help`)`. `--help` and shell
    completion behave as in click; a group called without a command shows its help (exit 0)."""
    from .helpstyle import tidy

    command = tidy(typer.main.get_command(app))  # one way to show flags, lists and defaults in --help
    try:
        code = command(args=args, prog_name="distributeai", standalone_mode=False)
    except click_exc.NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), nl=False)  # typer's rich help is printed while formatting
        code = 0
    except click_exc.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "distributeai"
        typer.echo(f"error: {one_line(exc.format_message())} (see `{command} --help`)", err=True)
        code = exc.exit_code
    except click_exc.ClickException as exc:
        typer.echo(f"error: {one_line(exc.format_message())}", err=True)
        code = exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        code = 1
    code = code if isinstance(code, int) else 0
    if "wasmtime" in sys.modules:
        # wasmtime 50's tokio worker threads abort the process (SIGABRT, "panic in a function that
        # cannot unwind") when the interpreter's teardown outlives them: 6 of 8 runs of a
        # process that ran one wasm job and exited normally. The command is done and every
        # state change is already committed to SQLite, so skip that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


# --- running a service (node start, bootstrap start) ---------------------------------------------

def setup_logging(level: str, fmt: str = "text") -> None:
    """Log at `level` to stderr, as text or one JSON object a line (cli/logs.py)."""
    from .logs import setup_logging as setup

    setup(level, fmt)


def run_service(async_fn, *args) -> None:
    """Run a trio service until it ends, SIGINT or SIGTERM; both signals stop it cleanly. A
    foreseeable reason it cannot start (p2p/startup.py StartError: an address taken, a data dir
    in use) is one line on stderr and exit 1, wherever in its nurseries it was raised."""
    try:
        _run_service(async_fn, *args)
    except BaseException as exc:  # trio's nurseries wrap what ends a service in exception groups
        from distributeai.p2p.startup import StartError

        if (refused := leaf(exc, StartError)) is not None:
            fail(str(refused), 1)
        raise


def make_data_dir(path: Path, option: str = "--data-dir") -> None:
    """Create a service's data directory (0700) if absent; one that cannot be is one line, exit 1."""
    from distributeai.p2p.startup import StartError, make_dir

    try:
        make_dir(path, option)
    except StartError as exc:
        fail(str(exc), 1)


def leaf(exc: BaseException, kind: type | tuple[type, ...]) -> BaseException | None:
    """`exc` if it is a `kind`, else the first `kind` inside it (nested exception groups)."""
    if isinstance(exc, kind):
        return exc
    for inner in exc.exceptions if isinstance(exc, BaseExceptionGroup) else ():
        if (found := leaf(inner, kind)) is not None:
            return found
    return None


def _run_service(async_fn, *args) -> None:
    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(watch_signals)
            await async_fn(*args)
            nursery.cancel_scope.cancel()

    trio.run(main)


def parse_hostport(value: str, option: str) -> tuple[str, int]:
    """HOST:PORT (an empty host is 127.0.0.1); anything else is one line naming `option`, exit 2."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"{option} must be HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def check_listen(value: str, option: str = "--listen") -> None:
    """A libp2p listen address this program can bind: /ip4|ip6/HOST/tcp/PORT; else one line, exit 2.
    (Its libp2p listens on TCP only, and a DNS name there is not resolved: it listened on every
    interface instead.)"""
    check_multiaddr(value, option)
    parts = value.strip("/").split("/")
    if len(parts) != 4 or parts[0] not in ("ip4", "ip6") or parts[2] != "tcp":
        fail(f"{option} must be /ip4/HOST/tcp/PORT or /ip6/HOST/tcp/PORT (port 0: any free one), got {value!r}")


def check_multiaddr(value: str, option: str) -> None:
    """A value that is not a multiaddr is one line naming `option`, exit 2."""
    from multiaddr import Multiaddr

    try:
        Multiaddr(value)
    except Exception as exc:  # multiaddr raises several types for bad input
        fail(f"{option}: {value!r} is not a multiaddr ({exc})")
