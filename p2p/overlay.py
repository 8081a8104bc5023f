"""The overlay: one libp2p host with gossip topics, DHT discovery and request/response.

`open_overlay` is the only way to get an `Overlay`; it owns every task it starts and closes
the host on exit. All libp2p settings and workarounds come from `workarounds.py`.
"""

from __future__ import annotations

import collections
import logging
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

logger = logging.getLogger(__name__)
quiet_libp2p_logs = workarounds.quiet_libp2p_logs  # public: the CLI calls it after configuring logging
quiet_libp2p_logs()

# Messages waiting in `Overlay.messages()` before new ones are dropped (and counted). libp2p's
# own subscription channel holds only 32 (`pubsub/pubsub.py:124`); this one is drained from
# it at once, so a slow consumer loses messages here, where they are counted.
MESSAGE_BUFFER = 4096
# Room for the pubsub RPC envelope (signature, key, topic, signed peer record) around a
# payload of max_message_bytes.
RPC_OVERHEAD = 64 * 1024
# Discovery: a round runs a DHT lookup for our own id and dials what it learns. Rounds start
# MIN apart and back off to MAX while nothing new turns up; any new connection resets to MIN.
DISCOVERY_MIN_INTERVAL_S = 0.5
DISCOVERY_MAX_INTERVAL_S = 30.0
LOOKUP_TIMEOUT_S = 10.0
DIAL_TIMEOUT_S = 5.0
# Stop dialing discovered peers once this many are connected: gossip needs only a mesh of
# 6-12 (workarounds.GOSSIP_DEGREE*), and every connection costs a task and a socket.
TARGET_PEERS = 16
# A peer that failed a dial is not tried again by discovery for this long.
DIAL_BACKOFF_S = 30.0
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

    def __init__(self, seed: bytes, *, dht_server: bool, max_message_bytes: int) -> None:
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
        self._gossipsub = workarounds.new_gossipsub()
        self._pubsub = Pubsub(
            self._host, self._gossipsub, max_inbound_rpc_size=max_message_bytes + RPC_OVERHEAD
        )
        workarounds.fix_pubsub_seqno(self._pubsub)
        self._dht = KadDHT(self._host, DHTMode.SERVER if dht_server else DHTMode.CLIENT)
        self._max_bytes = max_message_bytes
        self._stats: collections.Counter[str] = collections.Counter()
        self._limiter = reqresp.new_limiter()
        # Requests travel in sessions (session.py): one stream per peer and direction.
        self._handlers: dict[str, Callable[[str, bytes], Awaitable[bytes]]] = {}
        self._sessions: dict[ID, session.DialerSession] = {}
        self._session_locks: collections.defaultdict[ID, trio.Lock] = collections.defaultdict(trio.Lock)
        self._nursery: trio.Nursery | None = None
        self._host.set_stream_handler(TProtocol(session.PROTOCOL), self._serve_session)
        self._msg_send, self._msg_recv = trio.open_memory_channel[GossipMessage](MESSAGE_BUFFER)
        self._dial_failed_at: dict[ID, float] = {}
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

    def gossip_peers(self, topic: str) -> list[str]:
        """Peers in our GossipSub mesh for `topic`: those a publish reaches directly."""
        return [p.to_base58() for p in self._gossipsub.mesh.get(topic, ())]

    def stats(self) -> dict[str, int]:
        keys = ("gossip_in", "gossip_out", "gossip_dropped", "requests_in", "requests_out",
                "requests_rejected", "requests_failed")
        out = {k: 0 for k in keys}
        out.update(self._stats)
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

    def messages(self) -> trio.MemoryReceiveChannel[GossipMessage]:
        """The one channel of messages from all subscribed topics (not our own publishes).

        It holds MESSAGE_BUFFER messages; beyond that new ones are dropped and counted in
        stats()["gossip_dropped"]. Every call returns the same channel: one consumer.
        """
        return self._msg_recv

    async def _drain(self, topic: str, subscription: ISubscriptionAPI) -> None:
        # libp2p.md item 5: the subscription channel holds 32 messages and pubsub drops the
        # rest silently (`pubsub/pubsub.py:124,1370-1376`), so it is read here at once.
        async for msg in subscription:
            author = ID(msg.from_id)
            if author == self._self_id:
                continue  # pubsub delivers our own publishes to our subscriptions
            try:
                self._msg_send.send_nowait(GossipMessage(topic, author.to_base58(), bytes(msg.data)))
            except trio.WouldBlock:
                self._stats["gossip_dropped"] += 1
            else:
                self._stats["gossip_in"] += 1

    # --- request/response -------------------------------------------------------------------

    def set_handler(self, protocol: str, handler: Callable[[str, bytes], Awaitable[bytes]]) -> None:
        """Serve `protocol`: handler(remote peer id, request) -> response, for requests that
        peers send in their sessions with us (session.py)."""
        self._handlers[protocol] = handler

    async def _serve_session(self, stream) -> None:
        await session.serve_session(stream, self._handlers, self._max_bytes, self._stats, self._limiter)

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
        """Dial the bootstrap peers, then keep finding and dialing peers through the DHT.

        libp2p.md item 5: a node connected only to the bootstrap makes a star, in which the hub
        drops leaves from its gossip mesh. Each round looks up our own id (Kademlia's
        self-lookup: it returns, and libp2p dials, the peers nearest to us) and dials peers
        from the routing table until TARGET_PEERS are connected.
        """
        interval = DISCOVERY_MIN_INTERVAL_S
        while True:
            before = set(self._host.get_connected_peers())
            try:
                await self._discovery_round(bootstrap)
            except Exception:  # task boundary: a libp2p bug in one round must not stop the node
                logger.warning("discovery round failed; retrying later", exc_info=True)
            after = set(self._host.get_connected_peers())
            interval = DISCOVERY_MIN_INTERVAL_S if after - before else min(interval * 2, DISCOVERY_MAX_INTERVAL_S)
            await trio.sleep(interval)  # a periodic task, not a synchronisation

    async def _discovery_round(self, bootstrap: Sequence[PeerInfo]) -> None:
        async with trio.open_nursery() as nursery:
            for info in bootstrap:
                if not self._is_connected(info.peer_id):
                    nursery.start_soon(self._dial_bootstrap, info)
        # libp2p.md item 6 again, for peers that dialed us (`kad_dht/kad_dht.py:632`).
        table = self._dht.routing_table
        for pid in self._host.get_connected_peers():
            if not table.peer_in_table(pid):
                await self._dht.add_peer(pid)
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            await self._dht.peer_routing.find_closest_peers_network(self._self_id.to_bytes())
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
) -> AsyncIterator[Overlay]:
    """Run an overlay; yields once the host is listening (and subscribed to `topics`).

    Bootstrap peers are dialed in the background, and re-dialed whenever discovery runs while
    they are disconnected, so a node starts even when they are down. Raises ValueError for a
    malformed bootstrap addr, OSError if `listen` cannot be bound or its port is taken.
    """
    boot_infos = []
    for addr in bootstrap:
        try:
            boot_infos.append(info_from_p2p_addr(Multiaddr(addr)))
        except Exception as exc:
            raise ValueError(f"bootstrap addr must end in /p2p/<peer id>: {addr!r}") from exc
    listen_addr = Multiaddr(listen)
    workarounds.check_port_free(listen_addr)
    overlay = Overlay(seed, dht_server=dht_server, max_message_bytes=max_message_bytes)
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
            overlay._msg_send.close()
            # libp2p.md item 4: leaving host.run() does not close connections
            # (`host/basic_host.py:588-613`); host.close() does.
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                await host.close()


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
