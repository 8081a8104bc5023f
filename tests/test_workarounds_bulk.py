"""p2p/workarounds_bulk.py: batched yamux writes over Noise and the lean read paths keep every
byte, in order, on real connections; the reads keep their contracts at the edges."""

from __future__ import annotations

import hashlib
import os

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError

from distributeai.p2p import workarounds_bulk
from distributeai.p2p.overlay import open_overlay

BULK = TProtocol("/distributeai-test/bulk/1")
SMALL = TProtocol("/distributeai-test/small/1")
# Sizes around a Noise message (65,519), a frame (256 KiB) and a batch, and several windows.
SIZES = [1, 65_519, 65_520, 262_144, 262_145, 600_001, 3 * 1024 * 1024 + 7]


async def _read_n(stream, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = await stream.read(n - len(out))
        assert chunk, "the stream ended early"
        out += chunk
    return bytes(out)


async def test_bulk_writes_arrive_whole_and_in_order_beside_small_ones() -> None:
    """Large writes (several frames, past the 256 KiB window the stream starts with) on one
    stream and many small writes on another, at once on one connection: each reader gets
    exactly its bytes in order."""
    payloads = [os.urandom(n) for n in SIZES]
    smalls = [os.urandom(100) for _ in range(200)]
    got_bulk: list[bytes] = []
    got_small: list[bytes] = []
    done = trio.Event()
    small_done = trio.Event()

    async def bulk_handler(stream) -> None:
        for n in SIZES:
            got_bulk.append(await _read_n(stream, n))
        done.set()

    async def small_handler(stream) -> None:
        for _ in smalls:
            got_small.append(await _read_n(stream, 100))
        small_done.set()

    async with open_overlay(os.urandom(32)) as server, open_overlay(os.urandom(32)) as client:
        server._host.set_stream_handler(BULK, bulk_handler)
        server._host.set_stream_handler(SMALL, small_handler)
        await client.connect(server.multiaddrs()[0])
        pid = client.check_peer_id(server.peer_id)
        with trio.fail_after(60):
            bulk = await client._host.new_stream(pid, [BULK])
            small = await client._host.new_stream(pid, [SMALL])

            async def write_small() -> None:
                for data in smalls:
                    await small.write(data)
                    await trio.sleep(0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_small)
                for data in payloads:
                    await bulk.write(data)
            await done.wait()
            await small_done.wait()
    assert [hashlib.sha256(b).digest() for b in got_bulk] == [hashlib.sha256(b).digest() for b in payloads]
    assert got_small == smalls


class _Messages:
    """A Noise connection's `read_msg` over fixed messages; b"" once they are used up."""

    def __init__(self, *messages: bytes) -> None:
        self.messages = list(messages)

    async def read_msg(self) -> bytes:
        return self.messages.pop(0) if self.messages else b""


def _session(*messages: bytes):
    from libp2p.security.secure_session import SecureSession

    workarounds_bulk.lean_secure_reads()
    session = SecureSession.__new__(SecureSession)  # only `conn` is used by read()
    session.conn = _Messages(*messages)
    return session


async def test_secure_reads_return_exactly_n_across_messages_and_keep_the_rest() -> None:
    session = _session(b"abc", b"defgh", b"ij")
    assert await session.read(2) == b"ab"
    assert await session.read(4) == b"cdef"  # the rest of one message and part of the next
    assert await session.read() == b"gh"  # what is buffered
    assert await session.read() == b"ij"  # else one message
    with pytest.raises(ConnectionClosedError):
        await session.read(1)


async def test_secure_reads_return_what_came_when_the_connection_ends_part_way() -> None:
    session = _session(b"abc")
    assert await session.read(10) == b"abc"
    assert await session.read(0) == b""


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        assert len(chunk) <= n
        return chunk


async def test_exact_reads_gather_short_reads_and_fail_as_before_at_the_end() -> None:
    from libp2p.io import msgio

    workarounds_bulk.lean_exact_reads()
    read_exactly = msgio.read_exactly
    assert await read_exactly(_Chunks(b"abcd"), 4) == b"abcd"
    assert await read_exactly(_Chunks(b"ab", b"c", b"d"), 4) == b"abcd"
    with pytest.raises(IncompleteReadError) as caught:
        await read_exactly(_Chunks(b"ab"), 4)
    assert (caught.value.expected_bytes, caught.value.received_bytes) == (4, 2)
    with pytest.raises(IncompleteReadError) as caught:
        await read_exactly(_Chunks(), 4)
    assert caught.value.is_clean_close
