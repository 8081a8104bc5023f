"""`distributeai blob add|get|ls`: files and directories by CID, through the local node's block store.

`add PATH` imports a file or directory tree (the CID `ipfs add --cid-version 1` gives it) and pins
it; `get CID --out PATH` fetches it from the network, every block verified against its CID, and
writes it out (resumed where it stopped when run again); `ls` lists what was added or fetched.
A transfer that lasts over a second shows a progress bar on stderr (a terminal, no `--json`):
bytes, rate, providers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import typer

from .common import DataDirOption, JsonOption, control, fail, node_dir, print_json, safe

blob_app = typer.Typer(no_args_is_help=True, help="Files and directories by CID (IPFS's UnixFS format).")
BAR_AFTER_S = 1.0  # a transfer shorter than this shows no bar
POLL_S = 0.25


@blob_app.command("add")
def add(path: Path = typer.Argument(..., help="A file or a directory."),
        data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """Import a file or directory into the node's block store and print its CID (pinned: never evicted).

    Example: distributeai blob add sandbox/workloads --data-dir ./node1
    """
    directory = node_dir(data_dir)
    if not path.exists():
        fail(f"{path} does not exist")
    answer = _with_bar(directory, {"op": "blob_add", "path": str(path.resolve())}, as_json, "adding")
    if "error" in answer:
        fail(safe(answer["error"]), 2 if answer.get("code") == "bad_path" else 1)
    if as_json:
        print_json(answer)
        return
    typer.echo(f"{answer['cid']}  {_size(answer['size'])}  {safe(path.name)}")


@blob_app.command("get")
def get(cid: str = typer.Argument(..., help="The CID (bafy..., bafk..., or a CIDv0 Qm...)."),
        out: Path = typer.Option(..., "--out", "-o", help="Where to write it (a file, or a directory for a directory CID)."),
        providers: list[str] = typer.Option([], "--from", help="Fetch from this peer id only (repeatable). "
                                            "Default: the connected peers, then the DHT's providers."),
        data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """Fetch a file or directory by CID from the network, verified block by block, and write it out.

    Example: distributeai blob get bafy... --out ./workloads-copy --data-dir ./node1
    """
    from distributeai.consensus.cid import BadCid, parse_cid_text

    directory = node_dir(data_dir)
    try:
        parse_cid_text(cid)
    except BadCid as exc:
        fail(str(exc))
    request = {"op": "blob_get", "cid": cid, "out": str(out.resolve()), "providers": providers}
    answer = _with_bar(directory, request, as_json, "fetching")
    if "error" in answer:
        fail(safe(answer["error"]), 2 if answer.get("code") in ("bad_cid", "bad_request") else 1)
    if as_json:
        print_json(answer)
        return
    typer.echo(f"{answer['cid']}  {_size(answer['size'])}  -> {safe(answer['written_to'])}  "
               f"({answer['fetched_blocks']} blocks fetched, {answer['held_blocks']} already here)")


@blob_app.command("ls")
def ls(data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """The files and directories added to or fetched into the node's block store, newest first.

    Example: distributeai blob ls --data-dir ./node1
    """
    answer = control(node_dir(data_dir), {"op": "blob_ls"})
    if "error" in answer:
        fail(safe(answer["error"]), 1)
    if as_json:
        print_json(answer)
        return
    for row in answer["blobs"]:
        typer.echo(f"{row['cid']}  {_size(row['size'])}  {safe(row.get('name') or '')}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _with_bar(directory: Path, request: dict, as_json: bool, verb: str) -> dict:
    """Send `request` (which may take long) and, on a terminal, show the node's transfers as a bar
    once it has run for BAR_AFTER_S."""
    import sys

    result: dict = {}

    def call() -> None:
        result.update(control(directory, request, timeout=None))

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(BAR_AFTER_S)
    if worker.is_alive() and not as_json and sys.stderr.isatty():
        _show_bar(directory, worker, verb)
    worker.join()
    return result


def _show_bar(directory: Path, worker: threading.Thread, verb: str) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    started = time.monotonic()
    with Live(Text(f"{verb}..."), console=Console(stderr=True), refresh_per_second=4, transient=True) as live:
        while worker.is_alive():
            rows = control(directory, {"op": "transfers"}, timeout=5).get("transfers", [])
            seconds = time.monotonic() - started
            if rows:
                done = sum(r["bytes"] for r in rows)
                rate = done / max(seconds, 1e-3)
                providers = max(r["providers"] for r in rows)
                live.update(Text(f"{verb} {_size(done)}  {_size(int(rate))}/s  from {providers} providers  "
                                 f"{seconds:.0f} s"))
            else:
                live.update(Text(f"{verb}... {seconds:.0f} s"))
            worker.join(POLL_S)
