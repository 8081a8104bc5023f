"""`distributeai bench --data SIZE`: how fast data moves by CID between nodes, on this machine.

Starts a bootstrap and 4 node processes on 127.0.0.1 (`Devnet`), writes a SIZE file of random
bytes, and measures, each figure from the processes' own counters:
- import: `blob add` on n1 (chunking, hashing, block files): MB/s;
- one provider: n2 fetches it from n1 (`blob get --from n1`): MB/s of the whole get (fetch, then
  export to a file), and of the fetch alone; CPU-seconds per GiB of the fetcher and of the
  provider; the fetcher's peak RSS growth during the get (VmHWM, reset before it through
  /proc/PID/clear_refs);
- two providers: n3 fetches it from n1 and n2 at once: the same figures;
- a provider killed: n4 fetches from n1 and n2 and n1 gets SIGKILL once a third has arrived; the
  get must complete from n2 (`kill_ok`, and the bytes written match the CID's size).
Blocks already held are never fetched, so each fetch is from a node that holds nothing of it.
Speed belongs here, not in timed tests: the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from distributeai.cli.transfer_bar import transfers
from distributeai.node.control import call
from distributeai.node.paths import control_path

from .bench import _cpu_seconds
from .devnet import Devnet

MB = 1e6
GIB = float(1 << 30)


def _rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(os.urandom(n))
            left -= n


class _Net:
    def __init__(self, net: Devnet) -> None:
        self.net = net
        self.pids = [p.pid for p in net.node_procs]
        self.ids = [info["peer_id"] for info in net.node_info]

    def op(self, i: int, request: dict) -> dict:
        answer = call(control_path(self.net.node_dirs[i]), request, timeout=None)
        if "error" in answer:
            raise RuntimeError(f"node {i + 1}: {answer['error']}")
        return answer

    def fetch(self, i: int, cid: str, out: Path, providers: list[int], size: int) -> dict:
        """One `blob get` on node i from `providers`, with the figures of the module docstring."""
        pids = [self.pids[i]] + [self.pids[p] for p in providers]
        cpu0 = [_cpu_seconds(pid) for pid in pids]
        rss0 = _rss_kb(self.pids[i], "VmRSS")
        reset = _reset_peak(self.pids[i])
        started = time.perf_counter()
        answer = self.op(i, {"op": "blob_get", "cid": cid, "out": str(out), "providers": [self.ids[p] for p in providers]})
        wall = time.perf_counter() - started
        cpu = [_cpu_seconds(pid) - c for pid, c in zip(pids, cpu0)]
        return {
            "providers": len(providers), "wall_s": round(wall, 2), "mb_per_s": round(size / MB / wall, 1),
            "fetch_s": answer.get("fetch_s"), "fetch_mb_per_s": round(size / MB / answer["fetch_s"], 1)
            if answer.get("fetch_s") else None,
            "cpu_s_per_gib_fetcher": round(cpu[0] * GIB / size, 2),
            "cpu_s_per_gib_providers": [round(c * GIB / size, 2) for c in cpu[1:]],
            "peak_rss_growth_mb": round((_rss_kb(self.pids[i], "VmHWM") - rss0) / 1024, 1) if reset else None,
            "written": out.stat().st_size,
        }


def kill_mid_way(net: Devnet, fetcher: int, victim_pid: int, at_bytes: float, killed: threading.Event) -> None:
    """SIGKILL `victim_pid` once node `fetcher`'s `blob get` has received `at_bytes` (its
    `transfers` control op), and set `killed`; give up when `killed` is set by the caller (the
    fetch ended first) or after 600 s."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not killed.is_set():
        rows = [r for r in transfers(net.node_dirs[fetcher], timeout=10) if r["kind"] == "fetch"]
        if rows and sum(r["bytes"] for r in rows) >= at_bytes:
            os.kill(victim_pid, signal.SIGKILL)
            killed.set()
            return
        time.sleep(0.05)  # sampling the transfer's progress, not synchronization


def run_data_bench(size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="dai-databench-") as root, \
            Devnet(Path(root) / "net", nodes=4, sandbox="process", log_level="warning") as net:
        net.start()
        net.wait_connected(timeout=60)
        n = _Net(net)
        src = Path(root) / "data.bin"
        _write_random(src, size)
        started = time.perf_counter()
        added = n.op(0, {"op": "blob_add", "path": str(src)})
        import_s = time.perf_counter() - started
        cid = added["cid"]
        one = n.fetch(1, cid, Path(root) / "one.bin", [0], size)
        two = n.fetch(2, cid, Path(root) / "two.bin", [0, 1], size)
        (Path(root) / "one.bin").unlink()
        (Path(root) / "two.bin").unlink()

        # A provider killed a third of the way through.
        killed = threading.Event()
        watcher = threading.Thread(target=kill_mid_way, args=(net, 3, n.pids[0], size / 3, killed), daemon=True)
        watcher.start()
        try:
            survived = n.fetch(3, cid, Path(root) / "four.bin", [0, 1], size)
            kill = {"kill_ok": killed.is_set() and survived["written"] == size, "killed_mid_way": killed.is_set(),
                    **{k: survived[k] for k in ("wall_s", "mb_per_s")}}
        except RuntimeError as exc:
            kill = {"kill_ok": False, "error": str(exc)}
        killed.set()
        return {"size": size, "cid": cid, "import_s": round(import_s, 2),
                "import_mb_per_s": round(size / MB / import_s, 1), "one_provider": one, "two_providers": two,
                "provider_killed": kill}
