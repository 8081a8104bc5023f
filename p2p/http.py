"""A small HTTP/1.1 server on trio and h11: an app is `async (Request) -> Response`.

It lives in p2p/ because p2p owns every network endpoint a process exposes (libp2p and HTTP):
the bootstrap serves its page and /api/stats with it, and nodes their /metrics and REST API.

One request per connection (`Connection: close`), a deadline per connection (10 s unless the
caller says otherwise). Request bodies are read up to `max_body` bytes: a larger one (by its
Content-Length, or as it arrives when chunked) is answered 413 before the app runs. With a token
every request must carry `Authorization: Bearer <token>` (else 401, before the body is read or the
app runs). `serve_http` is the GET-only form with a route table. Enough for a stats page and a JSON
API; not a general web framework.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Awaitable, Callable

import h11
import trio

from .httpauth import authorized

log = logging.getLogger("distributeai.p2p.http")
# status, content type, body; an app may add a fourth item: extra headers, [(name, value), ...]
Response = tuple[int, str, bytes] | tuple[int, str, bytes, list[tuple[str, str]]]
Route = Callable[[], Awaitable[Response]]
CONNECTION_DEADLINE_S = 10.0
MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_BODY = 64 * 1024
DRAIN_FACTOR = 4  # an oversized body is read and dropped up to this many times the limit


@dataclass(frozen=True)
class Request:
    """One request: `path` is percent-decoded, `query` holds each parameter's last value."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[bytes, bytes]  # lower-case names
    body: bytes


App = Callable[[Request], Awaitable[Response]]


def json_response(status: int, value: object) -> Response:
    return status, "application/json", json.dumps(value).encode() + b"\n"


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and conn.their_state is not h11.SEND_BODY:
                return None
        elif isinstance(event, h11.Request):
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
                raise h11.RemoteProtocolError("connection closed inside the body")
        elif isinstance(event, h11.Data):
            seen += len(event.data)
            if seen <= max_body:
                body += event.data
            elif seen > DRAIN_FACTOR * max_body:
                return None
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return bytes(body) if seen <= max_body else None


def _parse_target(target: bytes) -> tuple[str, dict[str, str]]:
    text = target.decode("ascii", "replace")
    raw_path, _, raw_query = text.partition("?")
    path = urllib.parse.unquote(raw_path, errors="replace")
    query = {k: v for k, v in urllib.parse.parse_qsl(raw_query, keep_blank_values=True, errors="replace")}
    return path, query


async def _handle(stream: trio.SocketStream, app: App, token: str | None, max_body: int,
                  deadline_s: float) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    with trio.move_on_after(deadline_s):
        async with stream:
            request = await _read_request(conn, stream)
            if request is None:
                return
            headers = {name.lower(): value for name, value in request.headers}
            extra: list[tuple[str, str]] = []
            if token is not None and not authorized(headers.get(b"authorization"), token):
                status, ctype, body = json_response(401, {"error": "a bearer token is required (Authorization: Bearer TOKEN)"})
                extra = [("www-authenticate", 'Bearer realm="distributeai"')]
            else:
                length = headers.get(b"content-length", b"0")
                if length.isdigit() and int(length) > DRAIN_FACTOR * max_body:
                    payload = None
                else:
                    payload = await _read_body(conn, stream, max_body)
                if payload is None:
                    status, ctype, body = json_response(413, {"error": f"request body over the limit of {max_body} bytes",
                                                              "limit": max_body})
                else:
                    path, query = _parse_target(request.target)
                    status, ctype, body, *more = await app(Request(request.method.decode("ascii", "replace").upper(),
                                                                   path, query, headers, payload))
                    extra = list(more[0]) if more else []
            out = [("content-type", ctype), ("content-length", str(len(body))), ("connection", "close"),
                   ("cache-control", "no-store"), *extra]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=out)))
            if request.method != b"HEAD":
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))


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
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve GET `routes` until cancelled. `task_status.started((host, port))` reports the bound
    port. With `token`, every request must carry `Authorization: Bearer <token>`, else it is
    answered 401 before any route runs (httpauth.py decides when a listener needs one)."""
    await serve_app(host, port, routes_app(routes), token=token, task_status=task_status)


async def serve_app(host: str, port: int, app: App, *, token: str | None = None,
                    max_body: int = DEFAULT_MAX_BODY, deadline_s: float = CONNECTION_DEADLINE_S,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` until cancelled; see the module docstring for bodies, tokens and deadlines.
    An exception from the app is the app's bug: it is logged and answered 500, and the server
    goes on."""

    async def guarded(request: Request) -> Response:
        try:
            return await app(request)
        except Exception:
            log.exception("http app failed on %s %s", request.method, request.path[:200])
            return json_response(500, {"error": "internal error"})

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _handle(stream, guarded, token, max_body, deadline_s)
        except (h11.RemoteProtocolError, h11.LocalProtocolError, trio.BrokenResourceError,
                trio.ClosedResourceError) as exc:
            log.debug("http connection dropped: %s", exc)

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(handler, listeners))
        task_status.started((bound[0], bound[1]))
