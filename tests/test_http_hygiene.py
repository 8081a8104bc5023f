"""Issue 14 item 6, the HTTP half: p2p/http.py against hostile clients, over real sockets on
127.0.0.1 against a real `serve_app` (and the real bootstrap's /api/stats in a process).

- 500 idle connections from one address do not keep `/stats` from answering a fresh one;
- a 10 MB request head is answered 431, also while the client is still sending it;
- a chunked body that never ends is answered 408 at the body deadline, the app never called;
- a connection that sends no request head is closed at the idle deadline (408 if it sent part of one);
- over the per-client or the total cap, with every connection busy, a newcomer gets 503 + Retry-After.

The connection table's rules are tested pure. Time limits are parameters (`HttpLimits`), so the
tests use short ones; every wait is for an event (an answer, a close) under a deadline.
"""

from __future__ import annotations

import collections
import json
import resource
import urllib.request
from contextlib import asynccontextmanager

import pytest
import trio

from distributeai.p2p.http import Request, Response, json_response, serve_app
from distributeai.p2p.httplimits import ConnectionTable, HttpLimits
from distributeai.tools.devnet import Devnet

IDLE_CONNECTIONS = 500
WAIT_S = 20  # a safety net for each wait: generous for 2 loaded cores, costs nothing when it works


def enough_files(n: int) -> None:
    """Each idle connection is two descriptors in this process (client and server side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


class App:
    """Answers `/stats`; `/block` waits (counted in `entered`) until `release` is set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.entered = 0
        self.entered_changed = trio.Event()
        self.release = trio.Event()

    async def __call__(self, request: Request) -> Response:
        self.calls.append(request.path)
        if request.path == "/block":
            self.entered += 1
            self.entered_changed.set()
            await self.release.wait()
        return json_response(200, {"path": request.path, "body": len(request.body)})

    async def wait_entered(self, n: int) -> None:
        while self.entered < n:
            self.entered_changed = trio.Event()
            await self.entered_changed.wait()


@asynccontextmanager
async def server(app, **kwargs):
    """(port, counters) of a serve_app on 127.0.0.1, cancelled at exit."""
    counters = collections.Counter()
    async with trio.open_nursery() as nursery:
        _, port = await nursery.start(lambda task_status: serve_app("127.0.0.1", 0, app, counters=counters,
                                                                    task_status=task_status, **kwargs))
        yield port, counters
        nursery.cancel_scope.cancel()


async def read_all(stream: trio.SocketStream) -> bytes:
    """Everything until the server closes (a reset after its answer counts as a close)."""
    got = bytearray()
    try:
        while data := await stream.receive_some(65536):
            got += data
    except trio.BrokenResourceError:
        pass
    return bytes(got)


async def exchange(port: int, data: bytes) -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        return await read_all(stream)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


async def open_idle(port: int, n: int) -> list[trio.SocketStream]:
    return [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(n)]


async def wait_closed(streams: list[trio.SocketStream], n: int) -> None:
    """Return once the server has closed `n` of `streams` (each without a byte of answer)."""
    closed = 0
    done = trio.Event()

    async def watch(stream: trio.SocketStream) -> None:
        nonlocal closed
        assert await read_all(stream) == b""
        closed += 1
        if closed == n:
            done.set()

    async with trio.open_nursery() as nursery:
        for s in streams:
            nursery.start_soon(watch, s)
        await done.wait()
        nursery.cancel_scope.cancel()


# --- the connection table, pure ------------------------------------------------------------------


def test_the_table_evicts_the_oldest_idle_connection_within_the_full_cap():
    evicted = []
    table = ConnectionTable(max_connections=4, max_per_client=2)
    a1 = table.admit("a", lambda: evicted.append("a1"))
    a2 = table.admit("a", lambda: evicted.append("a2"))
    table.busy(a1)
    a3 = table.admit("a", lambda: evicted.append("a3"))  # per-client cap: a2 is the oldest idle of a
    assert a3 is not None and evicted == ["a2"] and table.count("a") == 2
    table.busy(a3)
    assert table.admit("a", lambda: None) is None  # both of a's busy: refused, nothing evicted
    assert evicted == ["a2"] and len(table) == 2
    b1 = table.admit("b", lambda: evicted.append("b1"))
    c1 = table.admit("c", lambda: evicted.append("c1"))
    d1 = table.admit("d", lambda: evicted.append("d1"))  # total cap: b1 is the oldest idle of all
    assert d1 is not None and evicted == ["a2", "b1"] and len(table) == 4
    table.busy(c1)
    table.busy(d1)
    assert table.admit("e", lambda: None) is None and len(table) == 4
    table.release(a1)
    table.release(a1)  # twice is harmless
    table.release(a2)  # an evicted slot's own release is harmless too
    assert table.admit("e", lambda: None) is not None and table.count("a") == 1 and len(table) == 4
    assert b1.client == "b" and b1.evicted and a2.evicted and not a1.evicted


def test_limits_are_checked():
    for bad in ({"max_connections": 0}, {"max_per_client": 0}, {"idle_s": 0}, {"body_s": -1}, {"linger_s": 0}):
        with pytest.raises(ValueError):
            HttpLimits(**bad)


# --- real sockets --------------------------------------------------------------------------------


@pytest.mark.parametrize("limits", [HttpLimits(idle_s=60), HttpLimits(max_connections=1024, max_per_client=1024, idle_s=60)],
                         ids=["default-caps", "caps-above-500"])
async def test_stats_answers_a_fresh_connection_under_500_idle_ones(limits):
    """No idle deadline here (60 s): the caps alone must let the fresh connection in."""
    enough_files(4 * IDLE_CONNECTIONS)
    app = App()
    async with server(app, limits=limits) as (port, counters):
        idle = await open_idle(port, IDLE_CONNECTIONS)
        over = max(0, IDLE_CONNECTIONS - min(limits.max_per_client, limits.max_connections))
        with trio.fail_after(WAIT_S):
            if over:  # the server has admitted all 500: it evicted the oldest beyond the cap
                await wait_closed(idle, over)
            answer = await exchange(port, get("/stats"))
        assert status_of(answer) == 200 and json.loads(answer.split(b"\r\n\r\n", 1)[1])["path"] == "/stats"
        assert app.calls == ["/stats"]
        assert counters["evicted_idle"] == (over + 1 if over else 0) and counters["refused_over_cap"] == 0
        for s in idle:
            await s.aclose()


async def test_the_bootstraps_api_stats_answers_under_500_idle_connections(tmp_path):
    enough_files(2 * IDLE_CONNECTIONS + 100)
    with Devnet(tmp_path / "net", nodes=0) as net:
        net.start()
        port = int(net.http_url.rsplit(":", 1)[1])
        idle = await open_idle(port, IDLE_CONNECTIONS)
        with trio.fail_after(WAIT_S):
            await wait_closed(idle, IDLE_CONNECTIONS - HttpLimits().max_per_client)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy
        stats = await trio.to_thread.run_sync(lambda: json.loads(opener.open(net.http_url + "/api/stats", timeout=WAIT_S).read()))
        assert stats["peer_id"]
        for s in idle:
            await s.aclose()


async def test_a_10_mb_request_head_is_answered_431_while_still_being_sent():
    app = App()
    async with server(app) as (port, counters):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:

            async def send_forever_long_header() -> None:
                try:
                    await stream.send_all(b"GET /stats HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (10 << 20))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the server, having answered, stopped reading

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_forever_long_header)
                with trio.fail_after(WAIT_S):
                    answer = await read_all(stream)
                nursery.cancel_scope.cancel()
        assert status_of(answer) == 431 and b"request head over the limit" in answer
        # A whole request whose head is over the limit: the same, and a malformed one is a 400.
        with trio.fail_after(WAIT_S):
            assert status_of(await exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")) == 431
            assert status_of(await exchange(port, b"NOT HTTP AT ALL\r\n\r\n")) == 400
        assert app.calls == [] and counters["header_too_large"] == 2 and counters["bad_request"] == 1


async def test_a_chunked_body_that_never_ends_is_answered_408_at_the_body_deadline():
    app = App()
    limits = HttpLimits(body_s=0.5)
    async with server(app, limits=limits, deadline_s=60.0) as (port, counters):  # the REST API's deadline
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            started = trio.current_time()  # before the head: the server's body deadline starts later
            await stream.send_all(b"POST /jobs HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")

            async def trickle() -> None:  # the client's behaviour: a chunk now and then, never the last
                try:
                    while True:
                        await stream.send_all(b"5\r\nhello\r\n")
                        await trio.sleep(0.05)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trickle)
                with trio.fail_after(WAIT_S):
                    answer = await read_all(stream)
                nursery.cancel_scope.cancel()
        assert status_of(answer) == 408 and trio.current_time() - started >= limits.body_s
        # A body that does end is served as before.
        with trio.fail_after(WAIT_S):
            answer = await exchange(port, b"POST /jobs HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                                          b"5\r\nhello\r\n0\r\n\r\n")
        assert status_of(answer) == 200 and json.loads(answer.split(b"\r\n\r\n", 1)[1])["body"] == 5
        assert app.calls == ["/jobs"] and counters["body_timeout"] == 1


async def test_an_idle_connection_is_closed_at_the_idle_deadline():
    app = App()
    limits = HttpLimits(idle_s=0.3)
    async with server(app, limits=limits) as (port, counters):
        with trio.fail_after(WAIT_S):
            started = trio.current_time()  # before the connect: the server's deadline starts later
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                assert await read_all(stream) == b""  # nothing sent: closed without a word
                assert trio.current_time() - started >= limits.idle_s
            answer = await exchange(port, b"GET /stats HTTP/1.1\r\nHost: te")  # part of a head, then silence
        assert status_of(answer) == 408
        assert app.calls == [] and counters["closed_idle"] == 2


@pytest.mark.parametrize("limits", [HttpLimits(max_per_client=2), HttpLimits(max_connections=2)],
                         ids=["per-client", "total"])
async def test_over_a_cap_with_every_connection_busy_a_newcomer_gets_503(limits):
    app = App()
    async with server(app, limits=limits) as (port, counters):
        busy = await open_idle(port, 2)
        for s in busy:
            await s.send_all(get("/block"))
        with trio.fail_after(WAIT_S):
            await app.wait_entered(2)
            answer = await exchange(port, get("/stats"))
        assert status_of(answer) == 503 and b"\r\nretry-after: 1\r\n" in answer.lower()
        assert counters["refused_over_cap"] == 1 and app.calls == ["/block", "/block"]
        app.release.set()
        with trio.fail_after(WAIT_S):
            for s in busy:
                assert status_of(await read_all(s)) == 200
                await s.aclose()
            assert status_of(await exchange(port, get("/stats"))) == 200  # room again
