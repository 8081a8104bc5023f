"""`job cancel` stops every executor's run (issue 15, item 4).

A real network (a bootstrap and 3 node processes), in Docker and in bubblewrap: a job that would
sleep 300 s runs on all three nodes (the submitter is one of its executors); `distributeai job
cancel` ends it, and every executor's run is gone within seconds: its container (all states, so
removed too) or its bwrap process tree, and the job's /out stage (a tmpfs mount); every node's
`node info` shows no job running and its own record of the run says why it ended. The same nodes
then run and verify a new job. Plus `ExecutorJob`'s `ended` input as pure code (what it stops, what
it leaves alone, a replay after a restart never runs an ended job again), and `Executing` on a real
store with a sandbox whose run lasts until cancelled: the end of a job cancels its run, frees its
slot, sends the submitter nothing, and a restarted node does not run it again."""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from pathlib import Path

import pytest
import trio

from distributeai.consensus.codec import Identity
from distributeai.consensus.executor import make_reveal
from distributeai.consensus.executor_job import (
    ExecutorJob, RunJob, SendCommit, StopRun, apply_input, ended_reason, replay,
)
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.messages import Award, JobSpec, job_id_of, sign
from distributeai.node.clock import now_ms as clock_ms
from distributeai.node.executing import Executing
from distributeai.node.ports import Events, NodeSettings, Ports, Runtime, Sandboxes, Transport
from distributeai.node.store import Store
from distributeai.p2p.identity import peer_id_from_public_key
from distributeai.sandbox.base import RunRequest, SandboxError
from distributeai.tools.devnet import Devnet

from .netfixtures import DEMO_ARGS, DEMO_STDOUT, cli, sandbox_devnet, submit_json, wait_for
from .test_inprocess import FakeSandbox

GONE_S = 30  # cancel -> every run gone; a kill takes milliseconds, a loaded 2-core machine seconds


# --- the real network -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["docker", "bwrap"])
def net(request, tmp_path_factory):
    with sandbox_devnet(request, tmp_path_factory, "cancel") as n:
        n.docker_client = None
        if n.docker_host is not None:
            import docker

            n.docker_client = docker.DockerClient(base_url=n.docker_host, timeout=30)
        yield n
        if n.docker_client is not None:
            n.docker_client.close()


def processes() -> dict[int, tuple[int, str]]:
    """Every process on the host: pid -> (parent pid, start time in ticks)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # it exited while we looked
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        table[int(name)] = (int(fields[1]), fields[19])
    return table


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def bwrap_runs(net: Devnet, token: str) -> dict[int, set[tuple[int, str]]]:
    """Node index -> the processes (pid, start time) of its runs of the job marked by `token`: each
    bwrap process whose argv carries the token, and everything below it (the job itself)."""
    table = processes()
    node_pids = {p.pid: i for i, p in enumerate(net.node_procs)}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    runs: dict[int, set[tuple[int, str]]] = {}
    for pid in table:
        if token.encode() not in cmdline(pid):
            continue
        node, up = None, table[pid][0]
        while up in table and node is None:  # the node that started it
            node, up = node_pids.get(up), table[up][0]
        if node is None:
            continue
        tree, todo = set(), [pid]
        while todo:
            p = todo.pop()
            if p in table:
                tree.add((p, table[p][1]))
                todo += children.get(p, [])
        runs.setdefault(node, set()).update(tree)
    return runs


def alive(procs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Those still there (the same pid started at the same time: never a reused pid)."""
    table = processes()
    return {(pid, start) for pid, start in procs if table.get(pid, (0, ""))[1] == start}


def containers(net: Devnet, token: str, **filters) -> list:
    """The job containers (any state) whose command carries `token`, as the daemon's list rows.

    One list call, no per-container inspect: a container removed between a list and its inspect
    would raise NotFound instead of simply being gone."""
    found = net.docker_client.api.containers(all=True, filters={"label": "distributeai.sandbox=job", **filters})
    return [c for c in found if token in (c.get("Command") or "")]


def stages(net: Devnet) -> list[str]:
    """The /out stages still mounted under the network's data dirs."""
    root = str(net.root.resolve())
    return [line for line in Path("/proc/self/mounts").read_text().splitlines()
            if root in line and ".stage-" in line]


def job_status(net: Devnet, i: int, job_id: str) -> dict:
    out = cli("job", "status", job_id, "--data-dir", str(net.node_dirs[i]), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_cancel_stops_every_executors_run_and_the_nodes_run_the_next_job(net):
    token = f"cancel-{secrets.token_hex(8)}"
    submitted = cli("submit", "--data-dir", str(net.node_dirs[0]), "--no-wait", "--json", "--replicas", "3",
                    "--quorum", "2", "--timeout", "600", "--image", "alpine:latest",
                    "--cmd", "sh", "-c", "sleep 300", token)
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    docker = net.docker_client is not None
    if docker:
        wait_for(lambda: len(containers(net, token, status="running")) == 3, 120, "three running containers")
    else:
        # Each node's tree down to the job itself (`sleep`, exec'd by sh or its child).
        runs = wait_for(lambda: (r := bwrap_runs(net, token)) and len(r) == 3
                        and all(any(cmdline(p).startswith(b"sleep\0") for p, _ in t) for t in r.values()) and r,
                        120, "a bwrap run on each of the three nodes")
        started = set().union(*runs.values())
    assert all(net.info(i)["jobs_running"] == 1 for i in range(3))

    cancelled = time.monotonic()
    out = cli("job", "cancel", job_id, "--data-dir", str(net.node_dirs[0]))
    assert out.returncode == 0, out.stderr
    assert "cancelled" in out.stdout

    if docker:  # killed and removed: gone from `docker ps -a`
        wait_for(lambda: not containers(net, token), GONE_S, "the containers to be gone")
    else:  # every bwrap process of the runs and the job below them
        wait_for(lambda: not alive(started), GONE_S, f"the bwrap processes to be gone: {alive(started)}")
    wait_for(lambda: not stages(net), GONE_S, "the /out stages to be unmounted")
    wait_for(lambda: all(net.info(i)["jobs_running"] == 0 for i in range(3)), GONE_S, "no job running")
    print(f"\n{net.sandbox}: cancel -> every run gone and every slot free in {time.monotonic() - cancelled:.2f} s")
    for i in range(3):
        info = cli("node", "info", "--data-dir", str(net.node_dirs[i]), "--json")
        assert info.returncode == 0 and json.loads(info.stdout)["jobs_running"] == 0, info.stdout
        execution = wait_for(lambda i=i: (e := job_status(net, i, job_id).get("execution"))
                             and e["status"] == "ended" and e, GONE_S, f"node {i} to record the end")
        # Every executor learns it was a cancel: the failed certificate's reason says so.
        assert execution["reason"] == ended_reason("failed", "cancelled"), execution
        assert execution["result"] is None  # nothing ran to an end, nothing was committed
    # The slots are free and nothing was lost: the same three nodes run and agree on a new job.
    view, _ = submit_json(net.node_dirs[0], "--replicas", "3", "--quorum", "3", *DEMO_ARGS)
    assert view["status"] == "verified", view
    assert view["stdout"] == DEMO_STDOUT and sum(e["agreed"] for e in view["executors"]) == 3


# --- ExecutorJob's `ended` input, pure ------------------------------------------------------------

ME = Identity.from_seed(b"\x0a" * 32)
SPEC = JobSpec(submitter=b"s" * 32, nonce=b"n" * 16, created_ms=1, name="t", image="i", command=("x",))
AWARD = Award(b"j" * 32, ME.public_key, 0, 10)
REVEAL = make_reveal(ME, AWARD.job_id, 0, False, b"out")


def job_after(*inputs: tuple[str, bytes, dict]) -> tuple[ExecutorJob, list]:
    job, stored = ExecutorJob(ME, AWARD, SPEC), []
    for at, (kind, raw, meta) in enumerate(inputs):
        apply_input(job, kind, raw, meta, at)
        stored.append((kind, raw, meta, at))
    return job, stored


START, RAN, SENT = ("start", b"", {}), ("ran", REVEAL, {}), ("sent", b"", {})
ENDED = ("ended", b"", {"reason": ended_reason("failed", "cancelled")})


@pytest.mark.parametrize("before, stops", [((), True), ((START,), True), ((START, RAN), False),
                                           ((START, RAN, SENT), False)])
def test_an_unfinished_job_ends_and_a_run_in_progress_is_stopped(before, stops):
    job, _ = job_after(*before)
    actions = apply_input(job, *ENDED, 100)
    assert actions == ([StopRun()] if stops else [])
    assert (job.state, job.reason, job.updated_ms) == ("ended", "cancelled by the submitter", 100)


def test_an_ended_job_commits_reveals_and_withdraws_nothing_and_is_never_run_again():
    job, stored = job_after(START, ENDED)
    assert apply_input(job, "ran", REVEAL, {}, 5) == []  # a run that finished as it was stopped
    assert job.reveal is None and job.commit is None
    assert apply_input(job, "run_failed", b"", {"reason": "cancelled"}, 6) == []  # the sandbox's word for it
    assert apply_input(job, "crashed", b"", {"reason": "internal error"}, 7) == []
    assert (job.state, job.reason) == ("ended", "cancelled by the submitter")
    assert apply_input(job, "start", b"", {}, 8) == []  # a repeated award
    with pytest.raises(Exception, match="not_committed"):
        apply_input(job, "reveal_asked", b"", {}, 9)
    # A restarted node replays what was stored and resumes nothing: the job is not run again.
    again = replay(ME, AWARD, SPEC, stored)
    assert (again.state, again.reason) == ("ended", "cancelled by the submitter")
    assert again.resume(10) == []
    # A commit not yet accepted is not sent again after the end, whatever the submitter answers.
    executed, _ = job_after(START, RAN, ENDED)
    assert apply_input(executed, "unreachable", b"", {}, 11) == []
    assert apply_input(executed, "sent", b"", {}, 12) == [] and executed.state == "ended"


def test_a_finished_part_keeps_its_state():
    revealed, _ = job_after(START, RAN, SENT, ("reveal_asked", b"", {}))
    failed, _ = job_after(START, ("run_failed", b"", {"reason": "image_missing"}))
    for job, state in ((revealed, "revealed"), (failed, "failed")):
        assert apply_input(job, *ENDED, 50) == [] and job.state == state
    ended, _ = job_after(START, ENDED)
    assert apply_input(ended, "ended", b"", {"reason": ended_reason("verified")}, 60) == []
    assert ended.reason == "cancelled by the submitter"  # the first reason stays


def test_without_an_end_a_job_runs_and_commits_as_before():
    job, _ = job_after()
    assert apply_input(job, *START, 1) == [RunJob()]
    [commit] = apply_input(job, *RAN, 2)
    assert isinstance(commit, SendCommit)


def test_the_reasons_say_what_ended_the_job():
    assert ended_reason("failed", "cancelled") == "cancelled by the submitter"
    assert ended_reason("verified") == "verdict reached (verified)"
    assert ended_reason("nondeterministic") == "verdict reached (nondeterministic)"
    assert "failed" in ended_reason("failed")


# --- Executing on a job that ends: its sandbox run is cancelled (real threads, real store) -------

class BlockingBox(FakeSandbox):
    """A sandbox whose runs last until cancelled, as `sleep 300` would."""

    name = "blocking"

    def __init__(self) -> None:
        super().__init__()
        self.started, self._stopped = threading.Event(), threading.Event()
        self.runs: list[str] = []
        self.cancelled: list[str] = []

    def run(self, request: RunRequest):
        self.runs.append(request.run_id)
        self.started.set()
        if not self._stopped.wait(60):
            raise AssertionError("never cancelled")
        raise SandboxError("cancelled", "stopped")

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)
        self._stopped.set()


class Executor:
    """One node's executing role on its ports; `sent` lists what it delivered to the submitter."""

    def __init__(self, store: Store, box: BlockingBox, nursery: trio.Nursery) -> None:
        self.sent: list[str] = []
        self.changed = trio.Event()

        async def deliver(to: bytes, protocol: str, data: bytes) -> bytes:
            self.sent.append(protocol)
            return b""

        async def nothing(*_) -> None:
            return None

        ports = Ports(
            transport=Transport(publish=nothing, deliver=deliver, connect=nothing, connected_peers=lambda: [],
                                remote_ip=lambda _: None, multiaddrs=lambda: []),
            store=store, ledger=Ledger(),
            events=Events(count=lambda _: None, reject=lambda *_, **__: None, notify=self.notify,
                          changed=lambda: self.changed, job_finished=lambda *_: None, sandbox_run=lambda *_: None),
            runtime=Runtime(now_ms=clock_ms, spawn=nursery.start_soon))
        self.executing = Executing(ME, NodeSettings(sandbox_name="blocking"), ports,
                                   Sandboxes({"container": box}, {"container": True}, None))

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, check) -> None:
        with trio.fail_after(30):
            while not check():
                await self.changed.wait()


async def test_a_job_that_ends_has_its_run_cancelled_its_slot_freed_and_is_not_run_after_a_restart(tmp_path):
    submitter = Identity.from_seed(b"\x0b" * 32)
    signed_spec = sign(submitter, JobSpec(submitter=submitter.public_key, nonce=b"n" * 16, created_ms=clock_ms(),
                                          name="t", image="i", command=("sleep", "300")))
    job_id = job_id_of(signed_spec)
    store = Store.open_inline(tmp_path / "node.db")
    await store.insert_job(job_id.hex(), "observer", "t", signed_spec, "announced", clock_ms())
    box = BlockingBox()
    async with trio.open_nursery() as nursery:
        node = Executor(store, box, nursery)
        award = sign(submitter, Award(job_id, ME.public_key, 0, clock_ms() + 60_000))
        await node.executing.handle_award(peer_id_from_public_key(submitter.public_key), award)
        await trio.to_thread.run_sync(box.started.wait, 30)
        assert node.executing.running == 1
        await node.executing.job_ended(b"x" * 32, "verified")  # a job this node does not run: nothing
        assert box.cancelled == [] and node.executing.running == 1
        await node.executing.job_ended(job_id, "failed", "cancelled")
        await node.until(lambda: node.executing.running == 0)
        assert box.cancelled == box.runs and len(box.runs) == 1  # the run in progress, cancelled
        execution = await store.get_execution(job_id.hex())
        assert (execution["status"], execution["reason"]) == ("ended", "cancelled by the submitter")
        assert node.sent == []  # no commit, no withdrawal: the submitter is done with the job
        nursery.cancel_scope.cancel()
    # A restart replays what was stored: the job stays ended and its run never starts again.
    async with trio.open_nursery() as nursery:
        again = Executor(store, box, nursery)
        await again.executing.recover()
        job = await again.executing._job(job_id)
        assert job is not None and job.state == "ended"
        assert again.executing.running == 0 and len(box.runs) == 1
        nursery.cancel_scope.cancel()
