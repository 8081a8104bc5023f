"""The submitter's side of the node: drives each of its user's jobs through `SubmitterJob`.

Contract: an input is verified, applied to the job (pure), then written to the store with all it
changed in one transaction (`Store.record_input`), and only then acted on (awards sent, reveals
asked, certificate published). A restarted node replays the stored inputs through a fresh
`SubmitterJob` and re-issues what may not have been delivered; receivers are idempotent.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from distributeai.consensus.codec import Identity, sha256
from distributeai.consensus.errors import LocalProtocolError, RemoteProtocolError
from distributeai.consensus.ledger import REPUTATION_START, max_cost
from distributeai.consensus.messages import (
    Announce, Bid, Commit, JobSpec, Reveal, RevealRequest, Signed, Withdraw, decode_unsigned, job_id_of, sign,
    verify,
)
from distributeai.consensus.names import AWARD_PROTOCOL, REVEAL_PROTOCOL
from distributeai.consensus.pow import pow_ok
from distributeai.consensus.subnet import subnet_of
from distributeai.consensus.submitter import (
    Finished, Penalize, PublishCertificate, RequestReveal, SendAward, SubmitterJob, Timing,
)
from distributeai.consensus.validate import check_spec_time
from distributeai.p2p.identity import peer_id_from_public_key, public_key_from_peer_id
from distributeai.p2p.overlay import RemoteError

from . import wire
from .clock import now_ms
from .inbound import decode_reveal_answer

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("distributeai.node.submitter")

REANNOUNCE_INTERVAL_S = 1.0  # about one gossip heartbeat: the mesh may have changed by then
# Refusals of a commit that count against its sender in this node's view: an offence, not a race.
OFFENCES = ("not_awarded", "late_commit")
INPUT_TYPES = {"bid": Bid, "commit": Commit, "withdraw": Withdraw, "reveal": Reveal}


class Submitting:
    def __init__(self, agent: "Agent", timing: Timing) -> None:
        self.agent = agent
        self.timing = timing
        self.jobs: dict[bytes, SubmitterJob] = {}
        self._lock = trio.Lock()  # inputs reach the store in the order they were applied

    # --- entry points -------------------------------------------------------------------------

    async def submit_unsigned(self, body: bytes, module: bytes | None = None) -> bytes:
        """Sign a job spec for this node's user (the control socket's owner) and submit it.

        `body` is the spec's canonical encoding (`encode_body`); its submitter must be this node.
        The node signs job specs only, never arbitrary bytes: the socket is no general signing
        oracle. This is how `distributeai submit` works without opening a (perhaps encrypted)
        key file itself."""
        try:
            spec = decode_unsigned(body, JobSpec)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, exc.detail) from None
        if spec.submitter != self.agent.me:
            raise LocalProtocolError("wrong_signer", "a node signs only jobs that name it as their submitter")
        return await self.submit(sign(self.agent.identity, spec), module)

    async def submit(self, signed_spec: bytes, module: bytes | None = None) -> bytes:
        """Announce a job signed by this node's user. Raises LocalProtocolError if it is not,
        or if this node cannot pay for it in its own view. `module` is the wasm module of a spec
        that carries only its SHA-256; this node then serves it to the executors."""
        a = self.agent
        try:
            spec = verify(signed_spec, JobSpec)
            check_spec_time(spec.msg, now_ms())
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, exc.detail) from None
        if spec.signer != a.me:
            raise LocalProtocolError("wrong_signer", "a node announces only jobs signed with its own key")
        if not a.ledger.can_pay(spec.msg):
            raise LocalProtocolError(
                "insufficient_credits",
                f"the job may cost {max_cost(spec.msg)} credits, this node has {a.ledger.balance(a.me)}")
        if spec.msg.wasm_sha256:
            if module is None or sha256(module) != spec.msg.wasm_sha256:
                raise LocalProtocolError("missing_module", "the spec names a wasm module by hash; send the module too")
            await a.store.put_blob(spec.msg.wasm_sha256.hex(), module)
        job_id = job_id_of(signed_spec)
        now = now_ms()
        announce = sign(a.identity, Announce(signed_spec, tuple(a.overlay.multiaddrs()), a.settings.pow_nonce))
        if not await a.store.insert_job(job_id.hex(), "submitter", spec.msg.name, signed_spec, "bidding", now,
                                        announce=announce):
            raise LocalProtocolError("duplicate", "this job was already submitted")
        job = SubmitterJob(a.identity, signed_spec, spec.msg, started_ms=now, timing=self.timing)
        await a.store.record_input(job_id.hex(), "start", signed_spec, {}, now, status=job.state, reason="",
                                   certificate=None, offences=[])
        self.jobs[job_id] = job
        await a.publish(announce)
        a.count("announced")
        a.notify()
        await a.executing.consider(job_id, spec.msg, ())
        a.nursery.start_soon(self._reannounce, job, announce)
        return job_id

    async def cancel(self, job_id: bytes) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            raise LocalProtocolError("unknown_job", "only a job submitted from this node can be cancelled")
        if job.done:
            raise LocalProtocolError("finished", f"the job has ended ({job.state})")
        await self.apply(job, "cancel", None)

    async def handle_bid(self, peer: str, data: bytes) -> bytes:
        """A bid counts only from an identity with this node's proof-of-work difficulty
        (`weak_identity` otherwise); it is ranked with the bidder's reputation in this node's
        view and the address range of the connection it came on (None for this node's own)."""
        signed = verify(data, Bid)
        self._check_sender(signed, peer, "bid")
        job = self._own_job(signed.msg.job_id)
        difficulty = self.agent.settings.pow_difficulty
        if not pow_ok(signed.signer, signed.msg.pow, difficulty):
            raise RemoteProtocolError("weak_identity", f"the bidder's proof-of-work is under {difficulty} bits")
        reputation = self.agent.ledger.reputation_of(signed.signer)
        subnet = None if signed.signer == self.agent.me else subnet_of(self.agent.overlay.remote_ip(peer))
        await self.apply(job, "bid", signed, {"reputation": reputation, "subnet": subnet})
        self.agent.count("bids_received")
        return wire.ok()

    async def handle_commit(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, Commit)
        self._check_sender(signed, peer, "commit")
        job = self._own_job(signed.msg.job_id)
        earlier = job.commits.get(signed.msg.executor)
        if earlier is not None and earlier.raw == signed.raw:
            return wire.ok()  # a retry whose first answer was lost: already applied, not an offence
        try:
            await self.apply(job, "commit", signed)
        except RemoteProtocolError as exc:
            if exc.reason in OFFENCES:
                await self.agent.record_offence(job.job_id, signed.signer, exc.reason)
            raise
        return wire.ok()

    async def handle_withdraw(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, Withdraw)
        self._check_sender(signed, peer, "withdraw")
        await self.apply(self._own_job(signed.msg.job_id), "withdraw", signed)
        return wire.ok()

    # --- the loop of one input ------------------------------------------------------------------

    async def apply(self, job: SubmitterJob, kind: str, signed: Signed | None, meta: dict | None = None,
                    *, executor: bytes = b"") -> None:
        """Feed one input to a job; persist it with everything it changed; then act on it."""
        meta = meta or {}
        async with self._lock:
            now = now_ms()
            seen = len(job.history)
            if kind == "bid":
                # Under the lock: bids applied just before this one are already in the job.
                meta["unbid_best"] = self._unbid_best(job, signed.signer)
                actions = job.receive_bid(signed, now, meta.get("reputation", 0), meta["unbid_best"],
                                          meta.get("subnet"))
            elif kind == "commit":
                actions = job.receive_commit(signed, now)
            elif kind == "withdraw":
                actions = job.receive_withdraw(signed, now)
            elif kind == "reveal":
                actions = job.receive_reveal(signed, now)
            elif kind == "undelivered":
                actions = job.award_undelivered(executor, now)
            elif kind == "cancel":
                actions = job.cancel(now)
            else:  # "tick"
                if job.state == "bidding":
                    meta["unbid_best"] = self._unbid_best(job, b"")
                actions = job.tick(now, meta.get("unbid_best"))
            if not actions and kind in ("tick", "undelivered") and len(job.history) == seen:
                return  # nothing happened: nothing to store
            raw = signed.raw if signed is not None else executor
            await self._record(job, kind, raw, meta, now, actions)
        await self._act(job, actions)

    async def _record(self, job: SubmitterJob, kind: str, raw: bytes, meta: dict, now: int, actions: list) -> None:
        a = self.agent
        offences = [(x.executor, x.reason) for x in actions if isinstance(x, Penalize)]
        certificate = next((x.certificate for x in actions if isinstance(x, PublishCertificate)), None)
        new_cert = await a.store.record_input(job.job_id.hex(), kind, raw, meta, now, status=job.state,
                                              reason=job.reason, certificate=certificate, offences=offences)
        for who, _ in offences:
            a.ledger.apply_offence(who)
        if new_cert:
            a.apply_certificate_to_ledger(certificate, now)
        a.notify()

    async def _act(self, job: SubmitterJob, actions: list) -> None:
        a = self.agent
        for action in actions:
            if isinstance(action, SendAward):
                a.nursery.start_soon(self._send_award, job, action)
            elif isinstance(action, RequestReveal):
                a.nursery.start_soon(self._request_reveal, job, action)
            elif isinstance(action, PublishCertificate):
                await a.publish(action.certificate)
                a.count("certified")
            elif isinstance(action, Penalize):
                a.reject(action.reason, f"by executor {peer_id_from_public_key(action.executor)}")
            elif isinstance(action, Finished):
                log.info("job %s %s %s", job.job_id.hex()[:12], action.status, action.reason)
                a.metrics.job_finished(action.status, action.reason, (now_ms() - job.started_ms) / 1000)

    async def _send_award(self, job: SubmitterJob, action: SendAward) -> None:
        try:
            await self.agent.deliver(action.executor, AWARD_PROTOCOL, action.award)
        except (RemoteError, RemoteProtocolError) as exc:
            log.info("award to %s not delivered: %s", peer_id_from_public_key(action.executor), exc)
            await self.apply(job, "undelivered", None, executor=action.executor)

    async def _request_reveal(self, job: SubmitterJob, action: RequestReveal) -> None:
        try:
            raw = await self.agent.deliver(action.executor, REVEAL_PROTOCOL, action.request)
            signed = decode_reveal_answer(raw, action.executor)
            await self.apply(job, "reveal", signed)
        except RemoteProtocolError as exc:
            self.agent.reject(exc.reason, f"reveal from {peer_id_from_public_key(action.executor)}")
        except RemoteError as exc:
            # The reveal window will pass and the slot will be replaced.
            log.info("no reveal from %s: %s", peer_id_from_public_key(action.executor), exc)

    async def _reannounce(self, job: SubmitterJob, announce: bytes) -> None:
        """Gossip is best effort: a publish reaches only the current mesh and nothing reports a
        loss. While the job lacks bidders, publish the same announcement again; nodes that have it
        ignore the author's repeats."""
        while not job.done:
            await trio.sleep(REANNOUNCE_INTERVAL_S)  # a retry period, not synchronization
            if job.wants_bids:
                await self.agent.publish(announce)
                self.agent.count("reannounced")

    async def run_deadlines(self) -> None:
        """Tick jobs whose next deadline has passed; sleep until the earliest one or any change."""
        while True:
            changed = self.agent.changed
            deadlines = [d for j in self.jobs.values() if (d := j.next_deadline_ms()) is not None]
            wait_s = max(0.0, (min(deadlines) - now_ms()) / 1000) if deadlines else 3600.0
            with trio.move_on_after(wait_s):
                await changed.wait()
            now = now_ms()
            for job in list(self.jobs.values()):
                due = job.next_deadline_ms()
                if due is not None and due <= now:
                    await self.apply(job, "tick", None)

    # --- recovery -------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild unfinished jobs from their stored inputs and re-issue what may be undelivered."""
        a = self.agent
        for row in await a.store.list_jobs(role="submitter", limit=100_000):
            if row["status"] in ("verified", "failed", "nondeterministic"):
                continue
            job = replay(a.identity, self.timing, await a.store.inputs(row["job_id"]))
            if job is None:
                continue
            self.jobs[job.job_id] = job
            log.info("recovered job %s in state %s", row["job_id"][:12], job.state)
            resend: list = [SendAward(e, s.raw) for e, s in job.awards.items() if job.slot[e] == "awarded"]
            resend += [RequestReveal(e, sign(a.identity, RevealRequest(job.job_id, e)))
                       for e in job.reveal_asked_ms if job.slot[e] == "committed"]
            await self._act(job, resend)
            if row["announce"] is not None:
                a.nursery.start_soon(self._reannounce, job, row["announce"])

    # --- helpers --------------------------------------------------------------------------------

    def _unbid_best(self, job: SubmitterJob, bidder: bytes) -> int:
        """The best reputation, in this node's view, of a connected peer that has not bid yet;
        0 (a stranger's) at least. This node's own bid is not waited for: it is sent as the job
        is announced, ahead of any remote one."""
        a = self.agent
        best = REPUTATION_START
        for p in a.overlay.connected_peers():
            key = public_key_from_peer_id(p)
            if key is not None and key != bidder and key not in job.bids:
                best = max(best, a.ledger.reputation_of(key))
        return best

    def _own_job(self, job_id: bytes) -> SubmitterJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise RemoteProtocolError("unknown_job", "no such job submitted here")
        return job

    @staticmethod
    def _check_sender(signed: Signed, peer: str, what: str) -> None:
        if peer_id_from_public_key(signed.signer) != peer:
            raise RemoteProtocolError("wrong_sender", f"{what} signed by a key other than the sending peer's")


def replay(identity: Identity, timing: Timing, inputs: list[tuple[str, bytes, dict, int]]) -> SubmitterJob | None:
    """A job rebuilt from its stored inputs (`Store.inputs`), in order, each with what was recorded
    with it (a bid's reputation, early-close bound and address range): the same job, awards and
    all, as the one that took them live. None if the inputs hold no start."""
    job: SubmitterJob | None = None
    for kind, raw, meta, at in inputs:
        if kind == "start":
            job = SubmitterJob(identity, raw, verify(raw, JobSpec).msg, started_ms=at, timing=timing)
        elif job is None:
            continue
        elif kind == "tick":
            job.tick(at, meta.get("unbid_best"))
        elif kind == "undelivered":
            job.award_undelivered(raw, at)
        elif kind == "cancel":
            job.cancel(at)
        elif kind == "bid":
            job.receive_bid(verify(raw, Bid), at, meta.get("reputation", 0), meta.get("unbid_best"),
                            meta.get("subnet"))
        else:
            {"commit": job.receive_commit, "withdraw": job.receive_withdraw,
             "reveal": job.receive_reveal}[kind](verify(raw, INPUT_TYPES[kind]), at)
    return job
