"""Is another process running with this host's key? The overlay asks its peers, and warns once.

Two data dirs with one key make two hosts with one peer id. libp2p never shows a host its own
peer id from elsewhere: a DHT answer leaves out the peer that asks (`kad_dht/kad_dht.py:607-609`),
the asker skips itself too (`kad_dht/peer_routing.py`, `new_peer_id == local_id`), GossipSub
never forwards a message to its author (`pubsub/gossipsub.py:1046,1067,1161`) and pubsub drops
one that claims to come from us (`pubsub/pubsub.py`, "claiming to be from self"). So each copy
only sees its peers reset its streams ("invalid-signed-record") and its jobs fail.

What tells them apart is the signed peer record. Only the key's holder can sign a record for
its peer id; libp2p stamps each with a time-based `seq` (`peer/peer_record.py` `timestamp_seq`,
nanoseconds) and a peer keeps, per peer id, the newest record it has seen
(`peer/peerstore.py` `consume_peer_record`). Each check asks up to ASKED_PER_CHECK connected
peers, on PROTOCOL, for the record they hold for us (`answer`): one with a valid signature by our
key and a `seq` newer than our own current record was signed by another process holding our
key (`foreign_record`). Our own record is re-issued, with a newer seq, only when our listen
addresses change, so no peer can hold a record of ours newer than the current one; a record of
an earlier run is older and ignored; a peer cannot forge one. The one false alarm: this host's
clock went back between two runs while a peer still holds the earlier run's record.

Which copy notices: the peers hold the newest record, so the copy whose record is older (the one
that started first, on one clock) finds the other's; the newer copy finds its own and says
nothing. Peers that do not serve PROTOCOL (older versions) refuse, and are skipped.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import trio
from libp2p.peer.envelope import consume_envelope
from libp2p.peer.id import ID

logger = logging.getLogger(__name__)

PROTOCOL = "/distributeai/peer-record/1"
# A check every CHECK_EVERY_S (jittered) asks this many random connected peers: a tiny request
# each (the answer is one signed record, ~200 bytes), on sessions that are mostly open anyway.
CHECK_EVERY_S = 10.0
ASKED_PER_CHECK = 3
ASK_TIMEOUT_S = 5.0
_RECORD_DOMAIN = "libp2p-peer-record"
DOCS = 'docs/architecture.md, "Identity faults and recovery"'


def answer(host: Any, peer_id: str) -> bytes:
    """What we hold for `peer_id` (the peer that asks: Noise authenticated it): its newest signed
    peer record, marshalled, or b"" if we hold none."""
    try:
        envelope = host.get_peerstore().get_peer_record(ID.from_base58(peer_id))
    except Exception:  # a malformed id, or the peerstore dropping it under us
        return b""
    return envelope.marshal_envelope() if envelope is not None else b""


def own_seq(host: Any) -> int | None:
    """The seq of our current signed peer record, None before libp2p issued one."""
    envelope = host.get_peerstore().get_local_record()
    return envelope.record().seq if envelope is not None else None


def foreign_record(self_id: ID, our_seq: int, blob: bytes) -> tuple[int, list[str]] | None:
    """(seq, addresses) of `blob` when it is a record signed by our key with a seq newer than ours
    (another process holds our key); None for anything else (empty, malformed, forged, another
    peer's, ours, or older than ours)."""
    if not blob:
        return None
    try:
        envelope, record = consume_envelope(blob, _RECORD_DOMAIN)  # checks the signature
        signer = ID.from_pubkey(envelope.public_key)
    except Exception:  # libp2p raises several types for bytes that are not a valid envelope
        return None
    if signer != self_id or record.peer_id != self_id or record.seq <= our_seq:
        return None
    return record.seq, sorted(str(a) for a in record.addrs)


class SelfCheck:
    """The overlay's duplicate-identity check: `run(overlay)` for the overlay's life. Counts each
    other holder's record once (`conflicts`, shown as `identity_conflicts` in the overlay's stats)
    and logs one WARNING per set of addresses found."""

    def __init__(self) -> None:
        self.conflicts = 0
        self._seen_seqs: set[int] = set()
        self._warned: set[tuple[str, ...]] = set()

    async def run(self, overlay: Any) -> None:
        while True:
            await trio.sleep(CHECK_EVERY_S * random.uniform(0.5, 1.0))  # a periodic task, not a synchronisation
            try:
                await self.check(overlay)
            except Exception:  # task boundary: one failed check must not stop the node
                logger.debug("identity check failed; retrying later", exc_info=True)

    async def check(self, overlay: Any) -> None:
        """Ask up to ASKED_PER_CHECK random connected peers for the record they hold for us."""
        peers = overlay.connected_peers()
        answers: list[bytes] = []

        async def ask(peer: str) -> None:
            try:
                answers.append(await overlay.request(peer, PROTOCOL, b"", timeout=ASK_TIMEOUT_S))
            except Exception as exc:  # RemoteError (an older peer, a dropped connection): skip it
                logger.debug("identity check: %s", exc)

        async with trio.open_nursery() as nursery:
            for peer in random.sample(peers, min(ASKED_PER_CHECK, len(peers))):
                nursery.start_soon(ask, peer)
        # Read after the answers: had our record been re-issued meanwhile, a peer may hold the new one.
        our_seq = own_seq(overlay._host)
        if our_seq is None:
            return
        for blob in answers:
            self.judge(overlay._self_id, our_seq, blob)

    def judge(self, self_id: ID, our_seq: int, blob: bytes) -> None:
        found = foreign_record(self_id, our_seq, blob)
        if found is None:
            return
        seq, addrs = found
        if seq not in self._seen_seqs:
            self._seen_seqs.add(seq)
            self.conflicts += 1
        if tuple(addrs) not in self._warned:
            self._warned.add(tuple(addrs))
            logger.warning(
                "another node is running with this node's key (peer id %s) at %s: stop one of them; each "
                "data dir needs its own key file (see %s)", self_id.to_base58(), " ".join(addrs) or "unknown addresses",
                DOCS)
