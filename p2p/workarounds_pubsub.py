"""py-libp2p 0.8.1's pubsub (GossipSub) settings and workarounds: the mesh parameters, local
back-off after a prune, peer-record caches, the sequence number, and the per-forwarder rate limit
that runs before libp2p spends anything on a message.

Each item names the defect, the libp2p file:line (installed 0.8.1 package) and the entry of
docs/libp2p.md it comes from, so that a later pin can drop what it fixes. The host's
transport, connection, DHT and logging workarounds are in workarounds.py.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub

# docs/libp2p.md item 5: the default heartbeat is 120 s (`pubsub/gossipsub.py:179`); the mesh is
# built and repaired only on heartbeats, so a slow one leaves new peers out for minutes.
GOSSIP_HEARTBEAT_S = 1
# Mesh degree as measured in docs/libp2p.md; degree_high well above degree so a node with many
# links does not trim its mesh on every heartbeat (the trim is what flags leaves as GRAFT
# flooders in a star, `pubsub/gossipsub.py:1846-1856`).
GOSSIP_DEGREE, GOSSIP_DEGREE_LOW, GOSSIP_DEGREE_HIGH = 6, 4, 12



def new_gossipsub() -> GossipSub:
    """GossipSub v1.1 with a 1 s heartbeat and spam protection off.

    docs/libp2p.md item 5: spam protection allows 10 msg/s per peer per topic, own publishes
    included, and drops the rest silently (`pubsub/gossipsub.py:2872-2905`). The project's
    rates are far below what the CPU cost allows anyway (about 6 ms per message per node).
    """
    gossipsub = GossipSub(
        [PROTOCOL_ID_V11],
        degree=GOSSIP_DEGREE,
        degree_low=GOSSIP_DEGREE_LOW,
        degree_high=GOSSIP_DEGREE_HIGH,
        heartbeat_interval=GOSSIP_HEARTBEAT_S,
        spam_protection_enabled=False,
    )
    back_off_pruned_mesh_peers(gossipsub)
    return gossipsub


def back_off_pruned_mesh_peers(gossipsub: GossipSub) -> None:
    """Back off locally from the peers our heartbeat prunes, as go-libp2p does.

    When a mesh grows past degree_high, the heartbeat prunes peers (`pubsub/gossipsub.py:
    1437-1449`) without noting a back-off for them on our side (`_consider_peer_replacement`,
    `pubsub/gossipsub.py:3469-3470`, does), so a later heartbeat may graft the same peer again
    at once. That peer took our PRUNE as the start of a back-off and reads the quick GRAFT as a
    flood (`pubsub/gossipsub.py:516-534,1847-1858`): it penalises us and prunes us back. In a
    50-node network that was 547 "GRAFT flood detected" warnings in 100 s. Every graft path
    skips peers in back-off (`_get_in_topic_gossipsub_peers_from_minus(..., True)`,
    `pubsub/gossipsub.py:1416-1420,1607`), so noting it here stops the ping-pong.
    """
    heartbeat = gossipsub.mesh_heartbeat

    def mesh_heartbeat() -> Any:
        peers_to_graft, peers_to_prune = heartbeat()
        for peer, topics in peers_to_prune.items():
            for topic in topics:
                gossipsub._add_back_off(peer, topic, False)
        return peers_to_graft, peers_to_prune

    gossipsub.mesh_heartbeat = mesh_heartbeat


# A verified peer record is trusted again without a new signature check for this long; well
# under the 2 h TTL libp2p gives certified addresses, so a refresh still happens.
PEER_RECORD_CACHE_S = 600.0


def cache_pubsub_peer_records() -> None:
    """Verify each peer's signed peer record once, not on every gossip RPC.

    docs/libp2p.md "cost figures": every pubsub RPC carries the sender's signed peer record
    (`pubsub/gossipsub.py:1005-1008`, `pubsub/pubsub.py:542`) and every receiver parses and
    verifies it again (`pubsub/utils.py:11-50`, called at `pubsub/pubsub.py:565` and
    `pubsub/gossipsub.py:932`): an Ed25519 check and a peerstore update per RPC, though the
    record only changes when the sender's addresses do. The wrapper remembers, per peer, the
    exact record bytes last accepted and skips the work for identical bytes within
    PEER_RECORD_CACHE_S; any other bytes go through libp2p's full check. Idempotent.
    """
    import libp2p.pubsub.gossipsub as gossipsub_mod
    import libp2p.pubsub.pubsub as pubsub_mod
    from libp2p.pubsub import utils as pubsub_utils

    original = pubsub_utils.maybe_consume_signed_record
    if getattr(pubsub_mod.maybe_consume_signed_record, "_distributeai_cached", False):
        return
    accepted: dict[Any, tuple[bytes, float]] = {}

    def consume(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        key = (id(host), peer_id)
        hit = accepted.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] == record and now - hit[1] < PEER_RECORD_CACHE_S:
            return True
        ok = original(msg, host, peer_id)
        if ok:
            if len(accepted) > 4096:  # bounded: forget everything rather than grow
                accepted.clear()
            accepted[key] = (record, now)
        return ok

    consume._distributeai_cached = True  # type: ignore[attr-defined]
    pubsub_mod.maybe_consume_signed_record = consume
    gossipsub_mod.maybe_consume_signed_record = consume


# Our own signed peer record is rebuilt from the host's addresses at most this often.
OWN_RECORD_CACHE_S = 5.0


def cache_own_peer_record() -> None:
    """Compute our own signed peer record for pubsub at most every OWN_RECORD_CACHE_S.

    Every pubsub RPC carries it, and `peer/peerstore.py:68-105` (`env_to_send_in_RPC`) rebuilds
    the host's address set from its listening sockets to check the cached record on each call:
    a tenth of a node's gossip CPU in a bench profile (issue 6). Addresses change only when
    listeners do; a record at most 5 s old is what a peer would have seen a moment earlier.
    Patched where pubsub imported it (pubsub.py, gossipsub.py, floodsub.py). Idempotent.
    """
    import libp2p.pubsub.floodsub as floodsub_mod
    import libp2p.pubsub.gossipsub as gossipsub_mod
    import libp2p.pubsub.pubsub as pubsub_mod
    from libp2p.peer import peerstore

    if getattr(pubsub_mod.env_to_send_in_RPC, "_distributeai_cached", False):
        return
    original = peerstore.env_to_send_in_RPC
    made: weakref.WeakKeyDictionary[Any, tuple[float, tuple[bytes, bool]]] = weakref.WeakKeyDictionary()

    def own_record(host: Any) -> tuple[bytes, bool]:
        now = time.monotonic()
        hit = made.get(host)
        if hit is not None and now - hit[0] < OWN_RECORD_CACHE_S:
            return hit[1][0], False
        result = original(host)
        made[host] = (now, result)
        return result

    own_record._distributeai_cached = True  # type: ignore[attr-defined]
    for module in (pubsub_mod, gossipsub_mod, floodsub_mod):
        module.env_to_send_in_RPC = own_record


def fix_pubsub_seqno(pubsub: Any) -> None:
    """Start the pubsub sequence number at the current time in nanoseconds, not seconds.

    Message ids are author + seqno (`pubsub/pubsub.py:139-141`), and the seqno counter starts
    at `int(time.time())` and adds 1 per publish (`pubsub/pubsub.py:478,1797-1800`). A node
    that published more than one message per second of its life and restarts reuses seqnos;
    peers then drop its new messages as already seen for `seen_ttl` (120 s). Nanoseconds
    leave room for a billion publishes a second and still fit the 8-byte field.
    """
    pubsub.counter = time.time_ns()


def limit_gossip_rates(pubsub: Any, allow_forwarder: Callable[[Any], bool]) -> None:
    """Drop gossip from a forwarding peer over its rate limit before libp2p does any work on it.

    Defect: py-libp2p 0.8.1 has no per-peer limit on published messages (its spam protection,
    off here, counts per topic and drops silently, see `new_gossipsub`), and spends much on each
    message before any topic validator could refuse it: the read loop gives every message of an
    RPC a task of its own through the service manager (`pubsub/pubsub.py:576-586`,
    `tools/anyio_service/manager.py:473-520`: a task object in a tracked hierarchy), whose
    `push_msg` looks it up in the seen cache, verifies its Ed25519 signature
    (`pubsub/pubsub.py:1745-1749`) and only then runs the topic validators, where the overlay
    limits authors. Measured here: a 1,000 messages/s flood to 3 nodes cut only in `push_msg`
    still slowed an honest job 22 times.

    The one hook between the parse of an RPC and those tasks is the signed-record check the
    read loop calls with the RPC and the sending peer (`pubsub/pubsub.py:561-569`). It is
    wrapped, where `pubsub.py` imported it (after `cache_pubsub_peer_records`, whose wrapper it
    keeps): for each message of the RPC's `publish`, `allow_forwarder(peer ID)` of the host's
    overlay is asked, and the messages it refuses are deleted from the RPC. They are not
    marked seen, so the same message from another peer is still accepted. The gossipsub
    router's own call (`pubsub/gossipsub.py:930-933`, for control messages, after the
    messages were handled) is left alone, so no message is counted twice. Our own publishes
    never pass here. Per host, through a weak registry; idempotent.
    """
    import libp2p.pubsub.pubsub as pubsub_mod

    _GOSSIP_FORWARDER_LIMITS[pubsub.host] = allow_forwarder
    current = pubsub_mod.maybe_consume_signed_record
    if getattr(current, "_distributeai_rate_limited", False):
        return

    def consume_and_limit(rpc: Any, host: Any, peer_id: Any) -> bool:
        ok = current(rpc, host, peer_id)
        allow = _GOSSIP_FORWARDER_LIMITS.get(host)
        if ok and allow is not None and len(rpc.publish):
            refused = [i for i in range(len(rpc.publish)) if not allow(peer_id)]
            for i in reversed(refused):
                del rpc.publish[i]
        return ok

    consume_and_limit._distributeai_cached = getattr(current, "_distributeai_cached", False)  # type: ignore[attr-defined]
    consume_and_limit._distributeai_rate_limited = True  # type: ignore[attr-defined]
    pubsub_mod.maybe_consume_signed_record = consume_and_limit


# host -> the forwarder check of its overlay (limit_gossip_rates).
_GOSSIP_FORWARDER_LIMITS: weakref.WeakKeyDictionary[Any, Callable[[Any], bool]] = weakref.WeakKeyDictionary()
