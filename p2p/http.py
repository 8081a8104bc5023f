"""A small HTTP/1.1 server on trio and h11: an app is `async (Request) -> Response`.

It lives in p2p/ because p2p owns every network endpoint a process exposes (libp2p and HTTP):
the bootstrap serves its page and /api/stats with it, and nodes their /metrics and REST API.

One request per connection (`Connection: close`), a deadline per connection (10 s unless the
caller says otherwise). Request bodies are read up to `max_body` bytes: a larger one (by its
Content-Length, or as it arrives when chunked) is answered 413 before the app runs. With a token
every request must carry `Authorization: Bearer <token>` (else 401, before the body is read or the
app runs). `serve_http` is the GET-only form with a route table. Enough for a stats page and a JSON
API; not a general web framework.

A route may take its request body streamed instead (`serve_app(..., streamed_bodies=)`: given the
method and path, the largest body it accepts, or None for the usual whole body): the app then gets
`Request.stream`, an async iterator of the body's chunks read from the socket as it asks for them,
and `body` is empty. Each chunk must arrive within `body_s` of the one before (408), the body stay
within its limit (413; at once by its Content-Length, before the app runs); the connection's
deadline then counts from the last chunk. httpbody.py has the contract.

An app that works long before it can answer (fetching a large file from peers first) keeps the
connection by calling `Request.keep_alive()` as it makes progress: each call moves the deadline
to `deadline_s` from then, so only an app that stalls for that long is cut.

A response body is bytes, or `Streamed(chunks, length)`: an async iterator of byte chunks sent as
they come (with Content-Length when `length` is known, else chunked), so a file of any size is
served without holding it. The connection's deadline then becomes a progress deadline: each
chunk must be sent within `deadline_s` of the one before. A stream that fails part way (the
iterator raises, or yields a total other than `length`) is cut: the connection closes without
completing the body, which the client sees as a short read, never as a complete file. The
iterator is closed (`aclose`) however the response ends.

Hostile clients (`HttpLimits`, httplimits.py, has the numbers and why): connections are capped in
total and per client IP, the oldest idle one evicted to make room and a new one refused with 503
and Retry-After only when every connection within the cap is busy; a connection that completes no
request head within `idle_s` is closed (408 if it sent part of one); a body not complete within
`body_s` is answered 408; a request head over MAX_HEADER_BYTES is answered 431 and a malformed one
400. After such an error answer the client, perhaps still sending, is read and dropped for a
bounded time and amount, so it gets the answer rather than a reset. None of these reaches the app;
each is counted in the caller's `counters` (COUNTERS names them).
"""

from __future__ import annotations

import collections
import json
import logging
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import AsyncIterator, Awaitable, Callable

import h11
import trio

from .httpauth import authorized
from .httpbody import BodyStream, RequestBodyError
from .httplimits import RETRY_AFTER_S, ConnectionTable, HttpLimits, Slot

log = logging.getLogger("distributeai.p2p.http")


@dataclass(frozen=True)
class Streamed:
    """A response body produced as it is sent (see the module docstring)."""

    chunks: AsyncIterator[bytes]
    length: int | None = None  # the body's size when known (sent as Content-Length)


# status, content type, body; an app may add a fourth item: extra headers, [(name, value), ...]
Body = bytes | Streamed
Response = tuple[int, str, Body] | tuple[int, str, Body, list[tuple[str, str]]]
Route = Callable[[], Awaitable[Response]]
CONNECTION_DEADLINE_S = 10.0
MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_BODY = 64 * 1024
DRAIN_FACTOR = 4  # an oversized body is read and dropped up to this many times the limit
LINGER_BYTES = 256 * 1024  # after an error answer, at most this much more is read and dropped
# What a server counts in `counters`: connections refused over a cap (503), idle ones evicted to
# admit a newer one, idle ones closed at `idle_s`, bodies cut at `body_s` (408), request heads
# over MAX_HEADER_BYTES (431) and malformed requests (400).
# A streamed request body (httpbody.py) over its limit is counted as body_too_large.
COUNTERS = ("refused_over_cap", "evicted_idle", "closed_idle", "body_timeout", "header_too_large", "bad_request",
            "body_too_large")


@dataclass(frozen=True)
class Request:
    """One request: `path` is percent-decoded, `query` holds each parameter's last value."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes
    stream: AsyncIterator[bytes] | None = None  # the body as it arrives, for a route that asked (then body is b"")
    # The app's own progress deadline: each call gives the connection `deadline_s` more from now
    # (an app that fetches a large file before answering calls it as bytes arrive).
    keep_alive: Callable[[], None] = lambda: None


App = Callable[[Request], Awaitable[Response]]
StreamedBodies = Callable[[str, str], int | None]  # (method, path) -> the largest body, streamed; None: whole


def json_response(status: int, value: object) -> Response:
    return status, "application/json", json.dumps(value).encode() + b"\n"


def error_bytes(status: int, message: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A whole `Connection: close` JSON error answer, written without h11 (which may be in its
    error state, or never have seen a request)."""
    body = json.dumps({"error": message}).encode() + b"\n"
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", "cache-control: no-store",
            *(f"{name}: {value}" for name, value in extra)]
    return "\r\n".join(head).encode() + b"\r\n\r\n" + body


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    """The request head, or None if the client closed first. RemoteProtocolError for a malformed
    head, or (error_status_hint 431) one over MAX_HEADER_BYTES: h11 checks only a head still
    incomplete, so a whole one read at once is measured here."""
    received = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            received += len(data)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.SEND_BODY:
                return None
        elif isinstance(event, h11.Request):
            if received - len(conn.trailing_data[0]) > MAX_HEADER_BYTES:
                raise h11.RemoteProtocolError("request head too long", error_status_hint=431)
            return event
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _read_body(conn: h11.Connection, stream: trio.SocketStream, max_body: int) -> bytes | None:
    """The whole body, or None if it is over `max_body` bytes. An oversized body is still read
    (and dropped) up to DRAIN_FACTOR times the limit, so that the client, still sending, gets
    its 413 rather than a reset connection; beyond that the connection is cut."""
    body = bytearray()
    seen = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and conn.their_state is h11.SEND_BODY:
                raise trio.BrokenResourceError("connection closed inside the body")
        elif isinstance(event, h11.Data):
            seen += len(event.data)
            if seen <= max_body:
                body += event.data
            elif seen > DRAIN_FACTOR * max_body:
                return None
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return bytes(body) if seen <= max_body else None


async def _answer_and_linger(stream: trio.SocketStream, answer: bytes, linger_s: float) -> None:
    """Send an error answer, end our side, then read and drop what the client is still sending
    (up to LINGER_BYTES, for up to `linger_s`) before the caller closes: closing a socket with
    unread data sends a reset, which can cost the client the answer."""
    await stream.send_all(answer)
    await _linger(stream, linger_s)


async def _linger(stream: trio.SocketStream, linger_s: float) -> None:
    """End our side, then read and drop what the client still sends (see _answer_and_linger)."""
    await stream.send_eof()
    with trio.move_on_after(linger_s):
        seen = 0
        while seen < LINGER_BYTES:
            data = await stream.receive_some(65536)
            if not data:
                return
            seen += len(data)


def _protocol_error(exc: h11.RemoteProtocolError, counters: collections.Counter) -> bytes:
    if exc.error_status_hint == 431:
        counters["header_too_large"] += 1
        return error_bytes(431, f"request head over the limit of {MAX_HEADER_BYTES} bytes")
    counters["bad_request"] += 1
    return error_bytes(400, "malformed HTTP request")


def _parse_target(target: bytes) -> tuple[str, dict[str, str]]:
    text = target.decode("ascii", "replace")
    raw_path, _, raw_query = text.partition("?")
    path = urllib.parse.unquote(raw_path, errors="replace")
    query = {k: v for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True, errors="replace")}
    return path, query


@dataclass
class _Server:
    """What every connection of one server shares."""

    app: App
    token: str | None
    max_body: int
    deadline_s: float
    limits: HttpLimits
    table: ConnectionTable
    counters: collections.Counter
    streamed_bodies: StreamedBodies | None = None


async def _connection(stream: trio.SocketStream, server: _Server) -> None:
    """Admit the connection (or refuse it: 503), then serve its one request."""
    try:
        client = str(stream.socket.getpeername()[0])
    except OSError:  # already gone
        await stream.aclose()
        return
    head_scope = trio.CancelScope(deadline=trio.current_time() + server.limits.idle_s)

    def evict() -> None:
        server.counters["evicted_idle"] += 1
        head_scope.cancel()

    slot = server.table.admit(client, evict)
    if slot is None:
        server.counters["refused_over_cap"] += 1
        async with stream:
            with trio.move_on_after(1.0):
                await stream.send_all(error_bytes(503, "too many connections; retry later",
                                                  (("retry-after", str(RETRY_AFTER_S)),)))
                await stream.send_eof()
        return
    async with stream:
        try:
            await _handle(stream, server, slot, head_scope)
        finally:  # before the close: a client that saw its answer end finds the slot free
            server.table.release(slot)


async def _handle(stream: trio.SocketStream, server: _Server, slot: Slot, head_scope: trio.CancelScope) -> None:
    """Serve one request on an admitted connection; `head_scope` bounds the wait for its head
    (the idle deadline, or an eviction)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    linger_s = server.limits.linger_s
    with trio.move_on_after(server.deadline_s) as deadline:
        try:
            with head_scope:
                request = await _read_request(conn, stream)
        except h11.RemoteProtocolError as exc:
            await _answer_and_linger(stream, _protocol_error(exc, server.counters), linger_s)
            return
        if head_scope.cancelled_caught:
            if not slot.evicted:
                server.counters["closed_idle"] += 1
                if conn.trailing_data[0]:  # part of a request head arrived
                    await _answer_and_linger(stream, error_bytes(408, "request head not complete in time"), linger_s)
            return
        if request is None:
            return
        server.table.busy(slot)
        headers = {name.lower(): value for name, value in request.headers}
        extra: list[tuple[str, str]] = []
        unread: BodyStream | None = None  # a streamed body the app did not read to its end
        if server.token is not None and not authorized(headers.get(b"authorization"), server.token):
            status, ctype, body = json_response(401, {"error": "a bearer token is required (Authorization: Bearer TOKEN)"})
            extra = [("www-authenticate", 'Bearer realm="distributeai"')]
        elif (limit := _streamed_limit(server, request)) is not None:
            answer = await _with_streamed_body(stream, conn, server, request, headers, limit, deadline)
            if answer is None:
                return
            status, ctype, body, extra, reader = answer
            unread = None if reader.done else reader
        else:
            length = headers.get(b"content-length", b"0")
            max_body = server.max_body
            if length.isdigit() and int(length) > DRAIN_FACTOR * max_body:
                payload = None
            else:
                try:
                    with trio.move_on_after(server.limits.body_s) as body_scope:
                        payload = await _read_body(conn, stream, max_body)
                except h11.RemoteProtocolError as exc:
                    await _answer_and_linger(stream, _protocol_error(exc, server.counters), linger_s)
                    return
                if body_scope.cancelled_caught:
                    server.counters["body_timeout"] += 1
                    await _answer_and_linger(stream, error_bytes(408, "request body not complete in time"), linger_s)
                    return
            if payload is None:
                server.counters["body_too_large"] += 1
                status, ctype, body = json_response(413, {"error": f"request body over the limit of {max_body} bytes",
                                                          "limit": max_body})
            else:
                path, query = _parse_target(request.target)
                status, ctype, body, *more = await server.app(Request(request.method.decode("ascii", "replace").upper(),
                                                                      path, query, headers, payload,
                                                                      keep_alive=_extender(deadline, server.deadline_s)))
                extra = list(more[0]) if more else []
        if isinstance(body, Streamed):
            await _send_streamed(stream, conn, request.method, status, ctype, body, extra, deadline, server.deadline_s)
            return
        out = [("content-type", ctype), ("content-length", str(len(body))), ("connection", "close"),
               ("cache-control", "no-store"), *extra]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=out)))
        if request.method != b"HEAD":
            await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        if unread is not None:  # answered before the body ended: let the client read the answer
            await _linger(stream, linger_s)


def _streamed_limit(server: _Server, request: h11.Request) -> int | None:
    if server.streamed_bodies is None:
        return None
    path, _ = _parse_target(request.target)
    return server.streamed_bodies(request.method.decode("ascii", "replace").upper(), path)


async def _with_streamed_body(stream: trio.SocketStream, conn: h11.Connection, server: _Server, request: h11.Request,
                              headers: dict[bytes, bytes], limit: int, deadline: trio.CancelScope
                              ) -> tuple[int, str, Body, list[tuple[str, str]], BodyStream] | None:
    """Run the app with the body streamed (httpbody.py); its answer, or None when the body failed
    (over `limit`, silent for `body_s`, malformed: answered here, counted, whatever the app said).
    The connection's deadline is moved to `deadline_s` after each chunk that arrives (at least
    `body_s` and the linger, so a silent client is answered 408 rather than dropped)."""
    length = headers.get(b"content-length", b"")
    if length.isdigit() and int(length) > limit:
        server.counters["body_too_large"] += 1
        await _answer_and_linger(stream, error_bytes(413, f"request body over the limit of {limit} bytes"),
                                 server.limits.linger_s)
        return None

    # Time for the next chunk (body_s), then for an answer, whatever the caller's deadline_s.
    step_s = max(server.deadline_s, server.limits.body_s + server.limits.linger_s + 1.0)

    def progress() -> None:
        deadline.deadline = max(deadline.deadline, trio.current_time() + step_s)

    progress()
    reader = BodyStream(conn, stream, limit, server.limits.body_s, progress)
    path, query = _parse_target(request.target)
    chunks = reader.chunks()
    try:
        status, ctype, body, *more = await server.app(Request(request.method.decode("ascii", "replace").upper(),
                                                              path, query, headers, b"", chunks))
    finally:
        with trio.CancelScope(shield=True):
            await chunks.aclose()
    failure = reader.failure
    if failure is not None:
        if failure.counter is not None:
            server.counters[failure.counter] += 1
        await _answer_and_linger(stream, error_bytes(failure.status, failure.message), server.limits.linger_s)
        return None
    return status, ctype, body, list(more[0]) if more else [], reader


def _extender(deadline: trio.CancelScope, step_s: float) -> Callable[[], None]:
    """`Request.keep_alive`: move `deadline` to `step_s` from now (never earlier)."""
    def keep_alive() -> None:
        deadline.deadline = max(deadline.deadline, trio.current_time() + step_s)

    return keep_alive


async def _send_streamed(stream: trio.SocketStream, conn: h11.Connection, method: bytes, status: int, ctype: str,
                         body: Streamed, extra: list[tuple[str, str]], deadline: trio.CancelScope,
                         step_s: float) -> None:
    """Send a Streamed body, each chunk within `step_s` of the one before (`deadline` is moved);
    a failing iterator cuts the body (the connection closes without its end)."""
    size = [("content-length", str(body.length))] if body.length is not None else [("transfer-encoding", "chunked")]
    out = [("content-type", ctype), *size, ("connection", "close"), ("cache-control", "no-store"), *extra]
    chunks = body.chunks
    try:
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=out)))
        if method == b"HEAD":
            return
        sent = 0
        async for chunk in chunks:
            if not chunk:
                continue
            sent += len(chunk)
            if body.length is not None and sent > body.length:
                raise ValueError(f"the stream yielded more than its length, {body.length} bytes")
            await stream.send_all(conn.send(h11.Data(data=chunk)))
            deadline.deadline = trio.current_time() + step_s
        await stream.send_all(conn.send(h11.EndOfMessage()))  # h11: LocalProtocolError if short
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise
    except Exception as exc:  # the body cannot be completed: the client sees a short read
        log.warning("http stream cut: %s", exc)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


def routes_app(routes: dict[str, Route]) -> App:
    """GET/HEAD routes by exact path: 405 for other methods, 404 for other paths."""

    async def app(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        route = routes.get(request.path)
        if route is None:
            return 404, "text/plain", b"not found\n"
        return await route()

    return app


async def serve_http(host: str, port: int, routes: dict[str, Route], *, token: str | None = None,
                     limits: HttpLimits = HttpLimits(), counters: collections.Counter | None = None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve GET `routes` until cancelled. `task_status.started((host, port))` reports the bound
    port. With `token`, every request must carry `Authorization: Bearer <token>`, else it is
    answered 401 before any route runs (httpauth.py decides when a listener needs one).
    `limits` and `counters` as for `serve_app`."""
    await serve_app(host, port, routes_app(routes), token=token, limits=limits, counters=counters,
                    task_status=task_status)


async def serve_app(host: str, port: int, app: App, *, token: str | None = None,
                    max_body: int = DEFAULT_MAX_BODY, deadline_s: float = CONNECTION_DEADLINE_S,
                    limits: HttpLimits = HttpLimits(), counters: collections.Counter | None = None,
                    streamed_bodies: StreamedBodies | None = None,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` until cancelled; see the module docstring for bodies, tokens, deadlines and
    limits. `counters`, if given, is where the server counts what it refused (COUNTERS); the
    caller reads it. `streamed_bodies(method, path)`, if given, names the routes whose request
    body the app reads as it arrives (`Request.stream`) and the largest such body. An exception
    from the app is the app's bug: it is logged and answered 500, and the server goes on."""

    async def guarded(request: Request) -> Response:
        try:
            return await app(request)
        except RequestBodyError as exc:  # the body failed: the server answers it (_with_streamed_body)
            return json_response(exc.status, {"error": exc.message})
        except Exception:
            log.exception("http app failed on %s %s", request.method, request.path[:200])
            return json_response(500, {"error": "internal error"})

    server = _Server(guarded, token, max_body, deadline_s, limits,
                     ConnectionTable(limits.max_connections, limits.max_per_client),
                     counters if counters is not None else collections.Counter(), streamed_bodies)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _connection(stream, server)
        except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError,
                trio.ClosedResourceError) as exc:
            log.debug("http connection dropped: %s", exc)

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(handler, listeners))
        task_status.started((bound[0], bound[1]))
