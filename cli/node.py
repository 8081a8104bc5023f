"""`distributeai node start|info|peers`: run a volunteer node and ask it about itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import keys
from .common import (DataDirOption, JsonOption, check_listen, check_multiaddr, control, data_dir_of, fail, leaf, make_data_dir, node_dir,
                     parse_hostport, print_json, run_service, safe, settings, setup_logging)

node_app = typer.Typer(no_args_is_help=True, help="Run or inspect a volunteer node.")


@node_app.command("start")
def node_start(
    data_dir: Optional[Path] = DataDirOption,
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Bootstrap multiaddr ending in /p2p/<peer id>; repeatable."),
    listen: Optional[str] = typer.Option(None, help="libp2p listen multiaddr. Default /ip4/127.0.0.1/tcp/0."),
    sandbox: Optional[str] = typer.Option(None, help="Container jobs: auto (docker if its daemon answers, else bwrap), docker, bwrap, or process (runs jobs unisolated on this host). WASM jobs always run in wasm. Default auto."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--no-gpu", help="This node offers a GPU (jobs that need one are bid on). Default no."),
    docker_host: Optional[str] = typer.Option(None, help="Docker daemon address. Default DOCKER_HOST, else Docker's socket."),
    cpu: Optional[float] = typer.Option(None, help="Cores this node offers to jobs. Default 2."),
    memory_mb: Optional[int] = typer.Option(None, help="Memory in MiB this node offers to jobs. Default 2048."),
    max_jobs: Optional[int] = typer.Option(None, help="Jobs run at once. Default 4."),
    genesis_credits: Optional[int] = typer.Option(None, help="Credits every identity starts with, in this node's view. Default 100."),
    metrics: Optional[str] = typer.Option(None, help="HOST:PORT to serve Prometheus /metrics on (port 0: any free one, shown by `node info`). Default off."),
    api: Optional[str] = typer.Option(None, help="HOST:PORT to serve the REST API on (POST /api/v1/jobs, GET /api/v1/jobs/ID, /api/v1/nodes, /stats, /openapi.json; port 0: any free one, shown by `node info` as api_url). Off loopback it asks for a bearer token. Default off."),
    pow_difficulty: Optional[int] = typer.Option(None, help="Proof-of-work bits demanded of every bidder and announcer, and solved once for this node's own key (stored in DATA_DIR/node.pow). Default 20 (about 0.5 s)."),
    log_level: Optional[str] = typer.Option(None, help="debug, info, warning or error. Default info."),
    log_format: Optional[str] = typer.Option(None, "--log-format", help="text or json: one JSON object a line (time, level, logger, message, fields) for log shippers. Default text."),
    http_auth: Optional[str] = typer.Option(None, "--http-auth", help="auto: /metrics and the REST API ask for a "
                                            "bearer token unless they listen on loopback; token: always. Default auto."),
    http_token_file: Optional[Path] = typer.Option(None, "--http-token-file", help="A file (mode 0600) holding "
                                                   "the bearer token. Default DATA_DIR/http.token, made when needed."),
    passphrase_file: Optional[Path] = keys.PassphraseFileOption,
    request_rate_limit: Optional[float] = typer.Option(None, help="Requests a second one peer may send on one protocol; more are refused (rate_limited). Default 50; 0: no limit."),
    gossip_rate_limit: Optional[float] = typer.Option(None, help="Gossip messages a second by one author (a forwarding peer: 2 times that); more are dropped, not relayed. Default 50; 0: no limit."),
    newcomer_gossip_rate_limit: Optional[float] = typer.Option(None, help="The same for an author with no verified job or reputation in this node's view. Default 5; 0: no limit."),
    disk_reserve: Optional[str] = typer.Option(None, "--disk-reserve", help="Space kept free on the data dir's filesystem, e.g. 512m, 2g: below it the node bids on no job (declined: disk_low). Default 1g."),
    max_output: Optional[str] = typer.Option(None, "--max-output", help="The largest output quota (a job's --out-max) this node bids on, e.g. 100m (declined: output_too_large). Default 1g."),
    store_max: Optional[str] = typer.Option(None, "--store-max", help="The block store's size (inputs, outputs and blobs by CID, in DATA_DIR/blocks), e.g. 50g; beyond it the least recently used blocks no job needs are evicted. Default 10g."),
    bid_sample_factor: Optional[int] = typer.Option(None, "--bid-sample-factor", help="Sampled bidding: the jobs this node submits are open at first to about this many times their replicas of the network (as this node estimates it from the DHT), widened while too few bid; 0: every node may bid on them. Default 4."),
    keep_outputs: Optional[str] = typer.Option(None, "--keep-outputs", help="How long a job's output files are kept after it ended (certified, or its run here failed), for nodes fetching them, e.g. 90m, 24h, 7d; never while one is being fetched. Default 24h."),
) -> None:
    """Start a volunteer node: discover peers, bid on jobs, run them, verify results. Each option
    can also come from the config file or a DISTRIBUTEAI_* variable (see `distributeai config show`).

    Example: distributeai node start --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... --data-dir ./node1 --sandbox docker
    """
    cfg = settings(data_dir=data_dir, bootstrap=bootstrap, listen=listen, sandbox=sandbox, gpu=gpu,
                   docker_host=docker_host, cpu=cpu, memory_mb=memory_mb, max_jobs=max_jobs,
                   genesis_credits=genesis_credits, metrics=metrics, api=api, log_level=log_level, log_format=log_format, http_auth=http_auth,
                   http_token_file=http_token_file,
                   request_rate_limit=request_rate_limit, gossip_rate_limit=gossip_rate_limit,
                   newcomer_gossip_rate_limit=newcomer_gossip_rate_limit,
                   pow_difficulty=pow_difficulty, disk_reserve=disk_reserve, max_output=max_output,
                   keep_outputs=keep_outputs, store_max=store_max, bid_sample_factor=bid_sample_factor)
    data_dir = data_dir_of(cfg)
    for b in cfg.bootstrap:
        check_multiaddr(b, "--bootstrap")
        if "/p2p/" not in b:
            fail(f"--bootstrap {b!r} must end in /p2p/<peer id>")
    check_listen(cfg.listen)
    metrics_at = parse_hostport(cfg.metrics, "--metrics") if cfg.metrics is not None else None
    api_at = parse_hostport(cfg.api, "--api") if cfg.api is not None else None
    from distributeai.node.paths import key_path
    from distributeai.node.startcheck import IdentityMismatch, check_key_present

    # The key is opened here, before anything starts: a wrong passphrase is one line and exit 2.
    # A new key is encrypted when a passphrase is given by file or environment; none is made
    # where node.db holds an identity's history (node/startcheck.py).
    make_data_dir(data_dir)
    try:
        check_key_present(data_dir)
    except IdentityMismatch as exc:
        fail(str(exc))
    seed = keys.unlock(key_path(data_dir), passphrase_file, create=True)
    for listener in (metrics_at, api_at):  # a token file that cannot be used is the user's to fix: one line, exit 2
        if listener is None:
            continue
        from distributeai.p2p.httpauth import TokenFileError, http_token

        try:
            http_token(listener[0], data_dir, force=cfg.http_auth == "token", token_file=cfg.http_token_file)
        except (TokenFileError, OSError) as exc:
            fail(f"--http-token-file: {exc}" if isinstance(exc, OSError) else str(exc))
    setup_logging(cfg.log_level, cfg.log_format)
    from distributeai.node.bidding import Capacity
    from distributeai.node.daemon import NodeConfig, run_node
    from distributeai.p2p.ratelimit import RateLimits

    config = NodeConfig(data_dir=data_dir, bootstrap=cfg.bootstrap, listen=cfg.listen, sandbox=cfg.sandbox,
                        docker_host=cfg.docker_host,
                        capacity=Capacity(int(cfg.cpu * 1000), cfg.memory_mb, cfg.max_jobs),
                        genesis_credits=cfg.genesis_credits, gpu=cfg.gpu, metrics=metrics_at, api=api_at, seed=seed,
                        http_auth=cfg.http_auth, http_token_file=cfg.http_token_file,
                        rate_limits=RateLimits.of(cfg.request_rate_limit, cfg.gossip_rate_limit,
                                                   cfg.newcomer_gossip_rate_limit),
                        pow_difficulty=cfg.pow_difficulty, disk_reserve=cfg.disk_reserve,
                        max_output=cfg.max_output, keep_outputs_s=cfg.keep_outputs, store_max=cfg.store_max,
                        reconcile_interval_s=cfg.reconcile_interval,
                        bid_sample_factor=cfg.bid_sample_factor)
    import trio

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_node, config)
            ready = {"peer_id": info["peer_id"], "multiaddrs": info["multiaddrs"],
                     **{k: info[k] for k in ("api_url", "metrics_url") if k in info}}
            print(json.dumps(ready), flush=True)

    from distributeai.node.store import StoreDamaged, StoreFull

    try:
        run_service(serve)  # a StartError (data dir in use, an address taken, Docker down): one line, exit 1
    except BaseException as exc:  # trio's nurseries wrap what ends a service in exception groups
        if (refused := leaf(exc, (IdentityMismatch, StoreDamaged))) is not None:  # the data dir's to fix
            fail(str(refused))
        if (full := leaf(exc, StoreFull)) is not None:  # a store that cannot even open: one line
            fail(f"{full}; free some space on {data_dir}'s filesystem and start the node again", 1)
        raise


@node_app.command("info")
def node_info(data_dir: Optional[Path] = DataDirOption, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show the node's peer id, addresses, peers and counters.

    Example: distributeai node info --data-dir ./node1 --json
    """
    data_dir = node_dir(data_dir)
    from distributeai.node.control import call
    from distributeai.node.paths import control_path, key_path, last_start_path

    try:
        info = call(control_path(data_dir), {"op": "info"}, timeout=10)
        info["running"] = True
    except (ConnectionError, OSError) as exc:
        # No node running: what the data directory itself can tell (identity, last addresses).
        if not key_path(data_dir).exists():
            fail(f"cannot reach the node: {exc}, and {data_dir} holds no node key", 1)
        from distributeai.p2p.identity import KeyFileError, key_file_public_key, peer_id_from_public_key

        last = last_start_path(data_dir)
        try:  # an encrypted key file keeps its public key in clear: no passphrase needed
            public_key = key_file_public_key(key_path(data_dir))
        except (KeyFileError, OSError) as exc:
            fail(str(exc))
        info = {
            "peer_id": peer_id_from_public_key(public_key),
            "multiaddrs": json.loads(last.read_text()).get("multiaddrs", []) if last.exists() else [],
            "running": False,
        }
    if as_json:
        typer.echo(json.dumps(info))
        return
    for line in info_lines(info):
        typer.echo(line)


def info_lines(info: dict) -> list[str]:
    """`node info` for people: one labelled line per fact, lists one item a line, counts as
    `name n` pairs; what the node did not report is left out."""
    from distributeai.consensus.units import human_bytes

    rows: list[tuple[str, list[str]]] = [("peer id", [safe(info["peer_id"])])]
    rows.append(("running", [f"yes (pid {info['pid']})" if info.get("pid") else "yes"] if info.get("running")
                 else ["no (addresses from its last start)"]))
    rows.append(("addresses", [safe(a) for a in info.get("multiaddrs", [])] or ["none"]))
    if "sandboxes" in info:
        rows.append(("sandboxes", [", ".join(f"{kind} in {s['backend']}{'' if s['ok'] else ' (unusable)'}"
                                             for kind, s in info["sandboxes"].items())]))
    elif "sandbox" in info:
        rows.append(("sandbox", [safe(info["sandbox"])]))
    for key, label in (("reputation", "reputation"), ("credits", "credits"), ("jobs_running", "jobs running")):
        if key in info:
            rows.append((label, [str(info[key])]))
    if "network_size_estimate" in info:
        rows.append(("network", [f"about {info['network_size_estimate']} nodes (estimated from the DHT)"]))
    if "peers" in info:
        peers = info["peers"]
        rows.append(("peers", [f"{len(peers)} connected"] + [safe(p) for p in peers]))
    for key, label in (("api_url", "api"), ("metrics_url", "metrics")):
        if info.get(key):
            rows.append((label, [safe(info[key])]))
    for key in ("counters", "rejected"):
        if key in info:
            counts = info[key]
            rows.append((key, [", ".join(f"{safe(k)} {v}" for k, v in sorted(counts.items())) or "none"]))
    if "disk" in info:
        d = info["disk"]
        state = "low: not bidding" if d.get("low") else "ok"
        rows.append(("disk", [f"{human_bytes(d['free'])} free, {human_bytes(d['reserve'])} kept in reserve ({state}) on "
                              f"{safe(d['path'])}"]))
    width = max(len(label) for label, _ in rows) + 2
    return [f"{label if i == 0 else '':{width}}{value}" for label, values in rows for i, value in enumerate(values)]


@node_app.command("peers")
def node_peers(data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """List the peers this node knows: peer id, whether connected, reputation, addresses.

    Example: distributeai node peers --data-dir ./node1 --json
    """
    answer = control(node_dir(data_dir), {"op": "peers"}, timeout=10)
    if as_json:
        print_json(answer)
        return
    peers = sorted(answer["peers"], key=lambda p: (not p["connected"], p["peer_id"]))
    if not peers:
        typer.echo("no peers known")
    for p in peers:
        typer.echo(f"{p['peer_id']}  {'connected' if p['connected'] else 'known    '}  "
                   f"reputation {p['reputation']}  {' '.join(p['addrs'][:1])}")
