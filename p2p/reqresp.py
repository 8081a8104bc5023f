"""Request/response over libp2p streams: one request and one response per stream.

Wire format, after multistream-select has agreed on the protocol id:

    request   (dialer -> listener):  u32 big-endian length | request bytes
    response  (listener -> dialer):  u8 status | u32 big-endian length | payload

status 0 (OK): payload is the handler's response. Any other status is a refusal and the
payload a short UTF-8 reason: 1 the handler failed, 2 the request was over the listener's
limit (it read only the length prefix), 3 the listener was busy, 4 the response was over the
listener's limit. The listener closes its side after the response; the dialer closes after
reading it. A new stream per request costs about 3 ms on loopback (libp2p.md), which is fine
for this project's control traffic.

The listener side never lets a remote or a handler crash the node: every failure is counted,
logged at DEBUG and ends with a refusal or a reset of that one stream.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

logger = logging.getLogger(__name__)

Handler = Callable[[str, bytes], Awaitable[bytes]]

STATUS_OK = 0
STATUS_HANDLER_FAILED = 1
STATUS_REQUEST_TOO_LARGE = 2
STATUS_BUSY = 3
STATUS_RESPONSE_TOO_LARGE = 4
_STATUS_NAMES = {
    STATUS_HANDLER_FAILED: "handler failed",
    STATUS_REQUEST_TOO_LARGE: "request too large",
    STATUS_BUSY: "busy",
    STATUS_RESPONSE_TOO_LARGE: "response too large",
}

# A dialer has this long to deliver its whole request; a slow or silent one holds a task.
REQUEST_READ_TIMEOUT_S = 10.0
# A handler that runs longer than this is treated as failed; callers time out sooner anyway
# (request() defaults to 10 s), this only bounds the work a peer can leave behind.
HANDLER_TIMEOUT_S = 60.0
# Inbound requests served at once, all protocols together; more are refused with "busy"
# instead of queueing, so a flood costs a stream each, not a task each.
MAX_CONCURRENT_INBOUND = 64
# Reason strings are informative, never large.
MAX_REASON_BYTES = 256


class ResponseError(Exception):
    """The listener answered with a refusal (status != OK); str() is its reason."""


async def read_exactly(stream: INetStream, n: int) -> bytes:
    """Read exactly n bytes; raise EOFError if the stream ends first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def encode_request(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


async def read_response(stream: INetStream, max_bytes: int) -> bytes:
    """Read one response frame; return the payload or raise ResponseError with the reason."""
    head = await read_exactly(stream, 5)
    status, length = head[0], int.from_bytes(head[1:], "big")
    limit = max_bytes if status == STATUS_OK else MAX_REASON_BYTES
    if length > limit:
        raise ResponseError(f"response of {length} bytes exceeds the limit of {limit}")
    payload = await read_exactly(stream, length)
    if status == STATUS_OK:
        return payload
    name = _STATUS_NAMES.get(status, f"status {status}")
    reason = payload.decode("utf-8", "replace")
    raise ResponseError(f"{name}: {reason}" if reason else name)


def _frame(status: int, payload: bytes) -> bytes:
    return bytes([status]) + len(payload).to_bytes(4, "big") + payload


class RequestServer:
    """Serves the protocols given to `stream_handler`, counting into `stats`.

    Counter keys: requests_in, requests_rejected, requests_rejected_too_large,
    requests_rejected_busy, requests_rejected_malformed, requests_failed (handler raised,
    timed out or returned a non-bytes / too-large response).
    """

    def __init__(self, max_bytes: int, stats: collections.Counter[str]) -> None:
        self._max_bytes = max_bytes
        self._stats = stats
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT_INBOUND)

    def stream_handler(self, protocol: str, handler: Handler) -> Callable[[INetStream], Awaitable[None]]:
        async def serve(stream: INetStream) -> None:
            await self._serve(protocol, handler, stream)

        return serve

    async def _serve(self, protocol: str, handler: Handler, stream: INetStream) -> None:
        peer = str(stream.muxed_conn.peer_id)
        self._stats["requests_in"] += 1
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            self._reject("busy")
            await _respond(stream, STATUS_BUSY, b"too many requests in progress")
            return
        try:
            await self._serve_one(protocol, handler, stream, peer)
        finally:
            self._limiter.release()

    async def _serve_one(self, protocol: str, handler: Handler, stream: INetStream, peer: str) -> None:
        # Only reads run under this deadline: a write cancelled half-way can corrupt the
        # connection (see overlay._write_request).
        request: bytes | None = None
        try:
            with trio.fail_after(REQUEST_READ_TIMEOUT_S):
                length = int.from_bytes(await read_exactly(stream, 4), "big")
                if length <= self._max_bytes:
                    request = await read_exactly(stream, length)
        except (trio.TooSlowError, EOFError, StreamError) as exc:
            self._reject("malformed")
            logger.debug("request on %s from %s not received: %r", protocol, peer, exc)
            await reset_stream(stream)
            return
        if request is None:
            # Refused on the length prefix alone: the body is never read. The dialer reads
            # the refusal while it is still writing (see Overlay._request).
            self._reject("too_large")
            reason = f"request of {length} bytes exceeds the limit of {self._max_bytes}"
            await _respond(stream, STATUS_REQUEST_TOO_LARGE, reason.encode())
            return

        try:
            with trio.fail_after(HANDLER_TIMEOUT_S):
                response = await handler(peer, request)
            if not isinstance(response, (bytes, bytearray, memoryview)):
                raise TypeError(f"handler returned {type(response).__name__}, not bytes")
            response = bytes(response)
        except Exception as exc:  # task boundary: a handler bug must not reach libp2p
            self._stats["requests_failed"] += 1
            logger.debug("handler for %s failed on a request from %s", protocol, peer, exc_info=True)
            await _respond(stream, STATUS_HANDLER_FAILED, f"handler raised {type(exc).__name__}".encode())
            return
        if len(response) > self._max_bytes:
            self._stats["requests_failed"] += 1
            logger.debug("handler for %s returned %d bytes, over the limit", protocol, len(response))
            await _respond(stream, STATUS_RESPONSE_TOO_LARGE, b"response over the listener's limit")
            return
        await _respond(stream, STATUS_OK, response)

    def _reject(self, reason: str) -> None:
        self._stats["requests_rejected"] += 1
        self._stats[f"requests_rejected_{reason}"] += 1


async def _respond(stream: INetStream, status: int, payload: bytes) -> None:
    """Write one response frame and close our side; reset the stream if that fails."""
    try:
        await stream.write(_frame(status, payload[: MAX_REASON_BYTES] if status else payload))
        await stream.close()
    except Exception as exc:  # the dialer went away; nothing to tell it
        logger.debug("could not send a response: %r", exc)
        await reset_stream(stream)


async def reset_stream(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:  # already dead
            pass
