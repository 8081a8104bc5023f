"""`distributeai node start`: wires key, store, overlay, sandbox, agent and control API together.

Nothing is reachable from another host unless configured: libp2p listens where `listen` says
(loopback by default), the control API is a Unix socket (mode 0600), and `/metrics`, when asked
for, needs a bearer token off loopback (p2p/httpauth.py).

Identity check: before anything is written for its key, a node compares the key's peer id with
the one its store belongs to and refuses to start on a mismatch, or when node.key is gone while
node.db is there (startcheck.py, `IdentityMismatch`); a damaged node.db is `store.StoreDamaged`.
Both messages are one line that says how to recover.

Start failures: what a volunteer can fix (an address taken or not this host's, the data dir in use
or not a directory, a control socket path too long, `--sandbox docker` with no daemon answering) is
a `StartError` (p2p/startup.py) whose text is one line saying what to do; the addresses are probed
right after the lock, before anything else logs, so that line is all a failed start prints.

Identity cost: before it joins, a node proves `pow_difficulty` bits of work on its key
(node/proof.py; stored, so solved once per key and difficulty).

Readiness: `run_node` calls `task_status.started(info)` once the node listens, has dialed its
bootstrap peers and serves its control socket (and `/metrics`, when configured: its bound address is
`info["metrics_url"]`, so port 0 works); it then writes `DATA_DIR/node.json` (peer id,
multiaddrs, pid) for tools that look without a running node.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from distributeai.consensus.codec import Identity
from distributeai.consensus.names import JOBS_TOPIC
from distributeai.p2p.http import serve_app, serve_http
from distributeai.p2p.httpauth import http_token
from distributeai.p2p.identity import load_or_create_key, peer_id_from_public_key
from distributeai.p2p.overlay import open_overlay
from distributeai.p2p.ratelimit import RateLimits
from distributeai.p2p.startup import (DirBusy, StartError, check_free, check_listen_free, listen_failed, lock_dir,
                                      make_dir)  # noqa: F401 (StartError re-exported)
from distributeai.sandbox import Sandbox, SandboxError, open_sandbox
from distributeai.sandbox.outdir import remove_stale_stages

from distributeai.consensus.ledger import GENESIS_CREDITS
from distributeai.consensus.pow import DEFAULT_DIFFICULTY
from distributeai.consensus.sampling import DEFAULT_FACTOR
from distributeai.consensus.submitter import Timing

from .api import MAX_BODY as API_MAX_BODY, RestApi
from .agent import Agent, NodeSettings
from .bidding import Capacity
from .blockstore import DEFAULT_MAX_BYTES, BlockStore
from .clock import now_ms
from .control import serve_control
from .disk import DEFAULT_KEEP_OUTPUTS_S, DEFAULT_MAX_OUTPUT, DEFAULT_RESERVE
from .hostplatform import detect_platform
from .paths import control_path, key_path, last_start_path, pow_path
from .proof import load_or_solve
from .startcheck import check_key_present, mismatch, store_path
from .store import Store, StoreFull

log = logging.getLogger("distributeai.node")
PEER_CHECK_INTERVAL_S = 1.0  # how often the connected set is compared with what was last saved
API_DEADLINE_S = 60.0  # a REST request may fetch an output file from an executor; 10 s is too short for that
MAX_UNIX_PATH = 107  # bytes of a Unix socket's path (sun_path is 108 with its NUL, on Linux)
AGENT_CLASS = Agent  # tests/byzantine_node.py runs the real node with a dishonest Agent subclass


@dataclass(frozen=True)
class NodeConfig:
    data_dir: Path
    bootstrap: tuple[str, ...] = ()
    listen: str = "/ip4/127.0.0.1/tcp/0"
    sandbox: str = "auto"  # container jobs: auto (docker if its daemon answers, else bwrap), docker, bwrap, process
    gpu: bool = False
    docker_host: str | None = None
    capacity: Capacity = field(default_factory=Capacity)
    price: int = 1
    genesis_credits: int = GENESIS_CREDITS
    timing: Timing = field(default_factory=Timing)
    metrics: tuple[str, int] | None = None  # (host, port) to serve /metrics on; None: not served
    api: tuple[str, int] | None = None  # (host, port) to serve the REST API (node/api.py) on; None: not served
    http_auth: str = "auto"  # "auto": a bearer token off loopback only; "token": always (p2p/httpauth.py)
    http_token_file: Path | None = None  # None: DATA_DIR/http.token, created when first needed
    # The key's seed when the caller already opened the key file (an encrypted one: `node start`
    # asks for its passphrase first); None: run_node reads DATA_DIR/node.key, which must then be raw.
    # Kept out of repr and comparisons so that logging a config can never show it.
    seed: bytes | None = field(default=None, repr=False, compare=False)
    rate_limits: RateLimits = field(default_factory=RateLimits)  # per-peer limits (p2p/ratelimit.py)
    pow_difficulty: int = DEFAULT_DIFFICULTY  # demanded of others and solved for ourselves
    disk_reserve: int = DEFAULT_RESERVE  # bytes kept free on the data dir's filesystem (node/disk.py)
    max_output: int = DEFAULT_MAX_OUTPUT  # the largest output quota (JobSpec.out_max_bytes) bid on
    keep_outputs_s: float = DEFAULT_KEEP_OUTPUTS_S  # outputs kept after a job ended (node/retention.py)
    store_max: int = DEFAULT_MAX_BYTES  # the block store's cap (node/blockstore.py)
    reconcile_interval_s: float = 60.0  # between reconciliations with a random peer (node/reconcile.py)
    bid_sample_factor: int = DEFAULT_FACTOR  # c of sampled bidding (consensus/sampling.py); 0: all bid


DataDirBusy = DirBusy  # another process holds the data dir's lock (a StartError: one line, exit 1)


def lock_data_dir(data_dir: Path) -> int:
    """Hold an exclusive lock on the data directory for the life of the process."""
    return lock_dir(data_dir, "node")


@asynccontextmanager
async def _listening_overlay(seed: bytes, config: NodeConfig, remembered: list[str]):
    """open_overlay, with a listen address that cannot be bound made a one-line StartError."""
    entered = False
    try:
        async with open_overlay(seed, listen=config.listen, bootstrap=config.bootstrap, remembered=remembered,
                                topics=[JOBS_TOPIC], rate_limits=config.rate_limits) as overlay:
            entered = True
            yield overlay
    except OSError as exc:
        if entered:
            raise
        raise listen_failed("--listen", config.listen, exc) from None


async def _serve(nursery: trio.Nursery, option: str, at: tuple[str, int], serve, *args) -> tuple[str, int]:
    """Start an HTTP listener (`serve`, with `args` after host and port) in `nursery`; its bound
    (host, port). An address that cannot be bound is a one-line StartError naming `option`."""
    try:
        return await nursery.start(serve, *at, *args)
    except OSError as exc:
        raise listen_failed(option, f"{at[0]}:{at[1]}", exc) from None


async def _save_peers(agent: Agent, store: Store) -> None:
    """Store the connected peers whenever the set changes, so a restart rejoins without the
    bootstrap, and when each was last seen (stamped as it connects and as it goes: the REST API's
    `last_seen_ms`). libp2p offers no event for a connection, so the set is compared each second."""
    saved: set[str] = set()
    while True:
        connected = set(agent.overlay.connected_peers())
        changed = (connected - saved) | (saved - connected)
        if changed:
            try:
                await store.upsert_peers([(p, a) for p, a in agent.overlay.known_peers() if p in changed], now_ms())
                saved = connected
            except StoreFull as exc:  # tried again next round; the node goes on
                agent.store_full(exc, "the connected peers")
        await trio.sleep(PEER_CHECK_INTERVAL_S)  # a sampling period, not synchronization


def open_sandboxes(config: NodeConfig, log: logging.Logger) -> dict[str, Sandbox]:
    """The backend for each sandbox kind of a spec. Container jobs: the configured backend, or with
    "auto" Docker when its daemon answers and bubblewrap otherwise (never the unsafe process
    backend). WASM jobs always run in the wasm backend. Docker named by `sandbox` but not answering
    is a StartError: the volunteer asked for it, so a node that would bid on no container job does
    not start as if all were well."""
    kind = config.sandbox
    if kind == "auto":
        docker = open_sandbox("docker", docker_host=config.docker_host, log=log)
        try:
            docker.check()
            kind = "docker"
        except SandboxError as exc:
            log.info("sandbox auto: Docker unusable (%s); using bwrap", exc)
            kind = "bwrap"
        docker.close()
    sandboxes = {"container": open_sandbox(kind, docker_host=config.docker_host, log=log)}
    if config.sandbox == "docker":  # asked for by name: a daemon that does not answer stops the start
        try:
            sandboxes["container"].check()
        except SandboxError as exc:
            sandboxes["container"].close()
            raise StartError(f"--sandbox docker: {exc}; start Docker, point --docker-host (or DOCKER_HOST) at "
                             f"its daemon, or use --sandbox auto (bwrap when Docker is down)") from None
    try:
        sandboxes["wasm"] = open_sandbox("wasm", log=log)
    except ImportError as exc:  # wasmtime missing: this node simply does not bid on wasm jobs
        log.warning("no wasm sandbox (%s); this node will not bid on wasm jobs", exc)
    return sandboxes


async def run_node(config: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    data_dir = config.data_dir
    make_dir(data_dir)
    socket_path = os.fsencode(control_path(data_dir))
    if len(socket_path) > MAX_UNIX_PATH:
        raise StartError(f"the control socket {control_path(data_dir)} would be {len(socket_path)} bytes long, over the "
                         f"{MAX_UNIX_PATH} a Unix socket's path may have: give a shorter --data-dir")
    lock_fd = lock_data_dir(data_dir)
    try:
        # Addresses first: a port taken is then the one line a failed start prints.
        check_listen_free("--listen", config.listen)
        for option, at in (("--metrics", config.metrics), ("--api", config.api)):
            if at is not None:
                check_free(option, *at)
        if config.seed is None:
            check_key_present(data_dir)
        seed = config.seed if config.seed is not None else load_or_create_key(key_path(data_dir))
        identity = Identity.from_seed(seed)
        store = await Store.open(store_path(data_dir))  # StoreDamaged: one line, with the recovery
        sandboxes: dict[str, Sandbox] = {}
        blocks: BlockStore | None = None
        try:
            # Before anything is written for this key (node.pow, node.json): a key file that was
            # replaced or damaged must not take over the store's history (startcheck.py).
            peer_id = peer_id_from_public_key(identity.public_key)
            recorded = await store.check_identity(peer_id)
            if recorded is not None:
                raise mismatch(data_dir, recorded, peer_id)
            sandboxes = open_sandboxes(config, log)  # before the work: Docker named but down stops the start
            pow_nonce = await load_or_solve(pow_path(data_dir), identity.public_key, config.pow_difficulty)
            host_platform = await trio.to_thread.run_sync(detect_platform)  # Bid.platform, once (nvidia-smi)
            log.info("platform advertised in bids: %s", "/".join(v or "-" for v in host_platform))
            # A run cut short by a kill left its /out tmpfs mounted: free it now, not at the next run.
            await trio.to_thread.run_sync(remove_stale_stages, data_dir / "outputs", log)
            # Known peers from earlier runs come after the configured bootstrap, so a restarted node
            # rejoins even when the bootstrap is gone.
            blocks = await BlockStore.open(data_dir / "blocks", config.store_max)  # BlockIndexDamaged: one line
            remembered = [a for _, addrs in await store.known_peers(limit=8) for a in addrs[:1]]
            async with _listening_overlay(seed, config, remembered) as overlay:
                settings = NodeSettings(sandboxes["container"].name, gpu=config.gpu, capacity=config.capacity,
                                        price=config.price, genesis_credits=config.genesis_credits,
                                        timing=config.timing, pow_difficulty=config.pow_difficulty,
                                        pow_nonce=pow_nonce, data_dir=data_dir, disk_reserve=config.disk_reserve,
                                        max_output=config.max_output, keep_outputs_s=config.keep_outputs_s,
                                        bid_sample_factor=config.bid_sample_factor,
                                        bootstrap_peers=frozenset(a.rsplit("/p2p/", 1)[1] for a in config.bootstrap
                                                                  if "/p2p/" in a),
                                        reconcile_interval_s=config.reconcile_interval_s,
                                        platform=host_platform)
                agent = AGENT_CLASS(identity, store, overlay, sandboxes, settings, outputs_dir=data_dir / "outputs",
                                    blocks=blocks)
                async with trio.open_nursery() as nursery:
                    await nursery.start(agent.run)
                    await nursery.start(serve_control, agent, control_path(data_dir))
                    if config.metrics is not None:
                        token = http_token(config.metrics[0], data_dir, force=config.http_auth == "token",
                                           token_file=config.http_token_file)
                        host, port = await _serve(nursery, "--metrics", config.metrics,
                                                  partial(serve_http, token=token, counters=agent.http),
                                                  {"/metrics": agent.metrics.http_route})
                        shown = f"[{host}]" if ":" in host else host  # an IPv6 address
                        agent.metrics_url = f"http://{shown}:{port}/metrics"
                    if config.api is not None:
                        token = http_token(config.api[0], data_dir, force=config.http_auth == "token",
                                           token_file=config.http_token_file)
                        rest = RestApi(agent)
                        host, port = await _serve(nursery, "--api", config.api,
                                                  partial(serve_app, app=rest, token=token,
                                                          max_body=API_MAX_BODY, deadline_s=API_DEADLINE_S,
                                                          counters=agent.http, streamed_bodies=rest.streamed_body))
                        shown = f"[{host}]" if ":" in host else host
                        agent.api_url = f"http://{shown}:{port}"
                    nursery.start_soon(_save_peers, agent, store)
                    info = agent.info()
                    try:
                        last_start_path(data_dir).write_text(json.dumps(
                            {"peer_id": info["peer_id"], "multiaddrs": info["multiaddrs"], "pid": os.getpid()}))
                    except OSError as exc:  # a full data dir: the node runs, and says so (node/disk.py)
                        log.warning("could not write %s: %s", last_start_path(data_dir), exc)
                    log.info("node %s listening on %s", info["peer_id"], " ".join(info["multiaddrs"]))
                    task_status.started(info)
        finally:
            for sandbox in sandboxes.values():
                sandbox.close()
            with trio.CancelScope(shield=True):
                if blocks is not None:
                    await blocks.close()
                await store.aclose()
    finally:
        os.close(lock_fd)
