"""Bulk data over yamux + Noise (Bitswap's blocks): py-libp2p 0.8.1 workarounds, as in workarounds.py.

docs/libp2p.md item 16. Measured with `tools/bitswap_speed.py` (two processes, 256 KiB blocks on
127.0.0.1): per 64 KiB of payload the sender built a yamux frame, took four trio locks, split the
frame into two Noise messages and made two `send` calls; the receiver read each Noise message in
two reads and copied its plaintext four times before yamux saw it. Each function below is
process-wide and idempotent; `apply()` applies them all (the overlay calls it).
"""

from __future__ import annotations

import struct
from typing import Any

import trio

# The most one batched write puts on the socket (one send call).
WRITE_BATCH = 256 << 10
# Payload of one yamux DATA frame in a batched write (batch_yamux_writes): the default initial
# stream window, so any peer can take a whole frame; rust-yamux and jvm-libp2p refuse frames over
# 1 MiB (yamux/src/frame/io.rs MAX_FRAME_BODY_LEN, YamuxFrameCodec), go-yamux only over the window.
BULK_FRAME = 256 << 10


def apply() -> None:
    fit_yamux_frames_to_noise()
    batch_yamux_writes()
    lean_exact_reads()
    lean_secure_reads()


def fit_yamux_frames_to_noise() -> None:
    """Make a full yamux DATA frame one Noise message, not two.

    `YamuxStream.write` cuts data into frames of MAX_MESSAGE_SIZE = 65,536 bytes with the header
    (`stream_muxer/yamux/yamux.py:150,245-249`), and Noise carries at most 65,519 bytes of
    plaintext per message (`security/noise/io.py:25-30`), so every full frame became a 65,519-byte
    message and a 17-byte one (`io.py:68-79`): two encryptions, two length prefixes, two `send`
    calls, and on the receiver two reads and two decryptions. With frames of 65,519 bytes a
    frame is one message. The receiver does not care: a yamux frame may be any length within
    the window (go-yamux's own frames are up to 64 KiB of payload; ours are now smaller).
    MAX_MESSAGE_SIZE is a module global read at each write (and by the read slicing of
    `YamuxStream.read(-1)`, `yamux.py:522-526`, which only changes its step).
    """
    from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
    from libp2p.stream_muxer.yamux import yamux

    yamux.MAX_MESSAGE_SIZE = MAX_PLAINTEXT_LENGTH


def batch_yamux_writes() -> None:
    """Write up to WRITE_BATCH bytes of a stream's data with one lock round and one `send`.

    `YamuxStream.write` (`stream_muxer/yamux/yamux.py:229-298`) takes the stream's read-write lock
    and window lock per frame, builds `header + chunk` (a copy), and `Yamux._write_frame`
    (`yamux.py:851-876`) unpacks the header again to format a DEBUG line that is built even when
    DEBUG is off, takes the connection's write lock, and hands the frame to Noise, which writes
    each message with its own `send` (`security/noise/io.py:59-79`, `io/msgio.py:52-54`). A
    bench profile of a Bitswap server put a third of its CPU there.

    This write does the same per batch: under the same two stream locks it takes as much send
    window as it needs (up to WRITE_BATCH), then under the connection's write lock (which orders
    every frame and Noise nonce, `yamux.py:874`) encrypts each frame as one Noise message and
    sends them all at once. A stream with no send window waits as the original does (10 ms
    polls, MuxedStreamError after 5 s: `yamux.py:280-298`). A connection that is not yamux over
    Noise (no `noise_state`) keeps the original write. Same contract and errors otherwise.
    """
    from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
    from libp2p.stream_muxer.exceptions import MuxedStreamError
    from libp2p.stream_muxer.yamux import yamux

    stream_class = yamux.YamuxStream
    if getattr(stream_class, "_distributeai_batched", False):
        return
    original = stream_class.write
    fmt, type_data = yamux.YAMUX_HEADER_FORMAT, yamux.TYPE_DATA
    noise_payload = MAX_PLAINTEXT_LENGTH

    async def take_window(self: Any, want: int) -> int:
        """Up to `want` bytes of send window, waiting (as the original does) while it is zero."""
        while True:
            async with self.rw_lock.write_lock():
                if self.send_closed:
                    raise MuxedStreamError("Stream is closed for sending")
                async with self.window_lock:
                    if self.closed:
                        raise MuxedStreamError("Stream is closed")
                    if self.send_window > 0:
                        n = min(self.send_window, want)
                        self.send_window -= n
                        return n
            self._zero_window_waits += 1
            with trio.move_on_after(5.0) as scope:
                while True:
                    async with self.window_lock:
                        if self.send_window > 0 or self.closed:
                            break
                    await yamux.trio.sleep(0.01)
            if scope.cancelled_caught:
                raise MuxedStreamError("Timed out waiting for window update after 5 seconds.")

    async def write(self: Any, data: bytes) -> None:
        conn = self.conn
        noise = getattr(getattr(conn, "secured_conn", None), "conn", None)
        raw = getattr(getattr(noise, "read_writer", None), "read_write_closer", None)
        if self.send_closed:
            raise MuxedStreamError("Stream is closed for sending")
        if raw is None or not hasattr(noise, "noise_state") or len(data) <= yamux.MAX_MESSAGE_SIZE:
            await original(self, data)  # not Noise, or one frame: nothing to batch
            return
        view = memoryview(data)
        sent, total = 0, len(data)
        while sent < total:
            n = await take_window(self, min(WRITE_BATCH, total - sent))
            frames = [struct.pack(fmt, 0, type_data, 0, self.stream_id, min(BULK_FRAME, sent + n - start))
                      + view[start:min(start + BULK_FRAME, sent + n)]
                      for start in range(sent, sent + n, BULK_FRAME)]
            parts = []
            async with conn._write_lock:  # Noise nonces in the order the messages go out
                for frame in frames:
                    for off in range(0, len(frame), noise_payload):
                        message = noise.encrypt(frame[off:off + noise_payload])
                        parts.append(len(message).to_bytes(2, "big"))
                        parts.append(message)
                await raw.write(b"".join(parts))
            await trio.lowlevel.checkpoint()  # as `_write_frame` does: let the reader side run
            sent += n

    stream_class.write = write
    stream_class._distributeai_batched = True


def lean_exact_reads() -> None:
    """`read_exactly` without a copy when the first read already has all n bytes.

    `libp2p.io.utils.read_exactly` (`io/utils.py:11-75`) always collects into a new bytearray and
    returns `bytes(buffer)`: two copies of every Noise message (`io/msgio.py:42-44`) and of every
    yamux frame body (`stream_muxer/yamux/yamux.py:1177-1180`), although with buffered TCP reads
    (workarounds.buffer_tcp_reads) and Noise's plaintext buffer the first read nearly always
    returns all of it. This one returns that first read as it is when it is whole, and otherwise
    behaves as the original (up to 100 more reads, then IncompleteReadError with the expected
    and received counts, `is_clean_close` when nothing came). Replaces the name where msgio and
    yamux imported it.
    """
    from libp2p.io import msgio, utils
    from libp2p.stream_muxer.yamux import yamux

    if getattr(utils.read_exactly, "_distributeai_lean", False):
        return
    original = utils.read_exactly

    async def read_exactly(reader: Any, n: int, retry_count: int = utils.DEFAULT_RETRY_READ_COUNT) -> bytes:
        first = await reader.read(n)
        if len(first) == n:
            return bytes(first)  # no copy when it is bytes already
        return await original(_Prefixed(first, reader), n, retry_count)

    read_exactly._distributeai_lean = True
    msgio.read_exactly = read_exactly
    yamux.read_exactly = read_exactly


def lean_secure_reads() -> None:
    """Serve a Noise connection's reads from the decrypted message itself, not a BytesIO copy.

    `SecureSession.read` (`security/secure_session.py:73-135`) writes each decrypted message
    into a new `io.BytesIO` (a copy), hands out `getbuffer()[...].tobytes()` (another), and
    assembles a read of n bytes in a bytearray turned into bytes (two more). Yamux reads every
    frame as a 12-byte header and then its body (`stream_muxer/yamux/yamux.py:1191,1177-1180`),
    so each frame's payload was copied four times here. This read keeps the message and an
    offset and returns slices (one copy). Same contract: `read(n)` returns n bytes, fewer only
    when the connection ends after some (ConnectionClosedError when it ends before any);
    `read()` returns what is buffered, else one message.
    """
    from libp2p.io.exceptions import ConnectionClosedError
    from libp2p.security.secure_session import SecureSession

    if getattr(SecureSession, "_distributeai_lean", False):
        return

    async def read(self: Any, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        data, off = getattr(self, "_dai_data", b""), getattr(self, "_dai_off", 0)
        rest = len(data) - off
        if rest and (n is None or n == rest):
            self._dai_data, self._dai_off = b"", 0
            return data[off:] if off else data
        if rest and n < rest:
            self._dai_off = off + n
            return data[off:off + n]
        if n is None:
            msg = await self.conn.read_msg()
            if msg == b"":
                raise ConnectionClosedError("Connection closed")
            return msg
        parts = [data[off:]] if rest else []
        have = rest
        self._dai_data, self._dai_off = b"", 0
        while have < n:
            msg = await self.conn.read_msg()
            if msg == b"":
                if have:
                    return b"".join(parts)
                raise ConnectionClosedError("Connection closed")
            need = n - have
            if len(msg) <= need:
                parts.append(msg)
                have += len(msg)
            else:
                parts.append(msg[:need])
                have = n
                self._dai_data, self._dai_off = msg, need
        return parts[0] if len(parts) == 1 else b"".join(parts)

    SecureSession.read = read
    SecureSession._distributeai_lean = True


class _Prefixed:
    """A reader that returns `first` once, then reads from `reader` (for the original read_exactly)."""

    def __init__(self, first: bytes, reader: Any) -> None:
        self._first, self._reader = first, reader

    async def read(self, n: int) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await self._reader.read(n)

    def __getattr__(self, name: str) -> Any:  # conn_state() and the like, for its error message
        return getattr(self._reader, name)
