"""The node's protocol agent: moves messages between the overlay, the pure core and the sandbox.

Contract:
- Every message from a peer is verified by `consensus` before it touches state. A message that
  fails is answered with a refusal (requests) or dropped (gossip), counted in `rejected[reason]`,
  and changes nothing.
- A submitter job advances only through `SubmitterJob`; each accepted input is written to the
  store (`inputs`) before the actions it caused are carried out, so a restarted node rebuilds the
  job by replaying its inputs and re-issues what may not have been delivered.
- An executor writes its result (and its signed reveal) to the store before it sends the commit.
- Local delivery: when the submitter is also one of its own executors, messages between the two
  roles go through the same handlers without the network.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import trio

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity, decode_canonical
from distributeai.consensus.errors import LocalProtocolError, RemoteProtocolError
from distributeai.consensus.messages import (
    MAX_ENVELOPE, STDOUT_CAP, Announce, Award, Bid, Commit, JobSpec, Reveal, RevealRequest, Signed,
    job_id_of, sign, verify,
)
from distributeai.consensus.names import (
    AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, JOBS_TOPIC, REVEAL_PROTOCOL,
)
from distributeai.consensus.results import result_hash, seal
from distributeai.consensus.submitter import (
    Finished, PublishCertificate, RequestReveal, SendAward, SubmitterJob,
)
from distributeai.consensus.validate import check_announce, check_spec_time
from distributeai.p2p.identity import peer_id_from_public_key
from distributeai.p2p.overlay import GossipMessage, Overlay, RemoteError
from distributeai.sandbox.base import RunRequest, Sandbox, SandboxError

from . import wire
from .bidding import BidContext, Capacity, decide
from .store import Store
from .views import job_view

log = logging.getLogger("distributeai.node")

TERMINAL = ("verified", "failed")
COMMIT_RETRIES = 5
REANNOUNCE_INTERVAL_S = 1.0  # about one gossip heartbeat: the mesh may have changed by then  # the submitter may be briefly unreachable; each try has its own deadline


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class NodeSettings:
    sandbox_name: str
    capacity: Capacity = Capacity()
    price: int = 1
    request_timeout_s: float = 10.0


class Agent:
    def __init__(self, identity: Identity, store: Store, overlay: Overlay, sandbox: Sandbox,
                 settings: NodeSettings) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.peer_id = peer_id_from_public_key(self.me)
        self.store = store
        self.overlay = overlay
        self.sandbox = sandbox
        self.settings = settings
        self.jobs: dict[bytes, SubmitterJob] = {}
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.running = 0
        self._sandbox_limiter = trio.CapacityLimiter(settings.capacity.max_running)
        self._changed = trio.Event()  # set whenever any job changes; waiters re-check
        # Inputs must reach the store in the order they were applied: one at a time.
        self._apply_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._sandbox_ok = True
        try:
            sandbox.check()
        except SandboxError as exc:
            log.warning("sandbox %s unusable, this node will not bid: %s", settings.sandbox_name, exc)
            self._sandbox_ok = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.overlay.set_handler(BID_PROTOCOL, self._guard(self._handle_bid))
            self.overlay.set_handler(AWARD_PROTOCOL, self._guard(self._handle_award))
            self.overlay.set_handler(COMMIT_PROTOCOL, self._guard(self._handle_commit))
            self.overlay.set_handler(REVEAL_PROTOCOL, self._guard(self._handle_reveal))
            await self._recover()
            nursery.start_soon(self._read_gossip)
            nursery.start_soon(self._deadlines)
            task_status.started()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def reject(self, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        log.info("rejected message: %s %s", reason, detail)

    def _guard(self, handler: Callable[[str, bytes], Awaitable[bytes]]) -> Callable[[str, bytes], Awaitable[bytes]]:
        """Turn protocol faults in a request into a counted refusal; nothing else escapes."""

        async def guarded(peer: str, data: bytes) -> bytes:
            try:
                return await handler(peer, data)
            except RemoteProtocolError as exc:
                self.reject(exc.reason, f"from {peer}: {exc.detail}")
                return wire.refuse(exc.reason)

        return guarded

    # --- submitting ---------------------------------------------------------------------------

    async def submit(self, signed_spec: bytes) -> bytes:
        """Announce a job signed by this node's user. Raises LocalProtocolError if it is not."""
        try:
            spec = verify(signed_spec, JobSpec)
            check_spec_time(spec.msg, now_ms())
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, exc.detail) from None
        if spec.signer != self.me:
            raise LocalProtocolError("wrong_signer", "a node announces only jobs signed with its own key")
        job_id = job_id_of(signed_spec)
        now = now_ms()
        if not await self.store.insert_job(job_id.hex(), "submitter", spec.msg.name, signed_spec, "bidding", now):
            raise LocalProtocolError("duplicate", "this job was already submitted")
        await self.store.append_input(job_id.hex(), "start", signed_spec, now)
        job = SubmitterJob(self.identity, signed_spec, spec.msg, started_ms=now)
        self.jobs[job_id] = job
        announce = sign(self.identity, Announce(signed_spec, tuple(self.overlay.multiaddrs())))
        await self.overlay.publish(JOBS_TOPIC, announce)
        self.counters["announced"] += 1
        self._notify()
        await self._consider_bidding(job_id, spec.msg, submitter_peer=self.peer_id)
        assert self._nursery is not None
        self._nursery.start_soon(self._reannounce, job, announce)
        return job_id

    async def _reannounce(self, job: SubmitterJob, announce: bytes) -> None:
        """Gossip is best effort: a publish reaches only the current mesh, and nothing reports a
        loss. While the job still lacks bidders, publish the same announcement again; receivers
        that have it already ignore it."""
        while job.state == "bidding" and len(job.awards) < job.spec.replicas:
            await trio.sleep(REANNOUNCE_INTERVAL_S)  # a retry period, not synchronization
            if job.state == "bidding" and len(job.awards) < job.spec.replicas:
                await self.overlay.publish(JOBS_TOPIC, announce)
                self.counters["reannounced"] += 1

    async def _apply(self, job: SubmitterJob, kind: str, signed: Signed) -> None:
        """Feed one verified input to a submitter job; persist it; then act on it."""
        method = {"bid": job.receive_bid, "commit": job.receive_commit, "reveal": job.receive_reveal}[kind]
        async with self._apply_lock:
            now = now_ms()
            actions = method(signed, now)  # raises RemoteProtocolError and changes nothing
            await self.store.append_input(job.job_id.hex(), kind, signed.raw, now)
            await self._persist(job, now)
        await self._act(job, actions)

    async def _persist(self, job: SubmitterJob, now: int) -> None:
        await self.store.set_job_status(job.job_id.hex(), job.state, job.reason, now, job.certificate)
        self._notify()

    async def _act(self, job: SubmitterJob, actions: list) -> None:
        assert self._nursery is not None
        for action in actions:
            if isinstance(action, SendAward):
                self._nursery.start_soon(self._send_award, job, action)
            elif isinstance(action, RequestReveal):
                self._nursery.start_soon(self._request_reveal, job, action)
            elif isinstance(action, PublishCertificate):
                await self.overlay.publish(JOBS_TOPIC, action.certificate)
                self.counters["certified"] += 1
            elif isinstance(action, Finished):
                log.info("job %s %s %s", job.job_id.hex()[:12], action.status, action.reason)

    async def _deliver(self, executor: bytes, protocol: str, data: bytes) -> bytes:
        """Send a request to a peer, or to this node's own handler when the peer is itself."""
        peer = peer_id_from_public_key(executor)
        if executor == self.me:
            handler = {AWARD_PROTOCOL: self._handle_award, REVEAL_PROTOCOL: self._handle_reveal,
                       BID_PROTOCOL: self._handle_bid, COMMIT_PROTOCOL: self._handle_commit}[protocol]
            answer = await self._guard(handler)(peer, data)
        else:
            answer = await self.overlay.request(peer, protocol, data, timeout=self.settings.request_timeout_s)
        return wire.parse_answer(answer)

    async def _send_award(self, job: SubmitterJob, action: SendAward) -> None:
        try:
            await self._deliver(action.executor, AWARD_PROTOCOL, action.award)
        except (RemoteError, RemoteProtocolError) as exc:
            # The executor's deadline will pass without a commit; the tally proceeds without it.
            log.info("award to %s not delivered: %s", peer_id_from_public_key(action.executor), exc)

    async def _request_reveal(self, job: SubmitterJob, action: RequestReveal) -> None:
        try:
            raw = await self._deliver(action.executor, REVEAL_PROTOCOL, action.request)
            signed = verify(raw, Reveal)
            if signed.signer != action.executor:
                raise RemoteProtocolError("wrong_signer", "reveal signed by another peer")
            await self._apply(job, "reveal", signed)
        except RemoteProtocolError as exc:
            self.reject(exc.reason, f"reveal from {peer_id_from_public_key(action.executor)}")
        except RemoteError as exc:
            log.info("no reveal from %s: %s", peer_id_from_public_key(action.executor), exc)

    async def _deadlines(self) -> None:
        """Advance jobs whose phase deadline has passed. Sleeps until the earliest deadline or
        until any job changes."""
        while True:
            changed = self._changed
            active = [j for j in self.jobs.values() if not j.done]
            if active:
                wait_s = max(0.0, (min(j.phase_deadline_ms for j in active) - now_ms()) / 1000)
            else:
                wait_s = 3600.0
            with trio.move_on_after(wait_s):
                await changed.wait()
            for job in active:
                async with self._apply_lock:
                    now = now_ms()
                    if job.done or job.phase_deadline_ms > now:
                        continue
                    state = job.state
                    actions = job.tick(now)
                    if job.state == state and not actions:
                        continue
                    await self.store.append_input(job.job_id.hex(), "tick", b"", now)
                    await self._persist(job, now)
                await self._act(job, actions)

    # --- handlers of the submitter's side ------------------------------------------------------

    def _own_job(self, job_id: bytes) -> SubmitterJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise RemoteProtocolError("unknown_job", "no such job submitted here")
        return job

    async def _handle_bid(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, Bid)
        if peer_id_from_public_key(signed.signer) != peer:
            raise RemoteProtocolError("wrong_sender", "bid signed by a key other than the sending peer's")
        await self._apply(self._own_job(signed.msg.job_id), "bid", signed)
        self.counters["bids_received"] += 1
        return wire.ok()

    async def _handle_commit(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, Commit)
        if peer_id_from_public_key(signed.signer) != peer:
            raise RemoteProtocolError("wrong_sender", "commit signed by a key other than the sending peer's")
        job = self._own_job(signed.msg.job_id)
        earlier = job.commits.get(signed.msg.executor)
        if earlier is not None and earlier.raw == signed.raw:
            return wire.ok()  # a retry whose first answer was lost: already applied, not an offence
        await self._apply(job, "commit", signed)
        return wire.ok()

    # --- gossip -------------------------------------------------------------------------------

    async def _read_gossip(self) -> None:
        async for message in self.overlay.messages():
            try:
                await self._on_gossip(message)
            except RemoteProtocolError as exc:
                self.reject(exc.reason, f"gossip from {message.from_peer}: {exc.detail}")

    async def _on_gossip(self, message: GossipMessage) -> None:
        self.counters["gossip_in"] += 1
        if message.from_peer == self.peer_id:
            return  # our own publish echoed back; it was applied when it was made
        value = decode_canonical(message.data, MAX_ENVELOPE)
        kind = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None
        if kind == "announce":
            ann = check_announce(message.data, now_ms())
            if peer_id_from_public_key(ann.spec.submitter) != message.from_peer:
                raise RemoteProtocolError("wrong_sender", "announce relayed under another author")
            job_hex = ann.job_id.hex()
            if not await self.store.insert_job(job_hex, "observer", ann.spec.name, ann.signed_spec,
                                               "announced", now_ms(), list(ann.submitter_addrs)):
                # The author (checked above; gossip signs it) announcing its job again is a
                # re-announce for peers that missed it, not a replay by a third party.
                self.counters["announce_repeats"] += 1
                return
            self._notify()
            await self._consider_bidding(ann.job_id, ann.spec, message.from_peer, ann.submitter_addrs)
        elif kind == "certificate":
            checked = verify_certificate(message.data)
            job_hex = checked.certificate.job_id.hex()
            row = await self.store.get_job(job_hex)
            if row is None:
                await self.store.insert_job(job_hex, "observer", checked.spec.name,
                                            checked.certificate.signed_spec, "announced", now_ms())
            elif row["certificate"] is not None:
                raise RemoteProtocolError("replay", "certificate already applied")
            await self.store.set_job_status(job_hex, checked.certificate.status,
                                            "" if checked.certificate.status == "verified" else checked.tally.outcome,
                                            now_ms(), message.data)
            self.counters["certificates"] += 1
            self._notify()
        else:
            raise RemoteProtocolError("unknown_kind", f"gossip kind {kind!r}")

    # --- executor's side ----------------------------------------------------------------------

    async def _consider_bidding(self, job_id: bytes, spec: JobSpec, submitter_peer: str,
                                addrs: tuple[str, ...] = ()) -> None:
        decision = decide(BidContext(spec, self.settings.capacity, self.running, self._sandbox_ok,
                                     self.sandbox.has_image))
        if not decision.bid:
            log.info("not bidding on %s: %s", job_id.hex()[:12], decision.reason)
            return
        bid = sign(self.identity, Bid(job_id, self.me, self.settings.price, self.settings.capacity.cpu_millis,
                                      self.settings.capacity.memory_mb, (self.settings.sandbox_name,), now_ms()))
        assert self._nursery is not None
        self._nursery.start_soon(self._send_bid, spec.submitter, bid, addrs)

    async def _send_bid(self, submitter: bytes, bid: bytes, addrs: tuple[str, ...]) -> None:
        if submitter != self.me and peer_id_from_public_key(submitter) not in self.overlay.connected_peers():
            for addr in addrs:
                try:
                    await self.overlay.connect(addr)
                    break
                except Exception as exc:  # any dial failure: try the next address, then the DHT
                    log.debug("dial %s failed: %s", addr, exc)
        try:
            await self._deliver(submitter, BID_PROTOCOL, bid)
            self.counters["bids_sent"] += 1
        except (RemoteError, RemoteProtocolError) as exc:
            log.info("bid not accepted: %s", exc)

    async def _handle_award(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, Award)
        award: Award = signed.msg
        spec = verify(award.signed_spec, JobSpec)
        if signed.signer != spec.msg.submitter or peer_id_from_public_key(signed.signer) != peer:
            raise RemoteProtocolError("wrong_sender", "award not from the job's submitter")
        if award.executor != self.me or job_id_of(award.signed_spec) != award.job_id:
            raise RemoteProtocolError("malformed", "award names another executor or job")
        job_hex = award.job_id.hex()
        now = now_ms()
        await self.store.insert_job(job_hex, "executor", spec.msg.name, award.signed_spec, "announced", now)
        await self.store.add_job_role(job_hex, "executor")
        # A repeated award (a restarted submitter re-sends those without a commit) changes nothing:
        # the execution already under way commits when it is done, and keeps retrying until then.
        if await self.store.insert_execution(job_hex, data, now):
            assert self._nursery is not None
            self._nursery.start_soon(self._execute, award, spec.msg)
        return wire.ok()

    async def _execute(self, award: Award, spec: JobSpec) -> None:
        """Task boundary: whatever goes wrong with one job is that job's failure, never the node's."""
        try:
            await self._execute_job(award, spec)
        except Exception:
            log.exception("execution of %s failed unexpectedly", award.job_id.hex()[:12])
            await self.store.update_execution(award.job_id.hex(), now_ms(), status="failed", reason="internal error")

    async def _execute_job(self, award: Award, spec: JobSpec) -> None:
        job_hex = award.job_id.hex()
        self.running += 1
        try:
            await self.store.update_execution(job_hex, now_ms(), status="running")
            try:
                request = RunRequest(image=spec.image, command=list(spec.command), env=dict(spec.env),
                                     cpu=spec.cpu_millis / 1000, memory_mb=spec.memory_mb,
                                     timeout_s=float(spec.timeout_s))
                result = await trio.to_thread.run_sync(self.sandbox.run, request, limiter=self._sandbox_limiter)
            except (SandboxError, ValueError) as exc:
                log.warning("job %s could not run: %s", job_hex[:12], exc)
                await self.store.update_execution(job_hex, now_ms(), status="failed", reason=str(exc))
                return
        finally:
            self.running -= 1
        stdout = result.stdout[:STDOUT_CAP]
        truncated = result.stdout_truncated or len(result.stdout) > STDOUT_CAP
        rh = result_hash(result.exit_code, result.timed_out, stdout, truncated)
        reveal = sign(self.identity, Reveal(award.job_id, self.me, rh, result.exit_code, stdout,
                                            truncated, result.timed_out))
        summary = {"exit_code": result.exit_code, "timed_out": result.timed_out,
                   "oom_killed": result.oom_killed, "stdout_truncated": truncated,
                   "duration_s": round(result.duration_s, 4), "sandbox": result.sandbox,
                   "result_hash": rh.hex()}
        await self.store.update_execution(job_hex, now_ms(), status="executed", result=summary, reveal=reveal)
        self.counters["executed"] += 1
        self._notify()
        await self._send_commit(award, reveal)

    async def _send_commit(self, award: Award, reveal_raw: bytes) -> None:
        reveal: Reveal = verify(reveal_raw, Reveal).msg
        commit = sign(self.identity, Commit(award.job_id, self.me, seal(self.me, award.job_id, reveal.result_hash)))
        spec = verify(award.signed_spec, JobSpec).msg
        for attempt in range(COMMIT_RETRIES):
            try:
                await self._deliver(spec.submitter, COMMIT_PROTOCOL, commit)
                await self.store.update_execution(award.job_id.hex(), now_ms(), status="committed")
                return
            except RemoteProtocolError as exc:
                log.info("commit refused for %s: %s", award.job_id.hex()[:12], exc)
                return
            except RemoteError as exc:
                log.info("commit attempt %d for %s failed: %s", attempt + 1, award.job_id.hex()[:12], exc)
                await trio.sleep(0.5 * 2**attempt)  # back-off between retries, not synchronization

    async def _handle_reveal(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, RevealRequest)
        req: RevealRequest = signed.msg
        execution = await self.store.get_execution(req.job_id.hex())
        if execution is None or req.executor != self.me:
            raise RemoteProtocolError("unknown_job", "no execution of this job here")
        award: Award = verify(execution["award"], Award).msg
        submitter = verify(award.signed_spec, JobSpec).msg.submitter
        if signed.signer != submitter or peer_id_from_public_key(submitter) != peer:
            raise RemoteProtocolError("wrong_sender", "reveal requested by someone other than the submitter")
        if execution["status"] != "committed" or execution["reveal"] is None:
            raise RemoteProtocolError("not_committed", "nothing committed to reveal")
        await self.store.update_execution(req.job_id.hex(), now_ms(), status="revealed")
        return wire.ok(execution["reveal"])

    # --- recovery and views ---------------------------------------------------------------------

    async def _recover(self) -> None:
        """Rebuild unfinished submitter jobs from their stored inputs; resume unfinished executions."""
        for row in await self.store.list_jobs(role="submitter", limit=10_000):
            if row["status"] in TERMINAL:
                continue
            job_id = bytes.fromhex(row["job_id"])
            inputs = await self.store.inputs(row["job_id"])
            job: SubmitterJob | None = None
            for kind, raw, at in inputs:
                if kind == "start":
                    job = SubmitterJob(self.identity, raw, verify(raw, JobSpec).msg, started_ms=at)
                elif job is not None and kind == "tick":
                    job.tick(at)
                elif job is not None:
                    expect = {"bid": Bid, "commit": Commit, "reveal": Reveal}[kind]
                    {"bid": job.receive_bid, "commit": job.receive_commit,
                     "reveal": job.receive_reveal}[kind](verify(raw, expect), at)
            if job is None:
                continue
            self.jobs[job_id] = job
            log.info("recovered job %s in state %s", row["job_id"][:12], job.state)
            # Re-issue what may not have been delivered before the restart; receivers are idempotent.
            if job.state in ("bidding", "executing"):
                for e, award in job.awards.items():
                    if e not in job.commits:
                        await self._act(job, [SendAward(e, award.raw)])
            elif job.state == "revealing":
                await self._act(job, [RequestReveal(e, sign(self.identity, RevealRequest(job.job_id, e)))
                                      for e in job.commits if e not in job.reveals])
        for execution in await self.store.executions_with_status("awarded", "running"):
            award = verify(execution["award"], Award).msg
            assert self._nursery is not None
            self._nursery.start_soon(self._execute, award, verify(award.signed_spec, JobSpec).msg)
        for execution in await self.store.executions_with_status("executed"):
            award = verify(execution["award"], Award).msg
            assert self._nursery is not None
            self._nursery.start_soon(self._send_commit, award, execution["reveal"])

    async def job_status(self, job_hex: str) -> dict | None:
        row = await self.store.get_job(job_hex)
        if row is None:
            return None
        machine = self.jobs.get(bytes.fromhex(job_hex))
        execution = await self.store.get_execution(job_hex)
        return job_view(row, machine, execution, peer_id_from_public_key)

    async def wait_job(self, job_hex: str, timeout_s: float) -> dict | None:
        """The job's view once it is verified or failed, or as it stands when `timeout_s` passes."""
        with trio.move_on_after(timeout_s):
            while True:
                changed = self._changed
                view = await self.job_status(job_hex)
                if view is None or view["status"] in TERMINAL:
                    return view
                await changed.wait()
        return await self.job_status(job_hex)

    def info(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "multiaddrs": self.overlay.multiaddrs(),
            "sandbox": self.settings.sandbox_name,
            "sandbox_ok": self._sandbox_ok,
            "peers": sorted(self.overlay.connected_peers()),
            "mesh_peers": sorted(self.overlay.gossip_peers(JOBS_TOPIC)),
            "jobs_running": self.running,
            "active_jobs": sum(1 for j in self.jobs.values() if not j.done),
            "counters": dict(self.counters),
            "rejected": dict(self.rejected),
            "pid": os.getpid(),
        }
