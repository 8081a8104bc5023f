"""Several nodes in one process: `Submitting` and `Executing` wired to their ports (node/ports.py)
over an in-memory network, on trio's autojump clock. No sockets, no threads: each node has a real
SQLite store (node/store.py) whose statements run inline, and a fake sandbox whose stdout is
the SHA-256 of the command (a liar's is not), run inline too. The network delivers gossip to every
live node (checked as a node checks it: `check_announce`, `verify_certificate`) and requests to
the live node's handler, each after a small latency.

Only protocol guarantees are asserted: a verdict may be published before the last executor
reveals, so that executor may be left out of it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity, decode_canonical, sha256
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.messages import MAX_ENVELOPE, JobSpec, sign
from distributeai.consensus.names import (
    AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, REVEAL_PROTOCOL, WITHDRAW_PROTOCOL,
)
from distributeai.consensus.submitter import Timing, replay
from distributeai.consensus.validate import check_announce
from distributeai.node import bidding, wire
from distributeai.node.executing import Executing
from distributeai.node.ports import Events, NodeSettings, Ports, Runtime, Sandboxes, Transport
from distributeai.node.store import Store
from distributeai.node.submitting import Submitting
from distributeai.p2p.identity import peer_id_from_public_key
from distributeai.p2p.overlay import RemoteError
from distributeai.sandbox.base import RunRequest, RunResult

EPOCH_MS = 1_800_000_000_000  # the virtual clock's 0, as a wall-clock time (specs carry one)
LATENCY_S = 0.005
TRUTH = b"the answer\n"


def now_ms() -> int:
    return EPOCH_MS + int(trio.current_time() * 1000)


class FakeSandbox:
    """stdout is the SHA-256 of the command (a liar's: something else); `on_run` may act first."""

    name = "fake"

    def __init__(self, liar: bool = False, on_run=None) -> None:
        self.liar, self.on_run, self.runs = liar, on_run, 0

    def check(self) -> None:
        pass

    def has_image(self, image: str) -> bool:
        return True

    def pull(self, image: str) -> None:
        pass

    def cancel(self, run_id: str) -> None:
        pass

    def run(self, request: RunRequest) -> RunResult:
        self.runs += 1
        if self.on_run is not None:
            self.on_run()
        out = b"a lie\n" if self.liar else sha256(" ".join(request.command).encode()).hex().encode() + TRUTH
        return RunResult(0, out, b"", False, False, False, False, 0.01, "fake")


async def inline(fn, *args, limiter=None, on_cancel=None):
    return fn(*args)


class Node:
    """One node's two roles on its ports; `start` (again after `stop`) runs them from the store."""

    def __init__(self, net: "Network", index: int, tmp: Path, *, price: int = 1, sandbox: FakeSandbox) -> None:
        self.net, self.index = net, index
        self.identity = Identity.from_seed(bytes([index + 1]) * 32)
        self.me = self.identity.public_key
        self.peer_id = peer_id_from_public_key(self.me)
        self.store = Store.open_inline(tmp / f"node{index}.db")
        self.settings = NodeSettings(sandbox_name="fake", price=price, timing=Timing())
        self.sandbox = sandbox
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self.changed = trio.Event()
        self.scope: trio.CancelScope | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> None:
        """Fresh roles over the same store, a fresh ledger (folded as the agent does at start)."""
        self.ledger = Ledger(genesis=self.settings.genesis_credits)
        for event in await self.store.ledger_events():
            if event["kind"] == "certificate":
                self.ledger.apply_certificate(verify_certificate(event["raw"]), event["at_ms"])
            else:
                self.ledger.apply_offence(event["peer"])
        node_nursery = self.nursery = await nursery.start(self._run)
        ports = Ports(
            transport=Transport(publish=self.publish, deliver=self.deliver, connect=self._connect,
                                connected_peers=lambda: [n.peer_id for n in self.net.live() if n is not self],
                                remote_ip=self.net.ip_of, multiaddrs=lambda: [f"/memory/{self.index}"]),
            store=self.store, ledger=self.ledger,
            events=Events(count=lambda what: self.counters.update([what]),
                          reject=lambda reason, detail="", **_: self.rejected.update([reason]),
                          notify=self.notify, changed=lambda: self.changed,
                          job_finished=lambda *_: None, sandbox_run=lambda *_: None),
            runtime=Runtime(now_ms=now_ms, spawn=node_nursery.start_soon),
        )
        self.executing = Executing(self.identity, self.settings, ports,
                                   Sandboxes({"container": self.sandbox}, {"container": True}, None, offload=inline))
        self.submitting = Submitting(self.identity, self.settings, ports, self.executing.consider,
                                     self.executing.job_ended)
        self.handlers = {BID_PROTOCOL: self.submitting.handle_bid, COMMIT_PROTOCOL: self.submitting.handle_commit,
                         WITHDRAW_PROTOCOL: self.submitting.handle_withdraw,
                         AWARD_PROTOCOL: self.executing.handle_award, REVEAL_PROTOCOL: self.executing.handle_reveal}
        await self.submitting.recover()
        await self.executing.recover()
        node_nursery.start_soon(self.submitting.run_deadlines)

    async def _run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as self.scope:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await trio.sleep_forever()

    def stop(self) -> None:
        """The process ends: every task of the node is cancelled; the store stays."""
        self.scope.cancel()
        self.scope = None

    @property
    def up(self) -> bool:
        return self.scope is not None

    async def _connect(self, addr: str) -> None:
        pass

    async def publish(self, data: bytes) -> None:
        self.counters["gossip_out"] += 1
        for node in self.net.live():
            if node is not self:  # handled in a task of the receiving node, ended with it
                node.nursery.start_soon(node.on_gossip, data, self.peer_id)

    async def on_gossip(self, data: bytes, from_peer: str) -> None:
        await trio.sleep(LATENCY_S)
        try:
            if decode_canonical(data, MAX_ENVELOPE)[0] == "announce":
                ann = check_announce(data, now_ms(), 0, self.net.key_of(from_peer))
                if await self.store.insert_job(ann.job_id.hex(), "observer", ann.spec.name, ann.signed_spec,
                                               "announced", now_ms(), list(ann.submitter_addrs), announce=data):
                    await self.executing.consider(ann.job_id, ann.spec, ann.submitter_addrs)
            else:
                cert = verify_certificate(data)
                if await self.store.record_certificate(cert.job_id.hex(), data, cert.status, "", now_ms(),
                                                       role_if_new="observer", name=cert.spec.name,
                                                       signed_spec=cert.signed_spec):
                    self.ledger.apply_certificate(cert, now_ms())
        except RemoteProtocolError as exc:
            self.rejected[exc.reason] += 1

    async def deliver(self, to: bytes, protocol: str, data: bytes) -> bytes:
        target = self.net.by_key.get(to)
        if target is not self:
            await trio.sleep(LATENCY_S)
        if target is None or not target.up or not self.up:
            raise RemoteError("unreachable")
        answer = await target.serve(protocol, self.peer_id, data)
        if target is not self:
            await trio.sleep(LATENCY_S)
        return wire.parse_answer(answer)


    async def serve(self, protocol: str, peer: str, data: bytes) -> bytes:
        """Answer a request in a task of this node (ended with it, as a process's would be)."""
        answer: list[bytes] = []
        done = trio.Event()

        async def handle() -> None:
            try:
                answer.append(await self.handlers[protocol](peer, data))
            except RemoteProtocolError as exc:
                self.rejected[exc.reason] += 1
                answer.append(wire.refuse(exc.reason))
            finally:
                done.set()

        self.nursery.start_soon(handle)
        await done.wait()
        if not answer:
            raise RemoteError("the peer went away")
        return answer[0]


class Network:
    def __init__(self, nursery: trio.Nursery, tmp: Path) -> None:
        self.nursery, self.tmp = nursery, tmp
        self.nodes: list[Node] = []
        self.by_key: dict[bytes, Node] = {}

    async def add(self, *, price: int = 1, sandbox: FakeSandbox | None = None) -> Node:
        node = Node(self, len(self.nodes), self.tmp, price=price, sandbox=sandbox or FakeSandbox())
        self.nodes.append(node)
        self.by_key[node.me] = node
        await node.start(self.nursery)
        return node

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.up]

    def key_of(self, peer_id: str) -> bytes:
        return next(n.me for n in self.nodes if n.peer_id == peer_id)

    def ip_of(self, peer_id: str) -> str:
        return f"10.{next(n.index for n in self.nodes if n.peer_id == peer_id)}.0.1"  # one /24 each


def make_spec(node: Node, **fields) -> bytes:
    spec = JobSpec(submitter=node.me, nonce=b"n" * 16, created_ms=now_ms(), name="t", image="fake",
                   command=("echo", "hi"), result_deadline_s=20, **fields)
    return sign(node.identity, spec)


async def until_done(node: Node, job_id: bytes, timeout_s: float = 600) -> str:
    """Wait (virtual time) for the submitter's verdict on the job, and its certificate in the
    submitter's ledger (folded in just after the verdict is stored)."""
    with trio.fail_after(timeout_s):
        while not node.submitting.jobs[job_id].done or job_id not in node.ledger.applied:
            await node.changed.wait()
    return node.submitting.jobs[job_id].state


def honest_stdout() -> bytes:
    return sha256(b"echo hi").hex().encode() + TRUTH


async def network(nursery, tmp_path, n: int, special: dict | None = None) -> tuple[Network, list[Node]]:
    net = Network(nursery, tmp_path)
    nodes = [await net.add(**(special or {}).get(i, {})) for i in range(n)]
    return net, nodes


async def test_a_job_verifies(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        net, nodes = await network(nursery, tmp_path, 4)
        job_id = await nodes[0].submitting.submit(make_spec(nodes[0]))
        assert await until_done(nodes[0], job_id) == "verified"
        job = nodes[0].submitting.jobs[job_id]
        assert len(job.result.agreeing) >= job.spec.quorum
        assert all(job.reveals[e].msg.stdout == honest_stdout() for e in job.result.agreeing)
        nursery.cancel_scope.cancel()


async def test_a_vanished_executor_is_replaced(autojump_clock, tmp_path):
    """2-of-2: the first other node to start the job ends (its process is gone) as it starts it:
    its award deadline passes and another node is awarded in its place."""
    async with trio.open_nursery() as nursery:
        gone: list[Node] = []

        def vanish(i: int):
            def on_run() -> None:
                if not gone:
                    gone.append(net.nodes[i])
                    net.nodes[i].stop()
            return {"sandbox": FakeSandbox(on_run=on_run)}

        net, nodes = await network(nursery, tmp_path, 5, {i: vanish(i) for i in range(1, 5)})
        job_id = await nodes[0].submitting.submit(make_spec(nodes[0], replicas=2, quorum=2))
        assert await until_done(nodes[0], job_id) == "verified"
        job = nodes[0].submitting.jobs[job_id]
        assert len(gone) == 1 and job.slot[gone[0].me] not in ("awarded", "committed", "revealed")
        assert gone[0].me not in job.result.agreeing and len(job.result.agreeing) == 2
        assert len(job.awards) == 3  # the replacement
        nursery.cancel_scope.cancel()


async def test_a_liar_is_outvoted(autojump_clock, tmp_path):
    """2-of-3 with every node awarded (three nodes): the liar's result loses."""
    async with trio.open_nursery() as nursery:
        liar = FakeSandbox(liar=True)
        net, nodes = await network(nursery, tmp_path, 3, {1: {"sandbox": liar}})
        job_id = await nodes[0].submitting.submit(make_spec(nodes[0]))
        assert await until_done(nodes[0], job_id) == "verified"
        job = nodes[0].submitting.jobs[job_id]
        assert liar.runs == 1 and nodes[1].me in job.awards
        assert all(job.reveals[e].msg.stdout == honest_stdout() for e in job.result.agreeing)
        assert nodes[1].me not in job.result.agreeing
        if nodes[1].me in job.reveals:  # it may be left out if the verdict came first
            assert nodes[1].me in job.result.dissenting
            assert nodes[0].ledger.reputation_of(nodes[1].me) < 0
        nursery.cancel_scope.cancel()


async def test_a_restart_replays_to_the_same_state(autojump_clock, tmp_path):
    """The submitter's process ends once its job is awarded, and so do its executors'; new roles
    over the same stores rebuild the same jobs from the stored inputs, and the job still verifies."""
    async with trio.open_nursery() as nursery:
        net, nodes = await network(nursery, tmp_path, 4)
        sub = nodes[0]
        job_id = await sub.submitting.submit(make_spec(sub))
        with trio.fail_after(60):
            while sub.submitting.jobs[job_id].state == "bidding":
                await sub.changed.wait()
        before = sub.submitting.jobs[job_id]
        sub.stop()
        others = [n for n in nodes[1:] if n.me in before.awards]
        for node in others:  # its executors' processes end at the same moment
            node.stop()
        await trio.sleep(0)
        stored = replay(sub.identity, sub.settings.timing, await sub.store.inputs(job_id.hex()))
        assert (stored.state, stored.slot, stored.history) == (before.state, before.slot, before.history)
        assert {e: s.raw for e, s in stored.awards.items()} == {e: s.raw for e, s in before.awards.items()}
        for node in others:  # recover(): run again what was awarded and not run, or not accepted
            await node.start(nursery)
        await sub.start(nursery)  # recover(): the same job, awards re-sent (receivers are idempotent)
        again = sub.submitting.jobs[job_id]
        assert (again.state, again.slot, again.history) == (before.state, before.slot, before.history)
        assert await until_done(sub, job_id) == "verified"
        # Every executor's restart, too, rebuilds what it had from its stored inputs.
        for node in nodes:
            live = node.executing.jobs.get(job_id)
            if live is None:
                continue
            node.stop()
            await trio.sleep(0)
            await node.start(nursery)
            rebuilt = await node.executing._job(job_id)
            assert (rebuilt.state, rebuilt.reveal, rebuilt.commit) == (live.state, live.reveal, live.commit)
        nursery.cancel_scope.cancel()


def test_bidding_docstring_lists_the_predicates_in_order():
    table = [line.split()[0] for line in bidding.__doc__.splitlines()
             if line.startswith("    ") and line.split()[0] in {p.__name__ for p in bidding.PREDICATES}]
    assert table == [p.__name__ for p in bidding.PREDICATES]


@pytest.mark.parametrize("field, value, code", [
    ("submitter_can_pay", False, bidding.SUBMITTER_CANNOT_PAY), ("sandbox_ok", False, bidding.NO_SANDBOX),
    ("gpu_ok", False, bidding.NO_GPU), ("running", 99, bidding.BUSY),
    ("image_ok", lambda _: False, bidding.IMAGE_MISSING),
])
def test_each_refusal_has_its_code(field, value, code):
    spec = JobSpec(submitter=b"s" * 32, nonce=b"n" * 16, created_ms=1, name="t", image="i", command=("x",))
    ctx = dict(spec=spec, capacity=bidding.Capacity(), running=0, sandbox_ok=True, image_ok=lambda _: True)
    decision = bidding.decide(bidding.BidContext(**{**ctx, field: value}))
    assert (decision.bid, decision.code) == (False, code)


# --- ExecutorJob on its own (pure: inputs in, actions out) ------------------------------------

def test_executor_job_retries_then_gives_up_and_replays_the_same():
    from distributeai.consensus.executor import make_reveal
    from distributeai.consensus.executor_job import (
        SEND_RETRIES, AnswerReveal, ExecutorJob, RunJob, SendCommit, apply_input, replay,
    )
    from distributeai.consensus.messages import Award

    me = Identity.from_seed(b"\x07" * 32)
    spec = JobSpec(submitter=b"s" * 32, nonce=b"n" * 16, created_ms=1, name="t", image="i", command=("x",))
    award = Award(b"j" * 32, me.public_key, 0, 10)
    job = ExecutorJob(me, award, spec)
    reveal = make_reveal(me, award.job_id, 0, False, b"out")
    inputs = [("start", b"", {}, 1), ("ran", reveal, {}, 2)]
    assert apply_input(job, "start", b"", {}, 1) == [RunJob()]
    assert apply_input(job, "start", b"", {}, 1) == []  # a repeated award changes nothing
    [commit] = apply_input(job, "ran", reveal, {}, 2)
    assert isinstance(commit, SendCommit) and commit.delay_ms == 0
    with pytest.raises(RemoteProtocolError):
        ExecutorJob(me, award, spec).reveal_asked(3)  # nothing committed yet: not_committed
    delays = []
    for t in range(SEND_RETRIES):
        inputs.append(("unreachable", b"", {}, 10 + t))
        delays += [a.delay_ms for a in apply_input(job, "unreachable", b"", {}, 10 + t)]
    assert delays == [500 * 2**i for i in range(SEND_RETRIES - 1)]  # then it gives up
    assert job.state == "executed"
    assert apply_input(job, "reveal_asked", b"", {}, 20) == [AnswerReveal(reveal)]  # the commit did arrive
    inputs.append(("reveal_asked", b"", {}, 20))
    again = replay(me, award, spec, inputs)
    state = (job.state, job.reveal, job.commit, job.attempts)
    assert (again.state, again.reveal, again.commit, again.attempts) == state
    assert again.resume(30) == []  # revealed: nothing to do again


def test_executor_job_withdraws_when_the_sandbox_cannot_run_it():
    from distributeai.consensus.executor_job import ExecutorJob, SendWithdraw
    from distributeai.consensus.messages import Award, Withdraw, verify

    me = Identity.from_seed(b"\x08" * 32)
    spec = JobSpec(submitter=b"s" * 32, nonce=b"n" * 16, created_ms=1, name="t", image="i", command=("x",))
    job = ExecutorJob(me, Award(b"j" * 32, me.public_key, 0, 10), spec)
    job.start(1)
    [withdraw] = job.run_failed("image_missing: no such image", 2)
    assert isinstance(withdraw, SendWithdraw) and job.state == "failed"
    assert verify(withdraw.withdraw, Withdraw).msg.reason == "image_missing: no such image"
    assert job.resume(3) == []  # a failed job is not run again
    # An unexpected error before anything was committed (building the reveal, say) withdraws too,
    # so the submitter replaces this executor at once instead of waiting out its deadline.
    crashed = ExecutorJob(me, Award(b"k" * 32, me.public_key, 0, 10), spec)
    crashed.start(1)
    [withdraw] = crashed.crashed("internal error (UnicodeEncodeError)", 2)
    assert isinstance(withdraw, SendWithdraw) and crashed.state == "failed"
    assert verify(withdraw.withdraw, Withdraw).msg.reason == "internal error (UnicodeEncodeError)"


def test_an_execution_stored_before_inputs_existed_replays_from_its_row():
    from distributeai.consensus.executor import make_reveal
    from distributeai.consensus.executor_job import replay as replay_execution
    from distributeai.consensus.messages import Award
    from distributeai.node.executing import stored_as_inputs

    me = Identity.from_seed(b"\x09" * 32)
    spec = JobSpec(submitter=b"s" * 32, nonce=b"n" * 16, created_ms=1, name="t", image="i", command=("x",))
    award = Award(b"j" * 32, me.public_key, 0, 10)
    reveal = make_reveal(me, award.job_id, 0, False, b"out")
    for status, stored_reveal, state in [("awarded", None, "running"), ("running", None, "running"),
                                         ("executed", reveal, "executed"), ("committed", reveal, "committed"),
                                         ("revealed", reveal, "committed"), ("failed", None, "failed")]:
        row = {"status": status, "reveal": stored_reveal, "reason": "", "updated_ms": 5}
        job = replay_execution(me, award, spec, stored_as_inputs(row))
        assert (job.state, job.reveal) == (state, stored_reveal)


def test_the_roles_never_import_the_agent():
    """Submitting and Executing reach the node only through node/ports.py."""
    import ast
    import distributeai.node.executing as executing
    import distributeai.node.submitting as submitting

    for module in (submitting, executing):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {m for m in imported if m and m.split(".")[-1] in ("agent", "daemon")}, module
