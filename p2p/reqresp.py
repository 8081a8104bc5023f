"""What every request/response exchange shares: status codes, limits, refusals, stream helpers.

Requests travel in sessions (session.py): one long-lived stream per peer and direction, each
request one frame out and one frame back. Status 0 (OK) carries the handler's response; any
other status is a refusal whose payload is a short UTF-8 reason: 1 the handler failed (or the
protocol has no handler), 2 the request was over the listener's limit, 3 the listener was busy,
4 the response was over the listener's limit, 5 the peer sent more requests on the protocol than
the listener's rate limit allows (ratelimit.py).

The listener never lets a remote or a handler crash the node: every failure is counted (keys
requests_in, requests_rejected, requests_rejected_{too_large,busy,malformed,rate_limited},
requests_failed),
logged at DEBUG and ends with a refusal or, for a malformed session, a reset of that one stream.
"""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetStream

logger = logging.getLogger(__name__)


class RemoteError(Exception):
    """A remote peer failed, refused or timed out a request or a dial; says which and why.
    (Raised by the overlay: callers import it from `overlay`.)"""


STATUS_OK = 0
STATUS_HANDLER_FAILED = 1
STATUS_REQUEST_TOO_LARGE = 2
STATUS_BUSY = 3
STATUS_RESPONSE_TOO_LARGE = 4
STATUS_RATE_LIMITED = 5
_STATUS_NAMES = {
    STATUS_HANDLER_FAILED: "handler failed",
    STATUS_REQUEST_TOO_LARGE: "request too large",
    STATUS_BUSY: "busy",
    STATUS_RESPONSE_TOO_LARGE: "response too large",
    STATUS_RATE_LIMITED: "rate limited",
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


def refusal(status: int, payload: bytes) -> ResponseError:
    """The ResponseError for a refusal with `status` and a reason `payload`."""
    name = _STATUS_NAMES.get(status, f"status {status}")
    reason = payload[:MAX_REASON_BYTES].decode("utf-8", "replace")
    return ResponseError(f"{name}: {reason}" if reason else name)


async def read_exactly(stream: INetStream, n: int) -> bytes:
    """Read exactly n bytes; raise EOFError if the stream ends first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError(f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def new_limiter() -> trio.CapacityLimiter:
    """Inbound requests served at once by a node, all peers and protocols together."""
    return trio.CapacityLimiter(MAX_CONCURRENT_INBOUND)


async def write_whole(stream: INetStream, data: bytes, lock: trio.Lock, timeout: float) -> bool:
    """Write `data` whole, under `lock`; never cancelled half way. False if it failed or did not
    finish within `timeout` (the stream is then reset, which also ends the write).

    docs/libp2p.md item 9: yamux writes a frame unshielded (`stream_muxer/yamux/yamux.py:874-875`)
    and Noise splits a full 64 KiB frame in two (`security/noise/io.py:68-79`): a write cancelled
    between them corrupts the connection. So the write runs shielded in a task of its own, and a
    caller that gives up (or the timeout) resets the stream instead of abandoning half a frame.
    Every libp2p stream write in p2p/ goes through here (session.py, bitswap.py)."""
    async with lock:
        done = trio.Event()
        ok = False

        async def write() -> None:
            nonlocal ok
            with trio.CancelScope(shield=True):
                try:
                    await stream.write(data)
                    ok = True
                except Exception as exc:  # the stream or connection is gone
                    logger.debug("stream write failed: %r", exc)
                finally:
                    done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            with trio.move_on_after(timeout) as scope:
                try:
                    await done.wait()
                except BaseException:  # cancelled by the caller: the data may be half written
                    await reset_stream(stream)
                    raise
            if scope.cancelled_caught:
                await reset_stream(stream)
        return ok


async def reset_stream(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception:  # already dead
            pass
