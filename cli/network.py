"""The network as a whole and this node's place in it: `bootstrap start`, `status`, `credits`,
`reputation`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from . import keys
from .common import (DataDirOption, JsonOption, check_listen, control, data_dir_of, fail, make_data_dir, node_dir,
                     parse_hostport, print_json, run_service, settings, setup_logging)

bootstrap_app = typer.Typer(no_args_is_help=True, help="Run the bootstrap (DHT seed and stats page).")


@bootstrap_app.command("start")
def bootstrap_start(
    listen: str = typer.Option("/ip4/127.0.0.1/tcp/4001", help="libp2p listen multiaddr."),
    http: str = typer.Option("127.0.0.1:8080", help="HOST:PORT of the page, /api/stats and /metrics."),
    data_dir: Path = typer.Option(..., "--data-dir", help="The bootstrap's data directory (its key)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    log_format: str = typer.Option("text", "--log-format", help="text or json: one JSON object a line (time, level, logger, message, fields)."),
    passphrase_file: Optional[Path] = keys.PassphraseFileOption,
    pow_difficulty: int = typer.Option(20, min=0, max=64, help="The network's proof-of-work bits (the nodes' --pow-difficulty): only announcements that prove them are counted, as nodes accept only those."),
) -> None:
    """Start the bootstrap. Once ready it prints its full multiaddr as the first line of stdout
    (also written to DATA_DIR/multiaddr), then the URL of its page.

    Example: distributeai bootstrap start --listen /ip4/127.0.0.1/tcp/4001 --http 127.0.0.1:8080 --data-dir ./boot
    """
    from .config import LOG_FORMATS, LOG_LEVELS

    host, port = parse_hostport(http, "--http")
    check_listen(listen)
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    if log_format.lower() not in LOG_FORMATS:
        fail(f"--log-format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    make_data_dir(data_dir)
    seed = keys.unlock(data_dir / "bootstrap.key", passphrase_file, create=True)  # as node start
    setup_logging(log_level, log_format.lower())
    import trio

    from distributeai.bootstrap.service import BootstrapConfig, run_bootstrap

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_bootstrap, BootstrapConfig(data_dir, listen, host, port, pow_difficulty, seed=seed))
            print(info["multiaddr"], flush=True)
            print(f"page: {info['http']}/", flush=True)

    run_service(serve)  # a StartError (data dir in use, an address taken): one line, exit 1


def credits(data_dir: Optional[Path] = DataDirOption, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show this node's credit balance and its last transfers, in its own view.

    Example: distributeai credits --data-dir ./node1 --json
    """
    answer = control(node_dir(data_dir), {"op": "credits"}, timeout=10)
    if as_json:
        typer.echo(json.dumps(answer))
        return
    typer.echo(f"balance  {answer['balance']} credits (genesis grant {answer['genesis']})")
    for t in answer["transfers"]:
        typer.echo(f"{t['amount']:+6d}  job {t['job_id'][:16]}  {t['from'][-8:]} -> {t['to'][-8:]}")


def reputation(data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """Show every identity's reputation in this node's view (folded from verified certificates),
    this node's own first. An identity not listed has the starting reputation, 0.

    Example: distributeai reputation --data-dir ./node1 --json
    """
    d = node_dir(data_dir)
    info = control(d, {"op": "info"}, timeout=10)
    answer = control(d, {"op": "reputation"}, timeout=10)
    if as_json:
        print_json({"peer_id": info["peer_id"], "own": info["reputation"], "reputation": answer["reputation"]})
        return
    typer.echo(f"{info['peer_id']}  {info['reputation']:+5d}  (this node)")
    for peer, value in sorted(answer["reputation"].items(), key=lambda kv: (-kv[1], kv[0])):
        if peer != info["peer_id"]:
            typer.echo(f"{peer}  {value:+5d}")


def status(
    data_dir: Optional[Path] = DataDirOption,
    bootstrap_http: Optional[str] = typer.Option(None, "--bootstrap-http", help="The bootstrap's base URL for network "
                                                 "totals (its /api/stats). Default bootstrap_http from the config."),
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print one snapshot as JSON and exit."),
) -> None:
    """A live view of the local node: peers, own reputation and credits, the jobs it submitted and
    the jobs it runs with their states, and the network's totals from the bootstrap. Redrawn every
    half second; q or Ctrl-C quits. Prints one snapshot when stdout is not a terminal.

    Example: distributeai status --data-dir ./node1 --bootstrap-http http://127.0.0.1:8080
    """
    from . import status as view

    cfg = settings(data_dir=data_dir, bootstrap_http=bootstrap_http)
    d = data_dir_of(cfg)
    try:
        snap = view.gather(d, cfg.bootstrap_http)
    except view.NodeUnreachable as exc:
        fail(f"{exc} (start one with `distributeai node start --data-dir {d}`)", 1)
    if once or as_json or not sys.stdout.isatty():
        view.print_once(snap, as_json)
        return
    view.run_live(d, cfg.bootstrap_http, snap)
