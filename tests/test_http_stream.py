"""p2p/http.py's streamed response bodies (`Streamed`), over real sockets on 127.0.0.1 against a
real `serve_app`: a body larger than anything held is sent chunk by chunk, with its length or
chunked; a stream that fails part way is cut (the client sees a short body, never a whole one);
the iterator is always closed; a reader that stops reading is cut at the progress deadline.
And streamed request bodies: an upload larger than anything held arrives whole (Content-Length or
chunked), one that stops sending is cut after `body_s` of silence (however long it took in all),
one over its route's limit is refused 413; each refusal counted."""

from __future__ import annotations

import collections
import hashlib
import json
import tracemalloc
from contextlib import asynccontextmanager

import h11
import trio

from distributeai.p2p.http import Request, Response, Streamed, json_response, serve_app
from distributeai.p2p.httplimits import HttpLimits

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


async def test_an_app_that_reports_progress_keeps_its_connection_past_the_deadline():
    """An app that works for twice the deadline before answering (as the REST API fetches a large
    file from peers first) is answered when it calls `keep_alive` as it goes; one that does not
    call it is cut at the deadline."""
    steps, step_s, deadline_s = 16, 0.25, 2.0  # 4 s of work, never 2 s without progress

    def working(report: bool):
        async def app(request: Request) -> Response:
            for _ in range(steps):
                await trio.sleep(step_s)  # a stand-in for a fetch's progress, not a synchronisation
                if report:
                    request.keep_alive()
            return json_response(200, {"done": True})
        return app

    for report in (True, False):
        async with server(working(report), deadline_s=deadline_s) as port:
            with trio.fail_after(WAIT_S):
                head, body, complete = await get(port)
        if report:
            assert head.status_code == 200 and complete and json.loads(body) == {"done": True}
        else:
            assert head is None and not complete


# --- streamed request bodies (`serve_app(..., streamed_bodies=)`, p2p/httpbody.py) -----------------

UPLOAD_LIMIT = 48 << 20


class Upload:
    """An app that reads its body as it arrives, hashing it, and says what it saw."""

    def __init__(self) -> None:
        self.called = 0
        self.biggest = 0

    async def __call__(self, request: Request) -> Response:
        self.called += 1
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream:
            self.biggest = max(self.biggest, len(chunk))
            digest.update(chunk)
            size += len(chunk)
        return json_response(201, {"size": size, "sha256": digest.hexdigest()})


def only_uploads(method: str, path: str) -> int | None:
    return UPLOAD_LIMIT if (method, path) == ("POST", "/up") else None


async def post(port: int, pieces, *, chunked: bool, length: int | None = None) -> tuple[int, bytes]:
    """(status, body) of one POST /up whose body is `pieces` (an async iterator of bytes), sent
    with its Content-Length (`length`) or chunked; the answer is read even if the server stops
    reading the body part way."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    size = [("transfer-encoding", "chunked")] if chunked else [("content-length", str(length))]
    answer = bytearray()

    async def send() -> None:
        try:
            await stream.send_all(conn.send(h11.Request(method="POST", target="/up", headers=[("host", "x"), *size])))
            async for data in pieces:
                await stream.send_all(conn.send(h11.Data(data=data)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass  # the server answered and closed before the body ended

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while True:
            try:
                data = await stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                break
            if not data:
                break
            answer += data
        nursery.cancel_scope.cancel()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def pieces_of(n: int, gap_s: float = 0.0, stall_after: int | None = None):
    for i in range(n):
        if i == stall_after:
            await trio.sleep_forever()  # the client's behaviour: it stops sending
        if gap_s:
            await trio.sleep(gap_s)  # the client's behaviour: a slow sender
        yield piece(i)


async def test_a_large_streamed_upload_arrives_whole_in_bounded_memory_with_its_length_or_chunked():
    n = 512  # 32 MiB, sent 64 KiB at a time
    want = hashlib.sha256(expected(n)).hexdigest()
    for chunked in (False, True):
        app = Upload()
        async with server(app, streamed_bodies=only_uploads) as port:
            tracemalloc.start()
            try:
                with trio.fail_after(60):
                    status, body = await post(port, pieces_of(n), chunked=chunked, length=n * CHUNK)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert status == 201 and json.loads(body) == {"size": n * CHUNK, "sha256": want}
        assert app.biggest <= 1 << 16
        assert peak < 8 << 20, peak  # the server held a few chunks at a time, never the 32 MiB


async def test_a_streamed_upload_is_cut_after_body_s_of_silence_not_body_s_in_all():
    counters = collections.Counter()
    limits = HttpLimits(body_s=2.0)
    async with server(Upload(), streamed_bodies=only_uploads, limits=limits, deadline_s=1.0,
                      counters=counters) as port:
        with trio.fail_after(WAIT_S):
            # 10 pieces 0.25 s apart: 2.5 s in all, longer than body_s and than the connection deadline
            status, body = await post(port, pieces_of(10, gap_s=0.25), chunked=True)
            assert status == 201 and json.loads(body)["size"] == 10 * CHUNK
            started = trio.current_time()
            status, body = await post(port, pieces_of(10, stall_after=3), chunked=False, length=10 * CHUNK)
        assert status == 408 and trio.current_time() - started >= limits.body_s
        assert "nothing arrived" in json.loads(body)["error"]
    assert counters["body_timeout"] == 1


async def test_an_upload_over_its_limit_is_refused_413_and_counted():
    counters = collections.Counter()
    app = Upload()
    n = UPLOAD_LIMIT // CHUNK + 8
    async with server(app, streamed_bodies=only_uploads, counters=counters) as port:
        with trio.fail_after(WAIT_S):
            # by its Content-Length: refused before the app runs
            status, body = await post(port, pieces_of(n), chunked=False, length=n * CHUNK)
            assert status == 413 and app.called == 0
            # chunked: cut as it passes the limit
            status, body = await post(port, pieces_of(n), chunked=True)
            assert status == 413 and app.called == 1
            assert str(UPLOAD_LIMIT) in json.loads(body)["error"]
            # a route that did not ask for streaming keeps the whole-body limit
            status, _ = await post_to_other_route(port)
            assert status == 413
    assert counters["body_too_large"] == 3


async def post_to_other_route(port: int) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"POST /other HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n")
        answer = bytearray()
        while data := await stream.receive_some(1 << 16):
            answer += data
    return int(bytes(answer).split()[1]), bytes(answer)
