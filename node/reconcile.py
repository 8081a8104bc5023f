"""Certificate-set reconciliation between nodes: the libp2p shell around consensus/reconcile.py.

Contract:
- Serves RECONCILE_PROTOCOL: a range request (`rq`) is answered from this node's certificate keys
  (the ledger's set, `KeySet`), a get (`gq`) with the stored certificates' bytes
  (`Store.certificates`). Per peer at most SERVE_RATE requests a second (burst SERVE_BURST), on
  top of the overlay's own limit; over it, or malformed, the request is refused and counted
  (`reconcile_rate_limited`, or the decoder's reason in `rejected`).
- Starts a session with every peer it has not reconciled with since it connected (checked every
  POLL_S), and every `interval_s` with one random connected peer (0: on connect only). Bootstraps
  are skipped (they serve no certificates). One session at a time (sessions with several peers at
  once would pull the same certificates from each), each within SESSION_TIMEOUT_S.
- What a session finds missing is pulled GET_MAX at a time and every certificate goes through
  `consensus.reconcile.check_pulled`, which is `check_gossip`, then through `accept`, the same
  store insert and ledger fold a gossiped certificate takes (Agent.accept_certificate). A batch is
  checked whole before any of it is stored.
- A peer that answers with anything malformed, forged, unasked for, or withholds what it listed is
  cut off: its session ends, nothing of that batch is stored, it is counted (`reconcile_bad`, the
  reason in `rejected`) and no session is started with it for CUT_OFF_S. A peer that is
  unreachable or refuses is counted `reconcile_failed`, nothing more; one whose session outlasts
  SESSION_TIMEOUT_S (a slow drip of answers) is counted `reconcile_timeout` and cut off the same way.
- A session never ends the node: a full disk ends it (`store_full`, as the agent counts it), and so
  does any other fault, logged and counted `internal_error`.
- Counters: reconcile_sessions, reconcile_pulled (certificates new to this node),
  reconcile_cut_short (a session's bounds reached: the next one goes on), reconcile_served,
  reconcile_bad, reconcile_failed, reconcile_timeout, reconcile_rate_limited.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Awaitable, Callable

import trio

from distributeai.consensus.certificate import CheckedCertificate
from distributeai.consensus.codec import decode_canonical
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.names import RECONCILE_PROTOCOL
from distributeai.consensus.reconcile import (
    GET_ANSWER_MAX, GET_MAX, KeySet, Session, answer, check_pulled, decode_get, decode_got, encode_get, encode_got,
    get_answer, key_bytes,
)
from distributeai.p2p.overlay import Overlay, RemoteError
from distributeai.p2p.ratelimit import KeyedLimiter

from .ports import NodeSettings
from .store import Store, StoreFull

log = logging.getLogger("distributeai.node.reconcile")

SERVE_RATE = 10.0  # requests/s per peer: a session is a few rounds, a pull one request per 64 certificates
SERVE_BURST = 40.0
POLL_S = 1.0  # how often newly connected peers are looked for
SESSION_TIMEOUT_S = 120.0
CUT_OFF_S = 600.0


@dataclass
class ReconcileHooks:
    """What the reconciler reaches the node through."""
    accept: Callable[[CheckedCertificate, bytes], Awaitable[bool]]  # store + fold; False: held already
    count: Callable[[str], None]
    reject: Callable[..., None]  # (reason, detail="")
    now_ms: Callable[[], int]
    store_full: Callable[[BaseException, str], None]  # a store write failed for want of disk


class Reconciler:
    def __init__(self, ledger: Ledger, store: Store, overlay: Overlay, settings: NodeSettings,
                 hooks: ReconcileHooks) -> None:
        """`settings`: reconcile_interval_s, pow_difficulty (passed to check_gossip as the gossip
        path passes it), request_timeout_s, bootstrap_peers (never asked)."""
        self.ledger = ledger
        self.store = store
        self.overlay = overlay
        self.hooks = hooks
        self.interval_s = settings.reconcile_interval_s
        self.pow_difficulty = settings.pow_difficulty
        self.request_timeout_s = settings.request_timeout_s
        self.skip = settings.bootstrap_peers
        self.keys = KeySet()
        self.limiter = KeyedLimiter(SERVE_RATE, SERVE_BURST)
        self.cut_off: dict[str, float] = {}  # peer -> trio time until which it is not asked
        self.running: set[str] = set()  # peers with a session started or waiting
        self.one_at_a_time = trio.Lock()
        self.reconciled: set[str] = set()  # connected peers a session was started with

    def keyset(self) -> KeySet:
        """This node's certificate keys, brought up to date with the ledger's set."""
        new = self.ledger.arrived(len(self.keys))
        if len(new) > len(self.keys):  # at start: one sort
            self.keys = KeySet.of([*self.keys.keys, *(key_bytes(ms, job_id) for ms, job_id in new)])
        else:  # mostly appends: a certificate arrives about when it was made
            for created_ms, job_id in new:
                self.keys.add(key_bytes(created_ms, job_id))
        return self.keys

    def start(self, nursery: trio.Nursery) -> None:
        """Serve RECONCILE_PROTOCOL and run the sessions (`run`) in `nursery`."""
        self.overlay.set_handler(RECONCILE_PROTOCOL, self.handle)
        nursery.start_soon(self.run)

    # --- serving ------------------------------------------------------------------------------

    async def handle(self, peer: str, data: bytes) -> bytes:
        """One request of a peer's session; a refusal (RemoteError) when over the rate or malformed."""
        if not self.limiter.allow(peer, trio.current_time()):
            self.hooks.count("reconcile_rate_limited")
            raise RemoteError("rate limited")
        try:
            tag = _tag(data)
            if tag == "rq":
                out = answer(self.keyset(), data)
            elif tag == "gq":
                ids = decode_get(data)
                held = await self.store.certificates([j.hex() for j in ids])
                out = encode_got(get_answer(lambda j: held.get(j.hex()), ids, GET_ANSWER_MAX))
            else:
                raise RemoteProtocolError("malformed", "not a reconciliation request")
        except RemoteProtocolError as exc:
            self.hooks.reject(exc.reason, f"reconcile request from {peer}: {exc.detail}")
            raise RemoteError(exc.reason) from None
        self.hooks.count("reconcile_served")
        return out

    # --- initiating ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Sessions with new peers as they connect, and one every `interval_s` with a random peer."""
        async with trio.open_nursery() as nursery:
            next_periodic = trio.current_time() + self.interval_s
            while True:
                connected = [p for p in self.overlay.connected_peers() if p not in self.skip]
                self.reconciled &= set(connected)  # a peer that comes back is new again
                for peer in connected:
                    if peer not in self.reconciled:
                        self.reconciled.add(peer)
                        nursery.start_soon(self.reconcile_with, peer)
                if self.interval_s > 0 and trio.current_time() >= next_periodic:
                    next_periodic = trio.current_time() + self.interval_s
                    if connected:
                        nursery.start_soon(self.reconcile_with, random.choice(connected))
                await trio.sleep(min(POLL_S, self.interval_s) if self.interval_s > 0 else POLL_S)

    async def reconcile_with(self, peer: str) -> None:
        """One session with `peer`; every outcome is counted, nothing escapes."""
        if peer in self.running or self.cut_off.get(peer, float("-inf")) > trio.current_time():
            return
        self.running.add(peer)
        try:
            async with self.one_at_a_time:  # else each peer's session would pull the same certificates
                if self.cut_off.get(peer, float("-inf")) > trio.current_time():
                    return
                with trio.fail_after(SESSION_TIMEOUT_S):
                    await self._session(peer)
        except RemoteProtocolError as exc:
            self.hooks.reject(exc.reason, f"reconciliation with {peer}: {exc.detail}")
            self.hooks.count("reconcile_bad")
            self.cut_off[peer] = trio.current_time() + CUT_OFF_S
            log.info("reconciliation with %s cut off: %s", peer, exc)
        except trio.TooSlowError:  # a peer that keeps a session going past its bound holds the others up
            self.hooks.count("reconcile_timeout")
            self.cut_off[peer] = trio.current_time() + CUT_OFF_S
        except RemoteError as exc:
            self.hooks.count("reconcile_failed")
            log.debug("reconciliation with %s failed: %r", peer, exc)
        except StoreFull as exc:  # what was stored stays; the next session goes on
            self.hooks.store_full(exc, f"reconciliation with {peer}")
        except Exception:  # a bug here never ends the node
            log.exception("reconciliation with %s failed", peer)
            self.hooks.reject("internal_error", f"reconciliation with {peer}")
        finally:
            self.running.discard(peer)

    async def _request(self, peer: str, data: bytes) -> bytes:
        return await self.overlay.request(peer, RECONCILE_PROTOCOL, data, timeout=self.request_timeout_s)

    async def _session(self, peer: str) -> None:
        self.hooks.count("reconcile_sessions")
        session = Session(self.keyset())
        request = session.start()
        while request is not None:
            request = session.on_answer(await self._request(peer, request))
        if session.cut_short:
            self.hooks.count("reconcile_cut_short")
        wanted = {key[8:]: key for key in session.missing}
        while wanted:
            ids = list(wanted)[:GET_MAX]
            raws = decode_got(await self._request(peer, encode_get(ids)), len(ids))
            if not raws:
                raise RemoteProtocolError("reconcile_withheld", "listed certificates it does not give")
            batch = {}
            for raw in raws:  # the whole batch is checked before any of it is stored
                await trio.lowlevel.checkpoint()  # a signature check each: let the node breathe
                checked = check_pulled(raw, wanted, self.hooks.now_ms(), self.pow_difficulty)
                if checked.certificate.job_id in batch:
                    raise RemoteProtocolError("reconcile_unasked", "the same certificate twice")
                batch[checked.certificate.job_id] = (checked, raw)
            for job_id, (checked, raw) in batch.items():
                del wanted[job_id]
                if await self.hooks.accept(checked, raw):
                    self.hooks.count("reconcile_pulled")


def _tag(data: bytes) -> str | None:
    """The request's tag, from a cheap look at its first bytes (the decoders check it all)."""
    # The tag is the first element of a 2-array: 0x92, then a fixstr of 2 bytes (0xa2).
    if len(data) >= 4 and data[0] == 0x92 and data[1] == 0xA2:
        return data[2:4].decode("ascii", "replace")
    decode_canonical(data, 64)  # raises: malformed, oversize
    return None
