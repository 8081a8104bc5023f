"""`distributeai`: start nodes and the bootstrap, submit jobs, look at them.

Conventions: a user's mistake is one line on stderr and exit code 2; a node or bootstrap that cannot
be reached is one line naming what was tried and exit code 1; `--json` prints one JSON object.
Settings come from one `Config` (cli/config.py: defaults < TOML file < DISTRIBUTEAI_* < flags).
The commands that only ask a node and report live in cli/queries.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from distributeai.cli import keys, queries
from distributeai.cli.common import DataDirOption, check_job_id, control, data_dir_of, fail, node_dir, settings
from distributeai.cli.common import run as run_app

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="DistributeAI: a peer-to-peer compute network with k-of-n verified results.")
node_app = typer.Typer(no_args_is_help=True, help="Run or inspect a volunteer node.")
bootstrap_app = typer.Typer(no_args_is_help=True, help="Run the bootstrap (DHT seed and stats page).")
job_app = typer.Typer(no_args_is_help=True, help="Look at jobs.")
app.add_typer(node_app, name="node")
app.add_typer(bootstrap_app, name="bootstrap")
app.add_typer(job_app, name="job")

DataDir = DataDirOption


def setup_logging(level: str) -> None:
    # Import libp2p first: importing it clears the handlers of its loggers (libp2p.md, "Install").
    import libp2p  # noqa: F401

    from distributeai.p2p.overlay import quiet_libp2p_logs

    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_libp2p_logs()


def run_service(async_fn, *args) -> None:
    """Run a trio service until it ends, SIGINT or SIGTERM; both signals stop it cleanly."""
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


# --- bootstrap ----------------------------------------------------------------------------------

def parse_hostport(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"{option} must be HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


@bootstrap_app.command("start")
def bootstrap_start(
    listen: str = typer.Option("/ip4/127.0.0.1/tcp/4001", help="libp2p listen multiaddr."),
    http: str = typer.Option("127.0.0.1:8080", help="HOST:PORT of the stats page and /api/stats."),
    data_dir: Path = typer.Option(..., "--data-dir", help="The bootstrap's data directory (its key)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    passphrase_file: Optional[Path] = keys.PassphraseFileOption,
    pow_difficulty: int = typer.Option(20, min=0, max=64, help="The network's proof-of-work bits (the nodes' --pow-difficulty): only announcements that prove them are counted, as nodes accept only those. Default 20, the nodes' default."),
) -> None:
    """Start the bootstrap. Prints its full multiaddr as the first line of stdout once ready.

    Example: distributeai bootstrap start --listen /ip4/127.0.0.1/tcp/4001 --http 127.0.0.1:8080 --data-dir ./boot
    """
    host, port = parse_hostport(http, "--http")
    check_multiaddr(listen, "--listen")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = keys.unlock(data_dir / "bootstrap.key", passphrase_file, create=True)  # as node start
    setup_logging(log_level)
    import trio

    from distributeai.bootstrap.service import BootstrapConfig, run_bootstrap

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_bootstrap, BootstrapConfig(data_dir, listen, host, port, pow_difficulty, seed=seed))
            print(info["multiaddr"], flush=True)
            print(f"stats: {info['http']}/api/stats", flush=True)

    run_service(serve)


# --- node ---------------------------------------------------------------------------------------

def check_multiaddr(value: str, option: str) -> None:
    from multiaddr import Multiaddr

    try:
        Multiaddr(value)
    except Exception as exc:  # multiaddr raises several types for bad input
        fail(f"{option}: {value!r} is not a multiaddr ({exc})")


@node_app.command("start")
def node_start(
    data_dir: Optional[Path] = DataDir,
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Bootstrap multiaddr ending in /p2p/<peer id>; repeatable."),
    listen: Optional[str] = typer.Option(None, help="libp2p listen multiaddr. Default /ip4/127.0.0.1/tcp/0."),
    sandbox: Optional[str] = typer.Option(None, help="Container jobs: auto (the default: docker if its daemon answers, else bwrap), docker, bwrap, or process (runs jobs unisolated on this host). WASM jobs always run in wasm."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--no-gpu", help="This node offers a GPU (jobs that need one are bid on). Default: no."),
    docker_host: Optional[str] = typer.Option(None, help="Docker daemon address. Default: DOCKER_HOST, else Docker's socket."),
    cpu: Optional[float] = typer.Option(None, help="Cores this node offers to jobs. Default 2."),
    memory_mb: Optional[int] = typer.Option(None, help="Memory in MiB this node offers to jobs. Default 2048."),
    max_jobs: Optional[int] = typer.Option(None, help="Jobs run at once. Default 4."),
    genesis_credits: Optional[int] = typer.Option(None, help="Credits every identity starts with, in this node's view. Default 100."),
    metrics: Optional[str] = typer.Option(None, help="HOST:PORT to serve Prometheus /metrics on (port 0: any free one, shown by `node info`). Default: off."),
    api: Optional[str] = typer.Option(None, help="HOST:PORT to serve the REST API on (POST /api/v1/jobs, GET /api/v1/jobs/ID, /api/v1/nodes, /stats, /openapi.json; port 0: any free one, shown by `node info` as api_url). Off loopback it asks for a bearer token. Default: off."),
    pow_difficulty: Optional[int] = typer.Option(None, help="Proof-of-work bits demanded of every bidder and announcer, and solved once for this node's own key (stored in DATA_DIR/node.pow). Default 20: about 0.5 s."),
    log_level: Optional[str] = typer.Option(None, help="debug, info (the default), warning or error."),
    http_auth: Optional[str] = typer.Option(None, "--http-auth", help="auto (the default): /metrics asks for a "
                                            "bearer token unless it listens on loopback; token: always."),
    http_token_file: Optional[Path] = typer.Option(None, "--http-token-file", help="A file (mode 0600) holding "
                                                   "the bearer token. Default: DATA_DIR/http.token, made when needed."),
    passphrase_file: Optional[Path] = keys.PassphraseFileOption,
    request_rate_limit: Optional[float] = typer.Option(None, help="Requests a second one peer may send on one protocol; more are refused (rate_limited). Default 50; 0: no limit."),
    gossip_rate_limit: Optional[float] = typer.Option(None, help="Gossip messages a second by one author (a forwarding peer: 2 times that); more are dropped, not relayed. Default 50; 0: no limit."),
    newcomer_gossip_rate_limit: Optional[float] = typer.Option(None, help="The same for an author with no verified job or reputation in this node's view. Default 5; 0: no limit."),
) -> None:
    """Start a volunteer node: discover peers, bid on jobs, run them, verify results. Each option
    can also come from the config file or a DISTRIBUTEAI_* variable (see `distributeai config show`).

    Example: distributeai node start --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... --data-dir ./node1 --sandbox docker
    """
    cfg = settings(data_dir=data_dir, bootstrap=bootstrap, listen=listen, sandbox=sandbox, gpu=gpu,
                   docker_host=docker_host, cpu=cpu, memory_mb=memory_mb, max_jobs=max_jobs,
                   genesis_credits=genesis_credits, metrics=metrics, api=api, log_level=log_level, http_auth=http_auth,
                   http_token_file=http_token_file,
                   request_rate_limit=request_rate_limit, gossip_rate_limit=gossip_rate_limit,
                   newcomer_gossip_rate_limit=newcomer_gossip_rate_limit,
                   pow_difficulty=pow_difficulty)
    data_dir = data_dir_of(cfg)
    for b in cfg.bootstrap:
        check_multiaddr(b, "--bootstrap")
        if "/p2p/" not in b:
            fail(f"--bootstrap {b!r} must end in /p2p/<peer id>")
    check_multiaddr(cfg.listen, "--listen")
    metrics_at = parse_hostport(cfg.metrics, "--metrics") if cfg.metrics is not None else None
    api_at = parse_hostport(cfg.api, "--api") if cfg.api is not None else None
    from distributeai.node.paths import key_path

    # The key is opened here, before anything starts: a wrong passphrase is one line and exit 2.
    # A new key is encrypted when a passphrase is given by file or environment.
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = keys.unlock(key_path(data_dir), passphrase_file, create=True)
    for listener in (metrics_at, api_at):  # a token file that cannot be used is the user's to fix: one line, exit 2
        if listener is None:
            continue
        from distributeai.p2p.httpauth import TokenFileError, http_token

        try:
            http_token(listener[0], data_dir, force=cfg.http_auth == "token", token_file=cfg.http_token_file)
        except (TokenFileError, OSError) as exc:
            fail(f"--http-token-file: {exc}" if isinstance(exc, OSError) else str(exc))
    setup_logging(cfg.log_level)
    from distributeai.node.bidding import Capacity
    from distributeai.node.daemon import DataDirBusy, NodeConfig, run_node
    from distributeai.p2p.ratelimit import RateLimits

    config = NodeConfig(data_dir=data_dir, bootstrap=cfg.bootstrap, listen=cfg.listen, sandbox=cfg.sandbox,
                        docker_host=cfg.docker_host,
                        capacity=Capacity(int(cfg.cpu * 1000), cfg.memory_mb, cfg.max_jobs),
                        genesis_credits=cfg.genesis_credits, gpu=cfg.gpu, metrics=metrics_at, api=api_at, seed=seed,
                        http_auth=cfg.http_auth, http_token_file=cfg.http_token_file,
                        rate_limits=RateLimits.of(cfg.request_rate_limit, cfg.gossip_rate_limit,
                                                   cfg.newcomer_gossip_rate_limit),
                        pow_difficulty=cfg.pow_difficulty)
    import trio

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(run_node, config)
            ready = {"peer_id": info["peer_id"], "multiaddrs": info["multiaddrs"],
                     **{k: info[k] for k in ("api_url", "metrics_url") if k in info}}
            print(json.dumps(ready), flush=True)

    try:
        run_service(serve)
    except DataDirBusy as exc:
        fail(str(exc), 1)


@node_app.command("info")
def node_info(data_dir: Optional[Path] = DataDir, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
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
    for key in ("peer_id", "multiaddrs", "running", "sandbox", "reputation", "credits", "peers", "counters",
                "rejected"):
        if key in info:
            typer.echo(f"{key:12} {info[key]}")


# --- submitting and watching ------------------------------------------------------------------------

def load_job_file(path: Path) -> Any:
    from distributeai.consensus.errors import JobFileError
    from distributeai.consensus.jobfile import load_job_document

    try:
        return load_job_document(path.read_bytes())
    except FileNotFoundError:
        fail(f"job file {path} does not exist")
    except OSError as exc:
        fail(f"job file {path}: cannot read it: {exc.strerror}")
    except JobFileError as exc:
        fail(f"job file {path} {exc.message}")


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{what}: cannot read {path}: {exc.strerror}")


def read_tasks(path: Path) -> list[list[str]]:
    """A tasks file (consensus.jobfile.parse_tasks): one task per line, shell-quoted."""
    from distributeai.consensus.errors import JobFileError
    from distributeai.consensus.jobfile import parse_tasks

    try:
        return parse_tasks(read_bytes(path, "--tasks"))
    except JobFileError as exc:
        fail(f"--tasks {path}: {exc.message}")


def print_job(view: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(view))
        return
    typer.echo(f"job      {view['job_id']}")
    typer.echo(f"status   {view['status']}{' (' + view['reason'] + ')' if view.get('reason') else ''}")
    typer.echo(f"elapsed  {view.get('elapsed_s')} s")
    for e in view.get("executors", []):
        mark = "agrees" if e["agreed"] else ("dissents" if e["result_hash"] else
                                             f"no result ({e.get('state') or 'unknown'})")
        typer.echo(f"executor {e['peer_id']}  {mark}  {(e['result_hash'] or '')[:16]}")
    if view.get("result_hash"):
        typer.echo(f"result   {view['result_hash']}  exit code {view['exit_code']}")
        typer.echo("stdout:")
        typer.echo(view.get("stdout") or "", nl=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    data_dir: Optional[Path] = DataDir,
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Job file (JSON), e.g. the seed's job files."),
    image: Optional[str] = typer.Option(None, help="Container image, e.g. alpine:latest."),
    cmd: Optional[str] = typer.Option(None, "--cmd", help="The command; the arguments after it belong to it."),
    replicas: Optional[int] = typer.Option(None, help="Executors to run the job (n). Default 3."),
    quorum: Optional[int] = typer.Option(None, help="Executors that must agree (k). Default 2."),
    timeout: Optional[int] = typer.Option(None, help="Seconds a job may run. Default 60."),
    price: Optional[int] = typer.Option(None, help="Credits paid to each agreeing executor. Default 1."),
    max_error_results: Optional[int] = typer.Option(None, help="Executors that may fail before the job does. Default 3."),
    max_total_results: Optional[int] = typer.Option(None, help="Awards in all, replacements included. Default 2n."),
    result_deadline: Optional[int] = typer.Option(None, help="Seconds from award to commit per executor. Default timeout + 30."),
    wasm: Optional[Path] = typer.Option(None, "--wasm", help="A WebAssembly (WASI) module to run instead of an image."),
    stdin: Optional[str] = typer.Option(None, "--stdin", help="Text fed to the job's standard input."),
    stdin_file: Optional[Path] = typer.Option(None, "--stdin-file", help="A file fed to the job's standard input."),
    fuel: Optional[int] = typer.Option(None, "--fuel", help="WASM: the fuel limit."),
    price_per_mfuel: Optional[int] = typer.Option(None, "--price-per-mfuel", help="WASM: credits per million fuel."),
    gpu: bool = typer.Option(False, "--gpu", help="The job needs a GPU."),
    tasks_file: Optional[Path] = typer.Option(None, "--tasks", help="A batch: one task's arguments per line "
                                              "(shell-quoted), each appended to the command and verified on its own."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE for the job's environment; repeatable."),
    cpu: Optional[float] = typer.Option(None, "--cpu", help="Cores the job needs. Default 1."),
    memory: Optional[int] = typer.Option(None, "--memory", help="MiB the job may use. Default 256."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id and return at once."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object."),
) -> None:
    """Have the running node sign a job with its key and announce it; wait until it is verified or fails.

    Example: distributeai submit --data-dir ./node1 --image alpine:latest --cmd sh -c "echo 'Hello' | sha256sum" --json
    """
    from distributeai.consensus.errors import JobFileError
    from distributeai.consensus.jobfile import parse_job
    from distributeai.consensus.messages import JobSpec, encode_body
    from distributeai.node.paths import key_path

    extra = list(ctx.args)
    if extra and cmd is None:
        fail(f"unexpected argument {extra[0]!r}")
    if extra:
        # Arguments after --cmd belong to the command; anything click could not place that came
        # before it is a mistyped option, not part of the command.
        argv = sys.argv[1:]
        at = max(i for i, a in enumerate(argv) if a == "--cmd" or a.startswith("--cmd="))
        tail = argv[at + (1 if "=" in argv[at] else 2):]
        if tail != extra:
            stray = next(a for a in extra if a not in tail) if set(extra) - set(tail) else extra[0]
            fail(f"no such option {stray!r} (options go before --cmd; what follows --cmd is the command)")
    if file is not None and (image or cmd or wasm):
        fail("give either -f FILE or --image/--wasm with --cmd, not both")
    if image and wasm:
        fail("give either --image or --wasm, not both")
    if file is not None:
        doc = load_job_file(file)
        if isinstance(doc, dict) and "wasm_file" in doc:
            doc["wasm_module"] = read_bytes((file.parent / str(doc.pop("wasm_file"))), "wasm_file")
    elif image or cmd or wasm:
        if not (image or wasm):
            fail("--image or --wasm is required with --cmd")
        if cmd is None:
            fail("--cmd is required (for --wasm: the program name, then its arguments)")
        doc = {"image": image, "command": [cmd, *extra]} if image else \
              {"wasm_module": read_bytes(wasm, "--wasm"), "command": [cmd, *extra]}
    else:
        fail("nothing to submit: give -f FILE, or --image IMAGE (or --wasm FILE) --cmd ARG ...")
    if stdin is not None and stdin_file is not None:
        fail("give either --stdin or --stdin-file, not both")
    if isinstance(doc, dict):
        for key, value in (("replicas", replicas), ("quorum", quorum), ("timeout", timeout), ("price", price),
                           ("max_error_results", max_error_results), ("max_total_results", max_total_results),
                           ("result_deadline", result_deadline), ("fuel", fuel), ("price_per_mfuel", price_per_mfuel),
                           ("stdin", stdin if stdin_file is None else read_bytes(stdin_file, "--stdin-file")),
                           ("gpu", gpu or None), ("cpu", cpu), ("memory_mb", memory)):
            if value is not None:
                doc[key] = value
    if tasks_file is not None and isinstance(doc, dict):
        doc["tasks"] = read_tasks(tasks_file)
    if env and isinstance(doc, dict):
        pairs = dict(doc.get("env") or {}) if isinstance(doc.get("env"), dict) else {}
        for item in env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                fail(f"--env {item!r} must be NAME=VALUE")
            pairs[name] = value
        doc["env"] = pairs
    module = doc.get("wasm_module") if isinstance(doc, dict) else None
    try:
        fields = parse_job(doc)
    except JobFileError as exc:
        fail(f"invalid job: {exc}")
    data_dir = node_dir(data_dir)
    if not key_path(data_dir).exists():
        fail(f"no node key in {data_dir}: start a node there first with `distributeai node start --data-dir {data_dir}`", 1)
    from distributeai.p2p.identity import KeyFileError, key_file_public_key

    # The CLI never opens the seed: the running node signs the spec with its key (which may be
    # encrypted, and is then unlocked once, by `node start`). The spec names it as the submitter.
    try:
        submitter = key_file_public_key(key_path(data_dir))
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    spec = JobSpec(submitter=submitter, nonce=os.urandom(16), created_ms=int(time.time() * 1000), **fields)
    request = {"op": "submit", "spec": encode_body(spec).hex()}
    if spec.wasm_sha256:
        request["module"] = module.hex()
    answer = control(data_dir, request)
    if "error" in answer:
        fail(f"the node refused the job: {answer['error']}", 1)
    job_hex = answer["job_id"]
    if no_wait:
        typer.echo(json.dumps({"job_id": job_hex}) if as_json else job_hex)
        return
    if not as_json:
        what = f" ({len(spec.tasks)} tasks, each)" if spec.is_batch else ""
        typer.echo(f"submitted {job_hex}; waiting for {spec.quorum} of {spec.replicas} executors to agree{what}", err=True)
    deadline = time.monotonic() + spec.timeout_s + 120
    view = answer
    if not as_json and sys.stderr.isatty():
        from distributeai.cli.progress import wait_with_progress

        view = wait_with_progress(
            lambda timeout: control(data_dir, {"op": "wait", "job_id": job_hex, "timeout": timeout}, timeout=60),
            {"job_id": job_hex, "status": "announced"}, spec.quorum, spec.replicas, deadline)
    while time.monotonic() < deadline and view.get("status") not in ("verified", "failed", "nondeterministic"):
        view = control(data_dir, {"op": "wait", "job_id": job_hex, "timeout": 30}, timeout=60)
    print_job(view, as_json)
    raise typer.Exit(0 if view.get("status") == "verified" else 1)


@app.command()
def credits(data_dir: Optional[Path] = DataDir, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
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


@app.command()
def bench(
    nodes: int = typer.Option(5, "--nodes", help="Node processes to start."),
    jobs: int = typer.Option(50, "--jobs", help="Jobs to run."),
    concurrency: int = typer.Option(5, "--concurrency", help="Jobs in flight at once."),
    sandbox: str = typer.Option("process", "--sandbox", help="process, wasm, bwrap or docker."),
    batch: int = typer.Option(0, "--batch", help="Make every job a batch of this many tasks; adds tasks_per_s."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Start a private network on 127.0.0.1, run jobs through it, tear it down, report speed.

    Example: distributeai bench --nodes 5 --jobs 100 --concurrency 10 --sandbox process --json
    """
    if sandbox not in ("process", "wasm", "bwrap", "docker"):
        fail(f"--sandbox must be process, wasm, bwrap or docker, got {sandbox!r}")
    if nodes < 3 or jobs < 1 or concurrency < 1:
        fail("--nodes must be at least 3 (jobs are 2-of-3), --jobs and --concurrency at least 1")
    from distributeai.consensus.messages import MAX_TASKS

    if not 0 <= batch <= MAX_TASKS:
        fail(f"--batch must be between 0 (single jobs) and {MAX_TASKS}")
    from distributeai.cli.bench import run_bench

    result = run_bench(nodes, jobs, concurrency, sandbox, docker_host=os.environ.get("DOCKER_HOST"), batch=batch)
    if as_json:
        typer.echo(json.dumps(result))
        return
    lat = result["latency_ms"]
    typer.echo(f"{result['jobs']} jobs on {nodes} nodes ({sandbox}), {concurrency} in flight: {result['outcomes']}")
    typer.echo(f"submit->verified p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  p99 {lat['p99']:.1f} ms"
               if lat["p50"] is not None else "no job verified")
    typer.echo(f"{result['jobs_per_s']} verified jobs/s; {result['cpu_s_per_job']} CPU-s, "
               f"{result['messages_per_job']} messages, {result['bytes_per_job']} loopback bytes per job; "
               f"peak RSS {result['peak_rss_mb']} MB per node")
    typer.echo(f"bare sandbox {result['baseline_ms']} ms; latency ratio {result['latency_ratio']}")
    if batch:
        typer.echo(f"{result['tasks_verified']} tasks verified, {result['tasks_per_s']} tasks/s")


@app.command()
def simulate(
    nodes: int = typer.Option(10_000, "--nodes", help="Nodes in the simulated network."),
    jobs: int = typer.Option(200, "--jobs", help="Jobs to submit, each from a random online node."),
    liars: float = typer.Option(0.1, "--liars", help="Fraction of nodes that always return a wrong result."),
    collude: bool = typer.Option(False, "--collude", help="Liars share one wrong result (else each lies its own way)."),
    churn: float = typer.Option(0.05, "--churn", help="Nodes that go offline per simulated minute, as a fraction of "
                                "all nodes; each comes back after an exponential downtime (--downtime-s). About "
                                "churn*d/(1+churn*d) of the nodes are offline at a time (d: downtime in minutes)."),
    downtime_s: float = typer.Option(60.0, "--downtime-s", help="Mean time an offline node stays away."),
    latency_ms: float = typer.Option(50.0, "--latency-ms", help="Mean one-way latency: lognormal, sigma 0.5, drawn per "
                                     "direct message and per gossip mesh link; a new connection costs 2 more RTTs."),
    job_rate: float = typer.Option(2.0, "--job-rate", help="Jobs submitted per simulated second (Poisson)."),
    run_ms: float = typer.Option(5000.0, "--run-ms", help="Mean run time of one execution (lognormal, sigma 0.5)."),
    replicas: int = typer.Option(3, "--replicas", help="n: executors per job."),
    quorum: int = typer.Option(2, "--quorum", help="k: executors that must agree."),
    bid_probability: float = typer.Option(1.0, "--bid-probability", help="NOT what nodes do today (they all bid): "
                                          "each node bids only with this probability, to show a sampling rule."),
    sign_bids: bool = typer.Option(False, "--sign-bids", help="Sign and verify every bid (about 165 us each; "
                                   "otherwise bids are counted and priced, not signed)."),
    seed: int = typer.Option(1, "--seed", help="Seed of the one random generator: same seed, same report."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Simulate a large network on a virtual clock: the real protocol core (signed messages,
    SubmitterJob, certificate checks, ledgers) without sockets or sandboxes. Reports messages per job,
    time to verdict and the share of correct verdicts.

    Example: distributeai simulate --nodes 10000 --jobs 200 --liars 0.1 --churn 0.1 --json
    """
    if nodes < max(2, replicas) or jobs < 1:
        fail("--nodes must be at least 2 and at least --replicas, --jobs at least 1")
    if not 1 <= quorum <= replicas <= 16:
        fail("--quorum and --replicas must satisfy 1 <= quorum <= replicas <= 16")
    if not 0 <= liars <= 1 or not 0 < bid_probability <= 1:
        fail("--liars must be in [0, 1] and --bid-probability in (0, 1]")
    if churn < 0 or downtime_s <= 0 or latency_ms <= 0 or job_rate <= 0 or run_ms <= 0:
        fail("--churn must be >= 0; --downtime-s, --latency-ms, --job-rate and --run-ms > 0")
    from distributeai.cli.simulate import describe, run_simulation
    from distributeai.node.simulation import SimConfig

    report = run_simulation(SimConfig(
        nodes=nodes, jobs=jobs, liars=liars, collude=collude, churn_per_min=churn, downtime_s=downtime_s,
        latency_ms=latency_ms, job_rate_per_s=job_rate, run_ms=run_ms, replicas=replicas, quorum=quorum,
        bid_probability=bid_probability, sign_bids=sign_bids, seed=seed))
    if as_json:
        typer.echo(json.dumps(report))
        return
    for line in describe(report):
        typer.echo(line)


@app.command("fuzz")
def fuzz_command(
    inputs: int = typer.Option(100_000, "--inputs", help="Mutated inputs per decoder."),
    decoder: list[str] = typer.Option([], "--decoder", help="A decoder to fuzz (repeatable); default: all of them."),
    seed: int = typer.Option(0, "--seed", help="The run's seed: the same seed gives the same inputs."),
    findings_dir: Optional[Path] = typer.Option(None, "--findings-dir", help="Write each finding's input here."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Fuzz every decoder a peer or a user can reach (gossip, each request and answer, session
    frames, job and tasks files, the control API) with seeded mutations of valid inputs; report
    per decoder what was accepted and rejected (by reason), the slowest input and inputs/s. Exit 1
    if any input raised an undocumented error, broke an invariant or took over 1 s of CPU.

    Example: distributeai fuzz --inputs 100000 --decoder gossip --seed 1 --json
    """
    from distributeai.cli.fuzz import print_report, run_fuzz
    from distributeai.node.fuzz import decoder_names

    if inputs < 1:
        fail("--inputs must be at least 1")
    known = decoder_names()
    for name in decoder:
        if name not in known:
            fail(f"--decoder {name!r} is not one of {', '.join(known)}")
    result = run_fuzz(inputs, decoder, seed, findings_dir)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_report(result)
    raise typer.Exit(1 if result["findings"] else 0)


@app.command("sandbox-time")
def sandbox_time(
    backends: list[str] = typer.Argument(None, help="Backends to time (default: docker bwrap wasm process)."),
    runs: int = typer.Option(10, help="Timed runs per backend, after one warm-up run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time a trivial job (the demo hash) run directly in each sandbox, without the network:
    start->exit (the sandbox's own measure) and the whole run() call, median and min.

    Example: DOCKER_HOST=unix:///tmp/dai-docker/docker.sock distributeai sandbox-time docker bwrap --runs 10
    """
    import statistics

    from distributeai.sandbox import RunRequest, SandboxError, open_sandbox

    wasm = (Path(__file__).resolve().parent.parent / "sandbox" / "workloads" / "hashverify.wasm")
    if not wasm.exists():  # installed, not a checkout
        import distributeai.sandbox as sandbox_pkg

        wasm = Path(sandbox_pkg.__file__).parent / "workloads" / "hashverify.wasm"
    figures = {}
    for kind in backends or ["docker", "bwrap", "wasm", "process"]:
        try:
            sandbox = open_sandbox(kind, log=lambda _: None)
            sandbox.check()
        except (ValueError, SandboxError, ImportError) as exc:
            figures[kind] = {"error": str(exc)}
            continue
        if kind == "wasm":
            req = RunRequest(image="wasm", command=["hashverify"], stdin=b"Hello\n", wasm_module=wasm.read_bytes())
        else:
            req = RunRequest(image="alpine:latest", command=list(DEMO_COMMAND))
        try:
            sandbox.run(req)
            inner, outer = [], []
            for _ in range(runs):
                started = time.perf_counter()
                result = sandbox.run(req)
                outer.append((time.perf_counter() - started) * 1000)
                inner.append(result.duration_s * 1000)
        except SandboxError as exc:
            figures[kind] = {"error": str(exc)}
            continue
        finally:
            sandbox.close()
        figures[kind] = {"start_exit_ms_median": round(statistics.median(inner), 3), "start_exit_ms_min": round(min(inner), 3),
                         "run_ms_median": round(statistics.median(outer), 3), "runs": runs}
    if as_json:
        typer.echo(json.dumps(figures))
        return
    for kind, f in figures.items():
        if "error" in f:
            typer.echo(f"{kind:8} unavailable: {f['error']}")
        else:
            typer.echo(f"{kind:8} start->exit median {f['start_exit_ms_median']:8.2f} ms (min {f['start_exit_ms_min']:.2f});"
                       f" whole run() median {f['run_ms_median']:8.2f} ms")


@job_app.command("status")
def job_status(
    job_id: str = typer.Argument(..., help="The job id (hex) printed by submit."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a job this node knows: status, executors, result.

    Example: distributeai job status 3f2a... --data-dir ./node1 --json
    """
    job_id = check_job_id(job_id)
    view = control(node_dir(data_dir), {"op": "status", "job_id": job_id})
    if "error" in view:
        fail(view["error"], 1)
    print_job(view, as_json)


DEMO_COMMAND = ["sh", "-c", "echo 'Hello' | sha256sum"]


@app.command()
def devnet(
    nodes: int = typer.Option(3, help="Number of nodes."),
    sandbox: str = typer.Option("docker", help="The nodes' sandbox for container jobs: auto, docker, bwrap or process."),
    data_dir: Path = typer.Option(Path(".run/devnet"), "--data-dir", help="Where the network keeps its data (reset at start)."),
    demo: bool = typer.Option(False, "--demo", help="Submit the demo job, print its verified result, and stop."),
    repeat: int = typer.Option(1, "--repeat", help="With --demo: submit it this many times and print timings."),
    keep: bool = typer.Option(False, "--keep", help="With --demo: keep the network running afterwards until Ctrl-C."),
) -> None:
    """Run a bootstrap and N nodes on 127.0.0.1 as separate processes.

    Example: distributeai devnet --nodes 3 --sandbox docker --data-dir .run/demo --demo
    """
    import subprocess

    from distributeai.cli.devnet import Devnet, DevnetError, reset

    if sandbox not in ("auto", "docker", "bwrap", "process"):
        fail(f"--sandbox must be auto, docker, bwrap or process, got {sandbox!r}")
    if nodes < 1:
        fail("--nodes must be at least 1")
    reset(data_dir)
    net = Devnet(data_dir.resolve(), nodes=nodes, sandbox=sandbox, docker_host=os.environ.get("DOCKER_HOST"))
    try:
        with net:
            net.start()
            net.wait_connected()
            typer.echo(f"bootstrap {net.bootstrap_addr}", err=True)
            typer.echo(f"page      {net.http_url}/   (stats: {net.http_url}/api/stats)", err=True)
            for d, info in zip(net.node_dirs, net.node_info):
                typer.echo(f"node      {info['peer_id']}  data {d}", err=True)
            if demo:
                walls, inside = [], []
                for run in range(repeat):
                    started = time.monotonic()
                    out = subprocess.run([sys.executable, "-m", "distributeai.cli.main", "submit", "--json",
                                          "--data-dir", str(net.node_dirs[0]), "--image", "alpine:latest",
                                          "--cmd", *DEMO_COMMAND], capture_output=True, text=True)
                    walls.append(time.monotonic() - started)
                    if out.returncode != 0 or not out.stdout:
                        typer.echo(out.stdout + out.stderr, err=True, nl=False)
                        fail("the demo job was not verified", 1)
                    view = json.loads(out.stdout)
                    inside.append(view["elapsed_s"])
                    if run == 0:
                        print_job(view, as_json=False)
                    typer.echo(f"run {run + 1}: submit -> {view['status']} in {walls[-1]:.3f} s "
                               f"(CLI wall), {view['elapsed_s']:.3f} s (announce -> certificate at the node)",
                               err=True)
                if repeat > 1:
                    import statistics

                    typer.echo(f"median of {repeat}: {statistics.median(walls):.3f} s CLI wall, "
                               f"{statistics.median(inside):.3f} s at the node; "
                               f"min {min(walls):.3f} / {min(inside):.3f} s", err=True)
                if not keep:
                    return
                typer.echo(f"the bootstrap's page: {net.http_url}/", err=True)
            typer.echo("network running; Ctrl-C stops it", err=True)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except DevnetError as exc:
        fail(str(exc), 1)


queries.register(app, node_app, job_app)
keys.register(app)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
