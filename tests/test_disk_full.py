"""Disk is a resource like CPU (issue 14, item 2): a node keeps a reserve of free space, declines
jobs it cannot hold (`disk_low`, `output_too_large`), never dies of a full disk, recovers by itself
when space returns, and removes a job's outputs some time after it ended.

The pure rules run on fakes and trio's autojump clock; the store and the sweeper on a real SQLite
store and real files; the rest on real node processes whose data dir is a small tmpfs the test
mounts (the machine runs as root) and fills itself."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
import trio
import trio.testing

from distributeai.consensus.cid import raw_cid
from distributeai.consensus.messages import JobSpec
from distributeai.consensus.units import human_bytes
from distributeai.node.bidding import DISK_LOW, OUTPUT_TOO_LARGE, BidContext, Capacity, decide
from distributeai.node.blockstore import BlockStore
from distributeai.node.disk import FAILED_WRITE_MARGIN, DiskGuard, rule
from distributeai.node.retention import Pins, due, inline, run_sweeper, sweep, sweep_interval
from distributeai.node.store import Store, StoreFull
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, missing, wait_for

MiB = 1024 * 1024


# --- a small filesystem made by the test ------------------------------------------------------

def mount_tmpfs(path: Path, size_mb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs: {done.stderr.strip()}")


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> None:
    """Write `path` until the filesystem has no room left (ENOSPC)."""
    chunk = b"\0" * 65536
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


@pytest.fixture
def small_fs(tmp_path):
    where = tmp_path / "fs"
    mount_tmpfs(where, 4)
    try:
        yield where
    finally:
        unmount(where)


# --- the disk guard's rule and its loop --------------------------------------------------------

def test_rule():
    assert not rule(10 * MiB, 5 * MiB, False)
    assert rule(4 * MiB, 5 * MiB, False)
    assert rule(5 * MiB + FAILED_WRITE_MARGIN - 1, 5 * MiB, True)
    assert not rule(5 * MiB + FAILED_WRITE_MARGIN, 5 * MiB, True)


def test_guard_logs_each_transition_once_and_counts_failed_writes(caplog):
    free = {"now": 100 * MiB}
    guard = DiskGuard(Path("/data"), 10 * MiB, statvfs_free=lambda _: free["now"])
    caplog.set_level(logging.WARNING, logger="distributeai.node.disk")
    assert not guard.low and guard.headroom() == 90 * MiB
    free["now"] = 1 * MiB
    for _ in range(3):
        guard.check()
        guard.write_failed()
    assert guard.low and guard.store_full == 3 and guard.episodes == 1
    full = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert full == ["data dir /data is full: not bidding until space returns (free 1 MiB, reserve 10 MiB)"]
    free["now"] = 12 * MiB  # above the reserve, but not by the margin a failed write asks for
    assert guard.check()
    free["now"] = 10 * MiB + FAILED_WRITE_MARGIN
    assert not guard.check()
    assert [r.getMessage() for r in caplog.records if "room again" in r.getMessage()] == [
        f"data dir /data has room again: bidding (free {human_bytes(free['now'])}, reserve 10 MiB)"]
    free["now"] = 12 * MiB  # no write failed since: the reserve alone decides
    assert not guard.check()
    assert guard.view() == {"path": "/data", "low": False, "free": 12 * MiB, "reserve": 10 * MiB,
                            "store_full": 3, "low_episodes": 1}


def test_guard_without_a_path_watches_nothing():
    guard = DiskGuard(None)
    guard.write_failed()
    assert not guard.low and not guard.check() and guard.store_full == 1


def test_guard_polls_on_the_clock_and_at_once_after_a_failed_write():
    async def main() -> None:
        free = {"now": 100 * MiB}
        reads: list[float] = []

        def statvfs(_: Path) -> int:
            reads.append(trio.current_time())
            return free["now"]

        guard = DiskGuard(Path("/data"), 10 * MiB, statvfs_free=statvfs)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.run, 2.0)
            await trio.sleep(5)
            assert reads[1:] == [2.0, 4.0]  # the first read is at construction
            free["now"] = 0
            guard.write_failed()
            assert guard.low and reads[-1] == 5.0  # read at once, without waiting out the period
            free["now"] = 100 * MiB
            await trio.sleep(1.5)
            assert not guard.low and reads[-1] == 6.0
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- bidding ----------------------------------------------------------------------------------

def spec(**kw) -> JobSpec:
    base = dict(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=1, name="t", image="alpine:latest",
                command=("true",))
    return JobSpec(**{**base, **kw})


def context(s: JobSpec, **kw) -> BidContext:
    return BidContext(s, Capacity(), 0, True, lambda _: True, **kw)


def test_bidding_declines_a_low_disk_and_outputs_it_cannot_hold():
    ok = spec(out_max_bytes=10 * MiB)
    assert decide(context(ok, disk_headroom=100 * MiB, max_output=64 * MiB)).bid
    low = decide(context(ok, disk_low=True, disk_headroom=0, max_output=64 * MiB))
    assert (low.bid, low.code) == (False, DISK_LOW) and low.reason.startswith("disk_low")
    over_node = decide(context(spec(out_max_bytes=100 * MiB), disk_headroom=1000 * MiB, max_output=64 * MiB))
    assert (over_node.bid, over_node.code) == (False, OUTPUT_TOO_LARGE)
    over_disk = decide(context(ok, disk_headroom=5 * MiB, max_output=64 * MiB))
    assert (over_disk.bid, over_disk.code) == (False, OUTPUT_TOO_LARGE)
    assert "5 MiB free above its reserve" in over_disk.reason
    # Batches and wasm jobs write no /out: their quota asks for no room; a low disk still declines.
    assert decide(context(spec(out_max_bytes=100 * MiB, tasks=(("a",),)), disk_headroom=0, max_output=0)).bid
    assert decide(context(spec(sandbox="wasm", image="", out_max_bytes=100 * MiB, wasm_module=b"\0asm"),
                          disk_headroom=0, max_output=0)).bid
    assert decide(context(spec(sandbox="wasm", image="", wasm_module=b"\0asm"), disk_low=True)).code == DISK_LOW


def test_the_executor_counts_the_quotas_of_the_jobs_it_was_awarded():
    from types import SimpleNamespace

    from distributeai.consensus.codec import Identity
    from distributeai.node.executing import Executing
    from distributeai.node.ports import NodeSettings, Sandboxes

    counted: list[str] = []
    stored: dict[str, str] = {}

    async def set_bid_decision(job_id: str, decision: str) -> None:
        stored[job_id] = decision

    async def offload(fn, *args, **_):
        return fn(*args)

    free = {"now": 60 * MiB}
    ports = SimpleNamespace(
        disk=DiskGuard(Path("/data"), 10 * MiB, statvfs_free=lambda _: free["now"]),
        store=SimpleNamespace(set_bid_decision=set_bid_decision),
        ledger=SimpleNamespace(can_pay=lambda _: True),
        events=SimpleNamespace(count=counted.append),
        runtime=SimpleNamespace(spawn=lambda *_: None), now_ms=lambda: 1)
    box = SimpleNamespace(name="process", has_image=lambda _: True)
    executing = Executing(Identity.from_seed(b"\7" * 32), NodeSettings("process", max_output=64 * MiB), ports,
                          Sandboxes({"container": box}, {"container": True}, offload=offload))
    executing.jobs[b"r"] = SimpleNamespace(state="running", spec=spec(out_max_bytes=30 * MiB))
    executing.jobs[b"d"] = SimpleNamespace(state="revealed", spec=spec(out_max_bytes=30 * MiB))  # ran: on disk

    async def main() -> None:
        await executing.consider(b"\1" * 32, spec(out_max_bytes=30 * MiB), ())
        await executing.consider(b"\2" * 32, spec(out_max_bytes=10 * MiB), ())
        free["now"] = 1 * MiB
        ports.disk.check()
        await executing.consider(b"\3" * 32, spec(out_max_bytes=0), ())

    trio.run(main)
    assert stored[("01" * 32)].startswith("declined: output_too_large")  # 50 MiB of room, 30 promised
    assert stored["02" * 32] == "bid"
    assert stored["03" * 32].startswith("declined: disk_low")
    assert counted == ["declined_output_too_large", "declined_disk_low"]


# --- the store on a full disk -----------------------------------------------------------------

def test_a_full_disk_fails_a_write_cleanly_and_the_store_recovers_when_space_returns(small_fs):
    async def main() -> None:
        store = await Store.open(small_fs / "node.db")
        await store.insert_job("a", "observer", "a", b"spec", "announced", 1)
        fill(small_fs / "filler")
        with pytest.raises(StoreFull, match="database or disk is full|disk I/O error"):
            await store.insert_job("big", "observer", "big", os.urandom(MiB), "announced", 1)
        with pytest.raises(StoreFull):
            for i in range(100):  # whatever room the WAL had, it runs out
                await store.insert_job(f"j{i}", "observer", "n", os.urandom(32 * 1024), "announced", 1)
        assert (await store.get_job("a"))["status"] == "announced"  # reads go on
        (small_fs / "filler").unlink()
        await store.insert_job("big", "observer", "big", b"x" * MiB, "announced", 1)  # the same connection, no restart
        await store.insert_job("b", "observer", "b", b"spec", "announced", 2)
        assert (await store.get_job("big"))["signed_spec"] == b"x" * MiB and await store.get_job("b")
        await store.aclose()
        reopened = await Store.open(small_fs / "node.db")
        assert {"a", "b"} <= {j["job_id"] for j in await reopened.list_jobs()}
        await reopened.aclose()
        fill(small_fs / "filler")  # a clean close removed the WAL: opening needs room for it again
        with pytest.raises(StoreFull, match="cannot open"):
            await Store.open(small_fs / "node.db")

    trio.run(main)


# --- retention --------------------------------------------------------------------------------

async def ran(store: Store, outputs: Path, job: str, at_ms: int, *, certified: bool = True,
              blocks: BlockStore | None = None) -> None:
    await store.insert_job(job, "executor", job, b"spec", "announced", at_ms)
    await store.insert_execution(job, b"award", at_ms)
    (outputs / job).mkdir(parents=True)
    (outputs / job / "out.txt").write_text(job)
    if blocks is not None:  # its output file, as an executor keeps it: a block pinned for the job
        await blocks.put(raw_cid(job.encode()), job.encode(), pin=f"outputs:{job}")
    if certified:
        await store.record_certificate(job, b"cert", "verified", "", at_ms, role_if_new="observer", name=job,
                                       signed_spec=b"spec")


def test_sweep_removes_ended_jobs_outputs_after_the_retention_and_never_a_pinned_one(tmp_path):
    async def main() -> None:
        store = await Store.open(tmp_path / "node.db")
        blocks = await BlockStore.open(tmp_path / "blocks", 1 << 20)
        outputs = tmp_path / "outputs"
        await ran(store, outputs, "old", 1_000, blocks=blocks)
        await ran(store, outputs, "fetched", 1_000, blocks=blocks)
        await ran(store, outputs, "recent", 50_000, blocks=blocks)
        await ran(store, outputs, "running", 1_000, certified=False, blocks=blocks)
        await ran(store, outputs, "failed", 1_000, certified=False, blocks=blocks)
        await store.update_execution("failed", 2_000, status="failed", reason="x")
        clock = {"now": 62_000}
        pins = Pins(lambda: clock["now"], linger_s=30)
        with pins.hold("fetched"):
            assert await sweep(store, outputs, 60, clock["now"], pins, blocks=blocks) == ["failed", "old"]
        assert sorted(p.name for p in outputs.iterdir()) == ["fetched", "recent", "running"]
        # The blocks of the jobs swept are unpinned (evictable), the others' stay pinned.
        assert blocks.stats()["pinned_bytes"] == len("fetched" "recent" "running")
        clock["now"] = 80_000  # 18 s after the fetch ended: still pinned
        assert await sweep(store, outputs, 60, clock["now"], pins, blocks=blocks) == []
        clock["now"] = 111_000
        assert await sweep(store, outputs, 60, clock["now"], pins, blocks=blocks) == ["fetched", "recent"]
        assert [p.name for p in outputs.iterdir()] == ["running"]  # not ended: kept
        assert await store.jobs_ended(["running"]) == {}
        assert blocks.stats()["pinned_bytes"] == len("running")
        await blocks.close()
        await store.aclose()

    trio.run(main)


def test_sweeper_runs_on_the_clock(tmp_path):
    assert due(1_000, 60_000, 61_000) and not due(1_000, 60_000, 60_999)
    assert (sweep_interval(24 * 3600), sweep_interval(60), sweep_interval(0)) == (300, 15, 1)

    async def main() -> None:
        store = Store.open_inline(tmp_path / "node.db")
        outputs = tmp_path / "outputs"
        now = lambda: int(trio.current_time() * 1000)  # noqa: E731
        await ran(store, outputs, "job", now())
        errors: list[tuple] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_sweeper, store, outputs, 3600.0, now, Pins(now), lambda *e: errors.append(e),
                               600.0, inline)
            await trio.sleep(3599)
            assert (outputs / "job").exists()  # sweeps at 600, 1200, ... 3000 s: not due yet
            await trio.sleep(602)
            assert not (outputs / "job").exists()  # the sweep at 3600 s
            nursery.cancel_scope.cancel()
        assert not errors

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- real nodes -------------------------------------------------------------------------------

WRITE_8MB = ["--image", "alpine:latest", "--replicas", "1", "--quorum", "1", "--out-max", "10m",
             "--cmd", "sh", "-c", 'head -c 8000000 /dev/zero > "${OUT_DIR:-/out}/zeros"; echo done']


def submit(net: Devnet, *args: str) -> dict:
    out = cli("submit", "--data-dir", str(net.node_dirs[0]), "--json", *args)
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def job_status(net: Devnet, i: int, job_id: str) -> dict:
    r = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[i]), "--json")
    return json.loads(r.stdout) if r.returncode == 0 else {}


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", ["process", "bwrap"])
def test_a_full_disk_never_ends_the_node_and_it_runs_jobs_again_once_space_returns(tmp_path, request, sandbox):
    if sandbox == "bwrap":
        request.getfixturevalue("bwrap_ready")
    root = tmp_path / "net"
    data = root / "node2"  # the devnet's second node: its data dir is a 64 MiB tmpfs
    mount_tmpfs(data, 64)
    filler = data / "filler"
    try:
        # Node 1 submits and never executes (it accepts no output quota over 1 MiB); node 2 keeps
        # 8 MiB free and is the only one to bid on the jobs here, which may write 10 MiB.
        with Devnet(root, nodes=1, sandbox=sandbox, metrics=True, extra_args=("--max-output", "1m")) as net:
            net.start()
            net.extra_args = ("--disk-reserve", "8m", "--max-output", "64m")
            net.add_nodes(1)
            net.wait_connected()
            node2 = net.node_info[1]["peer_id"]

            first = submit(net, *WRITE_8MB)
            assert first["status"] == "verified", first
            assert [e["peer_id"] for e in first["executors"]] == [node2]
            assert net.info(0)["counters"]["declined_output_too_large"] >= 1

            # The test fills the rest of node 2's filesystem: store writes fail from now on.
            fill(filler)
            wait_for(lambda: net.info(1)["disk"]["low"], 30, "node 2 to see its disk low")
            blocked = submit(net, "--no-wait", *WRITE_8MB)["job_id"]
            # Node 2 either recorded its refusal, or could not even store the announcement: it
            # dropped it and counted the failed write. Either way it bid on nothing and lives on.
            wait_for(lambda: (c := net.info(1)["counters"]).get("declined_disk_low", 0)
                     + c.get("store_full", 0) >= 1, 60, "node 2 to refuse the job")
            assert net.node_procs[1].poll() is None
            assert job_status(net, 0, blocked).get("bids", 0) == 0
            metrics = urllib.request.urlopen(net.info(1)["metrics_url"], timeout=10).read().decode()
            assert "distributeai_disk_low 1.0" in metrics.splitlines()

            # Killed on a full disk (its WAL left behind, as after a power cut), it starts again.
            net.kill_node(1)
            net.restart_node(1)
            assert net.info(1)["disk"]["low"]
            net.wait_connected()

            # A little room, still under the reserve: the refusal is stored, with its reason.
            os.truncate(filler, max(0, filler.stat().st_size - 3 * 1024 * 1024))
            declined = submit(net, "--no-wait", *WRITE_8MB)["job_id"]
            shown = wait_for(lambda: job_status(net, 1, declined).get("bid", "").startswith("declined") and
                             job_status(net, 1, declined), 60, "node 2 to store its refusal")
            assert shown["bid"].startswith("declined: disk_low"), shown
            info = net.info(1)
            assert info["disk"]["low"] and info["disk"]["reserve"] == 8 * MiB
            assert info["counters"]["declined_disk_low"] >= 1

            # Space returns: node 2 bids and runs jobs again, with no restart.
            filler.unlink()
            wait_for(lambda: not net.info(1)["disk"]["low"], 30, "node 2 to see room again")
            again = submit(net, *WRITE_8MB)
            assert again["status"] == "verified", again
            assert [e["peer_id"] for e in again["executors"]] == [node2]
            assert net.node_procs[1].poll() is None

            # A node whose data dir is full when it starts says so in one line.
            net.node_procs[1].terminate()
            net.node_procs[1].wait(timeout=30)
            fill(filler)
            start = cli("node", "start", "--data-dir", str(data), "--sandbox", sandbox,
                        "--pow-difficulty", "16", timeout=120)
            assert start.returncode == 1, start.stderr
            assert "Traceback" not in start.stderr
            assert start.stderr.strip().splitlines()[-1].endswith("start the node again"), start.stderr
    finally:
        unmount(data)


@pytest.mark.slow
def test_outputs_are_removed_after_keep_outputs(tmp_path):
    with Devnet(tmp_path / "net", nodes=1, sandbox="process", extra_args=("--keep-outputs", "2s")) as net:
        net.start()
        job = submit(net, *WRITE_8MB)
        assert job["status"] == "verified" and [f["path"] for f in job["files"]] == ["zeros"], job
        # Kept as blocks, pinned for the job (zeros: one 256 KiB block stands for all but the last chunk).
        assert net.info(0)["blocks"]["pinned_bytes"] > 256 * 1024
        outputs = net.node_dirs[0] / "outputs"
        wait_for(lambda: not (outputs / job["job_id"]).exists(), 60, "the job's outputs to be removed")
        assert net.info(0)["blocks"]["pinned_bytes"] == 0  # and its blocks unpinned: evictable
        assert net.node_procs[0].poll() is None


def test_disk_settings_parse_from_flags_file_and_environment(tmp_path):
    from distributeai.cli.config import ConfigError, load_config

    env = {"HOME": str(tmp_path), "DISTRIBUTEAI_KEEP_OUTPUTS": "90m"}
    cfg = load_config({"disk_reserve": "2g", "max_output": "100MiB"}, env=env)
    assert (cfg.disk_reserve, cfg.max_output, cfg.keep_outputs) == (2 << 30, 100 * MiB, 5400.0)
    defaults = load_config({}, env={"HOME": str(tmp_path)})
    assert (defaults.disk_reserve, defaults.max_output, defaults.keep_outputs) == (1 << 30, 1 << 30, 86400.0)
    for flags in ({"disk_reserve": "lots"}, {"max_output": "-1"}, {"keep_outputs": "1 week"}):
        with pytest.raises(ConfigError, match=next(iter(flags))):
            load_config(flags, env={"HOME": str(tmp_path)})
    bad = cli("node", "start", "--data-dir", str(tmp_path / "n"), "--disk-reserve", "lots", timeout=60)
    assert bad.returncode == 2 and "disk_reserve" in bad.stderr and "Traceback" not in bad.stderr
