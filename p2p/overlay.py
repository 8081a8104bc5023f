"""The overlay: one libp2p host with gossip topics, DHT discovery and request/response.

`open_overlay` is the only way to get an `Overlay`; it owns every task it starts and closes
the host on exit. This module has the host, dialing and request/response; the overlay's gossip
side is gossip.py (`GossipSide`) and its peer discovery discovery.py (`Discovery`), both base
classes of `Overlay`. All libp2p settings and workarounds come from `workarounds.py` and
`workarounds_pubsub.py` (docs/libp2p.md).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from . import bitswap_wire, reqresp, selfcheck, session, workarounds, workarounds_bulk, workarounds_pubsub
from .bitswap import Bitswap, BitswapLimits, BlockSource, Verify
from .discovery import LOOKUP_TIMEOUT_S, Discovery
from .gossip import GossipMessage, GossipSide
from .ratelimit import KeyedLimiter, RateLimits
from .reqresp import RemoteError

logger = logging.getLogger(__name__)
quiet_libp2p_logs = workarounds.quiet_libp2p_logs  # public: the CLI calls it after configuring logging
quiet_libp2p_logs()

# Room for the pubsub RPC envelope (signature, key, topic, signed peer record) around a
# payload of max_message_bytes.
RPC_OVERHEAD = 64 * 1024
DIAL_TIMEOUT_S = 5.0
# Shutdown of a host takes about 0.2 s (docs/libp2p.md); give it far more, never forever.
CLOSE_TIMEOUT_S = 5.0
PROVIDER_ADDR_TTL_S = 600  # addrs learned from a provider record


class Overlay(GossipSide, Discovery):
    """A running libp2p host. Get one from `open_overlay`; see p2p/README.md for the contract.
    Its gossip side is gossip.py's `GossipSide`, its peer discovery discovery.py's `Discovery`."""

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
        workarounds.buffer_tcp_reads()
        workarounds_bulk.apply()
        workarounds_pubsub.cache_pubsub_peer_records()
        workarounds_pubsub.cache_own_peer_record()
        workarounds.disable_auto_connector(self._host.get_network())
        self._gossipsub = workarounds_pubsub.new_gossipsub()
        self._pubsub = Pubsub(
            self._host, self._gossipsub, max_inbound_rpc_size=max_message_bytes + RPC_OVERHEAD
        )
        workarounds_pubsub.fix_pubsub_seqno(self._pubsub)
        workarounds_pubsub.limit_gossip_rates(self._pubsub, self._allow_forwarder)
        workarounds.tune_dht_lookups()
        self._dht = KadDHT(self._host, DHTMode.SERVER if dht_server else DHTMode.CLIENT)
        workarounds.widen_find_node_answers(self._dht)
        self._max_bytes = max_message_bytes
        self._stats: collections.Counter[str] = collections.Counter()
        self._limiter = reqresp.new_limiter()
        # Per-peer rate limits (ratelimit.py): requests per (peer, protocol) here; gossip's in
        # GossipSide (per forwarding peer, and per author).
        limits = rate_limits or RateLimits()
        self.rate_limits = limits
        self._request_rate = KeyedLimiter(limits.request_rate)
        self._reject_hook: Callable[[str], None] | None = None
        self._init_gossip(limits)
        # Requests travel in sessions (session.py): one stream per peer and direction.
        self._handlers: dict[str, Callable[[str, bytes], Awaitable[bytes]]] = {}
        self._sessions: dict[ID, session.DialerSession] = {}
        self._session_locks: collections.defaultdict[ID, trio.Lock] = collections.defaultdict(trio.Lock)
        self._nursery: trio.Nursery | None = None
        self._host.set_stream_handler(TProtocol(session.PROTOCOL), self._serve_session)
        self._dial_failed_at: dict[ID, float] = {}
        self._init_discovery()
        self._self_id = self._host.get_id()
        self.peer_id: str = self._self_id.to_base58()
        # Another process with our key (selfcheck.py): peers tell us the record they hold for us.
        self._selfcheck = selfcheck.SelfCheck()
        self.set_handler(selfcheck.PROTOCOL, self._answer_peer_record)
        self.bitswap: Bitswap | None = None  # start_bitswap

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
        out["identity_conflicts"] = self._selfcheck.conflicts
        if self.bitswap is not None:
            out.update({f"bitswap_{k}": v for k, v in self.bitswap.stats().items()})
        return out

    def start_bitswap(self, source: BlockSource, verify: Verify, limits: BitswapLimits | None = None) -> Bitswap:
        """Serve blocks from `source` over Bitswap 1.2.0 and fetch blocks (`overlay.bitswap.fetch`),
        each checked with `verify(cid, block)` (bitswap.py). Its refusals go to the reject hook and
        its counts into `stats()` as `bitswap_*`. Inside `open_overlay` only; once."""
        if self._nursery is None:
            raise RuntimeError("start_bitswap runs inside open_overlay")
        if self.bitswap is not None:
            raise RuntimeError("bitswap is already started")
        self.bitswap = Bitswap(self._host, self._nursery, source, verify, limits=limits,
                               connect=self._connect_peer, on_reject=self._bitswap_rejected)
        return self.bitswap

    async def provide(self, cid: bytes) -> bool:
        """Announce in the DHT that we hold the block `cid` (a provider record keyed by its
        multihash, as IPFS has them). ValueError for a malformed cid; False if no peer took it."""
        key = bitswap_wire.multihash_of(cid).hex()
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            return bool(await self._dht.provide(key))
        return False

    async def find_providers(self, cid: bytes, limit: int = 20) -> list[str]:
        """Peer ids of up to `limit` providers of `cid` from the DHT (their addrs go to the
        peerstore, so `fetch` can dial them); [] if none is found within LOOKUP_TIMEOUT_S."""
        key = bitswap_wire.multihash_of(cid).hex()
        found: list[str] = []
        with trio.move_on_after(LOOKUP_TIMEOUT_S):
            infos = await self._dht.find_providers(key, limit)
            for info in infos:  # one provider may come back many times (docs/libp2p.md item 6)
                pid = info.peer_id.to_base58()
                if info.peer_id == self._self_id or pid in found:
                    continue
                if info.addrs:
                    self._host.get_peerstore().add_addrs(info.peer_id, info.addrs, PROVIDER_ADDR_TTL_S)
                found.append(pid)
        return found[:limit]

    async def _connect_peer(self, pid: ID) -> None:
        if not self._is_connected(pid):
            await self._dial(await self._find(pid))

    def _bitswap_rejected(self, reason: str) -> None:
        if self._reject_hook is not None:
            self._reject_hook(reason)

    async def _answer_peer_record(self, peer_id: str, _request: bytes) -> bytes:
        return selfcheck.answer(self._host, peer_id)

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
        # docs/libp2p.md item 6: a connected peer is not added to the DHT routing table
        # (`kad_dht/kad_dht.py:632`); without this, lookups do not know the peer.
        await self._dht.add_peer(info.peer_id)

    def _is_connected(self, pid: ID) -> bool:
        return bool(self._host.get_network().connections.get(pid))

    # --- gossip (GossipSide) and the refusals of both sides -----------------------------------

    def _allow_request(self, peer: str, protocol: str) -> bool:
        return self._request_rate.allow((peer, protocol), trio.current_time())

    def _rejected(self, stat: str, reason: str) -> None:
        self._stats[stat] += 1
        if self._reject_hook is not None:
            self._reject_hook(reason)

    def set_reject_hook(self, hook: Callable[[str], None]) -> None:
        """Call `hook(reason)` for every message this overlay refuses before any handler sees it:
        "rate_limited" (gossip or request), and for requests a session refuses itself
        "session_malformed", "session_too_large", "session_busy", and Bitswap's "bad_block",
        "too_large", "malformed", "rate_limited". The node counts them with the rejections of its
        own checks."""
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

@asynccontextmanager
async def open_overlay(
    seed: bytes,
    *,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    bootstrap: Sequence[str] = (),
    remembered: Sequence[str] = (),
    topics: Sequence[str] = (),
    dht_server: bool = True,
    max_message_bytes: int = 1 << 20,
    rate_limits: RateLimits | None = None,
) -> AsyncIterator[Overlay]:
    """Run an overlay; yields once the host is listening (and subscribed to `topics`).

    Bootstrap peers are dialed in the background, and re-dialed whenever discovery runs while
    they are disconnected, so a node starts even when they are down. Raises ValueError for a
    malformed bootstrap addr, OSError if `listen` cannot be bound or its port is taken.
    `remembered`: peers known from earlier runs, dialed as the bootstrap peers are, but an
    unreachable one is no news (DEBUG), where an unreachable bootstrap is a WARNING.
    `rate_limits` (default `RateLimits()`): the per-peer limits on requests and gossip.
    """
    boot_infos = []
    for addr in bootstrap:
        try:
            boot_infos.append(info_from_p2p_addr(Multiaddr(addr)))
        except Exception as exc:
            raise ValueError(f"bootstrap addr must end in /p2p/<peer id>: {addr!r}") from exc
    named = {info.peer_id for info in boot_infos}
    for addr in remembered:
        try:
            info = info_from_p2p_addr(Multiaddr(addr))
        except Exception:
            continue  # a stored address that no longer parses: not worth a start failure
        if info.peer_id not in named:
            boot_infos.append(info)
    listen_addr = Multiaddr(listen)
    workarounds.check_port_free(listen_addr)
    overlay = Overlay(seed, dht_server=dht_server, max_message_bytes=max_message_bytes, rate_limits=rate_limits)
    boot_infos = [i for i in boot_infos if i.peer_id != overlay._self_id]
    overlay._named_bootstrap = named
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
                        nursery.start_soon(overlay._selfcheck.run, overlay)
                        try:
                            yield
                        finally:
                            nursery.cancel_scope.cancel()
        finally:
            overlay._inbox.close()
            # docs/libp2p.md item 4: leaving host.run() does not close connections
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
