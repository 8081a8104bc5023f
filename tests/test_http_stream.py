"""p2p/http.py's streamed response bodies (`Streamed`), over real sockets on 127.0.0.1 against a
real `serve_app`: a body larger than anything held is sent chunk by chunk, with its length or
chunked; a stream that fails part way is cut (the client sees a short body, never a whole one);
the iterator is always closed; a reader that stops reading is cut at the progress deadline."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager

import h11
import trio

from distributeai.p2p.http import Request, Response, Streamed, serve_app

WAIT_S = 20
CHUNK = 1 << 16


def piece(i: int) -> bytes:
    return hashlib.sha256(b"%d" % i).digest() * (CHUNK // 32)


class App:
    def __init__(self, pieces: int, fail_at: int | None = None, claim: int | None = None) -> None:
        self.pieces, self.fail_at, self.claim = pieces, fail_at, claim
        self.made = 0
        self.closed = trio.Event()

    async def chunks(self):
        try:
            for i in range(self.pieces):
                if i == self.fail_at:
                    raise OSError("the disk went away")
                self.made += 1
                yield piece(i)
        finally:
            self.closed.set()

    async def __call__(self, request: Request) -> Response:
        length = self.claim if self.claim is not None else self.pieces * CHUNK
        return 200, "application/octet-stream", Streamed(self.chunks(), None if self.claim == -1 else length)


@asynccontextmanager
async def server(app, **kwargs):
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(lambda task_status: serve_app("127.0.0.1", 0, app, task_status=task_status,
                                                                    **kwargs))
        yield port
        nursery.cancel_scope.cancel()


async def get(port: int, *, read: bool = True) -> tuple[h11.Response | None, bytes, bool]:
    """(response head, body bytes, whether the body ended properly) of one GET."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    await stream.send_all(conn.send(h11.Request(method="GET", target="/f", headers=[("host", "x")])))
    await stream.send_all(conn.send(h11.EndOfMessage()))
    head, body, complete = None, bytearray(), False
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(1 << 20)
                except trio.BrokenResourceError:
                    data = b""
                try:
                    conn.receive_data(data)
                except h11.RemoteProtocolError:
                    break
                continue
            if isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                complete = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError:
        pass
    finally:
        await stream.aclose()
    return head, bytes(body), complete


def expected(n: int) -> bytes:
    return b"".join(piece(i) for i in range(n))


async def test_a_streamed_body_arrives_whole_with_its_length_or_chunked():
    for claim in (None, -1):
        app = App(pieces=200, claim=claim)  # 12.5 MiB, made 64 KiB at a time
        async with server(app) as port:
            with trio.fail_after(WAIT_S):
                head, body, complete = await get(port)
                await app.closed.wait()
        headers = dict(head.headers)
        assert head.status_code == 200 and complete and body == expected(200)
        if claim is None:
            assert headers[b"content-length"] == str(200 * CHUNK).encode()
        else:
            assert headers[b"transfer-encoding"] == b"chunked"


async def test_a_stream_that_fails_part_way_is_cut_and_closed():
    for app in (App(pieces=50, fail_at=20), App(pieces=10, claim=50 * CHUNK)):
        async with server(app) as port:
            with trio.fail_after(WAIT_S):
                head, body, complete = await get(port)
                await app.closed.wait()
        assert head.status_code == 200 and not complete and len(body) < 50 * CHUNK


async def test_a_client_that_stops_reading_is_cut_at_the_progress_deadline():
    app = App(pieces=10_000)  # 625 MiB: far more than the socket buffers hold
    async with server(app, deadline_s=1.0) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = h11.Connection(h11.CLIENT)
        await stream.send_all(conn.send(h11.Request(method="GET", target="/f", headers=[("host", "x")])))
        with trio.fail_after(WAIT_S):
            await app.closed.wait()  # never read: the server gave up on it, and closed the iterator
        await stream.aclose()
    assert app.made < 10_000
