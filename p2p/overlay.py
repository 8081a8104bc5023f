"""The overlay: one libp2p host with gossip topics, DHT discovery and request/response.

`open_overlay` is the only way to get an `Overlay`; it owns every task it starts and closes
the host on exit. All libp2p settings and workarounds come from `workarounds.py`.
"""

from __future__ import annotations

import collections
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from libp2p import new_host
from libp2p.abc import ISubscriptionAPI
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from . import reqresp, session, workarounds
from .fairqueue import FairQueue
from .ratelimit import KeyedLimiter, RateLimits

logger = logging.getLogger(__name__)
quiet_libp2p_logs = workarounds.quiet_libp2p_logs  # public: the CLI calls it after configuring logging
quiet_libp2p_logs()

# Messages waiting in `Overlay.messages()` before new ones are dropped (and counted). libp2p's
# own subscription channel holds only 32 (`pubsub/pubsub.py:124`); this one is drained from
# it at once, so a slow consumer loses messages here, where they are counted.
MESSAGE_BUFFER = 4096
# ... of which one author may fill this many: its rate limit (ratelimit.py) lets through more
# than a busy node may handle at once, and the rest of the buffer stays for everyone else.
MESSAGE_BUFFER_PER_AUTHOR = 512
# Room for the pubsub RPC envelope (signature, key, topic, signed peer record) around a
# payload of max_message_bytes.
RPC_OVERHEAD = 64 * 1024
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
DIAL_TIMEOUT_S = 5.0
# Stop dialing discovered peers once this many are connected (others dial us too): gossip
# needs a mesh of 4-12 (workarounds.GOSSIP_DEGREE*), and every connection costs a Noise
# handshake, identify and gossip set-up, tens of ms of CPU. With 16, 50 nodes starting
# together on 2 cores spent most of their CPU on connections and took twice as long to know
# each other (40 s instead of 20 s).
TARGET_PEERS = 8
# A peer that failed a dial is not tried again by discovery for this long.
DIAL_BACKOFF_S = 30.0
# An author's standing (Overlay.set_standing) is asked again after this long.
STANDING_CACHE_S = 1.0
# Shutdown of a host takes about 0.2 s (libp2p.md); give it far more, never forever.
CLOSE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GossipMessage:
    topic: str
    from_peer: str  # author, as verified by pubsub's signature check (strict signing)
    data: bytes


class RemoteError(Exception):
    """A remote peer failed, refused or timed out a request or a dial; says which and why."""


class Overlay:
    """A running libp2p host. Get one from `open_overlay`; see p2p/README.md for the contract."""

    def __init__(self, seed: bytes, *, dht_server: bool, max_message_bytes: int,
                 rate_limits: RateLimits | None = None) -> None:
        key_pair = create_new_key_pair(seed)
        self._host = new_host(
            key_pair=key_pair,
            sec_opt=workarounds.security_options(key_pair),
            muxer_opt=workarounds.muxer_options(),
            connection_config=workarounds.connection_config(),
            addrs_factory=workarounds.advertised_addrs,
        )
        workarounds.release_inbound_slot_on_close(self._host.get_network())
        workarounds.fix_yamux_window_updates()
        workarounds.cache_pubsub_peer_records()
        workarounds.cache_own_peer_record()
        workarounds.disable_auto_connector(self._host.get_network())
        self._gossipsub = workarounds.new_gossipsub()
        self._pubsub = Pubsub(
            self._host, self._gossipsub, max_inbound_rpc_size=max_message_bytes + RPC_OVERHEAD
        )
        workarounds.fix_pubsub_seqno(self._pubsub)
        workarounds.limit_gossip_rates(self._pubsub, self._allow_forwarder)
        workarounds.tune_dht_lookups()
        self._dht = KadDHT(self._host, DHTMode.SERVER if dht_server else DHTMode.CLIENT)
        workarounds.widen_find_node_answers(self._dht)
        self._max_bytes = max_message_bytes
        self._stats: collections.Counter[str] = collections.Counter()
        self._limiter = reqresp.new_limiter()
        # Per-peer rate limits (ratelimit.py): requests per (peer, protocol); gossip per
        # forwarding peer before libp2p checks a signature, and per author after it.
        limits = rate_limits or RateLimits()
        self.rate_limits = limits
        self._request_rate = KeyedLimiter(limits.request_rate)
        self._forwarder_rate = KeyedLimiter(limits.gossip_forwarder_rate)
        self._author_rate = KeyedLimiter(limits.gossip_author_rate)
        self._newcomer_rate = KeyedLimiter(limits.newcomer_gossip_rate)
        self._reject_hook: Callable[[str], None] | None = None
        self._standing: Callable[[str], bool] | None = None
        self._standing_cache: dict[bytes, tuple[bool, float]] = {}
        # Requests travel in sessions (session.py): one stream per peer and direction.
        self._handlers: dict[str, Callable[[str, bytes], Awaitable[bytes]]] = {}
        self._sessions: dict[ID, session.DialerSession] = {}
        self._session_locks: collections.defaultdict[ID, trio.Lock] = collections.defaultdict(trio.Lock)
        self._nursery: trio.Nursery | None = None
        self._host.set_stream_handler(TProtocol(session.PROTOCOL), self._serve_session)
        self._inbox = _Inbox()
        self._dial_failed_at: dict[ID, float] = {}
        self._last_self_lookup = -SELF_LOOKUP_EVERY_S
        self._bootstrap_unreachable: set[ID] = set()  # bootstrap peers last seen failing, warned once
        self._self_id = self._host.get_id()
        self.peer_id: str = self._self_id.to_base58()

    # --- addresses and peers ----------------------------------------------------------------

    def multiaddrs(self) -> list[str]:
        """Our advertised addrs, each ending in /p2p/<peer id>, with the real bound port."""
        return [str(a) for a in self._host.get_addrs()]

    def connected_peers(self) -> list[str]:
        return [p.to_base58() for p in self._host.get_connected_peers()]

    def known_peers(self) -> list[tuple[str, list[str]]]:
        """(peer id, addrs) for every peer with unexpired addrs in the peerstore, except us.

        Each addr ends in /p2p/<peer id>, so it can be passed to `connect` or `open_overlay`'s
        `bootstrap` as is.
        """
        store = self._host.get_peerstore()
        out = []
        for pid in store.peers_with_addrs():
            if pid == self._self_id:
                continue
            try:
                addrs = store.addrs(pid)
            except Exception:  # expired between the two calls
                continue
            suffix = f"/p2p/{pid.to_base58()}"
            out.append((pid.to_base58(), [_with_p2p(str(a), suffix) for a in addrs]))
        return out

    def remote_ip(self, peer_id: str) -> str | None:
        """The IP address of our connection to `peer_id` as the socket reports it (not what the
        peer advertises): the one its requests arrive on, since libp2p keeps one connection per
        peer here (`max_connections_per_peer=1`). None when not connected or not known."""
        try:
            pid = ID.from_base58(peer_id)
        except Exception:  # libp2p raises several types for a malformed id
            return None
        for conn in self._host.get_network().connections.get(pid, ()):
            try:
                remote = conn.muxed_conn.get_remote_address()
            except Exception:  # a connection closing under us, or a transport without one
                continue
            if remote:
                return remote[0]
        return None

    def gossip_peers(self, topic: str) -> list[str]:
        """Peers in our GossipSub mesh for `topic`: those a publish reaches directly."""
        return [p.to_base58() for p in self._gossipsub.mesh.get(topic, ())]

    def stats(self) -> dict[str, int]:
        keys = ("gossip_in", "gossip_out", "gossip_dropped", "gossip_rate_limited", "requests_in",
                "requests_out", "requests_rejected", "requests_rejected_rate_limited", "requests_failed")
        out = {k: 0 for k in keys}
        out.update(self._stats)
        out["dht_peers"] = self._dht.routing_table.size()
        return out

    async def connect(self, multiaddr: str) -> str:
        """Dial a full multiaddr (ending in /p2p/<id>) and return the peer id.

        Raises ValueError for a malformed address or our own id, RemoteError if the dial fails.
        """
        try:
            info = info_from_p2p_addr(Multiaddr(multiaddr))
        except Exception as exc:
            raise ValueError(f"not a multiaddr ending in /p2p/<peer id>: {multiaddr!r}") from exc
        if info.peer_id == self._self_id:
            raise ValueError(f"{multiaddr} is this node's own address")
        await self._dial(info)
        return info.peer_id.to_base58()

    async def _dial(self, info: PeerInfo) -> None:
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self._host.connect(info)
        except trio.TooSlowError:
            self._dial_failed_at[info.peer_id] = trio.current_time()
            raise RemoteError(f"dial to {info.peer_id} timed out after {DIAL_TIMEOUT_S} s") from None
        except Exception as exc:
            self._dial_failed_at[info.peer_id] = trio.current_time()
            raise RemoteError(f"dial to {info.peer_id} failed: {exc}") from exc
        self._dial_failed_at.pop(info.peer_id, None)
        # libp2p.md item 6: a connected peer is not added to the DHT routing table
        # (`kad_dht/kad_dht.py:632`); without this, lookups do not know the peer.
        await self._dht.add_peer(info.peer_id)

    def _is_connected(self, pid: ID) -> bool:
        return bool(self._host.get_network().connections.get(pid))

    # --- gossip -----------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish to `topic` (subscribed or not). Best effort, like all GossipSub: a peer that
        joined the mesh less than a heartbeat (1 s) ago may miss it. Own publishes are not
        delivered to our own `messages()`. ValueError if data exceeds max_message_bytes."""
        if len(data) > self._max_bytes:
            raise ValueError(f"message of {len(data)} bytes exceeds max_message_bytes={self._max_bytes}")
        await self._pubsub.publish(topic, bytes(data))
        self._stats["gossip_out"] += 1

    def messages(self) -> "_Inbox":
        """The one stream of messages from all subscribed topics (not our own publishes), for
        `async for`; it ends when the overlay closes. Every call returns the same: one consumer.

        Messages are queued per author and taken from the authors in turn (fairqueue.py), so
        a busy author's backlog never delays another author's message by more than one of its
        own. It holds MESSAGE_BUFFER messages, MESSAGE_BUFFER_PER_AUTHOR of one author; beyond
        that new ones are dropped and counted in stats()["gossip_dropped"].
        """
        return self._inbox

    async def _drain(self, topic: str, subscription: ISubscriptionAPI) -> None:
        # libp2p.md item 5: the subscription channel holds 32 messages and pubsub drops the
        # rest silently (`pubsub/pubsub.py:124,1370-1376`), so it is read here at once.
        async for msg in subscription:
            author = ID(msg.from_id)
            if author == self._self_id:
                continue  # pubsub delivers our own publishes to our subscriptions
            if self._inbox.put(author, GossipMessage(topic, author.to_base58(), bytes(msg.data))):
                self._stats["gossip_in"] += 1
            else:
                self._stats["gossip_dropped"] += 1

    def _allow_forwarder(self, forwarder: ID) -> bool:
        """Gossip from `forwarder` (the peer that sent it to us, whoever wrote it), checked before
        libp2p's seen-cache and signature check; False drops it: not verified, not relayed."""
        if self._forwarder_rate.allow(forwarder, trio.current_time()):
            return True
        self._rejected("gossip_rate_limited", "rate_limited")
        return False

    def _allow_author(self, forwarder: ID, msg) -> bool:
        """The topic validator: a gossip message seen for the first time, whose signature
        libp2p has verified, so its `from_id` is its author. False drops it: not delivered, not
        relayed, and pubsub remembers it as invalid for a while (`pubsub/pubsub.py:1681-1690`),
        so copies from other peers are dropped too. Our own publishes always pass."""
        if forwarder == self._self_id:
            return True
        author, now = bytes(msg.from_id), trio.current_time()
        limiter = self._author_rate if self._established(author, now) else self._newcomer_rate
        if limiter.allow(author, now):
            return True
        self._rejected("gossip_rate_limited", "rate_limited")
        return False

    def _established(self, author: bytes, now: float) -> bool:
        """Whether the node's standing function counts `author` (peer id bytes) as established;
        asked at most once a second per author, every author is established without one."""
        if self._standing is None:
            return True
        hit = self._standing_cache.get(author)
        if hit is not None and now - hit[1] < STANDING_CACHE_S:
            return hit[0]
        if len(self._standing_cache) > 10_000:  # bounded: forget rather than grow
            self._standing_cache.clear()
        value = bool(self._standing(ID(author).to_base58()))
        self._standing_cache[author] = (value, now)
        return value

    def set_standing(self, established: Callable[[str], bool]) -> None:
        """`established(peer id)`: whether gossip by that author gets the full per-author rate
        (RateLimits.gossip_author_rate) or a newcomer's (newcomer_gossip_rate). The node passes
        what its ledger knows of the author; without it every author is established."""
        self._standing = established
        self._standing_cache.clear()

    def _allow_request(self, peer: str, protocol: str) -> bool:
        return self._request_rate.allow((peer, protocol), trio.current_time())

    def _rejected(self, stat: str, reason: str) -> None:
        self._stats[stat] += 1
        if self._reject_hook is not None:
            self._reject_hook(reason)

    def set_reject_hook(self, hook: Callable[[str], None]) -> None:
        """Call `hook(reason)` for every message this overlay refuses before any handler sees it:
        "rate_limited" (gossip or request), and for requests a session refuses itself
        "session_malformed", "session_too_large", "session_busy". The node counts them with the
        rejections of its own checks."""
        self._reject_hook = hook

    # --- request/response -------------------------------------------------------------------

    def set_handler(self, protocol: str, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        """Serve `protocol`: handler(remote peer id, request) -> response, for requests that
        peers send in their sessions with us (session.py)."""
        self._handlers[protocol] = handler

    async def _serve_session(self, stream) -> None:
        await session.serve_session(stream, self._handlers, self._max_bytes, self._stats, self._limiter,
                                    self._allow_request, self._session_rejected)

    def _session_rejected(self, reason: str, peer: str) -> None:
        # session.py has counted it in stats. Refusals other than the peer's rate are named
        # session_<reason> (malformed, too_large, busy: our own load, counted all the same).
        if self._reject_hook is not None:
            self._reject_hook(reason if reason == "rate_limited" else f"session_{reason}")

    async def _session(self, pid: ID) -> session.DialerSession:
        """Our open session to `pid`, opened (with its reader task) if there is none."""
        current = self._sessions.get(pid)
        if current is not None and current.closed is None:
            return current
        async with self._session_locks[pid]:
            current = self._sessions.get(pid)
            if current is not None and current.closed is None:
                return current
            try:
                stream = await self._host.new_stream(pid, [TProtocol(session.PROTOCOL)])
            except Exception as exc:
                raise RemoteError(f"peer {pid} did not open a session: {exc}") from exc
            current = session.DialerSession(stream, self._max_bytes)
            assert self._nursery is not None, "requests are made inside open_overlay"
            self._nursery.start_soon(current.read_responses)
            self._sessions[pid] = current
            return current

    async def request(self, peer_id: str, protocol: str, data: bytes, *, timeout: float = 10.0) -> bytes:
        """Send one request to `peer_id` on `protocol` and return the response.

        Dials the peer if needed (peerstore addrs, else a DHT lookup). Raises RemoteError on
        any failure, refusal or when `timeout` (which covers dial, lookup and exchange)
        expires; ValueError if `data` exceeds our own max_message_bytes.
        """
        if len(data) > self._max_bytes:
            raise ValueError(f"request of {len(data)} bytes exceeds max_message_bytes={self._max_bytes}")
        self._stats["requests_out"] += 1
        try:
            pid = ID.from_base58(peer_id)
        except Exception:
            pid = None
        if pid is None or not pid.to_bytes() or pid == self._self_id:
            self._stats["requests_out_failed"] += 1
            raise RemoteError(f"cannot send a request to {peer_id!r}: not a remote peer id")
        try:
            with trio.fail_after(timeout):
                return await self._request(pid, protocol, data)
        except trio.TooSlowError:
            self._stats["requests_out_failed"] += 1
            raise RemoteError(f"request to {peer_id} on {protocol} timed out after {timeout} s") from None
        except RemoteError:
            self._stats["requests_out_failed"] += 1
            raise

    async def _request(self, pid: ID, protocol: str, data: bytes) -> bytes:
        if not self._is_connected(pid):
            await self._dial(await self._find(pid))
        peer = await self._session(pid)
        try:
            return await peer.request(protocol, data)
        except reqresp.ResponseError as exc:
            raise RemoteError(f"peer {pid} refused a request on {protocol}: {exc}") from None
        except session.SessionClosed as exc:
            raise RemoteError(f"request to {pid} on {protocol} failed: {exc}") from None

    async def find_peer(self, peer_id: str, *, lookup: bool = False) -> tuple[list[str], str] | None:
        """Resolve a peer id to its addrs: `(addrs, how)`, or None if not found.

        With lookup=False, as `request` does: the peerstore (what discovery, DHT answers and
        connections taught us) if it has addrs (how="known"), else an iterative Kademlia
        lookup through the network (how="lookup"). With lookup=True the network lookup always
        runs, whatever we knew before. Either way a lookup finds the peer only if it converges
        on it (the peer is among the closest the lookup returns; being the closest to its own
        id, it was then queried, which dials it) and we end up connected to it: it answered at
        the addrs returned. ValueError for a malformed peer id or our own.
        """
        pid = self.check_peer_id(peer_id)
        suffix = f"/p2p/{peer_id}"
        if not lookup and (addrs := self._peerstore_addrs(pid)):
            return [_with_p2p(str(a), suffix) for a in addrs], "known"
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            closest = await self._dht.peer_routing.find_closest_peers_network(pid.to_bytes())
            if pid in closest and self._is_connected(pid) and (addrs := self._peerstore_addrs(pid)):
                return [_with_p2p(str(a), suffix) for a in addrs], "lookup"
        return None

    def check_peer_id(self, peer_id: str) -> ID:
        """The libp2p ID of a remote peer id; ValueError if malformed or our own."""
        try:
            pid = ID.from_base58(peer_id)
        except Exception as exc:
            raise ValueError(f"not a peer id: {peer_id!r}") from exc
        if not pid.to_bytes() or pid == self._self_id:
            raise ValueError(f"not a remote peer id: {peer_id!r}")
        return pid

    def _peerstore_addrs(self, pid: ID) -> list[Multiaddr]:
        try:
            return list(self._host.get_peerstore().addrs(pid))
        except Exception:  # PeerStoreError: unknown or expired
            return []

    async def _find(self, pid: ID) -> PeerInfo:
        try:
            addrs = self._host.get_peerstore().addrs(pid)
        except Exception:  # PeerStoreError: unknown or expired
            addrs = []
        if addrs:
            return PeerInfo(pid, addrs)
        info = await self._dht.find_peer(pid)
        if info is None or not info.addrs:
            raise RemoteError(f"peer {pid} is unknown: not in the peerstore, not found in the DHT")
        return info

    # --- discovery --------------------------------------------------------------------------

    async def _discovery_loop(self, bootstrap: Sequence[PeerInfo]) -> None:
        """Dial the bootstrap peers, then keep finding peers through the DHT and dialing some.

        libp2p.md item 5: a node connected only to the bootstrap makes a star, in which the hub
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
        # libp2p.md item 6 again, for peers that dialed us (`kad_dht/kad_dht.py:632`).
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
        operator named it), and once more when it can again; discovery keeps retrying."""
        try:
            await self._dial(info)
        except RemoteError as exc:
            if info.peer_id not in self._bootstrap_unreachable:
                self._bootstrap_unreachable.add(info.peer_id)
                addrs = " ".join(str(a) for a in info.addrs)
                logger.warning("cannot reach bootstrap %s/p2p/%s (%s); retrying", addrs, info.peer_id, exc)
        else:
            if info.peer_id in self._bootstrap_unreachable:
                self._bootstrap_unreachable.discard(info.peer_id)
                logger.warning("bootstrap %s reachable again", info.peer_id)

    async def _dial_quietly(self, info: PeerInfo) -> None:
        try:
            await self._dial(info)
        except RemoteError as exc:
            logger.debug("discovery: %s", exc)


@asynccontextmanager
async def open_overlay(
    seed: bytes,
    *,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    bootstrap: Sequence[str] = (),
    topics: Sequence[str] = (),
    dht_server: bool = True,
    max_message_bytes: int = 1 << 20,
    rate_limits: RateLimits | None = None,
) -> AsyncIterator[Overlay]:
    """Run an overlay; yields once the host is listening (and subscribed to `topics`).

    Bootstrap peers are dialed in the background, and re-dialed whenever discovery runs while
    they are disconnected, so a node starts even when they are down. Raises ValueError for a
    malformed bootstrap addr, OSError if `listen` cannot be bound or its port is taken.
    `rate_limits` (default `RateLimits()`): the per-peer limits on requests and gossip.
    """
    boot_infos = []
    for addr in bootstrap:
        try:
            boot_infos.append(info_from_p2p_addr(Multiaddr(addr)))
        except Exception as exc:
            raise ValueError(f"bootstrap addr must end in /p2p/<peer id>: {addr!r}") from exc
    listen_addr = Multiaddr(listen)
    workarounds.check_port_free(listen_addr)
    overlay = Overlay(seed, dht_server=dht_server, max_message_bytes=max_message_bytes, rate_limits=rate_limits)
    boot_infos = [i for i in boot_infos if i.peer_id != overlay._self_id]
    try:
        async with _run(overlay, listen_addr, topics, boot_infos):
            yield overlay
    except BaseExceptionGroup as group:
        # The nurseries of libp2p's services and ours wrap whatever the caller's block raised
        # in exception groups; give the caller back its own exception.
        sole = _sole_exception(group)
        if sole is None:
            raise
        raise sole from sole.__cause__


@asynccontextmanager
async def _run(
    overlay: Overlay, listen_addr: Multiaddr, topics: Sequence[str], boot_infos: Sequence[PeerInfo]
) -> AsyncIterator[None]:
    host = overlay._host
    async with host.run([listen_addr]):
        try:
            if not host.get_transport_addrs():
                # Swarm.listen reports failure as a return value that host.run ignores
                # (`host/basic_host.py:590`, `network/swarm.py:1834-1945`).
                raise OSError(f"could not listen on {listen_addr}")
            async with background_trio_service(overlay._pubsub), background_trio_service(overlay._gossipsub):
                await overlay._pubsub.wait_until_ready()
                for topic in dict.fromkeys(topics):
                    overlay._pubsub.set_topic_validator(topic, overlay._allow_author, False)
                subscriptions = [(t, await overlay._pubsub.subscribe(t)) for t in dict.fromkeys(topics)]
                async with background_trio_service(overlay._dht):
                    # Our tasks live in the innermost nursery, cancelled before any service
                    # stops: a cancelled scope around a service's stop() would cancel that
                    # stop too, and the Cancelled would replace (and so swallow) whatever
                    # exception the caller's block raised.
                    async with trio.open_nursery() as nursery:
                        overlay._nursery = nursery
                        for topic, subscription in subscriptions:
                            nursery.start_soon(overlay._drain, topic, subscription)
                        nursery.start_soon(overlay._discovery_loop, boot_infos)
                        try:
                            yield
                        finally:
                            nursery.cancel_scope.cancel()
        finally:
            overlay._inbox.close()
            # libp2p.md item 4: leaving host.run() does not close connections
            # (`host/basic_host.py:588-613`); host.close() does.
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await host.close()


class _Inbox:
    """`Overlay.messages()`: a FairQueue by author, awaited with `async for` (or `receive()`)."""

    def __init__(self) -> None:
        self._queue: FairQueue[GossipMessage] = FairQueue(MESSAGE_BUFFER, MESSAGE_BUFFER_PER_AUTHOR)
        self._ready = trio.Event()
        self._closed = False

    def put(self, author: ID, message: GossipMessage) -> bool:
        if self._closed or not self._queue.put(author, message):
            return False
        self._ready.set()
        return True

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def receive(self) -> GossipMessage:
        """The next message in turn; trio.EndOfChannel once closed and drained."""
        while not self._queue:
            if self._closed:
                raise trio.EndOfChannel
            self._ready = trio.Event()
            await self._ready.wait()
        await trio.lowlevel.checkpoint()  # a schedule point even when messages are waiting
        if not self._queue:  # taken meanwhile by another receiver (one consumer is the contract)
            return await self.receive()
        return self._queue.get()

    def __aiter__(self) -> "_Inbox":
        return self

    async def __anext__(self) -> GossipMessage:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


def _sole_exception(group: BaseExceptionGroup) -> BaseException | None:
    """The one exception inside nested single-member groups, or None if there are several."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _with_p2p(addr: str, suffix: str) -> str:
    return addr if addr.endswith(suffix) else addr + suffix


__all__ = ["GossipMessage", "Overlay", "RemoteError", "open_overlay", "quiet_libp2p_logs"]
