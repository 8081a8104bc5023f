"""The connection limits of the HTTP server (http.py): the numbers, and the table that admits,
evicts and refuses connections. Pure: no I/O, no clock.

A server holds at most `max_connections` connections, `max_per_client` of them from one client IP.
A connection is *idle* until its request head is complete; an idle one costs the server nothing
but a socket, and a client that opens many and sends nothing must not lock others out. So when a
new connection would go over a cap, the table first evicts the oldest idle connection within that
cap (of the same client for the per-client cap, of anyone for the total) and admits the new one;
only when every connection within the cap is busy with a request is the new one refused (the
server answers 503 with Retry-After). The newest connection is evicted last, so a client that
connects and sends its request at once is served even while 500 idle connections from its own
address keep arriving (tests/test_http_hygiene.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MAX_CONNECTIONS = 256  # per server: a socket and a small task each, far below a process's file limit
MAX_PER_CLIENT = 32  # per client IP: a browser opens 6 per host, a script a few more
IDLE_S = 5.0  # from accept to a complete request head; an honest client sends it at once
BODY_S = 10.0  # from the head to the end of the body (the REST API's 1 MiB at 100 KB/s)
LINGER_S = 2.0  # after an error answer, how long a client still sending is read and dropped
RETRY_AFTER_S = 1  # the Retry-After of a 503 over a cap


@dataclass(frozen=True)
class HttpLimits:
    """The limits of one server; the defaults are the module constants. Tests pass short times."""

    max_connections: int = MAX_CONNECTIONS
    max_per_client: int = MAX_PER_CLIENT
    idle_s: float = IDLE_S
    body_s: float = BODY_S
    linger_s: float = LINGER_S

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_per_client < 1:
            raise ValueError("max_connections and max_per_client must be at least 1")
        if min(self.idle_s, self.body_s, self.linger_s) <= 0:
            raise ValueError("idle_s, body_s and linger_s must be positive")


class Slot:
    """One admitted connection. If the table evicts it (only while idle), it sets `evicted` and
    calls `evict`, once."""

    __slots__ = ("client", "idle", "evicted", "evict")

    def __init__(self, client: str, evict: Callable[[], None]) -> None:
        self.client = client
        self.idle = True
        self.evicted = False
        self.evict = evict


class ConnectionTable:
    """The connections of one server, oldest first, in total and per client."""

    def __init__(self, max_connections: int, max_per_client: int) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self._all: dict[Slot, None] = {}  # insertion-ordered: oldest first
        self._by_client: dict[str, dict[Slot, None]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def count(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    def admit(self, client: str, evict: Callable[[], None]) -> Slot | None:
        """A slot for a new connection from `client`, evicting the oldest idle connection within
        a cap that is full (its `evict` is called); None if a full cap has no idle connection, in
        which case nothing is evicted."""
        mine = self._by_client.get(client, {})
        own_victim = self._oldest_idle(mine) if len(mine) >= self.max_per_client else None
        if len(mine) >= self.max_per_client and own_victim is None:
            return None
        total = len(self._all) - (own_victim is not None)
        any_victim = self._oldest_idle(self._all) if total >= self.max_connections and own_victim is None else None
        if total >= self.max_connections and any_victim is None:
            return None
        for victim in (own_victim, any_victim):
            if victim is not None:
                self.release(victim)
                victim.evicted = True
                victim.evict()
        slot = Slot(client, evict)
        self._all[slot] = None
        self._by_client.setdefault(client, {})[slot] = None
        return slot

    def busy(self, slot: Slot) -> None:
        """The slot's request head is complete: it is no longer evicted for newcomers."""
        slot.idle = False

    def release(self, slot: Slot) -> None:
        """The connection is gone (or evicted); releasing twice is harmless."""
        if self._all.pop(slot, 0) is None:
            mine = self._by_client[slot.client]
            del mine[slot]
            if not mine:
                del self._by_client[slot.client]

    @staticmethod
    def _oldest_idle(slots: dict[Slot, None]) -> Slot | None:
        return next((s for s in slots if s.idle), None)
