"""Bitswap 1.2.0 (`/ipfs/bitswap/1.2.0`) on the overlay's libp2p host: serve blocks, fetch blocks.

As the IPFS spec has it, each side writes its messages (wants, blocks, presences) on its OWN
outbound stream to a peer, opened on first use, and reads whatever the peer sends on the streams
the peer opened. Messages are `bitswap_wire` messages; every write goes through
`reqresp.write_whole` (shielded, docs/libp2p.md item 9). py-libp2p's own `libp2p.bitswap` is not
used: docs/libp2p.md item 14 lists its defects.

Server (any peer): a want-block is answered with the block from the `BlockSource`, a want-have
with HAVE; a block we lack with DONT_HAVE when the peer asked for one (else nothing). Wants are
served in the order they came, a message at a time, up to `batch_bytes` of blocks each, so a peer
costs at most one batch of memory; at most `MAX_SERVING` peers are served at once. Bounded and
counted (`stats()`, and `on_reject(reason)` for what the peer did wrong): wants queued per peer
(`max_wants_per_peer`; more are refused, `wants_refused`, DONT_HAVE if asked, reason "too_large"),
a message over 4 MiB or with a block over 1 MiB + slack ("too_large"), a message that does not
parse ("malformed"), messages per peer and second (`message_rate`, excess dropped,
"rate_limited"). A malformed or oversized message resets that stream; the node goes on.

Client: `fetch` (bitswap_fetch.py) asks several providers at once, a window of wants each, and
hands every block to `deliver` once, verified by the `verify(cid, block)` given here. A block no
outstanding want of ours matches (wrong data) is a bad block: counted `bad_block`, reported
"bad_block", and its sender is dropped from every fetch and left out of fetches for DISTRUST_S
(it loses its standing here: `distrusted`, counted `providers_distrusted` when skipped). A block we no longer want (another
provider was faster) is a duplicate (`blocks_dup`), not a fault.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import trio
from libp2p.abc import INotifee
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from . import reqresp, workarounds
from .bitswap_wire import (
    MAX_BLOCK, MAX_ENTRIES, MAX_MESSAGE, PROTOCOL, Entry, Message, WireError, cid_from_prefix, cid_prefix,
    decode_message, encode_frame, read_uvarint,
)
from .ratelimit import KeyedLimiter

logger = logging.getLogger(__name__)

DISTRUST_S = 600.0  # how long a peer that sent a bad block is asked for nothing
WRITE_TIMEOUT_S = 30.0  # a message write that cannot finish (peer not reading) resets our stream
READ_TIMEOUT_S = 30.0  # a message's bytes must all arrive within this once its length is read
OPEN_TIMEOUT_S = 10.0  # opening our stream to a peer (dial included)
MAX_INBOUND_STREAMS = 2  # per peer; go-bitswap keeps one open
MAX_SERVING = 16  # peers served at once (each holds up to one batch of blocks)
RECENT = 4096  # cids per peer we asked for and stopped wanting: late copies are duplicates
READ_CHUNK = 256 << 10
# Yamux receive window granted on each inbound Bitswap stream (workarounds.widen_stream_window):
# one largest message. Memory a peer can make us buffer: this per stream, MAX_INBOUND_STREAMS streams.
RECV_WINDOW = MAX_MESSAGE

Verify = Callable[[bytes, bytes], bool]


class BlockSource(Protocol):
    async def get(self, cid: bytes) -> bytes | None: ...
    async def has(self, cid: bytes) -> bool: ...


@dataclass(frozen=True)
class BitswapLimits:
    """Per-peer bounds. An honest peer never meets them: go-bitswap keeps far fewer wants per peer
    in flight, and a transfer at 100 MB/s in 1 MiB messages is about 100 messages a second."""
    max_wants_per_peer: int = 1024
    message_rate: float = 1000.0  # inbound messages/s per peer (2 s burst)
    batch_bytes: int = 1 << 20  # blocks per message we send, in bytes (one block may exceed it)
    stall_timeout_s: float = 10.0  # a provider silent this long with wants outstanding is dropped


class _Peer:
    """What we keep about one remote peer."""

    def __init__(self, pid: ID) -> None:
        self.pid = pid
        self.stream = None  # our outbound stream
        self.write_lock = trio.Lock()
        self.open_lock = trio.Lock()
        self.wants: collections.OrderedDict[bytes, Entry] = collections.OrderedDict()  # to serve
        self.serving = False
        self.inbound = 0
        # client side: cids we asked it for -> the fetches waiting (bitswap_fetch._Fetch)
        self.asked: collections.OrderedDict[bytes, list] = collections.OrderedDict()
        self.recent: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def forget(self, cid: bytes) -> None:
        self.asked.pop(cid, None)
        self.recent[cid] = None
        self.recent.move_to_end(cid)
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)


class _Notifee(INotifee):
    def __init__(self, bitswap: "Bitswap") -> None:
        self._bitswap = bitswap

    async def disconnected(self, network, conn) -> None:
        pid = conn.muxed_conn.peer_id
        if not network.connections.get(pid):
            self._bitswap._peer_failed(pid, "disconnected")

    async def opened_stream(self, network, stream) -> None: ...
    async def closed_stream(self, network, stream) -> None: ...
    async def connected(self, network, conn) -> None: ...
    async def listen(self, network, multiaddr) -> None: ...
    async def listen_close(self, network, multiaddr) -> None: ...


class Bitswap:
    """Bitswap on a running host; the overlay makes one (`Overlay.start_bitswap`).

    `connect(pid)`: dial a peer we are not connected to (the overlay's dial: peerstore, else DHT).
    `on_reject(reason)`: told of every refusal of what a peer sent ("bad_block", "too_large",
    "malformed", "rate_limited")."""

    def __init__(self, host, nursery: trio.Nursery, source: BlockSource, verify: Verify, *,
                 limits: BitswapLimits | None = None, connect: Callable[[ID], Awaitable[None]] | None = None,
                 on_reject: Callable[[str], None] | None = None) -> None:
        self._host = host
        self._nursery = nursery
        self._source = source
        self.verify = verify
        self.limits = limits or BitswapLimits()
        self._connect = connect
        self._on_reject = on_reject
        self._peers: dict[ID, _Peer] = {}
        self._rate = KeyedLimiter(self.limits.message_rate)
        self._serving = trio.CapacityLimiter(MAX_SERVING)
        self.fetches: set = set()  # bitswap_fetch._Fetch in progress
        self.distrusted: dict[ID, float] = {}  # peer -> trio time until which it is no provider (a bad block)
        self.counts: collections.Counter[str] = collections.Counter()
        host.set_stream_handler(TProtocol(PROTOCOL), self._serve_stream)
        host.get_network().register_notifee(_Notifee(self))

    def stats(self) -> dict[str, int]:
        keys = ("blocks_in", "bytes_in", "blocks_out", "bytes_out", "bad_block", "dont_have", "wants_in",
                "wants_refused", "blocks_dup", "malformed", "too_large", "rate_limited", "providers_distrusted")
        out = {k: 0 for k in keys}
        out.update(self.counts)
        return out

    async def fetch(self, cids: list[bytes], providers: list[str], deliver, *, window: int = 16,
                    stall_timeout: float | None = None) -> None:
        """Fetch `cids` from `providers` (peer ids); `await deliver(cid, block)` once per cid with
        a verified block, in any order. See bitswap_fetch.fetch; BlocksUnavailable(missing)."""
        from .bitswap_fetch import fetch
        await fetch(self, cids, providers, deliver, window=window,
                    stall_timeout=self.limits.stall_timeout_s if stall_timeout is None else stall_timeout)

    # --- peers and our outbound streams -----------------------------------------------------

    def peer(self, pid: ID) -> _Peer:
        peer = self._peers.get(pid)
        if peer is None:
            peer = self._peers[pid] = _Peer(pid)
        return peer

    def reject(self, reason: str, pid: ID | None = None, detail: str = "") -> None:
        self.counts[reason] += 1
        logger.debug("bitswap: refused %s from %s: %s", reason, pid, detail)
        if self._on_reject is not None:
            self._on_reject(reason)

    async def send(self, peer: _Peer, msg: Message) -> bool:
        """Write `msg` on our stream to the peer (opened, and dialed, if need be). False if the
        peer cannot be reached or the write failed (our stream is then reset and dropped)."""
        data = encode_frame(msg)
        async with peer.open_lock:
            if peer.stream is None:
                try:
                    with trio.fail_after(OPEN_TIMEOUT_S):
                        if self._connect is not None and not self._host.get_network().connections.get(peer.pid):
                            await self._connect(peer.pid)
                        peer.stream = await self._host.new_stream(peer.pid, [TProtocol(PROTOCOL)])
                except Exception as exc:  # RemoteError, TooSlowError, libp2p's own errors
                    logger.debug("bitswap: no stream to %s: %r", peer.pid, exc)
                    return False
            stream = peer.stream
        ok = await reqresp.write_whole(stream, data, peer.write_lock, WRITE_TIMEOUT_S)
        if ok:
            self.counts["messages_out"] += 1
        elif peer.stream is stream:
            peer.stream = None
        return ok

    def _peer_failed(self, pid: ID, why: str) -> None:
        """The peer went away (or broke our protocol): stop serving it, tell the fetches."""
        peer = self._peers.get(pid)
        if peer is not None:
            peer.wants.clear()
            peer.stream = None
            if not peer.asked and not peer.serving and not peer.inbound:
                self._peers.pop(pid, None)
        for fetch in list(self.fetches):
            fetch.peer_failed(pid, why)

    # --- reading a peer's streams -----------------------------------------------------------

    async def _serve_stream(self, stream) -> None:
        pid = stream.muxed_conn.peer_id
        peer = self.peer(pid)
        if peer.inbound >= MAX_INBOUND_STREAMS:
            self.counts["streams_refused"] += 1
            await reqresp.reset_stream(stream)
            return
        peer.inbound += 1
        await workarounds.widen_stream_window(stream, RECV_WINDOW)
        reader = _Reader(stream)
        try:
            while True:
                length = await reader.uvarint()
                if length is None:
                    break
                if length > MAX_MESSAGE:
                    raise WireError("too_large", f"a message of {length} bytes")
                with trio.fail_after(READ_TIMEOUT_S):
                    await reader.fill(length)
                self.counts["messages_in"] += 1
                if not self._rate.allow(pid, trio.current_time()):
                    reader.drop(length)
                    self.reject("rate_limited", pid, "over the message rate")
                    continue
                msg = reader.decode(length)
                await self._dispatch(peer, msg)
        except WireError as exc:
            self.reject(exc.reason, pid, str(exc))
            self._peer_failed(pid, f"sent a {exc.reason} message")
        except trio.TooSlowError:
            self.reject("malformed", pid, "a message did not arrive in time")
        except Exception as exc:  # the stream or connection failed under us
            logger.debug("bitswap: stream from %s ended: %r", pid, exc)
        finally:
            peer.inbound -= 1
            await reqresp.reset_stream(stream)
            if not (peer.inbound or peer.asked or peer.serving or self._host.get_network().connections.get(pid)):
                self._peers.pop(pid, None)

    async def _dispatch(self, peer: _Peer, msg: Message) -> None:
        for prefix, data in msg.blocks:
            self._on_block(peer, prefix, data)
        for cid, have in msg.presences:
            if not have:
                self.counts["dont_have"] += 1
                for fetch in peer.asked.pop(cid, ()):
                    fetch.dont_have(peer.pid, cid)
                if cid not in peer.asked:
                    peer.forget(cid)
        if msg.entries or msg.full:
            await self._take_wants(peer, msg)

    def _on_block(self, peer: _Peer, prefix: bytes, data: bytes) -> None:
        """Match a block to the want it answers: first the oldest outstanding want with its
        prefix (a server answers in order: one hash), else the CID rebuilt from prefix + data."""
        cid = None
        for want in peer.asked:
            if cid_prefix(want) == prefix:
                if self.verify(want, data):
                    cid = want
                break
        if cid is None:
            try:
                rebuilt = cid_from_prefix(prefix, data)
            except WireError:
                rebuilt = None
            if rebuilt is not None and rebuilt in peer.recent:
                self.counts["blocks_dup"] += 1
                return
            if rebuilt is not None and rebuilt in peer.asked and self.verify(rebuilt, data):
                cid = rebuilt
        if cid is None:
            self.reject("bad_block", peer.pid, "a block that matches none of our wants")
            self.distrusted[peer.pid] = trio.current_time() + DISTRUST_S
            for fetch in list(self.fetches):
                fetch.peer_failed(peer.pid, "sent a bad block")
            return
        self.counts["blocks_in"] += 1
        self.counts["bytes_in"] += len(data)
        fetches = peer.asked.pop(cid, [])
        peer.forget(cid)
        for fetch in fetches:
            fetch.block(peer.pid, cid, data)

    # --- serving wants ----------------------------------------------------------------------

    async def _take_wants(self, peer: _Peer, msg: Message) -> None:
        if msg.full:
            peer.wants.clear()
        refused: list[bytes] = []
        for entry in msg.entries:
            if entry.cancel:
                peer.wants.pop(entry.cid, None)
                continue
            self.counts["wants_in"] += 1
            if entry.cid in peer.wants or len(peer.wants) < self.limits.max_wants_per_peer:
                peer.wants[entry.cid] = entry
            else:
                self.counts["wants_refused"] += 1
                if entry.send_dont_have:
                    refused.append(entry.cid)
        if refused:
            self.reject("too_large", peer.pid, f"{len(refused)} wants over the limit")
            # Written before the next message is read: a peer that floods wants stalls itself.
            await self.send(peer, Message(presences=tuple((cid, False) for cid in refused)))
        if peer.wants and not peer.serving:
            peer.serving = True
            self._nursery.start_soon(self._serve_wants, peer)

    async def _serve_wants(self, peer: _Peer) -> None:
        """Answer the peer's queued wants in order, a message of up to batch_bytes at a time."""
        try:
            async with self._serving:
                while peer.wants:
                    blocks: list[tuple[bytes, bytes]] = []
                    presences: list[tuple[bytes, bool]] = []
                    size = 0
                    while peer.wants and size < self.limits.batch_bytes and len(blocks) + len(presences) < MAX_ENTRIES:
                        cid, entry = next(iter(peer.wants.items()))
                        found = await self._lookup(cid, entry.want_have)
                        if peer.wants.get(cid) is not entry:
                            continue  # cancelled or replaced while we looked
                        del peer.wants[cid]
                        if entry.want_have and found:
                            presences.append((cid, True))
                        elif found:
                            blocks.append((cid_prefix(cid), found))
                            size += len(found)
                        elif entry.send_dont_have:
                            presences.append((cid, False))
                    if not blocks and not presences:
                        continue
                    if not await self.send(peer, Message(blocks=tuple(blocks), presences=tuple(presences))):
                        peer.wants.clear()
                        return
                    self.counts["blocks_out"] += len(blocks)
                    self.counts["bytes_out"] += size
                    self.counts["presences_out"] += len(presences)
        finally:
            peer.serving = False

    async def _lookup(self, cid: bytes, have_only: bool):
        """The block (or True, for a want-have) from the source; None if missing, failing or too large."""
        try:
            if have_only:
                return True if await self._source.has(cid) else None
            block = await self._source.get(cid)
        except Exception as exc:  # the source's failure is a miss for the peer, logged for us
            logger.debug("bitswap: block source failed on a want: %r", exc)
            return None
        if block is not None and len(block) > MAX_BLOCK:
            self.counts["blocks_too_large_local"] += 1
            return None
        return block


class _Reader:
    """Length-prefixed messages from a stream, read in chunks (not a read call per byte)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def _more(self) -> bool:
        chunk = await self._stream.read(READ_CHUNK)
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def uvarint(self) -> int | None:
        """The next length prefix; None at a clean end of stream. WireError if malformed."""
        while True:
            try:
                value, pos = read_uvarint(self._buf, 0)
                del self._buf[:pos]
                return value
            except WireError:
                if len(self._buf) >= 10:
                    raise
            try:
                more = await self._more()
            except Exception:  # reset or closed: the end of this stream
                more = False
            if not more:
                if self._buf:
                    raise WireError("malformed", "the stream ended inside a length prefix")
                return None

    async def fill(self, n: int) -> None:
        """Read until the next n bytes (one message) are buffered."""
        while len(self._buf) < n:
            if not await self._more():
                raise WireError("malformed", "the stream ended inside a message")

    def decode(self, n: int) -> Message:
        """Decode the buffered message of n bytes (from a view: no copy of it first) and drop it.
        The rest goes to a new buffer: a view of the old one may outlive an error's traceback."""
        buf = self._buf
        self._buf = buf[n:]
        return decode_message(memoryview(buf)[:n])

    def drop(self, n: int) -> None:
        self._buf = self._buf[n:]
