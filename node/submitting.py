"""The submitter's side of the node: drives each of its user's jobs through `SubmitterJob`.

Contract: an input is verified, applied to the job (pure, `consensus.submitter.apply_input`), then
written to the store with all it changed in one transaction (`Store.record_input`), and only then
acted on (awards sent, reveals asked, certificate published). A restarted node replays the stored
inputs through the same `apply_input` (`replay`) and re-issues what may not have been delivered;
receivers are idempotent. It reaches the rest of the node only through its ports (ports.py).

Sampled bidding (consensus/sampling.py): a job is announced with the share that makes about
`bid_sample_factor` times its replicas of the network eligible, as this node estimates the network
(`Transport.network_size`); only eligible peers count as could-still-bid (`undecided`,
`unbid_best`). When the job asks to widen (`WidenBids`) the new share is stored (the input that
led to it already is, and the job's share row) before a signed `Widen` is gossiped; a restart
resumes from the stored inputs with the share the job started with (the `start` input's meta).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import LocalProtocolError, RemoteProtocolError
from distributeai.consensus.ledger import max_cost
from distributeai.consensus.messages import (
    Announce, Bid, Commit, Decline, JobSpec, RevealRequest, Signed, Widen, Withdraw, decode_unsigned, job_id_of,
    sign, verify,
)
from distributeai.consensus.names import AWARD_PROTOCOL, REVEAL_PROTOCOL
from distributeai.consensus.pow import pow_ok
from distributeai.consensus.sampling import SHARE_ALL, eligible, initial_share
from distributeai.consensus.subnet import subnet_of
from distributeai.consensus.submitter import (
    INPUT_TYPES, Finished, Penalize, PublishCertificate, RequestReveal, SendAward, SubmitterJob, WidenBids,
    apply_input, reannounce_after_ms, replay,
)
from distributeai.consensus.submitter_rules import unbid_best
from distributeai.consensus.trust import bidder_trust
from distributeai.consensus.validate import check_spec_time
from distributeai.p2p.identity import peer_id_from_public_key, public_key_from_peer_id
from distributeai.p2p.discovery import TARGET_PEERS
from distributeai.p2p.overlay import RemoteError

from . import wire
from .blockstore import BlockStoreFull
from .inbound import decode_reveal_answer
from .job_inputs import job_inputs, submission_owner
from .job_module import store_module
from .joblog import submitter_events
from .ports import NodeSettings, Ports

log = logging.getLogger("distributeai.node.submitter")

# Refusals of a commit that count against its sender in this node's view: an offence, not a race.
OFFENCES = ("not_awarded", "late_commit")


# What the node does when its user submits a job: consider bidding on it itself (Executing.consider).
Consider = Callable[[bytes, JobSpec, tuple], Awaitable[None]]
# What it does when one of its jobs ends: stop its own run of it, if any (Executing.job_ended; its
# own certificate never comes back to it over gossip, as other executors' copies do).
Ended = Callable[[bytes, str, str], Awaitable[None]]  # (job id, status, reason)

__all__ = ["INPUT_TYPES", "OFFENCES", "Submitting", "replay"]


class Submitting:
    def __init__(self, identity: Identity, settings: NodeSettings, ports: Ports, consider: Consider,
                 ended: Ended) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.settings = settings
        self.timing = settings.timing
        self.ports = ports
        self.consider = consider
        self.ended = ended
        self.jobs: dict[bytes, SubmitterJob] = {}
        self.ended_before: set[bytes] = set()  # jobs that ended before this start (not rebuilt by recover)
        self._lock = trio.Lock()  # inputs reach the store in the order they were applied
        self.inputs = job_inputs(ports, settings)  # jobs' data inputs in the block store (None: no store)
        self.widenings: dict[bytes, bytes] = {}  # each widened job's latest signed Widen, re-published with its announce
        self.considered: set[bytes] = set()  # jobs of this node's it was eligible for and considered bidding on

    # --- entry points -------------------------------------------------------------------------

    async def submit_unsigned(self, body: bytes, module: bytes | None = None,
                              local: list[tuple[str, str]] = ()) -> bytes:
        """Sign a job spec for this node's user (the control socket's owner) and submit it.

        `body` is the spec's canonical encoding (`encode_body`); its submitter must be this node.
        The node signs job specs only, never arbitrary bytes: the socket is no general signing
        oracle. This is how `distributeai submit` works without opening a (perhaps encrypted)
        key file itself. The job's inputs are filled in before it is signed (`_with_inputs`):
        `local` are (path, name) pairs to import (`submit --input PATH:NAME`), and each input the
        spec names by CID gets its size."""
        try:
            spec = decode_unsigned(body, JobSpec)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, exc.detail) from None
        if spec.submitter != self.me:
            raise LocalProtocolError("wrong_signer", "a node signs only jobs that name it as their submitter")
        if not spec.inputs and not local:
            return await self.submit(sign(self.identity, spec), module)
        try:
            spec = await self._with_inputs(spec, list(local))
            return await self.submit(sign(self.identity, spec), module)
        except BaseException:
            if self.inputs is not None:  # refused: its inputs are nobody's submission
                with trio.CancelScope(shield=True):
                    await self.inputs.release_submission(spec)
            raise

    async def _with_inputs(self, spec: JobSpec, local: list[tuple[str, str]]) -> JobSpec:
        """The spec with its inputs' CIDs and sizes (JobInputs.prepare, pinned for the
        submission until its certificate), checked whole again."""
        if self.inputs is None:
            raise LocalProtocolError("bad_inputs", "this node has no block store for inputs")
        try:
            spec = await self.inputs.prepare(spec, local)
            return JobSpec.from_body(spec.to_body())
        except RemoteProtocolError as exc:
            raise LocalProtocolError("bad_inputs", exc.detail or exc.reason) from None
        except (OSError, ValueError) as exc:  # a path that cannot be imported (the entry named)
            raise LocalProtocolError("bad_inputs", f"an input cannot be imported: {exc}") from None
        except LookupError as exc:  # InputsUnavailable
            raise LocalProtocolError("inputs_unavailable", str(exc)) from None
        except BlockStoreFull as exc:
            raise LocalProtocolError("store_full", f"the block store cannot hold the inputs ({exc}): "
                                                   "raise node start --store-max") from None

    async def submit(self, signed_spec: bytes, module: bytes | None = None) -> bytes:
        """Announce a job signed by this node's user. Raises LocalProtocolError if it is not,
        or if this node cannot pay for it in its own view. `module` is the wasm module of a spec
        that carries only its CID: it goes into the block store, where executors fetch it."""
        p = self.ports
        try:
            spec = verify(signed_spec, JobSpec)
            check_spec_time(spec.msg, p.now_ms())
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, exc.detail) from None
        if spec.signer != self.me:
            raise LocalProtocolError("wrong_signer", "a node announces only jobs signed with its own key")
        if not p.ledger.can_pay(spec.msg):
            raise LocalProtocolError(
                "insufficient_credits",
                f"the job may cost {max_cost(spec.msg)} credits, this node has {p.ledger.balance(self.me)}")
        self._check_reach(spec.msg)
        job_id = job_id_of(signed_spec)
        if spec.msg.wasm_cid:
            await self._store_module(job_id, spec.msg, module)
        now = p.now_ms()
        share = self.first_share(spec.msg)
        announce = sign(self.identity, Announce(signed_spec, tuple(p.transport.multiaddrs()), self.settings.pow_nonce,
                                                share))
        try:
            if not await p.store.insert_job(job_id.hex(), "submitter", spec.msg.name, signed_spec, "bidding", now,
                                            announce=announce):
                raise LocalProtocolError("duplicate", "this job was already submitted")
        except BaseException:
            if spec.msg.wasm_cid:  # refused: its module is nobody's submission (a duplicate's was checked first)
                with trio.CancelScope(shield=True):
                    await self.inputs.release_submission(spec.msg)
            raise
        job = SubmitterJob(self.identity, signed_spec, spec.msg, started_ms=now, timing=self.timing, share=share)
        await p.store.set_job_share(job_id.hex(), share)
        await p.store.record_input(job_id.hex(), "start", signed_spec, {"share": share}, now, status=job.state,
                                   reason="", certificate=None, offences=[])
        self.jobs[job_id] = job
        await p.transport.publish(announce)
        p.events.count("announced")
        log.info("job %s announced%s: %d of %d must agree%s", job_id.hex()[:12],
                 f" ({spec.msg.name})" if spec.msg.name else "", spec.msg.quorum, spec.msg.replicas,
                 "" if share >= SHARE_ALL else f", open to {share_text(share)} of the network")
        p.events.notify()
        if eligible(job_id, self.me, share):
            self.considered.add(job_id)
            await self.consider(job_id, spec.msg, ())
        p.runtime.spawn(self._reannounce, job, announce)
        return job_id

    async def _store_module(self, job_id: bytes, spec: JobSpec, module: bytes | None) -> None:
        """The wasm module the spec names by CID, in the block store for the executors to fetch,
        pinned with the submission's inputs (node/job_module.py). A duplicate is refused first:
        its release would unpin the module of the job already announced."""
        if await self.ports.store.get_job(job_id.hex()) is not None:
            raise LocalProtocolError("duplicate", "this job was already submitted")
        if self.inputs is None:
            raise LocalProtocolError("missing_module", "this node has no block store for a wasm module sent by CID")
        await store_module(self.inputs.blocks, spec, module)

    def first_share(self, spec: JobSpec) -> int:
        """The share a new job is announced with: about `bid_sample_factor` times its replicas of
        the network as this node estimates it (consensus/sampling.py initial_share); every node
        when the factor is 0."""
        factor = self.settings.bid_sample_factor
        if factor <= 0:
            return SHARE_ALL
        return initial_share(self.ports.transport.network_size(), spec.replicas, factor)

    def _check_reach(self, spec: JobSpec) -> None:
        """Refuse, before anything is announced, a job whose quorum is larger than the nodes this
        one can reach (itself and its connected peers, bootstraps aside). Only while it is connected
        to fewer peers than discovery aims for (p2p/discovery.py TARGET_PEERS): beyond that the
        network may well be larger than what it sees."""
        peers = self.node_peers()
        if len(peers) < TARGET_PEERS and len(peers) + 1 < spec.quorum:
            seen = f"this one and {len(peers)} connected peer{'' if len(peers) == 1 else 's'}"
            raise LocalProtocolError(
                "too_few_nodes", f"the quorum needs {spec.quorum} executors but only {len(peers) + 1} "
                f"node{'' if not peers else 's'} can be reached ({seen}): start more nodes or lower the quorum")

    def node_peers(self) -> list[bytes]:
        """The public keys of the connected peers that may run jobs (not the bootstraps)."""
        keys = []
        for peer in self.ports.transport.connected_peers():
            key = public_key_from_peer_id(peer)
            if key is not None and peer not in self.settings.bootstrap_peers:
                keys.append(key)
        return keys

    async def cancel(self, job_id: bytes) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            raise LocalProtocolError("unknown_job", "only a job submitted from this node can be cancelled")
        if job.done:
            raise LocalProtocolError("finished", f"the job has ended ({job.state})")
        await self.apply(job, "cancel", b"")

    async def handle_bid(self, peer: str, data: bytes) -> bytes:
        """A bid counts only from an identity with this node's proof-of-work difficulty
        (`weak_identity` otherwise); it is ranked with the bidder's reputation in this node's
        view and the address range of the connection it came on (None for this node's own)."""
        signed, job = self._from_bidder(peer, data, Bid)
        reputation = self.ports.ledger.reputation_of(signed.signer)
        subnet = None if signed.signer == self.me else subnet_of(self.ports.transport.remote_ip(peer))
        await self.apply(job, "bid", signed, {"reputation": reputation, "subnet": subnet})
        self.ports.events.count("bids_received")
        return wire.ok()

    async def handle_decline(self, peer: str, data: bytes) -> bytes:
        """A peer will not bid, and says why; counted only from an identity with this node's
        proof-of-work difficulty, as a bid (so made-up identities cannot pad the reasons)."""
        signed, job = self._from_bidder(peer, data, Decline)
        await self.apply(job, "decline", signed)
        self.ports.events.count("declines_received")
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
                await self.ports.store.record_offence(job.job_id.hex(), signed.signer, exc.reason, self.ports.now_ms())
                self.ports.ledger.apply_offence(signed.signer)
            raise
        return wire.ok()

    async def handle_withdraw(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, Withdraw)
        self._check_sender(signed, peer, "withdraw")
        await self.apply(self._own_job(signed.msg.job_id), "withdraw", signed)
        return wire.ok()

    # --- the loop of one input ------------------------------------------------------------------

    async def apply(self, job: SubmitterJob, kind: str, payload: Signed | bytes, meta: dict | None = None) -> None:
        """Feed one input to a job (`apply_input`, as a replay does); persist it with everything it
        changed; then act on it. `payload`: the verified message, or for `undelivered` the
        executor's key (empty for a tick or cancel)."""
        meta = meta or {}
        async with self._lock:
            now = self.ports.now_ms()
            seen = len(job.history)
            # What the node's view adds to an input is taken under the lock (bids applied just
            # before this one are already in the job) and stored with it, so a replay sees it too.
            if kind in ("bid", "decline"):
                meta["unbid_best"] = self._unbid_best(job, payload.signer)
            if kind == "bid" and job.spec.verification == "adaptive":
                meta["trust"] = bidder_trust(self.ports.ledger, job.spec, payload.msg, now)
            elif kind == "tick" and job.state == "bidding":
                meta["unbid_best"] = self._unbid_best(job, b"")
            if kind in ("bid", "tick") and job.state == "bidding" and job.share < SHARE_ALL:
                meta["outside_best"] = self._unbid_best(job, b"", outside=True)
            meta["undecided"] = self._undecided(job, payload.signer if kind in ("bid", "decline") else b"")
            actions = apply_input(job, kind, payload, meta, now)
            submitter_events(job, kind, payload.signer if isinstance(payload, Signed) else None, seen)  # INFO
            if not actions and kind in ("tick", "undelivered") and len(job.history) == seen:
                return  # nothing happened: nothing to store
            raw = payload.raw if isinstance(payload, Signed) else payload
            await self._record(job, kind, raw, meta, now, actions)
        await self._act(job, actions)

    async def _record(self, job: SubmitterJob, kind: str, raw: bytes, meta: dict, now: int, actions: list) -> None:
        p = self.ports
        offences = [(x.executor, x.reason) for x in actions if isinstance(x, Penalize)]
        certificate = next((x.certificate for x in actions if isinstance(x, PublishCertificate)), None)
        new_cert = await p.store.record_input(job.job_id.hex(), kind, raw, meta, now, status=job.state,
                                              reason=job.reason, certificate=certificate, offences=offences)
        for who, _ in offences:
            p.ledger.apply_offence(who)
        if new_cert:
            p.ledger.apply_certificate(verify_certificate(certificate), now)
        p.events.notify()

    async def _act(self, job: SubmitterJob, actions: list) -> None:
        p = self.ports
        for action in actions:
            if isinstance(action, SendAward):
                p.runtime.spawn(self._send_award, job, action)
            elif isinstance(action, RequestReveal):
                p.runtime.spawn(self._request_reveal, job, action)
            elif isinstance(action, PublishCertificate):
                await p.transport.publish(action.certificate)
                p.events.count("certified")
            elif isinstance(action, Penalize):
                p.events.reject(action.reason, f"by executor {peer_id_from_public_key(action.executor)}")
            elif isinstance(action, WidenBids):
                await self._widen(job, action.share)
            elif isinstance(action, Finished):
                log.info("job %s %s%s", job.job_id.hex()[:12], action.status, f": {action.reason}" if action.reason else "")
                await self.ended(job.job_id, action.status, action.reason)
                if job.spec.block_roots and self.inputs is not None:  # its inputs and module may go
                    await self.inputs.release_submission(job.spec)
                p.events.job_finished(action.status, action.reason, (p.now_ms() - job.started_ms) / 1000)

    async def _widen(self, job: SubmitterJob, share: int) -> None:
        """Too few acceptable bids: the job (its input already stored) widened to `share`. Stored
        as the job's share, then gossiped as a signed Widen; this node bids too if it became
        eligible only now."""
        p = self.ports
        await p.store.set_job_share(job.job_id.hex(), share)
        widen = sign(self.identity, Widen(job.job_id, share, p.now_ms()))
        self.widenings[job.job_id] = widen
        await p.transport.publish(widen)
        p.events.count("widened")
        log.info("job %s widened bidding to %s of the network", job.job_id.hex()[:12], share_text(share),
                 extra={"job_id": job.job_id.hex(), "event": "widened", "detail": share_text(share)})
        if job.job_id not in self.considered and eligible(job.job_id, self.me, share):
            self.considered.add(job.job_id)
            await self.consider(job.job_id, job.spec, ())

    async def _send_award(self, job: SubmitterJob, action: SendAward) -> None:
        try:
            await self.ports.transport.deliver(action.executor, AWARD_PROTOCOL, action.award)
        except (RemoteError, RemoteProtocolError) as exc:
            log.info("award to %s not delivered: %s", peer_id_from_public_key(action.executor), exc)
            await self.apply(job, "undelivered", action.executor)

    async def _request_reveal(self, job: SubmitterJob, action: RequestReveal) -> None:
        try:
            raw = await self.ports.transport.deliver(action.executor, REVEAL_PROTOCOL, action.request)
            signed = decode_reveal_answer(raw, action.executor)
            await self.apply(job, "reveal", signed)
        except RemoteProtocolError as exc:
            self.ports.events.reject(exc.reason, f"reveal from {peer_id_from_public_key(action.executor)}")
        except RemoteError as exc:
            # The reveal window will pass and the slot will be replaced.
            log.info("no reveal from %s: %s", peer_id_from_public_key(action.executor), exc)

    async def _reannounce(self, job: SubmitterJob, announce: bytes) -> None:
        """Gossip is best effort: a publish reaches only the current mesh and nothing reports a
        loss. While the job lacks bidders, publish the same announcement again; nodes that have it
        ignore the author's repeats."""
        repeats = 0
        while not job.done:
            await trio.sleep(reannounce_after_ms(repeats) / 1000)  # a retry period, not synchronization
            if not job.wants_bids:
                repeats = 0
                continue
            repeats += 1
            await self.ports.transport.publish(announce)
            self.ports.events.count("reannounced")
            if job.job_id in self.widenings:  # for peers that missed it: a repeat is a counted replay
                await self.ports.transport.publish(self.widenings[job.job_id])

    async def run_deadlines(self) -> None:
        """Tick jobs whose next deadline has passed; sleep until the earliest one or any change."""
        p = self.ports
        while True:
            changed = p.events.changed()
            deadlines = [d for j in self.jobs.values() if (d := j.next_deadline_ms()) is not None]
            wait_s = max(0.0, (min(deadlines) - p.now_ms()) / 1000) if deadlines else 3600.0
            with trio.move_on_after(wait_s):
                await changed.wait()
            now = p.now_ms()
            for job in list(self.jobs.values()):
                due = job.next_deadline_ms()
                if due is not None and due <= now:
                    await self.apply(job, "tick", b"")

    # --- recovery -------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild unfinished jobs from their stored inputs and re-issue what may be undelivered."""
        p = self.ports
        for row in await p.store.list_jobs(role="submitter", limit=100_000):
            if row["status"] in ("verified", "failed", "nondeterministic"):
                self.ended_before.add(bytes.fromhex(row["job_id"]))  # a late commit is job_finished, as before the restart
                continue
            job = replay(self.identity, self.timing, await p.store.inputs(row["job_id"]))
            if job is None:
                continue
            self.jobs[job.job_id] = job
            log.info("recovered job %s in state %s", row["job_id"][:12], job.state)
            if self.me in job.bids or self.me in job.declines:
                self.considered.add(job.job_id)
            if await p.store.job_share(row["job_id"]) != job.share:  # a crash between its input and the row
                await p.store.set_job_share(row["job_id"], job.share)
            if row["announce"] is not None and job.share > verify(row["announce"], Announce).msg.share:
                self.widenings[job.job_id] = sign(self.identity, Widen(job.job_id, job.share, p.now_ms()))
            resend: list = [SendAward(e, s.raw) for e, s in job.awards.items() if job.slot[e] == "awarded"]
            resend += [RequestReveal(e, sign(self.identity, RevealRequest(job.job_id, e)))
                       for e in job.reveal_asked_ms if job.slot[e] == "committed"]
            await self._act(job, resend)
            if row["announce"] is not None:
                p.runtime.spawn(self._reannounce, job, row["announce"])
        if self.inputs is not None:  # before any new submission: pins a crash left behind
            stale = await self.inputs.sweep_submissions(
                {submission_owner(j.spec) for j in self.jobs.values() if not j.done})
            if stale:
                log.info("released %d submission pins a crash left behind", len(stale))

    # --- helpers --------------------------------------------------------------------------------

    def _unbid_best(self, job: SubmitterJob, bidder: bytes, outside: bool = False) -> int:
        """`unbid_best` (consensus/submitter_rules.py) over this node's connected peers, in its
        ledger's view: the rule the simulator applies too."""
        keys = [public_key_from_peer_id(peer) for peer in self.ports.transport.connected_peers()]
        return unbid_best(job, keys, self.ports.ledger.reputation_of, bidder, outside)

    def _undecided(self, job: SubmitterJob, sender: bytes) -> int | None:
        """How many of the nodes that could still bid (this one and its connected peers, bootstraps
        aside, eligible at the job's share) have neither bid nor declined, the input's own sender counted as decided. None
        (unknown: the timeouts decide) once this node is connected to as many peers as discovery
        aims for (p2p/discovery.py TARGET_PEERS): the network may then be larger than what it
        sees, and nodes it is not connected to may still be dialing in with their bids."""
        peers = self.node_peers()
        if len(peers) >= TARGET_PEERS:
            return None
        heard = job.bids.keys() | job.declines.keys() | {sender}
        return sum(1 for key in [self.me, *peers] if key not in heard and eligible(job.job_id, key, job.share))

    def _from_bidder(self, peer: str, data: bytes, kind: type) -> tuple[Signed, SubmitterJob]:
        """A bid or decline checked: signed by the peer that sent it, for a job of this node's, from
        an identity with this node's proof-of-work difficulty (`weak_identity` otherwise)."""
        signed = verify(data, kind)
        self._check_sender(signed, peer, kind.kind)
        job = self._own_job(signed.msg.job_id)
        difficulty = self.settings.pow_difficulty
        if not pow_ok(signed.signer, signed.msg.pow, difficulty):
            raise RemoteProtocolError("weak_identity", f"the {kind.kind}'s proof-of-work is under {difficulty} bits")
        return signed, job

    def _own_job(self, job_id: bytes) -> SubmitterJob:
        job = self.jobs.get(job_id)
        if job is None and job_id in self.ended_before:
            raise RemoteProtocolError("job_finished", "the job has ended")
        if job is None:
            raise RemoteProtocolError("unknown_job", "no such job submitted here")
        return job

    @staticmethod
    def _check_sender(signed: Signed, peer: str, what: str) -> None:
        if peer_id_from_public_key(signed.signer) != peer:
            raise RemoteProtocolError("wrong_sender", f"{what} signed by a key other than the sending peer's")


def share_text(share: int) -> str:
    """A share (consensus/sampling.py) for people: "all", "1/4", or a percentage ("3.1%")."""
    if share >= SHARE_ALL:
        return "all"
    if SHARE_ALL % share == 0:
        return f"1/{SHARE_ALL // share}"
    return f"{100 * share / SHARE_ALL:.2g}%"
