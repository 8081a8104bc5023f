"""The overlay's discovery side: how a node finds peers through the Kademlia DHT and keeps
TARGET_PEERS of them connected, so that nodes connect to each other and not only to the
bootstrap (docs/libp2p.md item 5: a star starves leaves of gossip).

`Discovery` is the discovery half of `Overlay` (one of its base classes): the loop that
`open_overlay` runs for the overlay's life, its rounds (dial the bootstrap peers, add connected
peers to the routing table, self-lookups and pulls while they teach something, dial up to
TARGET_PEERS), with their pacing. It uses the overlay's `_host`, `_dht`, `_self_id`,
`_dial(info)` (which records failed dials in `_dial_failed_at`) and `_is_connected(pid)`;
`_init_discovery` sets up its own state.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from .reqresp import RemoteError

logger = logging.getLogger(__name__)

# Discovery (see Overlay._discovery_loop): rounds start MIN apart, and back off to MAX once
# rounds stop adding peers to the routing table; a round that adds one resets to MIN.
DISCOVERY_MIN_INTERVAL_S = 0.5
DISCOVERY_MAX_INTERVAL_S = 30.0
# Rounds that teach nothing before the interval starts doubling: a pull learns a given
# missing peer only with some chance, so one empty round does not mean we know everyone.
DISCOVERY_PATIENCE = 3
LOOKUP_TIMEOUT_S = 10.0
# A round looks up our own id at most this often (Kademlia's self-lookup: it finds and dials
# the peers nearest to us, and tells them about us; every lookup query may be a new
# connection, the dearest thing here) ...
SELF_LOOKUP_EVERY_S = 30.0
# ... and pulls peers from this many connected DHT peers (one FIND_NODE each, random key;
# answers hold up to workarounds.FIND_NODE_ANSWER_SIZE peers).
PULLS_PER_ROUND = 2
# Stop dialing discovered peers once this many are connected (others dial us too): gossip
# needs a mesh of 4-12 (workarounds_pubsub.GOSSIP_DEGREE*), and every connection costs a Noise
# handshake, identify and gossip set-up, tens of ms of CPU. With 16, 50 nodes starting
# together on 2 cores spent most of their CPU on connections and took twice as long to know
# each other (40 s instead of 20 s).
TARGET_PEERS = 8
# A peer that failed a dial is not tried again by discovery for this long.
DIAL_BACKOFF_S = 30.0


class Discovery:
    """The discovery half of `Overlay`; see the module's docstring for what it needs."""

    _host: Any
    _dht: Any
    _self_id: ID
    _dial_failed_at: dict[ID, float]
    _dial: Callable[[PeerInfo], Awaitable[None]]
    _is_connected: Callable[[ID], bool]

    def _init_discovery(self) -> None:
        self._last_self_lookup = -SELF_LOOKUP_EVERY_S
        self._bootstrap_unreachable: set[ID] = set()  # bootstrap peers last seen failing, warned once
        self._named_bootstrap: set[ID] = set()  # the configured ones; the rest were remembered (open_overlay)

    def dht_keys(self) -> tuple[bytes, dict[str, bytes]]:
        """For an estimate of the network's size: this node's key and, by peer id, the key of every
        peer in the Kademlia routing table or connected, each as Kademlia places it in the key
        space (SHA-256 of the peer id's bytes, libp2p `kad_dht/routing_table.py` peer_id_to_key)."""
        def key(pid: ID) -> bytes:
            return hashlib.sha256(pid.to_bytes()).digest()

        peers = {*self._dht.routing_table.get_peer_ids(), *self._host.get_connected_peers()} - {self._self_id}
        return key(self._self_id), {pid.to_base58(): key(pid) for pid in peers}

    async def _discovery_loop(self, bootstrap: Sequence[PeerInfo]) -> None:
        """Dial the bootstrap peers, then keep finding peers through the DHT and dialing some.

        docs/libp2p.md item 5: a node connected only to the bootstrap makes a star, in which the hub
        drops leaves from its gossip mesh; so each node also connects to TARGET_PEERS others.
        Nodes learn each other's addresses from Kademlia answers: the self-lookup (it finds,
        and libp2p dials, the peers nearest to us, and tells them about us) and pulls (a single
        FIND_NODE for a random key to a peer we are already connected to).

        Pacing: rounds follow each other at DISCOVERY_MIN_INTERVAL_S while our routing table
        keeps gaining peers (also those that queried us between rounds); after
        DISCOVERY_PATIENCE rounds that add nothing the interval doubles up to
        DISCOVERY_MAX_INTERVAL_S, and rounds shrink to one pull. Connections do not count as
        learning: lookups dial the peers they query, which would keep rounds going by
        themselves. Intervals are jittered so that nodes started together do not query in step.
        """
        interval = DISCOVERY_MIN_INTERVAL_S
        seen: set[ID] = set()
        idle_rounds = 0
        while True:
            try:
                await self._discovery_round(bootstrap, learning=idle_rounds <= DISCOVERY_PATIENCE)
            except Exception:  # task boundary: a libp2p bug in one round must not stop the node
                logger.warning("discovery round failed; retrying later", exc_info=True)
            known = set(self._dht.routing_table.get_peer_ids())
            idle_rounds = 0 if known - seen else idle_rounds + 1
            seen = known
            if idle_rounds == 0:
                interval = DISCOVERY_MIN_INTERVAL_S
            elif idle_rounds > DISCOVERY_PATIENCE:
                interval = min(interval * 2, DISCOVERY_MAX_INTERVAL_S)
            await trio.sleep(interval * random.uniform(0.75, 1.25))  # a periodic task, not a synchronisation

    async def _discovery_round(self, bootstrap: Sequence[PeerInfo], *, learning: bool) -> None:
        """Dial the bootstrap peers if disconnected; while `learning`, look up our own id (at
        most every SELF_LOOKUP_EVERY_S) and pull from PULLS_PER_ROUND connected peers, else
        pull from one (libp2p's own refresh, every 10 minutes, `kad_dht/kad_dht.py:95,418-442`,
        covers the rest: in an idle 50-node network, self-lookups in every round were most of
        the CPU spent); then dial routing-table peers up to TARGET_PEERS connections."""
        async with trio.open_nursery() as nursery:
            for info in bootstrap:
                if not self._is_connected(info.peer_id):
                    nursery.start_soon(self._dial_bootstrap, info)
        # docs/libp2p.md item 6 again, for peers that dialed us (`kad_dht/kad_dht.py:632`).
        table = self._dht.routing_table
        for pid in self._host.get_connected_peers():
            if not table.peer_in_table(pid):
                await self._dht.add_peer(pid)
        routing = self._dht.peer_routing
        now = trio.current_time()
        if learning and now - self._last_self_lookup >= SELF_LOOKUP_EVERY_S:
            self._last_self_lookup = now
            with trio.move_on_after(LOOKUP_TIMEOUT_S):
                await routing.find_closest_peers_network(self._self_id.to_bytes())
        # Pulls: one FIND_NODE for a random key to each of a few random connected DHT peers.
        # The answer's peers (up to 50, with signed records) land in our peerstore and routing
        # table, and the query hands the peer our own record; no new connection is made.
        # A full lookup would also dial every peer it queries: with 50 nodes that made a
        # full mesh, 1,225 connection set-ups competing for the CPU with discovery itself.
        servers = [p for p in self._host.get_connected_peers() if table.peer_in_table(p)]
        async with trio.open_nursery() as nursery:
            for pid in random.sample(servers, min(PULLS_PER_ROUND if learning else 1, len(servers))):
                nursery.start_soon(self._pull, pid)
        now = trio.current_time()
        wanted = TARGET_PEERS - len(self._host.get_connected_peers())
        candidates = [
            info
            for info in table.get_peer_infos()
            if info.peer_id != self._self_id
            and not self._is_connected(info.peer_id)
            and now - self._dial_failed_at.get(info.peer_id, -DIAL_BACKOFF_S) >= DIAL_BACKOFF_S
        ]
        if wanted > 0 and candidates:
            async with trio.open_nursery() as nursery:
                for info in candidates[:wanted]:
                    nursery.start_soon(self._dial_quietly, info)

    async def _pull(self, pid: ID) -> None:
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            # Private, but the one libp2p call for a single FIND_NODE (0.8.1,
            # `kad_dht/peer_routing.py:343-475`); it logs and swallows its own failures.
            await self._dht.peer_routing._query_peer_for_closest(pid, random.randbytes(32))

    async def _dial_bootstrap(self, info: PeerInfo) -> None:
        """A configured bootstrap peer: say once, at WARNING, when it cannot be reached (the
        operator named it), and once more when it can again; discovery keeps retrying. A peer
        remembered from an earlier run is dialed the same way, but quietly: it may be gone."""
        if info.peer_id not in self._named_bootstrap:
            await self._dial_quietly(info)
            return
        try:
            await self._dial(info)
        except RemoteError as exc:
            if info.peer_id not in self._bootstrap_unreachable:
                self._bootstrap_unreachable.add(info.peer_id)
                addrs = " ".join(str(a) for a in info.addrs)
                logger.warning("cannot reach bootstrap %s/p2p/%s (%s); the node runs and keeps trying",
                               addrs, info.peer_id, exc)
        else:
            if info.peer_id in self._bootstrap_unreachable:
                self._bootstrap_unreachable.discard(info.peer_id)
                logger.warning("bootstrap %s reachable again", info.peer_id)

    async def _dial_quietly(self, info: PeerInfo) -> None:
        try:
            await self._dial(info)
        except RemoteError as exc:
            logger.debug("discovery: %s", exc)
