"""A small HTTP/1.1 server on trio and h11: GET routes returning bytes.

It lives in p2p/ because p2p owns every network endpoint a process exposes (libp2p and HTTP):
the bootstrap serves its page and /api/stats with it, and nodes their /metrics.

One request per connection (`Connection: close`), a 10 s deadline per connection, request bodies
ignored and capped. Enough for a stats page and a JSON API; not a general web framework.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import h11
import trio

from .httpauth import authorized

log = logging.getLogger("distributeai.p2p.http")
Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Awaitable[Response]]
CONNECTION_DEADLINE_S = 10.0
MAX_HEADER_BYTES = 16 * 1024


async def _handle(stream: trio.SocketStream, routes: dict[str, Route], token: str | None) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    with trio.move_on_after(CONNECTION_DEADLINE_S):
        async with stream:
            request = None
            while request is None:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.SEND_BODY:
                        return
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.ConnectionClosed):
                    return
            path = request.target.decode("ascii", "replace").split("?", 1)[0]
            route = routes.get(path)
            extra = []
            if token is not None and not authorized(dict(request.headers).get(b"authorization"), token):
                status, ctype, body = 401, "text/plain", b"a bearer token is required\n"
                extra = [("www-authenticate", 'Bearer realm="distributeai"')]
            elif request.method not in (b"GET", b"HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif route is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            else:
                status, ctype, body = await route()
            headers = [("content-type", ctype), ("content-length", str(len(body))), ("connection", "close"),
                       ("cache-control", "no-store"), *extra]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
            if request.method == b"GET":
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))


async def serve_http(host: str, port: int, routes: dict[str, Route], *, token: str | None = None,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled. `task_status.started((host, port))` reports the bound port.
    With `token`, every request must carry `Authorization: Bearer <token>`, else it is answered
    401 before any route runs (httpauth.py decides when a listener needs one)."""

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await _handle(stream, routes, token)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("http connection dropped: %s", exc)

    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.serve_listeners(handler, listeners))
        task_status.started((bound[0], bound[1]))
