"""`distributeai bench --data SIZE --through-jobs`: the same SIZE moved through jobs, not `blob get`.

Starts a bootstrap and 5 node processes on 127.0.0.1 (`Devnet`, process sandbox: no Docker), the
nodes logging at INFO as JSON; n1 submits and runs nothing (it offers less memory than the jobs
ask), so every executor fetches over the network; and measures, each figure from the processes' own counters:
- input: n1 runs `distributeai submit --input FILE` (SIZE random bytes) for a job of 3 replicas,
  quorum 2, that hashes the whole input (`sha256sum < $IN_DIR/data.bin`); the job must verify.
  Per executor: its fetch of the input, MB/s, from the `inputs_fetched` line its node logs
  (node/job_inputs.py: the seconds `fetch_dag` took and the bytes that came over the network) and
  the seconds it took to write the input out for /in; the whole time from the start of `submit`
  (a CLI process: it includes the import of the file on n1) to the verdict; for every node its
  peak RSS growth (VmHWM, reset through /proc/PID/clear_refs before the submit, less the RSS
  then) and CPU-seconds per GiB of SIZE (utime + stime over the job).
- output: a job of 2 replicas, quorum 2, writes SIZE deterministic, non-repeating bytes to
  $OUT_DIR in files of 32 MiB (`PIECE`: the process sandbox caps a file at 64 MiB; a seeded PRNG,
  1 MiB at a time: repeated bytes would be one block). Then
  - one provider: a node that neither ran nor submitted it fetches each file's CID in turn with
    `blob_get` from ONE agreeing executor (the control op behind `blob get --from`, the same
    `fetch_dag` as `job result`, which always asks every agreeing executor);
  - two providers: n1 (the submitter, which holds none of it) fetches the job's files with the
    `result` op and an `out` directory (what `job result --out DIR` sends) from both executors;
  and reports MB/s each way and the ratio two/one.
- a provider killed: another node that holds none of it fetches each file from both executors
  with `blob_get`, and one executor gets SIGKILL half way through the middle file; the fetch must
  complete from the other: the bytes written equal SIZE and each written file's CID
  (outputs_serving.FileCid, the `ipfs add --cid-version 1` CID) is the one the executors certified.
Speed belongs here, not in timed tests: the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from distributeai.node.outputs_serving import FileCid

from .bench import _cpu_seconds
from .databench import GIB, MB, _Net, _reset_peak, _rss_kb, _write_random, kill_mid_way
from .devnet import Devnet

NODES = 5
JOB_MEMORY_MB = 256
INPUT_NAME = "data.bin"
# The output, in files of PIECE bytes: the process sandbox caps a file at 64 MiB (RLIMIT_FSIZE,
# sandbox/process_backend.py FILE_SIZE_LIMIT). Bytes of a seeded PRNG: no two 1 MiB blocks alike.
PIECE = 32 << 20
WRITER = ("import os, random\n"
          "r, left, k, piece = random.Random(7), int(os.environ['SIZE']), 0, int(os.environ['PIECE'])\n"
          "while left:\n"
          "    with open(os.path.join(os.environ['OUT_DIR'], 'part-%04d.bin' % k), 'wb') as f:\n"
          "        n = min(left, piece)\n"
          "        left, k = left - n, k + 1\n"
          "        while n:\n"
          "            f.write(r.randbytes(min(n, 1 << 20)))\n"
          "            n -= min(n, 1 << 20)\n")


def _job_timeout(size: int) -> int:
    """Seconds a job may run (its commit deadline is 30 s more, from the award: the executor's
    input fetch counts against it): generous (2 MB/s) so a loaded machine measures, not fails."""
    return 120 + size // 2_000_000


def _submit(net: Devnet, root: Path, doc: dict, inputs: list[str]) -> str:
    """`distributeai submit -f JOB --no-wait` on n1 (with `--input` each of `inputs`); the job id."""
    job_file = root / f"job{time.monotonic_ns()}.json"
    job_file.write_text(json.dumps(doc))
    args = [sys.executable, "-m", "distributeai.cli.main", "submit", "--data-dir", str(net.node_dirs[0]),
            "-f", str(job_file), "--no-wait", "--json", *[a for i in inputs for a in ("--input", i)]]
    out = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"submit failed: {out.stderr.strip()}")
    return json.loads(out.stdout)["job_id"]


def _wait(n: _Net, job_hex: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline and view.get("status") not in ("verified", "failed", "nondeterministic"):
        view = n.op(0, {"op": "wait", "job_id": job_hex, "timeout": min(30.0, max(1.0, deadline - time.monotonic()))})
    return view


def _logged_fetches(net: Devnet, job_hex: str) -> dict[int, dict]:
    """Node index -> the fields of its `inputs_fetched` log line for the job."""
    found = {}
    for i, d in enumerate(net.node_dirs):
        for line in (d / "log").read_text(errors="replace").splitlines():
            if '"inputs_fetched"' not in line:
                continue
            try:
                fields = json.loads(line)["fields"]
            except (ValueError, KeyError):
                continue
            if fields.get("job_id") == job_hex:
                found[i] = fields
    return found


def _executors(n: _Net, view: dict) -> list[int]:
    """Node indices of the executors whose result agreed with the verdict."""
    agreed = {e["peer_id"] for e in view.get("executors", []) if e.get("agreed")}
    return [i for i, pid in enumerate(n.ids) if pid in agreed]


def input_to_three(net: Devnet, n: _Net, root: Path, size: int) -> dict:
    src = root / INPUT_NAME
    _write_random(src, size)
    doc = {"image": "alpine:latest", "command": ["sh", "-c", f'sha256sum < "$IN_DIR/{INPUT_NAME}"'],
           "replicas": 3, "quorum": 2, "timeout": _job_timeout(size), "memory_mb": JOB_MEMORY_MB,
           "out_max_bytes": 1 << 20}  # it writes no file
    live = list(range(len(n.pids)))
    cpu0 = [_cpu_seconds(n.pids[i]) for i in live]
    rss0 = [_rss_kb(n.pids[i], "VmRSS") for i in live]
    reset = all(_reset_peak(n.pids[i]) for i in live)
    started = time.perf_counter()
    job_hex = _submit(net, root, doc, [f"{src}:{INPUT_NAME}"])
    submitted = time.perf_counter() - started
    view = _wait(n, job_hex, 4 * _job_timeout(size))
    total = time.perf_counter() - started
    cpu = [_cpu_seconds(n.pids[i]) - c for i, c in zip(live, cpu0)]
    growth = [round((_rss_kb(n.pids[i], "VmHWM") - r) / 1024, 1) if reset else None for i, r in zip(live, rss0)]
    src.unlink()
    logged = _logged_fetches(net, job_hex)
    executors = [{"node": i + 1, "fetched_bytes": f["bytes"], "fetch_s": f["fetch_s"],
                  "fetch_mb_per_s": round(size / MB / f["fetch_s"], 1) if f["fetch_s"] else None,
                  "write_s": f["write_s"], "held_blocks": f["held_blocks"]} for i, f in sorted(logged.items())]
    return {"job_id": job_hex, "status": view.get("status"), "reason": view.get("reason"), "stdout": (view.get("stdout") or "").strip(),
            "submit_s": round(submitted, 2), "submit_to_verified_s": round(total, 2), "executors": executors,
            "nodes": [{"node": i + 1, "role": "submitter" if i == 0 else
                       "executor" if i in logged else "observer",
                       "peak_rss_growth_mb": g, "cpu_s_per_gib": round(c * GIB / size, 2)}
                      for i, g, c in zip(live, growth, cpu)]}


def _file_cid(path: Path) -> str:
    from distributeai.consensus.cid import cid_text

    h = FileCid()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return cid_text(h.digest())


def _fetch_pieces(n: _Net, i: int, pieces: list[tuple[str, int]], providers: list[int], where: Path,
                  kill: tuple[Devnet, int, threading.Event] | None = None) -> dict:
    """`_Net.fetch` of each (cid, size) piece on node i in turn, summed; each written file checked
    against its CID, then removed. With `kill` (net, victim node, event): the victim gets SIGKILL
    half way through the middle piece."""
    total = sum(size for _, size in pieces)
    sums = {"wall_s": 0.0, "cpu": 0.0, "written": 0, "peak": 0.0, "cids_match": True}
    for k, (cid, size) in enumerate(pieces):
        if kill is not None and k == len(pieces) // 2:
            net, victim, killed = kill
            threading.Thread(target=kill_mid_way, args=(net, i, n.pids[victim], size / 2, killed), daemon=True).start()
        target = where / f"piece{k}.bin"
        r = n.fetch(i, cid, target, providers, size)
        sums["cids_match"] = sums["cids_match"] and _file_cid(target) == cid
        target.unlink()
        sums["wall_s"] += r["wall_s"]
        sums["cpu"] += r["cpu_s_per_gib_fetcher"] * size / GIB
        sums["written"] += r["written"]
        sums["peak"] = max(sums["peak"], r["peak_rss_growth_mb"] or 0.0)
    return {"providers": len(providers), "wall_s": round(sums["wall_s"], 2),
            "mb_per_s": round(total / MB / sums["wall_s"], 1), "written": sums["written"],
            "cids_match": sums["cids_match"], "cpu_s_per_gib_fetcher": round(sums["cpu"] * GIB / total, 2),
            "peak_rss_growth_mb": sums["peak"]}


def output_from_two(net: Devnet, n: _Net, root: Path, size: int) -> dict:
    doc = {"image": "alpine:latest", "command": ["python3", "-c", WRITER],
           "env": {"SIZE": str(size), "PIECE": str(PIECE)}, "replicas": 2, "quorum": 2,
           "timeout": _job_timeout(size), "memory_mb": JOB_MEMORY_MB, "out_max_bytes": max(size, 1 << 20)}
    job_hex = _submit(net, root, doc, [])
    view = _wait(n, job_hex, 4 * _job_timeout(size))
    if view.get("status") != "verified" or view.get("exit_code") != 0:
        return {"job_id": job_hex, "status": view.get("status"), "exit_code": view.get("exit_code"),
                "error": view.get("reason") or view.get("error") or "the writer failed"}
    files = sorted((f["path"], f["cid"], f["size"]) for f in n.op(0, {"op": "result", "job_id": job_hex})["files"])
    pieces = [(cid, length) for _, cid, length in files]
    executors = _executors(n, view)
    fresh = [i for i in range(1, len(n.pids)) if i not in executors]
    if len(executors) != 2 or len(fresh) < 2 or sum(length for _, length in pieces) != size:
        return {"job_id": job_hex, "status": "verified", "error": f"executors {executors}, fresh {fresh}, files {files}"}

    one = _fetch_pieces(n, fresh[0], pieces, executors[:1], root)
    one["how"] = f"blob get --from one executor (control op blob_get) of each file on fresh node n{fresh[0] + 1}"
    out_dir = root / "two"
    cpu0 = _cpu_seconds(n.pids[0])
    rss0 = _rss_kb(n.pids[0], "VmRSS")
    reset = _reset_peak(n.pids[0])
    started = time.perf_counter()
    answer = n.op(0, {"op": "result", "job_id": job_hex, "out": str(out_dir)})
    wall = time.perf_counter() - started
    written = sum(p.stat().st_size for p in out_dir.iterdir()) if out_dir.exists() else 0
    two = {"providers": 2, "how": "job result --out (control op result with out) on the submitter",
           "wall_s": round(wall, 2), "mb_per_s": round(size / MB / wall, 1), "written": written,
           "not_fetched": answer.get("not_fetched") or [],
           "cpu_s_per_gib_fetcher": round((_cpu_seconds(n.pids[0]) - cpu0) * GIB / size, 2),
           "peak_rss_growth_mb": round((_rss_kb(n.pids[0], "VmHWM") - rss0) / 1024, 1) if reset else None}
    shutil.rmtree(out_dir, ignore_errors=True)

    # An executor killed half way through the middle file of another fetch from both.
    killed = threading.Event()
    victim = executors[0]
    try:
        survived = _fetch_pieces(n, fresh[1], pieces, executors, root, kill=(net, victim, killed))
        kill = {"kill_ok": killed.is_set() and survived["written"] == size and survived["cids_match"],
                "killed_mid_way": killed.is_set(), "killed_node": victim + 1, "fetcher_node": fresh[1] + 1,
                **{k: survived[k] for k in ("written", "cids_match", "wall_s", "mb_per_s")}}
    except RuntimeError as exc:
        kill = {"kill_ok": False, "error": str(exc)}
    killed.set()
    return {"job_id": job_hex, "status": "verified", "files": len(pieces), "executors": [i + 1 for i in executors],
            "one_provider": one, "two_providers": two,
            "ratio_two_to_one": round(two["mb_per_s"] / one["mb_per_s"], 2) if one["mb_per_s"] else None,
            "provider_killed": kill}


def run_jobs_bench(size: int, root: Path) -> dict:
    """Both figures of the module docstring on one fresh network under `root`."""
    # n1 only submits: it offers less memory than the jobs ask, so it bids on neither (a submitter
    # may run its own job, and would then fetch nothing). Every node takes an output of SIZE.
    with Devnet(root / "net", nodes=NODES, sandbox="process", log_level="info",
                extra_args=("--log-format", "json", "--max-output", str(max(size, 1 << 30))),
                node_args={0: ("--memory-mb", str(JOB_MEMORY_MB // 2))}) as net:
        net.start()
        net.wait_connected(timeout=60)
        n = _Net(net)
        return {"nodes": NODES, "input_to_three": input_to_three(net, n, root, size),
                "output_from_two": output_from_two(net, n, root, size)}


def lines(r: dict) -> list[str]:
    """The human lines of `run_jobs_bench`'s result."""
    a, b = r["input_to_three"], r["output_from_two"]
    out = [f"through jobs ({r['nodes']} nodes): an input to 3 executors: {a['status']} in "
           f"{a['submit_to_verified_s']} s from submit (submit itself {a['submit_s']} s)"]
    for e in a["executors"]:
        out.append(f"  executor n{e['node']}: fetch {e['fetch_mb_per_s']} MB/s ({e['fetched_bytes']} bytes in "
                   f"{e['fetch_s']} s), written out for /in in {e['write_s']} s")
    for x in a["nodes"]:
        out.append(f"  n{x['node']} ({x['role']}): peak RSS +{x['peak_rss_growth_mb']} MB, "
                   f"{x['cpu_s_per_gib']} CPU-s/GiB")
    if "error" in b:
        out.append(f"an output from 2 executors: FAILED {b}")
        return out
    one, two = b["one_provider"], b["two_providers"]
    out.append(f"an output ({b['files']} files, executors {b['executors']}) from 1 provider: {one['mb_per_s']} MB/s ({one['how']}); "
               f"from 2: {two['mb_per_s']} MB/s ({two['how']}); ratio {b['ratio_two_to_one']}")
    k = b["provider_killed"]
    out.append(f"an output provider killed mid-way: {'completed' if k['kill_ok'] else 'FAILED'} {k}")
    return out
