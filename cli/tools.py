"""The tool commands: `bench`, `simulate`, `fuzz`, `sandbox-time`, `devnet`. Each checks its
flags here and runs its tool from distributeai.tools (tools/README.md), imported when the command
runs."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .common import fail
from .job import print_job


def bench(
    nodes: int = typer.Option(5, "--nodes", help="Node processes to start."),
    jobs: int = typer.Option(50, "--jobs", help="Jobs to run."),
    concurrency: int = typer.Option(5, "--concurrency", help="Jobs in flight at once."),
    sandbox: str = typer.Option("process", "--sandbox", help="process, wasm, bwrap or docker."),
    batch: int = typer.Option(0, "--batch", help="Make every job a batch of this many tasks; adds tasks_per_s."),
    data: Optional[str] = typer.Option(None, "--data", help="Instead of jobs: move a file of this size by CID "
                                       "between 4 nodes (e.g. 256m, 1g): import, a fetch from 1 provider and "
                                       "from 2, and one surviving a provider's SIGKILL."),
    through_jobs: bool = typer.Option(False, "--through-jobs", help="With --data: then move it through jobs on 5 "
                                      "nodes too: an input to 3 executors, an output fetched from 2 executors and "
                                      "from 1, and one surviving an executor's SIGKILL (the JSON's \"jobs\")."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Start a private network on 127.0.0.1, run jobs through it, tear it down, report speed.

    Example: distributeai bench --nodes 5 --jobs 100 --concurrency 10 --sandbox process --json
    """
    if data is not None:
        return _data_bench(data, as_json, through_jobs)
    if sandbox not in ("process", "wasm", "bwrap", "docker"):
        fail(f"--sandbox must be process, wasm, bwrap or docker, got {sandbox!r}")
    if nodes < 3 or jobs < 1 or concurrency < 1:
        fail("--nodes must be at least 3 (jobs are 2-of-3), --jobs and --concurrency at least 1")
    from distributeai.consensus.messages import MAX_TASKS

    if not 0 <= batch <= MAX_TASKS:
        fail(f"--batch must be between 0 (single jobs) and {MAX_TASKS}")
    from distributeai.tools.bench import run_bench

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
    bid_probability: float = typer.Option(1.0, "--bid-probability", help="NOT what nodes do: each node that may "
                                          "bid does so only with this probability (a crude sampling, for comparison)."),
    sample_factor: int = typer.Option(4, "--sample-factor", help="Sampled bidding: about C x replicas nodes of the "
                                      "submitter's estimate of the network may bid (consensus/sampling.py), widened "
                                      "when too few bid; 0: every node bids, as before sampling."),
    size_estimate: str = typer.Option("dht", "--size-estimate", help="The N of --sample-factor: dht (estimated from "
                                      "the XOR distances of the closest DHT keys) or true (the node count)."),
    sampled_window_ms: int = typer.Option(1000, "--sampled-window-ms", help="Bid window of a sampled job "
                                          "(Timing.sampled_bid_window_ms); a job every node may bid on keeps 300 ms."),
    reconcile_s: float = typer.Option(30.0, "--reconcile-s", help="Every online node reconciles its certificate set "
                                      "with a random online peer this often (simulated seconds); 0: only when a node "
                                      "comes back online."),
    no_reconcile: bool = typer.Option(False, "--no-reconcile", help="No set reconciliation at all: a node offline "
                                      "when a certificate was gossiped never gets it (the ledgers diverge)."),
    sign_bids: bool = typer.Option(False, "--sign-bids", help="Sign and verify every bid (about 165 us each; "
                                   "otherwise bids are counted and priced, not signed)."),
    verification: str = typer.Option("replicate", "--verification", help="The jobs' verification: replicate "
                                     "(k-of-n) or adaptive (a trusted bidder runs alone, spot-checked)."),
    trust_threshold: int = typer.Option(10, "--trust-threshold", help="The CV (consecutive valid results) a bidder "
                                        "needs to run an adaptive job alone."),
    spot_check_floor: float = typer.Option(0.05, "--spot-check-floor", help="The least chance of a spot check of a "
                                           "single run: max(1/CV, this)."),
    strategic: float = typer.Option(0.0, "--strategic", help="Fraction of nodes that are honest until they run an "
                                    "adaptive job alone (trusted), then return a wrong result with --cheat-prob."),
    cheat_prob: float = typer.Option(0.5, "--cheat-prob", help="A strategic cheater's chance of cheating on a job it "
                                     "runs alone (0.5: honest runs that get checked raise its CV toward the floor)."),
    warmup: int = typer.Option(0, "--warmup", help="Replicate jobs run first, so that executors earn trust; not in "
                               "the job figures (the message and ledger counters include them)."),
    seed: int = typer.Option(1, "--seed", help="Seed of the one random generator: same seed, same report."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Simulate a large network on a virtual clock: the real protocol core (signed messages,
    SubmitterJob, sampled bidding, certificate checks, ledgers and their reconciliation) without sockets
    or sandboxes. Reports bids and messages per job, the submitter's CPU per job, time to verdict, the
    share of correct verdicts, distinct ledger views, and its own wall time and peak memory; with
    --verification adaptive, the runs per job, the share of single-run and spot-checked jobs, and
    what strategic cheaters (--strategic) got certified before a spot check caught them.

    Example: distributeai simulate --nodes 100000 --jobs 200 --liars 0.1 --churn 0.1 --json
    """
    if nodes < max(2, replicas) or jobs < 1:
        fail("--nodes must be at least 2 and at least --replicas, --jobs at least 1")
    if not 1 <= quorum <= replicas <= 16:
        fail("--quorum and --replicas must satisfy 1 <= quorum <= replicas <= 16")
    if not 0 <= liars <= 1 or not 0 < bid_probability <= 1:
        fail("--liars must be in [0, 1] and --bid-probability in (0, 1]")
    if sample_factor < 0 or size_estimate not in ("dht", "true") or sampled_window_ms < 1 or reconcile_s < 0:
        fail("--sample-factor and --reconcile-s must be >= 0, --sampled-window-ms >= 1, --size-estimate dht or true")
    if churn < 0 or downtime_s <= 0 or latency_ms <= 0 or job_rate <= 0 or run_ms <= 0:
        fail("--churn must be >= 0; --downtime-s, --latency-ms, --job-rate and --run-ms > 0")
    if verification not in ("replicate", "adaptive") or not 1 <= trust_threshold <= 1_000_000 or warmup < 0:
        fail("--verification must be replicate or adaptive, --trust-threshold in [1, 1000000], --warmup >= 0")
    if not 0 <= spot_check_floor <= 1 or not 0 <= strategic <= 1 - liars or not 0 <= cheat_prob <= 1:
        fail("--spot-check-floor and --cheat-prob must be in [0, 1], --strategic in [0, 1 - --liars]")
    from distributeai.consensus.submitter import Timing
    from distributeai.tools.simreport import describe, run_simulation
    from distributeai.tools.simulation import SimConfig

    report = run_simulation(SimConfig(
        nodes=nodes, jobs=jobs, liars=liars, collude=collude, churn_per_min=churn, downtime_s=downtime_s,
        latency_ms=latency_ms, job_rate_per_s=job_rate, run_ms=run_ms, replicas=replicas, quorum=quorum,
        bid_probability=bid_probability, sign_bids=sign_bids, sample_factor=sample_factor,
        size_estimate=size_estimate, timing=Timing(sampled_bid_window_ms=sampled_window_ms),
        reconcile=not no_reconcile, reconcile_s=reconcile_s, verification=verification,
        trust_threshold=trust_threshold, spot_check_floor=spot_check_floor, strategic=strategic, cheat_prob=cheat_prob,
        warmup=warmup, seed=seed))
    if as_json:
        typer.echo(json.dumps(report))
        return
    for line in describe(report):
        typer.echo(line)


def fuzz_command(
    inputs: int = typer.Option(100_000, "--inputs", help="Mutated inputs per decoder."),
    decoder: list[str] = typer.Option([], "--decoder", help="A decoder to fuzz; repeatable. Default all of them."),
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
    from distributeai.tools.fuzz import decoder_names, fuzz_report

    if inputs < 1:
        fail("--inputs must be at least 1")
    known = decoder_names()
    for name in decoder:
        if name not in known:
            fail(f"--decoder {name!r} is not one of {', '.join(known)}")
    result = fuzz_report(inputs, decoder, seed, findings_dir)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        print_report(result)
    raise typer.Exit(1 if result["findings"] else 0)


def print_report(result: dict) -> None:
    """The fuzz report as a table: one line per decoder, one per finding, then the totals."""
    typer.echo(f"{'decoder':15} {'inputs':>8} {'accepted':>8} {'rejected':>8} {'max cpu ms':>10} "
               f"{'inputs/s':>9}  rejected by reason")
    for d in result["decoders"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
        typer.echo(f"{d['decoder']:15} {d['inputs']:8} {d['accepted']:8} {d['rejected']:8} {d['max_cpu_ms']:10.2f} "
                   f"{d['inputs_per_s']:9.0f}  {reasons}")
        for f in d["finding_details"]:
            typer.echo(f"  FINDING #{f['index']}: {f['error']} at {f['where']} (input sha256 {f['input_sha256'][:16]}, "
                       f"{f['input_len']} bytes)")
    typer.echo(f"{result['findings']} findings; {result['seconds']} s")


def sandbox_time(
    backends: list[str] = typer.Argument(None, help="Backends to time. Default docker bwrap wasm process."),
    runs: int = typer.Option(10, help="Timed runs per backend, after one warm-up run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Time a trivial job (the demo hash) run directly in each sandbox, without the network:
    start->exit (the sandbox's own measure) and the whole run() call, median and min.

    Example: DOCKER_HOST=unix:///tmp/dai-docker/docker.sock distributeai sandbox-time docker bwrap --runs 10
    """
    from distributeai.tools.sandbox_time import time_backends

    figures = time_backends(backends, runs)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    for kind, f in figures.items():
        if "error" in f:
            typer.echo(f"{kind:8} unavailable: {f['error']}")
        else:
            typer.echo(f"{kind:8} start->exit median {f['start_exit_ms_median']:8.2f} ms (min {f['start_exit_ms_min']:.2f});"
                       f" whole run() median {f['run_ms_median']:8.2f} ms")


def devnet(
    nodes: int = typer.Option(3, help="Number of nodes."),
    sandbox: str = typer.Option("auto", help="The nodes' sandbox for container jobs: auto (docker if its daemon answers, else bwrap, as for `node start`), docker, bwrap or process."),
    data_dir: Path = typer.Option(Path(".run/devnet"), "--data-dir", help="Where the network keeps its data (reset at start)."),
    demo: bool = typer.Option(False, "--demo", help="Submit the demo job, print its verified result, and stop."),
    repeat: int = typer.Option(1, "--repeat", help="With --demo: submit it this many times and print timings."),
    keep: bool = typer.Option(False, "--keep", help="With --demo: keep the network running afterwards until Ctrl-C."),
) -> None:
    """Run a bootstrap and N nodes on 127.0.0.1 as separate processes.

    Example: distributeai devnet --nodes 3 --sandbox docker --data-dir .run/demo --demo
    """
    import subprocess

    from distributeai.tools.devnet import DEMO_COMMAND, Devnet, DevnetError, reset

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


def _data_bench(data: str, as_json: bool, through_jobs: bool = False) -> None:
    from .config import parse_size

    size = parse_size(data)
    if size is None or size < 1:
        fail(f"--data must be a size in bytes, or with a unit (256m, 1g), got {data!r}")
    from distributeai.tools.databench import run_data_bench

    result = run_data_bench(size)
    if through_jobs:
        import tempfile

        from distributeai.tools.databench_jobs import run_jobs_bench

        with tempfile.TemporaryDirectory(prefix="dai-databench-jobs-") as root:
            result["jobs"] = run_jobs_bench(size, Path(root))
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{size} bytes ({result['cid']}): import {result['import_mb_per_s']} MB/s")
    for key in ("one_provider", "two_providers"):
        r = result[key]
        typer.echo(f"fetch from {r['providers']}: {r['mb_per_s']} MB/s whole get ({r['fetch_mb_per_s']} MB/s fetch), "
                   f"{r['cpu_s_per_gib_fetcher']} CPU-s/GiB fetcher, {r['cpu_s_per_gib_providers']} providers, "
                   f"peak RSS +{r['peak_rss_growth_mb']} MB")
    typer.echo(f"a provider killed mid-way: {'completed' if result['provider_killed']['kill_ok'] else 'FAILED'} "
               f"{result['provider_killed']}")
    if through_jobs:
        from distributeai.tools.databench_jobs import lines

        for line in lines(result["jobs"]):
            typer.echo(line)

