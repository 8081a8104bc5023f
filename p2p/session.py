"""Request/response over one long-lived libp2p stream per peer and direction.

A stream per request (how requests travelled before sessions) costs about ten encrypted yamux
frames and a multistream-select round trip before the first byte of the request: a bench profile
(issue 6) counted 10 socket sends and 51 yamux frame writes per request, for a request and a
response of a few hundred bytes. A session opens one stream to a peer, once, and then carries any
number of requests concurrently, each one frame out and one frame back.

Frame (both directions):

    u32 big-endian length of what follows the header | u32 request id | u8 type | body

    type 0, request:   u8 length of the protocol id | protocol id (UTF-8) | request bytes
    type 1, response:  u8 status (reqresp.STATUS_*) | payload (the response, or a short reason)

The listener answers in any order; the dialer matches answers by request id. Refusals have the
same statuses and meanings as in reqresp.py. A request over the listener's limit is read and
thrown away (up to DISCARD_CAP) and refused with "request too large", so the session survives a
peer with a larger limit; anything malformed, or a length beyond DISCARD_CAP, resets the
session, which fails only that peer's requests in flight. The framing is parsed by pure
functions (`parse_request_header`, `parse_request_body`, `parse_response_header`, raising
FrameError), which tools/fuzz fuzzes on their own and inside `serve_session`.

Frame writes are never cancelled half way. Defect: yamux writes a frame to the secured
connection without shielding it (`stream_muxer/yamux/yamux.py:874-875`), and Noise splits a full
64 KiB yamux frame into two Noise messages (`security/noise/io.py:68-79`); a write cancelled
between them leaves half a frame on the connection, whose muxer then fails (seen here as the
connection dropping right after a cancelled 600 KB request). So a write runs shielded, and one
that cannot finish in time (or whose caller gives up) resets the stream, which ends it promptly
(the yamux write loop checks `closed`, `yamux.py:243-244,280-283`).
"""

from __future__ import annotations

import collections
import logging
import struct
from collections.abc import Awaitable, Callable, Collection

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

from . import reqresp

logger = logging.getLogger(__name__)

PROTOCOL = "/distributeai/session/1.0.0"
HEADER = struct.Struct(">IIB")
TYPE_REQUEST, TYPE_RESPONSE = 0, 1
MAX_PROTOCOL_ID = 255
# An oversized request is read and dropped up to this many bytes; past it the session is reset.
DISCARD_CAP = 8 << 20
# A frame write that cannot finish (the peer stopped reading) resets the session after this long.
WRITE_TIMEOUT_S = 30.0

Handler = Callable[[str, bytes], Awaitable[bytes]]
# allow(peer id, protocol) -> False when the peer is over its rate limit on that protocol.
Allow = Callable[[str, str], bool]
# on_reject(reason, peer id): told of every request refused for what the peer did.
OnReject = Callable[[str, str], None]


class SessionClosed(Exception):
    """The session's stream ended; says why."""


class FrameError(Exception):
    """A frame that breaks the session's framing. `reason` is a short code ("malformed",
    "too_large"), the key of the listener's `requests_rejected_*` count; `fatal` says whether the
    session must be reset (the frame boundaries are lost) or the request is only refused."""

    def __init__(self, reason: str, detail: str, fatal: bool) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.fatal = fatal


def parse_request_header(head: bytes, max_bytes: int) -> tuple[int, int, bool]:
    """A request frame's header -> (body length, request id, discard). `discard`: the body is
    over the listener's limit, to be read and dropped and refused "request too large" while the
    session goes on. FrameError (fatal) for a header that is not HEADER.size bytes, is not a
    request, has an empty body or a body over DISCARD_CAP."""
    if len(head) != HEADER.size:
        raise FrameError("malformed", f"a header is {HEADER.size} bytes, not {len(head)}", fatal=True)
    length, request_id, kind = HEADER.unpack(head)
    if kind != TYPE_REQUEST or length < 1 or length > DISCARD_CAP:
        raise FrameError("malformed", f"type {kind}, {length} bytes", fatal=True)
    return length, request_id, length > max_bytes + 1 + MAX_PROTOCOL_ID


def parse_request_body(body: bytes, protocols: Collection[str], max_bytes: int) -> tuple[str, bytes]:
    """A request frame's body -> (protocol id, request). FrameError (not fatal) for an empty
    body, a protocol id that overruns the body or that no handler serves ("malformed"), or a
    request over `max_bytes` ("too_large")."""
    if not body:
        raise FrameError("malformed", "empty request body", fatal=False)
    proto_len = body[0]
    protocol = body[1:1 + proto_len].decode("utf-8", "replace")
    if len(body) < 1 + proto_len or protocol not in protocols:
        raise FrameError("malformed", f"no handler for {protocol[:64]!r}", fatal=False)
    request = body[1 + proto_len:]
    if len(request) > max_bytes:
        raise FrameError("too_large", f"request of {len(request)} bytes exceeds the limit of {max_bytes}",
                         fatal=False)
    return protocol, request


def parse_response_header(head: bytes, max_bytes: int) -> tuple[int, int]:
    """A response frame's header -> (body length, request id); FrameError (fatal) for anything
    but a response with a body of 1 to max_bytes + 1 bytes (status byte and payload)."""
    if len(head) != HEADER.size:
        raise FrameError("malformed", f"a header is {HEADER.size} bytes, not {len(head)}", fatal=True)
    length, request_id, kind = HEADER.unpack(head)
    if kind != TYPE_RESPONSE or not 1 <= length <= max_bytes + 1:
        raise FrameError("malformed", f"response frame of type {kind}, {length} bytes", fatal=True)
    return length, request_id


def request_frame(request_id: int, protocol: str, data: bytes) -> bytes:
    proto = protocol.encode()
    body = bytes([len(proto)]) + proto + data
    return HEADER.pack(len(body), request_id, TYPE_REQUEST) + body


def response_frame(request_id: int, status: int, payload: bytes) -> bytes:
    return HEADER.pack(1 + len(payload), request_id, TYPE_RESPONSE) + bytes([status]) + payload


async def _write_frame(stream: INetStream, frame: bytes, lock: trio.Lock) -> bool:
    """Write one frame whole, under `lock` (reqresp.write_whole, the one shielded writer)."""
    return await reqresp.write_whole(stream, frame, lock, WRITE_TIMEOUT_S)


class DialerSession:
    """Our side of a session we opened: send requests, match responses by id.

    Run `read_responses` in a task for the session's life; `request` may be called from many
    tasks at once. Once closed (stream ended, reset, or a malformed response) every request in
    flight and every later one raises SessionClosed.
    """

    def __init__(self, stream: INetStream, max_bytes: int) -> None:
        self.stream = stream
        self._max_bytes = max_bytes
        self._write_lock = trio.Lock()
        self._pending: dict[int, list] = {}  # id -> [event, status, payload]
        self._next_id = 1
        self.closed: str | None = None

    async def request(self, protocol: str, data: bytes) -> bytes:
        """Send one request and wait for its answer. Raises reqresp.ResponseError for a refusal,
        SessionClosed if the session ends first. Cancellation (the caller's deadline) is safe."""
        if self.closed is not None:
            raise SessionClosed(self.closed)
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        slot = [trio.Event(), None, b""]
        self._pending[request_id] = slot
        try:
            if not await _write_frame(self.stream, request_frame(request_id, protocol, data), self._write_lock):
                self._close("the request could not be written")
            await slot[0].wait()
        finally:
            self._pending.pop(request_id, None)
        if slot[1] is None:
            raise SessionClosed(self.closed or "closed")
        if slot[1] == reqresp.STATUS_OK:
            return slot[2]
        raise reqresp.refusal(slot[1], slot[2])

    async def read_responses(self) -> None:
        try:
            while True:
                length, request_id = parse_response_header(
                    await reqresp.read_exactly(self.stream, HEADER.size), self._max_bytes)
                body = await reqresp.read_exactly(self.stream, length)
                slot = self._pending.get(request_id)
                if slot is not None and slot[1] is None:
                    slot[1], slot[2] = body[0], body[1:]
                    slot[0].set()
        except (EOFError, StreamError, SessionClosed, Exception) as exc:  # the session ends either way
            self._close(f"session ended: {exc!r}")
            await reqresp.reset_stream(self.stream)
        finally:
            self._close("session reader stopped")

    def _close(self, why: str) -> None:
        if self.closed is None:
            self.closed = why
        for slot in self._pending.values():
            slot[0].set()


async def serve_session(stream: INetStream, handlers: dict[str, Handler], max_bytes: int,
                        stats: collections.Counter[str], limiter: trio.CapacityLimiter,
                        allow: Allow | None = None, on_reject: OnReject | None = None) -> None:
    """The listener's side: read requests until the stream ends, run each in its own task (at
    most `limiter` at once across the node; more are refused "busy"), answer each by id.

    A request that `allow(peer, protocol)` refuses is answered "rate limited" as soon as its
    protocol id is read, before the handler decodes anything. Counts into `stats` with the keys
    listed in reqresp.py, and tells `on_reject(reason, peer)` of each refusal. Never raises."""
    peer = str(stream.muxed_conn.peer_id)
    write_lock = trio.Lock()

    def reject(reason: str) -> None:
        stats["requests_rejected"] += 1
        stats[f"requests_rejected_{reason}"] += 1
        if on_reject is not None:
            on_reject(reason, peer)

    async def answer(request_id: int, status: int, payload: bytes) -> None:
        payload = payload[: reqresp.MAX_REASON_BYTES] if status else payload
        await _write_frame(stream, response_frame(request_id, status, payload), write_lock)

    async def run(request_id: int, protocol: str, handler: Handler, request: bytes) -> None:
        try:
            try:
                with trio.fail_after(reqresp.HANDLER_TIMEOUT_S):
                    response = await handler(peer, request)
                if not isinstance(response, (bytes, bytearray, memoryview)):
                    raise TypeError(f"handler returned {type(response).__name__}, not bytes")
                response = bytes(response)
            except Exception as exc:  # task boundary: a handler bug must not reach libp2p
                stats["requests_failed"] += 1
                logger.debug("handler for %s failed on a request from %s", protocol, peer, exc_info=True)
                await answer(request_id, reqresp.STATUS_HANDLER_FAILED, f"handler raised {type(exc).__name__}".encode())
                return
            if len(response) > max_bytes:
                stats["requests_failed"] += 1
                await answer(request_id, reqresp.STATUS_RESPONSE_TOO_LARGE, b"response over the listener's limit")
                return
            await answer(request_id, reqresp.STATUS_OK, response)
        finally:
            limiter.release_on_behalf_of(request_id_token(stream, request_id))

    try:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    head = await reqresp.read_exactly(stream, HEADER.size)
                except (EOFError, StreamError):
                    break
                stats["requests_in"] += 1
                try:
                    length, request_id, discard = parse_request_header(head, max_bytes)
                except FrameError as exc:
                    reject(exc.reason)
                    logger.debug("malformed session frame from %s (%s)", peer, exc.detail)
                    break
                with trio.fail_after(reqresp.REQUEST_READ_TIMEOUT_S):
                    if discard:
                        while length:  # read and drop it: the session carries other requests
                            length -= len(await reqresp.read_exactly(stream, min(length, 65536)))
                        reject("too_large")
                        reason = f"request exceeds the limit of {max_bytes}"
                        nursery.start_soon(answer, request_id, reqresp.STATUS_REQUEST_TOO_LARGE, reason.encode())
                        continue
                    body = await reqresp.read_exactly(stream, length)
                try:
                    protocol, request = parse_request_body(body, handlers, max_bytes)
                except FrameError as exc:
                    reject(exc.reason)
                    status = reqresp.STATUS_REQUEST_TOO_LARGE if exc.reason == "too_large" else \
                        reqresp.STATUS_HANDLER_FAILED
                    nursery.start_soon(answer, request_id, status, exc.detail.encode())
                    continue
                if allow is not None and not allow(peer, protocol):
                    reject("rate_limited")
                    # Answered before the next frame is read: a flooder that does not read
                    # its refusals stalls its own session (and WRITE_TIMEOUT_S resets it)
                    # instead of piling up answer tasks here.
                    await answer(request_id, reqresp.STATUS_RATE_LIMITED, f"over the rate limit of {protocol}".encode())
                    continue
                handler = handlers[protocol]
                token = request_id_token(stream, request_id)
                try:
                    limiter.acquire_on_behalf_of_nowait(token)
                except (trio.WouldBlock, RuntimeError):
                    reject("busy")
                    nursery.start_soon(answer, request_id, reqresp.STATUS_BUSY, b"too many requests in progress")
                    continue
                nursery.start_soon(run, request_id, protocol, handler, request)
    except trio.TooSlowError:
        reject("malformed")
        logger.debug("session from %s: a request body did not arrive in time", peer)
    except Exception as exc:  # the stream failed under us; nothing to answer
        logger.debug("session from %s ended: %r", peer, exc)
    finally:
        await reqresp.reset_stream(stream)


def request_id_token(stream: INetStream, request_id: int) -> tuple[int, int]:
    """A limiter borrower unique to one request of one session."""
    return (id(stream), request_id)
