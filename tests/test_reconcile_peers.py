"""node/reconcile.py between real libp2p peers in one process, each with a real SQLite store and
ledger: two honest nodes converge both ways; a hostile peer that answers with forged, malformed,
unasked-for or endless data gets nothing stored, is counted and (but for the endless one, which
the session's bounds end) cut off."""

from __future__ import annotations

import os
from collections import Counter

import pytest
import trio

from distributeai.consensus.certificate import CheckedCertificate, verify_certificate
from distributeai.consensus.codec import encode
from distributeai.consensus.ledger import Ledger
from distributeai.consensus.names import RECONCILE_PROTOCOL
from distributeai.consensus.reconcile import (
    FP_LEN, SPLIT, KeySet, answer, decode_request, encode_answer, encode_got, key_bytes,
)
from distributeai.node.ports import NodeSettings
from distributeai.node.reconcile import ReconcileHooks, Reconciler
from distributeai.node.store import Store
from distributeai.p2p.overlay import RemoteError, open_overlay

from .protocol_fixtures import certified_job

DEADLINE_S = 60


@pytest.fixture(scope="module")
def certificates() -> list[bytes]:
    return [certified_job([b"A", b"A", b"B"], nonce=bytes([i]) * 16).certificate for i in range(1, 14)]


class Node:
    """A Reconciler on a real overlay, store and ledger; `accept` stores and folds as the agent's
    accept_certificate does."""

    def __init__(self, overlay, store: Store) -> None:
        self.overlay, self.store = overlay, store
        self.ledger = Ledger()
        self.counters: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        hooks = ReconcileHooks(self.accept, self.count, self.reject, lambda: 0,
                               lambda exc, what: self.count("store_full"))
        self.reconciler = Reconciler(self.ledger, store, overlay, NodeSettings("process", reconcile_interval_s=0),
                                     hooks)
        overlay.set_handler(RECONCILE_PROTOCOL, self.reconciler.handle)

    def count(self, what: str) -> None:
        self.counters[what] += 1

    def reject(self, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1

    async def accept(self, checked: CheckedCertificate, raw: bytes) -> bool:
        cert = checked.certificate
        if not await self.store.record_certificate(cert.job_id.hex(), raw, cert.status, "", 0, role_if_new="observer",
                                                   name=checked.spec.name, signed_spec=cert.signed_spec):
            return False
        self.ledger.apply_certificate(checked, 0)
        return True

    async def hold(self, raws: list[bytes]) -> None:
        for raw in raws:
            await self.accept(verify_certificate(raw), raw)


async def test_two_honest_nodes_converge_both_ways(tmp_path, certificates):
    async with open_overlay(os.urandom(32)) as oa, open_overlay(os.urandom(32)) as ob:
        a, b = Node(oa, await Store.open(tmp_path / "a.db")), Node(ob, await Store.open(tmp_path / "b.db"))
        await a.hold(certificates[:12])
        await b.hold(certificates[8:])  # 4 in common, 1 of its own
        await ob.connect(oa.multiaddrs()[0])
        with trio.fail_after(DEADLINE_S):
            await b.reconciler.reconcile_with(oa.peer_id)
            await a.reconciler.reconcile_with(ob.peer_id)
        assert b.counters["reconcile_pulled"] == 8 and a.counters["reconcile_pulled"] == 1
        assert a.ledger.view_digest() == b.ledger.view_digest() == _fold(certificates).view_digest()
        assert a.counters["reconcile_served"] >= 2 and not a.rejected and not b.rejected
        assert set((await b.store.certificates([verify_certificate(c).certificate.job_id.hex()
                                                for c in certificates])).values()) == set(certificates)


def _fold(raws: list[bytes]) -> Ledger:
    ledger = Ledger()
    for raw in raws:
        ledger.apply_certificate(verify_certificate(raw), 0)
    return ledger


def _forged(raw: bytes) -> bytes:
    out = bytearray(raw)
    out[-1] ^= 1  # the certificate's signature
    return bytes(out)


@pytest.mark.parametrize("lie", ["forged", "half_forged", "unasked", "malformed", "withheld", "endless"])
async def test_a_hostile_peer_gets_nothing_stored_and_is_counted(tmp_path, certificates, lie):
    listed = [verify_certificate(c).certificate for c in certificates[:3]]
    theirs = KeySet.of(key_bytes(c.created_ms, c.job_id) for c in listed)

    async def hostile(peer: str, data: bytes) -> bytes:
        if data[2:4] == b"rq":
            if lie == "malformed":
                return encode(["ra", [[7]]])
            if lie == "endless":  # always split in two, each half claiming items
                items = []
                for lo, hi, _, _ in decode_request(data):
                    x, y = int.from_bytes(lo or bytes(40), "big"), int.from_bytes(hi, "big") if hi else 1 << 320
                    items.append((SPLIT, [(((x + y) // 2).to_bytes(40, "big"), 9, b"\1" * FP_LEN),
                                          (hi, 9, b"\2" * FP_LEN)]))
                return encode_answer(items)
            return answer(theirs, data)
        if lie == "forged":
            return encode_got([_forged(certificates[0])])
        if lie == "half_forged":  # a good certificate first: the batch is checked whole, none stored
            return encode_got([certificates[1], _forged(certificates[0])])
        if lie == "unasked":
            return encode_got([certificates[5]])
        return encode_got([])  # withheld: listed, never given

    async with open_overlay(os.urandom(32)) as honest_o, open_overlay(os.urandom(32)) as liar_o:
        honest = Node(honest_o, await Store.open(tmp_path / "h.db"))
        liar_o.set_handler(RECONCILE_PROTOCOL, hostile)
        await honest_o.connect(liar_o.multiaddrs()[0])
        with trio.fail_after(DEADLINE_S):
            await honest.reconciler.reconcile_with(liar_o.peer_id)
            await honest.reconciler.reconcile_with(liar_o.peer_id)  # cut off: no second session
        assert honest.ledger.applied == set() and await honest.store.ledger_events() == []
        if lie == "endless":
            assert honest.counters["reconcile_cut_short"] == 2 and honest.counters["reconcile_bad"] == 0
            return
        assert honest.counters["reconcile_bad"] == 1 and honest.counters["reconcile_sessions"] == 1
        reason = {"forged": "bad_signature", "half_forged": "bad_signature", "unasked": "reconcile_unasked", "malformed": "malformed",
                  "withheld": "reconcile_withheld"}[lie]
        assert honest.rejected == Counter({reason: 1}), honest.rejected


async def test_malformed_and_flooding_requests_are_refused(tmp_path):
    async with open_overlay(os.urandom(32)) as server_o, open_overlay(os.urandom(32)) as client_o:
        server = Node(server_o, await Store.open(tmp_path / "s.db"))
        await client_o.connect(server_o.multiaddrs()[0])
        with trio.fail_after(DEADLINE_S):
            for bad in (b"", b"\x92\xa2rq\x90", encode(["rq", [[b"", b"", 0, b"short"]]]), encode(["zz", []])):
                with pytest.raises(RemoteError):
                    await client_o.request(server_o.peer_id, RECONCILE_PROTOCOL, bad)
            assert sum(server.rejected.values()) == 4
            good = encode(["rq", [[b"", b"", 0, b"\0" * FP_LEN]]])
            refused = 0
            for _ in range(60):  # over the burst: refused, counted, the server goes on
                try:
                    await client_o.request(server_o.peer_id, RECONCILE_PROTOCOL, good)
                except RemoteError:
                    refused += 1
            assert refused >= 1 and server.counters["reconcile_rate_limited"] == refused
