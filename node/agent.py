"""The node's protocol agent: moves messages between the overlay, the pure core and the sandbox.

Contract:
- Every message from a peer is verified by `consensus` before it touches state. A message that
  fails is answered with a refusal (requests) or dropped (gossip), counted in `rejected[reason]`,
  and changes nothing.
- The submitter's side lives in `submitting.py`, the executor's in `executing.py`; this module
  owns what they share: identity, overlay, store, ledger, counters, and local delivery (when the
  submitter is also one of its own executors, messages go through the same handlers without the
  network), and hands it to them as narrow ports (`ports.py`, built by `Agent.ports`).
- The control socket and the REST API call the agent's facade methods (`submit`, `cancel`,
  `job_status`, `page_jobs`, ...), never the roles or the store directly.
- A full disk never ends the node: a `StoreFull` (node/store.py) at a task boundary (a spawned
  task, a request handler, a gossip message, the deadline loop) drops that input, is counted
  (`store_full`) and tells the disk guard (node/disk.py), which logs one line per episode and stops
  bidding until space returns. Outputs of ended jobs are removed after `keep_outputs_s`
  (node/retention.py), never while a node is fetching them.
- Blocks by CID: the block store (`blocks`, node/blockstore.py) is served to any peer over
  Bitswap (p2p/bitswap.py, started in `run`, every block verified with `consensus.cid.verify_block`)
  and filled by `fetch_dag` (node/transfer.py); `blobs` (node/blobs.py) is the user's side of it.
- Sampled bidding: an announcement this node is not eligible for is stored, nothing more (no bid,
  no decline); a widening is node/eligibility.py's, as is the `network_size` estimate.
- Reputation and credits are a fold (`consensus.ledger`) over the ledger events in the store,
  rebuilt at start, so they are identical before and after a restart.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import trio

from distributeai.consensus.certificate import CheckedCertificate, verify_certificate
from distributeai.consensus.cid import verify_block
from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import LocalProtocolError, RemoteProtocolError
from distributeai.consensus.gossip import check_gossip
from distributeai.consensus.ledger import UNTRUSTED, Ledger
from distributeai.consensus.messages import JobSpec, verify
from distributeai.consensus.names import (
    AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, DECLINE_PROTOCOL, JOBS_TOPIC, REVEAL_PROTOCOL,
    WITHDRAW_PROTOCOL,
)
from distributeai.consensus.submitter import TERMINAL
from distributeai.consensus.validate import CheckedAnnounce, CheckedWiden
from distributeai.p2p.identity import peer_id_from_public_key, public_key_from_peer_id
from distributeai.p2p.overlay import GossipMessage, Overlay, RemoteError
from distributeai.sandbox.base import Sandbox, SandboxError

from . import wire
from .blobs import Blobs
from .blockstore import BlockStore
from .clock import now_ms
from .disk import CHECK_INTERVAL_S, DiskGuard
from .eligibility import may_bid, network_size, on_widen
from .executing import Executing
from .metrics import NodeMetrics
from .outputs_serving import OutputsServing
from .ports import Content, Events, NodeSettings, Ports, Runtime, Sandboxes, Transport
from .reconcile import ReconcileHooks, Reconciler
from .retention import Pins, run_sweeper, sweep_interval
from .store import Store, StoreFull
from .submitting import Submitting
from .transfer import Progress, Transfers, fetch_dag
from .views import job_view, task_results

log = logging.getLogger("distributeai.node")
Handler = Callable[[str, bytes], Awaitable[bytes]]


__all__ = ["Agent", "NodeSettings"]  # NodeSettings lives in ports.py; imported from here too


class Agent:
    executing_class = Executing  # tests/byzantine_node.py swaps in a dishonest executor

    def __init__(self, identity: Identity, store: Store, overlay: Overlay, sandboxes: dict[str, Sandbox],
                 settings: NodeSettings, outputs_dir: Path | None = None, blocks: BlockStore | None = None) -> None:
        """`sandboxes` maps a spec's sandbox kind ("container", "wasm") to the backend that runs it."""
        self.identity = identity
        self.me = identity.public_key
        self.peer_id = peer_id_from_public_key(self.me)
        self.store = store
        self.overlay = overlay
        self.sandboxes = sandboxes
        self.outputs_dir = outputs_dir
        self.blocks = blocks
        self.transfers = Transfers()  # every import and fetch in progress (node/transfer.py)
        self.blobs = (Blobs(blocks, self._fetch_blocks, overlay.connected_peers, overlay.find_providers, overlay.provide,
                            self.transfers) if blocks is not None else None)
        self.settings = settings
        self.ledger = Ledger(genesis=settings.genesis_credits)
        self.rejected: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.metrics = NodeMetrics(self._gauges)  # mirrors counters/rejected for Prometheus
        self.metrics_url: str | None = None  # set by the daemon when it serves /metrics
        self.api_url: str | None = None  # set by the daemon when it serves the REST API
        self.http: Counter = Counter()  # what the daemon's HTTP servers refused or closed (p2p/http.py)
        self.changed = trio.Event()  # replaced on every change; waiters re-check their condition
        self._announcing: set[bytes] = set()  # roots whose provider record is being published
        self.nursery: trio.Nursery = None  # type: ignore[assignment]  # set by run()
        self.disk = DiskGuard(settings.data_dir, settings.disk_reserve)
        self.pins = Pins(now_ms)  # jobs whose outputs are being served (node/retention.py)
        self.sandbox_ok: dict[str, bool] = {}
        for kind, sandbox in sandboxes.items():
            try:
                sandbox.check()
                self.sandbox_ok[kind] = True
            except SandboxError as exc:
                log.warning("sandbox %s unusable, this node will not bid on %s jobs: %s", sandbox.name, kind, exc)
                self.sandbox_ok[kind] = False
        ports = self.ports()
        self.executing = self.executing_class(identity, settings, ports,
                                              Sandboxes(sandboxes, self.sandbox_ok, outputs_dir))
        self.submitting = Submitting(identity, settings, ports, self.executing.consider, self.executing.job_ended)
        self.reconciler = Reconciler(self.ledger, store, overlay, settings, ReconcileHooks(
            self.accept_certificate, self.count, self.reject, now_ms, self.store_full))
        self.outputs = OutputsServing(store, self.pins, blocks, self.fetch_dag, self.job_status)
        self.handlers: dict[str, Handler] = {
            BID_PROTOCOL: self.submitting.handle_bid,
            DECLINE_PROTOCOL: self.submitting.handle_decline,
            COMMIT_PROTOCOL: self.submitting.handle_commit,
            WITHDRAW_PROTOCOL: self.submitting.handle_withdraw,
            AWARD_PROTOCOL: self.executing.handle_award,
            REVEAL_PROTOCOL: self.executing.handle_reveal,
        }

    def ports(self) -> Ports:
        """The narrow ports the two roles reach the node through (ports.py)."""
        overlay = self.overlay
        return Ports(
            transport=Transport(publish=self.publish, deliver=self.deliver, connect=overlay.connect,
                                connected_peers=overlay.connected_peers, remote_ip=overlay.remote_ip,
                                multiaddrs=overlay.multiaddrs, network_size=self.network_size),
            store=self.store,
            ledger=self.ledger,
            events=Events(count=self.count, reject=self.reject, notify=self.notify, changed=lambda: self.changed,
                          job_finished=self.metrics.job_finished, sandbox_run=self.metrics.sandbox_run),
            runtime=Runtime(now_ms=now_ms, spawn=lambda fn, *args: self.nursery.start_soon(self._task, fn, *args)),
            disk=self.disk,
            content=(Content(self.blocks, self.fetch_dag, self.announce, self.transfers)
                     if self.blocks is not None else None),
        )

    async def _task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """A spawned task's boundary: a full disk drops what it was doing (counted), nothing else
        changes (other exceptions still reach the nursery, as before)."""
        try:
            await fn(*args)
        except StoreFull as exc:
            self.store_full(exc, getattr(fn, "__name__", "a task"))

    def store_full(self, exc: BaseException, what: str) -> None:
        """A store write failed for want of disk: the input is dropped; counted as `store_full`
        (`node info`, metric distributeai_store_write_failures_total); the disk guard logs the
        episode once and stops bidding."""
        self.count("store_full")
        self.disk.write_failed(exc, what)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await self._rebuild_ledger()
            # What the overlay refuses before any handler sees it (a peer over its rate limit,
            # an oversized or malformed request) counts as the node's own rejections do; at
            # DEBUG, since a flood would otherwise log a line per message.
            self.overlay.set_reject_hook(lambda reason: self.reject(reason, "by the overlay", level=logging.DEBUG))
            self.overlay.set_standing(self.established)
            if self.blocks is not None:
                self.overlay.start_bitswap(self.blocks, verify_block)
            await self.submitting.recover()
            await self.executing.recover()
            # Peers' requests only once the jobs are rebuilt: a commit arriving earlier would be refused as unknown_job.
            for protocol, handler in self.handlers.items():
                self.overlay.set_handler(protocol, self._guard(handler))
            self.reconciler.start(nursery)  # serves RECONCILE_PROTOCOL, reconciles on connect and periodically
            nursery.start_soon(self._read_gossip)
            nursery.start_soon(self._keep_running, self.submitting.run_deadlines)
            nursery.start_soon(self.disk.run)
            if self.outputs_dir is not None:
                keep = self.settings.keep_outputs_s
                nursery.start_soon(partial(run_sweeper, self.store, self.outputs_dir, keep, now_ms, self.pins,
                                           self.store_full, sweep_interval(keep), blocks=self.blocks))
            task_status.started()

    async def _rebuild_ledger(self) -> None:
        for event in await self.store.ledger_events():
            if event["kind"] == "certificate":
                self.ledger.apply_certificate(verify_certificate(event["raw"]), event["at_ms"])
            else:
                self.ledger.apply_offence(event["peer"])

    async def _keep_running(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop that should never end; a full disk ends one pass of it, not the node: the
        loop starts again CHECK_INTERVAL_S later."""
        while True:
            try:
                await loop()
            except StoreFull as exc:
                self.store_full(exc, getattr(loop, "__name__", "a loop"))
                await trio.sleep(CHECK_INTERVAL_S)  # a back-off while the disk is full, not synchronization

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def count(self, what: str) -> None:
        self.counters[what] += 1
        self.metrics.count(what)

    def reject(self, reason: str, detail: str = "", *, level: int = logging.DEBUG) -> None:
        self.rejected[reason] += 1
        self.metrics.reject(reason)
        log.log(level, "rejected: %s %s", reason, detail)

    async def publish(self, data: bytes) -> None:
        """Gossip a message on the jobs topic, counted as `gossip_out`."""
        await self.overlay.publish(JOBS_TOPIC, data)
        self.count("gossip_out")

    def network_size(self) -> int:
        """How many nodes the network holds, as this node can tell from the DHT (eligibility.py)."""
        return network_size(*self.overlay.dht_keys(), self.settings.bootstrap_peers)

    def _gauges(self) -> dict[str, float]:
        return {"distributeai_peers": len(self.overlay.connected_peers()),
                "distributeai_network_size_estimate": self.network_size(),
                "distributeai_reputation": self.ledger.reputation_of(self.me),
                "distributeai_credits": self.ledger.balance(self.me),
                "distributeai_disk_free_bytes": self.disk.free,
                "distributeai_disk_low": int(self.disk.low)}

    def _guard(self, handler: Handler) -> Handler:
        """Turn protocol faults in a request into a counted refusal; nothing else escapes."""

        async def guarded(peer: str, data: bytes) -> bytes:
            try:
                return await handler(peer, data)
            except RemoteProtocolError as exc:
                self.reject(exc.reason, f"from {peer}: {exc.detail}")
                return wire.refuse(exc.reason)
            except StoreFull as exc:
                # Dropped, as if this node were unreachable: the peer retries or replaces it.
                self.store_full(exc, f"a request from {peer}")
                raise RemoteError("the node's disk is full") from None

        return guarded

    async def deliver(self, to: bytes, protocol: str, data: bytes) -> bytes:
        """Send a request to a peer, or to this node's own handler when the peer is itself;
        returns the payload of a positive answer (RemoteProtocolError for a refusal)."""
        if to == self.me:
            answer = await self._guard(self.handlers[protocol])(self.peer_id, data)
        else:
            answer = await self.overlay.request(peer_id_from_public_key(to), protocol, data,
                                                timeout=self.settings.request_timeout_s)
        return wire.parse_answer(answer)

    def peers(self) -> list[dict]:
        connected = set(self.overlay.connected_peers())
        return [{"peer_id": p, "addrs": addrs, "connected": p in connected,
                 "reputation": self.ledger.reputation_of(pk) if (pk := public_key_from_peer_id(p)) else None}
                for p, addrs in self.overlay.known_peers()]

    # --- the ledger ---------------------------------------------------------------------------

    def established(self, peer_id: str) -> bool:
        """Whether this node's ledger knows `peer_id` from a verified job (it paid or was paid)
        or gave it reputation: such an author's gossip gets the full rate limit, a newcomer's
        a small one (p2p/ratelimit.py NEWCOMER_GOSSIP_RATE), which is what stops a fresh key's
        flood of announcements from costing every node work."""
        key = public_key_from_peer_id(peer_id)
        return key is not None and (key in self.ledger.spent or self.ledger.reputation_of(key) > 0)

    # --- gossip -------------------------------------------------------------------------------

    async def _read_gossip(self) -> None:
        """Every gossip message is a task boundary: a peer's bad message is a counted rejection,
        and anything else that goes wrong with one message (a bug, a failing disk) is logged with
        its traceback and counted as `internal_error`; the reader, and so the node, goes on."""
        async for message in self.overlay.messages():
            try:
                await self._on_gossip(message)
            except RemoteProtocolError as exc:
                self.reject(exc.reason, f"gossip from {message.from_peer}: {exc.detail}")
            except StoreFull as exc:
                self.store_full(exc, f"gossip from {message.from_peer}")
            except Exception:
                log.exception("gossip message from %s could not be handled", message.from_peer)
                self.reject("internal_error", f"gossip from {message.from_peer}")

    async def _on_gossip(self, message: GossipMessage) -> None:
        self.count("gossip_in")
        if message.from_peer == self.peer_id:
            return  # our own publish echoed back; it was applied when it was made
        checked = check_gossip(message.data, public_key_from_peer_id(message.from_peer), now_ms(), self.settings.pow_difficulty)
        if isinstance(checked, CheckedAnnounce):
            ann = checked
            if not await self.store.insert_job(ann.job_id.hex(), "observer", ann.spec.name, ann.signed_spec,
                                               "announced", now_ms(), list(ann.submitter_addrs),
                                               announce=message.data):
                # A job id seen before: a replay (a third party's is already `wrong_sender`
                # above). The author's own re-announce, for peers that missed it, lands here too
                # on the nodes that had it: dropped the same way, it changes nothing.
                raise RemoteProtocolError("replay", "job already announced")
            self.notify()
            if await may_bid(ann, self.store, self.me):
                await self.executing.consider(ann.job_id, ann.spec, ann.submitter_addrs)
            else:
                self.count("not_eligible")  # no bid, no decline: a later widening may change that
        elif isinstance(checked, CheckedWiden):
            await on_widen(checked, self.store, self.me, self.executing.consider)
            self.count("widenings_in")
        elif not await self.accept_certificate(checked, message.data):
            raise RemoteProtocolError("replay", "certificate already applied")

    async def accept_certificate(self, checked: CheckedCertificate, raw: bytes) -> bool:
        """A checked certificate from gossip or reconciliation (node/reconcile.py): stored, folded
        into the ledger, the job ended here. False if its certificate was held already."""
        cert = checked.certificate
        reason = "" if cert.status == "verified" else (cert.reason or cert.status)
        now = now_ms()
        if not await self.store.record_certificate(cert.job_id.hex(), raw, cert.status, reason, now,
                                                   role_if_new="observer", name=checked.spec.name,
                                                   signed_spec=cert.signed_spec):
            return False
        self.ledger.apply_certificate(checked, now)
        if (why := self.ledger.untrusted(checked)) is not None:  # in the set all the same: consensus/trust.py
            self.reject(UNTRUSTED, why)
        self.count("certificates")
        self.notify()
        # A run of it here stops; a cancel says so in the certificate's reason.
        await self.executing.job_ended(cert.job_id, cert.status, cert.reason)
        return True

    # --- the facade the control socket and the REST API use ---------------------------------

    async def submit(self, signed_spec: bytes, module: bytes | None = None) -> bytes:
        """Announce a job signed by this node's key (Submitting.submit); LocalProtocolError if not."""
        with self._disk_full_refused():
            return await self.submitting.submit(signed_spec, module)

    async def submit_unsigned(self, body: bytes, module: bytes | None = None,
                              inputs: list[tuple[str, str]] = ()) -> bytes:
        """Sign a spec naming this node and submit it, its `inputs` (path, name) imported
        (Submitting.submit_unsigned)."""
        with self._disk_full_refused():
            return await self.submitting.submit_unsigned(body, module, inputs)

    async def cancel(self, job_id: bytes) -> None:
        """Cancel a job submitted from this node (Submitting.cancel); LocalProtocolError if not."""
        with self._disk_full_refused():
            await self.submitting.cancel(job_id)

    @contextmanager
    def _disk_full_refused(self) -> Iterator[None]:
        """A user's request that needs the store while the disk is full: refused as `store_full`."""
        try:
            yield
        except StoreFull as exc:
            self.store_full(exc, "a user's request")
            raise LocalProtocolError("store_full", f"the node's data dir is full ({self.disk.path})") from None

    @property
    def jobs_running(self) -> int:
        return self.executing.running

    async def page_jobs(self, role: str | None, status: str | None, offset: int, limit: int) -> tuple[int, list[dict]]:
        return await self.store.page_jobs(role, status, offset, limit)

    async def recent_jobs(self, limit: int) -> list[dict]:
        return await self.store.list_jobs(limit=limit)

    async def job_counts(self) -> dict[str, int]:
        return await self.store.job_counts()

    async def peers_last_seen(self) -> dict[str, int]:
        return await self.store.peers_last_seen()

    async def stored_peers(self, limit: int = 1000) -> list[str]:
        """Peer ids remembered for restarts."""
        return [p for p, _ in await self.store.known_peers(limit=limit)]

    # --- views --------------------------------------------------------------------------------

    async def job_status(self, job_hex: str) -> dict | None:
        row = await self.store.get_job(job_hex)
        if row is None:
            return None
        try:
            machine = self.submitting.jobs.get(bytes.fromhex(job_hex))
        except ValueError:
            return None
        execution = await self.store.get_execution(job_hex)
        return job_view(row, machine, execution, peer_id_from_public_key, self.ledger.untrusted)

    async def wait_job(self, job_hex: str, timeout_s: float) -> dict | None:
        """The job's view once it has a verdict, or as it stands when `timeout_s` passes."""
        with trio.move_on_after(timeout_s):
            while True:
                changed = self.changed
                status = await self._job_state(job_hex)
                if status is None or status in TERMINAL:
                    break
                await changed.wait()
        return await self.job_status(job_hex)

    async def _job_state(self, job_hex: str) -> str | None:
        """Just the status: cheap enough to check on every change while a client waits."""
        try:
            machine = self.submitting.jobs.get(bytes.fromhex(job_hex))
        except ValueError:
            return None
        if machine is not None:
            return machine.state
        row = await self.store.get_job(job_hex)
        return None if row is None else row["status"]

    async def task_results(self, job_hex: str, start: int, limit: int) -> dict | None:
        """Per-task verdicts and results of a batch (see views.task_results)."""
        row = await self.store.get_job(job_hex)
        if row is None:
            return None
        spec = verify(row["signed_spec"], JobSpec).msg
        machine = self.submitting.jobs.get(bytes.fromhex(job_hex))
        if machine is not None:
            reveals = {e: s.msg for e, s in machine.reveals.items()}
        elif row.get("certificate"):
            reveals = verify_certificate(row["certificate"]).reveals
        else:
            reveals = {}
        return {"job_id": job_hex, "status": row["status"], "total": len(spec.tasks),
                "tasks": task_results(spec, reveals, start, limit)}

    async def _fetch_blocks(self, cids: list[bytes], providers: list[str], deliver) -> None:
        await self.overlay.bitswap.fetch(cids, providers, deliver)

    async def fetch_dag(self, root: bytes, providers: list[str], *, pin: str | None = None,
                        progress: Progress | None = None, max_bytes: int | None = None) -> Progress:
        """Every block of the DAG under `root` into the block store, from `providers`, then from
        the providers the DHT names for `root` (node/transfer.py)."""
        return await fetch_dag(root, self.blocks, self._fetch_blocks, providers, pin=pin, progress=progress,
                               max_bytes=max_bytes, find_providers=self.overlay.find_providers,
                               transfers=self.transfers)

    def announce(self, cid: bytes) -> None:
        """Publish a DHT provider record for `cid` (a root held whole here), in the background;
        one at a time per CID. A record no peer took is counted `provide_failed`."""
        if cid in self._announcing or self.nursery is None:
            return
        self._announcing.add(cid)

        async def provide() -> None:
            try:
                if not await self.overlay.provide(cid):
                    self.count("provide_failed")
            except Exception as exc:  # a DHT fault never reaches the node's nursery
                log.debug("provider record for %s: %r", cid.hex(), exc)
                self.count("provide_failed")
            finally:
                self._announcing.discard(cid)

        self.nursery.start_soon(provide)

    def info(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "multiaddrs": self.overlay.multiaddrs(),
            "sandbox": self.settings.sandbox_name,
            "sandboxes": {kind: {"backend": sb.name, "ok": self.sandbox_ok[kind]} for kind, sb in self.sandboxes.items()},
            "reputation": self.ledger.reputation_of(self.me),
            "credits": self.ledger.balance(self.me),
            "ledger": {"certificates": len(self.ledger.applied), "view_digest": self.ledger.view_digest().hex()},
            "peers": sorted(self.overlay.connected_peers()),
            "network_size_estimate": self.network_size(),
            "mesh_peers": sorted(self.overlay.gossip_peers(JOBS_TOPIC)),
            "jobs_running": self.executing.running,
            "active_jobs": sum(1 for j in self.submitting.jobs.values() if not j.done),
            "counters": dict(self.counters),
            "overlay": self.overlay.stats(),
            "rejected": dict(self.rejected),
            "disk": self.disk.view(),
            **({"blocks": self.blocks.stats()} if self.blocks is not None else {}),
            "http": dict(self.http),
            "pid": os.getpid(),
            **({"metrics_url": self.metrics_url} if self.metrics_url else {}),
            **({"api_url": self.api_url} if self.api_url else {}),
        }
