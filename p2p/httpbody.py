"""A request body read as it arrives, for the routes that ask for it (http.py `streamed_bodies`).

The app gets `Request.stream`, an async iterator of the body's chunks (each at most what one read
of the socket gave, 64 KiB), read from the socket only as the app asks for the next one: nothing
is buffered beyond one chunk, so a body of any size costs the server no memory, and a slow app
slows the client down (TCP flow control) rather than filling memory.

Limits, none of them the app's to enforce:
- silence: each chunk must arrive within `body_s` of the app asking for it; a client that stops
  sending is cut then (408, counted `body_timeout`), however long the whole upload has taken;
- size: a body over `limit` bytes (as it arrives, or at once by its Content-Length, before the
  app runs: http.py) is cut (413, counted `body_too_large`);
- a malformed chunked body (400, counted `bad_request`), or a client that closes inside it.
When one of these happens the iterator raises `RequestBodyError` (to the app, which should let it
through: whatever the app then answers, the server answers the error instead) and ends.
A client that waits for `100 Continue` gets it when the app first asks for the body.
"""

from __future__ import annotations

from typing import AsyncIterator, Callable

import h11
import trio

READ_BYTES = 65536


class RequestBodyError(Exception):
    """A streamed request body could not be read whole: `status` is the answer, `counter` what the
    server counts (None: nothing; the client went away)."""

    def __init__(self, status: int, message: str, counter: str | None) -> None:
        super().__init__(message)
        self.status, self.message, self.counter = status, message, counter


class BodyStream:
    """One request's body, read on demand; `progress()` is called after each chunk arrives."""

    def __init__(self, conn: h11.Connection, stream: trio.SocketStream, limit: int, body_s: float,
                 progress: Callable[[], None]) -> None:
        self.conn, self.stream, self.limit, self.body_s, self.progress = conn, stream, limit, body_s, progress
        self.seen = 0
        self.done = False  # the whole body was read
        self.seen_eof = False  # the client closed its side
        self.failure: RequestBodyError | None = None

    def _fail(self, status: int, message: str, counter: str | None) -> RequestBodyError:
        self.failure = RequestBodyError(status, message, counter)
        return self.failure

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.failure is not None:
            raise self.failure
        if self.conn.they_are_waiting_for_100_continue:
            await self.stream.send_all(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        while not self.done:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                if self.conn.their_state is h11.ERROR and self.seen_eof:
                    raise self._fail(400, "the connection closed inside the request body", None) from None
                raise self._fail(400, "malformed request body", "bad_request") from None
            if event is h11.NEED_DATA:
                with trio.move_on_after(self.body_s) as wait:
                    data = await self.stream.receive_some(READ_BYTES)
                if wait.cancelled_caught:
                    raise self._fail(408, f"request body: nothing arrived for {self.body_s:g} s", "body_timeout")
                self.seen_eof = not data
                self.conn.receive_data(data)
                self.progress()
            elif isinstance(event, h11.Data):
                self.seen += len(event.data)
                if self.seen > self.limit:
                    raise self._fail(413, f"request body over the limit of {self.limit} bytes", "body_too_large")
                yield event.data
            else:  # EndOfMessage (or ConnectionClosed, which h11 gives only after it)
                self.done = True
