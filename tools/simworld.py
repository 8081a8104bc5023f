"""The simulated world that is not the protocol: the gossip mesh (who forwards to whom, with what
latency) and every node's ledger view, shared copy-on-write. Pure; used by tools/simulation.py."""

from __future__ import annotations

import copy
import heapq
import math
import random
from typing import Callable

from distributeai.consensus.certificate import CheckedCertificate
from distributeai.consensus.ledger import Ledger

# p2p/workarounds_pubsub.py GOSSIP_DEGREE*, copied: p2p imports libp2p (tests/test_simulation.py checks them).
MESH_DEGREE, MESH_DEGREE_LOW, MESH_DEGREE_HIGH = 6, 4, 12


def lognormal_mu(mean: float, sigma: float) -> float:
    """The mu of a lognormal with this mean: mean = exp(mu + sigma^2 / 2)."""
    return math.log(mean) - sigma * sigma / 2


class Mesh:
    """A GossipSub-like mesh: each node keeps about D links, each with a fixed one-way latency."""

    def __init__(self, n: int, rng: random.Random, link_latency: Callable[[], float], hop_ms: float,
                 degree: int = MESH_DEGREE, low: int = MESH_DEGREE_LOW, high: int = MESH_DEGREE_HIGH) -> None:
        self.n, self.rng, self.latency, self.hop = n, rng, link_latency, hop_ms
        self.degree, self.low, self.high = min(degree, n - 1), min(low, n - 1), high
        self.adj: list[dict[int, float]] = [{} for _ in range(n)]
        stubs = [v for v in range(n) for _ in range(self.degree)]
        rng.shuffle(stubs)
        for a, b in zip(stubs[::2], stubs[1::2]):
            if a != b and b not in self.adj[a]:
                self._link(a, b)
        everyone = bytearray(b"\1") * n
        for v in range(n):
            self._graft(v, everyone)

    def _link(self, a: int, b: int) -> None:
        self.adj[a][b] = self.adj[b][a] = self.latency()

    def _graft(self, v: int, online: bytearray) -> None:
        """Bring v up to D links with random online peers that have room (bounded tries)."""
        adj = self.adj
        for _ in range(20 * self.degree):
            if len(adj[v]) >= self.degree:
                return
            w = self.rng.randrange(self.n)
            if w != v and online[w] and w not in adj[v] and len(adj[w]) < self.high:
                self._link(v, w)

    def leave(self, v: int, online: bytearray) -> None:
        peers = list(self.adj[v])
        for w in peers:
            del self.adj[w][v]
        self.adj[v].clear()
        for w in peers:
            if len(self.adj[w]) < self.low:
                self._graft(w, online)

    def join(self, v: int, online: bytearray) -> None:
        self._graft(v, online)

    def spread(self, source: int, t0: float) -> tuple[list[tuple[float, int]], int]:
        """Flood from `source` at t0: (time each node has the message, in order; transmissions).
        The source itself comes first, at t0."""
        adj, hop = self.adj, self.hop
        best = [math.inf] * self.n
        parent = [-1] * self.n
        done = bytearray(self.n)
        best[source] = t0
        heap = [(t0, source)]
        order: list[tuple[float, int]] = []
        sends = 0
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            t, u = pop(heap)
            if done[u]:
                continue
            done[u] = 1
            order.append((t, u))
            peers = adj[u]
            # u forwards to every mesh peer but the one it got the message from and the origin;
            # neither can improve (their own time is earlier), so the loop needs no test for them.
            pu = parent[u]
            sends += len(peers) - (pu in peers) - (pu != source and u != source and source in peers)
            t += hop
            for v, lat in peers.items():
                arrive = t + lat
                if arrive < best[v]:
                    best[v] = arrive
                    parent[v] = u
                    push(heap, (arrive, v))
        return order, sends


class LedgerViews:
    """Every node's own `Ledger`, shared copy-on-write: nodes that applied the same certificates and
    offences share one object, and a group is split (deep copy) the first time its members differ."""

    def __init__(self, n: int, genesis: int) -> None:
        self.group = [0] * n
        self.ledgers: dict[int, Ledger] = {0: Ledger(genesis=genesis)}
        self.size: dict[int, int] = {0: n}
        self._next = 1
        self.copies = 0
        self.folds = 0  # real apply_certificate calls (one per group)

    def of(self, v: int) -> Ledger:
        return self.ledgers[self.group[v]]

    def _split(self, gid: int) -> int:
        new = self._next
        self._next += 1
        self.ledgers[new] = copy.deepcopy(self.ledgers[gid])
        self.size[new] = 0
        self.copies += 1
        return new

    def _move(self, v: int, to: int) -> None:
        old = self.group[v]
        self.group[v] = to
        self.size[to] += 1
        self.size[old] -= 1
        if not self.size[old]:
            del self.size[old], self.ledgers[old]

    def apply_certificate(self, checked: CheckedCertificate, received: bytearray, at_ms: int) -> None:
        got: dict[int, int] = {}
        group = self.group
        for v, r in enumerate(received):
            if r:
                got[group[v]] = got.get(group[v], 0) + 1
        missed = {g: self._split(g) for g, c in got.items() if c < self.size[g]}
        if missed:
            for v, r in enumerate(received):
                if not r and group[v] in missed:
                    self._move(v, missed[group[v]])
        for g in got:
            self.ledgers[g].apply_certificate(checked, at_ms)
            self.folds += 1

    def apply_offence(self, v: int, who: bytes) -> None:
        if self.size[self.group[v]] > 1:
            self._move(v, self._split(self.group[v]))
        self.ledgers[self.group[v]].apply_offence(who)
