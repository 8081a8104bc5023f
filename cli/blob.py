"""`distributeai blob add|get|ls`: files and directories by CID, through the local node's block store.

`add PATH` imports a file or directory tree (the CID `ipfs add --cid-version 1` gives it) and pins
it; `get CID --out PATH` fetches it from the network, every block verified against its CID, and
writes it out (resumed where it stopped when run again); `ls` lists what was added or fetched.
A transfer that lasts over a second shows a progress bar on stderr (a terminal, no `--json`):
bytes, rate, providers (cli/transfer_bar.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distributeai.consensus.units import human_bytes

from .common import DataDirOption, JsonOption, control, fail, node_dir, print_json, safe
from .transfer_bar import run_with_bar

blob_app = typer.Typer(no_args_is_help=True, help="Files and directories by CID (IPFS's UnixFS format).")


@blob_app.command("add")
def add(path: Path = typer.Argument(..., help="A file or a directory."),
        data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """Import a file or directory into the node's block store and print its CID (pinned: never evicted).

    Example: distributeai blob add sandbox/workloads --data-dir ./node1
    """
    directory = node_dir(data_dir)
    if not path.exists():
        fail(f"{path} does not exist")
    answer = run_with_bar(directory, {"op": "blob_add", "path": str(path.resolve())}, as_json)
    if "error" in answer:
        fail(safe(answer["error"]), 2 if answer.get("code") == "bad_path" else 1)
    if as_json:
        print_json(answer)
        return
    typer.echo(f"{answer['cid']}  {human_bytes(answer['size'])}  {safe(path.name)}")


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
    answer = run_with_bar(directory, request, as_json)
    if "error" in answer:
        fail(safe(answer["error"]), 2 if answer.get("code") in ("bad_cid", "bad_request") else 1)
    if as_json:
        print_json(answer)
        return
    typer.echo(f"{answer['cid']}  {human_bytes(answer['size'])}  -> {safe(answer['written_to'])}  "
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
        typer.echo(f"{row['cid']}  {human_bytes(row['size'])}  {safe(row.get('name') or '')}")
