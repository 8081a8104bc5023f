"""`distributeai bench`: measure the whole system in one run, on this machine.

Starts its own bootstrap and N node processes on 127.0.0.1 (`Devnet`), runs M jobs with C in
flight (submitted round-robin from the nodes, each signed with that node's key and handed to its
control API), tears everything down, and reports:

- latency_ms p50/p95/p99: submit -> verified, as the submitting client sees it;
- jobs_per_s: verified jobs over the wall time of the whole batch;
- cpu_s_per_job: user+system CPU of every process (bootstrap and nodes) over the run, per job
  (cpu_s_per_job_bootstrap: the bootstrap's share);
- messages_per_job: gossip publishes plus request/response requests sent, summed over nodes;
- bytes_per_job: loopback traffic over the run (the machine's `lo` counters: includes anything
  else on 127.0.0.1 at the time, so it is an upper bound);
- peak_rss_mb: the largest peak RSS (VmHWM) of any node process;
- baseline_ms: the same job run directly in the sandbox (median whole run() of 10), and
  latency_ratio = p50 / baseline_ms.
With `--batch B` every job is a batch of B tasks (the same hash job, each task hashing its own
argument) and the report adds `tasks_per_s` (verified tasks per second of wall time) and
`tasks_verified`; latency is then per batch and baseline_ms per task.
Speed belongs here, not in timed tests: the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from distributeai.consensus.codec import Identity
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import JobSpec, sign
from distributeai.node.control import call
from distributeai.node.paths import control_path, key_path
from distributeai.p2p.identity import load_or_create_key

from .devnet import Devnet

HASHVERIFY = Path(__file__).resolve().parent.parent / "sandbox" / "workloads" / "hashverify.wasm"
DEMO = ["sh", "-c", "echo 'Hello' | sha256sum"]
TASK = ["sh", "-c", 'echo "$1" | sha256sum', "task"]  # a batch task hashes its argument


def _job_doc(sandbox: str, batch: int = 0) -> dict:
    tasks = {"tasks": [[f"item {i}"] for i in range(batch)]} if batch else {}
    free = {"price": 0} if batch else {}  # a price is per task: a large batch would outrun the genesis grant
    if sandbox == "wasm":
        return {"wasm_module": HASHVERIFY.read_bytes(), "command": ["hashverify"],
                "stdin": "" if batch else "Hello\n", "replicas": 3, "quorum": 2, **tasks, **free}
    return {"image": "alpine:latest", "command": TASK if batch else DEMO, "replicas": 3, "quorum": 2, **tasks, **free}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _lo_bytes() -> int:
    base = Path("/sys/class/net/lo/statistics")
    return int((base / "tx_bytes").read_text()) if base.exists() else 0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def baseline_ms(sandbox: str, runs: int = 10, batch: bool = False) -> float:
    from distributeai.sandbox import RunRequest, open_sandbox

    box = open_sandbox(sandbox, log=lambda _: None)
    try:
        if sandbox == "wasm":
            req = RunRequest(image="wasm", command=["hashverify"] + (["item 1"] if batch else []),
                             stdin=b"" if batch else b"Hello\n", wasm_module=HASHVERIFY.read_bytes())
        else:
            req = RunRequest(image="alpine:latest", command=TASK + ["item 1"] if batch else DEMO)
        box.run(req)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            box.run(req)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        box.close()


def run_bench(nodes: int, jobs: int, concurrency: int, sandbox: str, docker_host: str | None = None,
              batch: int = 0) -> dict:
    container = "process" if sandbox == "wasm" else sandbox
    doc = _job_doc(sandbox, batch)
    fields = parse_job(doc)
    module = doc.get("wasm_module") if fields["wasm_cid"] else None
    with tempfile.TemporaryDirectory(prefix="dai-bench-") as root, \
            Devnet(Path(root) / "net", nodes=nodes, sandbox=container, docker_host=docker_host,
                   log_level="warning") as net:
        net.start()
        net.wait_connected(timeout=60)
        # The nodes inherit DISTRIBUTEAI_PASSPHRASE, and encrypt their new keys with it when it is set.
        secret = os.environ.get("DISTRIBUTEAI_PASSPHRASE", "").encode() or None
        identities = [Identity.from_seed(load_or_create_key(key_path(d), secret)) for d in net.node_dirs]
        pids = [p.pid for p in net.procs]
        cpu0 = [_cpu_seconds(pid) for pid in pids]
        msgs0 = sum(sum(net.info(i)["overlay"].get(k, 0) for k in ("gossip_out", "requests_out")) for i in range(nodes))
        lo0 = _lo_bytes()

        def one(n: int) -> tuple[float, str, int]:
            i = n % nodes
            spec = JobSpec(submitter=identities[i].public_key, nonce=os.urandom(16),
                           created_ms=int(time.time() * 1000), **fields)
            started = time.perf_counter()
            request = {"op": "submit", "signed_spec": sign(identities[i], spec).hex()}
            if module is not None:
                request["module"] = module.hex()
            answer = call(control_path(net.node_dirs[i]), request)
            if "error" in answer:
                return (time.perf_counter() - started) * 1000, answer["error"], 0
            view = call(control_path(net.node_dirs[i]), {"op": "wait", "job_id": answer["job_id"], "timeout": 120},
                        timeout=150)
            return (time.perf_counter() - started) * 1000, view.get("status", "?"), view.get("tasks_verified", 0)

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            outcomes = list(pool.map(one, range(jobs)))
        wall = time.perf_counter() - started
        cpu_each = [_cpu_seconds(pid) - before for pid, before in zip(pids, cpu0)]
        cpu = sum(cpu_each)
        msgs = sum(sum(net.info(i)["overlay"].get(k, 0) for k in ("gossip_out", "requests_out")) for i in range(nodes)) - msgs0
        lo = _lo_bytes() - lo0
        peak = max(_peak_rss_mb(pid) for pid in pids[1:])
    latencies = [ms for ms, status, _ in outcomes if status == "verified"]
    statuses: dict[str, int] = {}
    for _, status, _ in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    base = baseline_ms(sandbox, batch=bool(batch))
    p50 = _percentile(latencies, 0.5) if latencies else None
    extra = {}
    if batch:
        tasks_verified = sum(t for _, _, t in outcomes)
        extra = {"batch": batch, "tasks_verified": tasks_verified, "tasks_per_s": round(tasks_verified / wall, 3)}
    return {
        "nodes": nodes, "jobs": jobs, "concurrency": concurrency, "sandbox": sandbox, "outcomes": statuses, **extra,
        "latency_ms": {"p50": p50, "p95": _percentile(latencies, 0.95) if latencies else None,
                       "p99": _percentile(latencies, 0.99) if latencies else None},
        "jobs_per_s": round(len(latencies) / wall, 3),
        "cpu_s_per_job": round(cpu / jobs, 4),
        "cpu_s_per_job_bootstrap": round(cpu_each[0] / jobs, 4),
        "messages_per_job": round(msgs / jobs, 2),
        "bytes_per_job": round(lo / jobs),
        "peak_rss_mb": round(peak, 1),
        "baseline_ms": round(base, 3),
        "latency_ratio": round(p50 / base, 2) if p50 else None,
    }


def render(result: dict) -> str:
    return json.dumps(result)
