"""The simulated world that is not the protocol: the gossip mesh (who forwards to whom, with what
latency) and every node's certificate set with the ledger views folded from it. Pure; used by
tools/simulation.py.

Memory is what bounds the node count: per node the mesh keeps a small dict of links, the ledger
model two ints (`CertificateSets`), and `Ledger` objects exist only per distinct view asked for."""

from __future__ import annotations

import copy
import heapq
import math
import random
from collections import OrderedDict
from typing import Callable, Iterable

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
        self._sends: int | None = None  # `sends`, until a node leaves or joins
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
        self._sends = None
        peers = list(self.adj[v])
        for w in peers:
            del self.adj[w][v]
        self.adj[v].clear()
        for w in peers:
            if len(self.adj[w]) < self.low:
                self._graft(w, online)

    def join(self, v: int, online: bytearray) -> None:
        self._sends = None
        self._graft(v, online)

    def sends(self, online: bytearray) -> int:
        """Transmissions of one flood over the online mesh: each node that gets the message forwards
        it to its mesh peers but the one it came from (an upper bound by at most the origin's
        degree: `spread` also skips the origin). Every online node is taken to be reached. Kept
        until a node leaves or joins (`online` must change only with them)."""
        if self._sends is not None:
            return self._sends
        adj = self.adj
        reached = [len(adj[v]) for v in range(self.n) if online[v]]
        self._sends = max(0, sum(reached) - (len(reached) - 1))
        return self._sends

    def arrivals(self, source: int, targets: Iterable[int], t0: float) -> dict[int, float]:
        """When a flood from `source` at t0 reaches each target (absent: unreachable): the shortest
        path, each hop costing the link's latency plus `hop_ms`, found by a bidirectional search per
        target, so a few targets cost far less than a flood of the whole mesh (`spread`)."""
        return {v: t0 + d for v in targets if (d := self._distance(source, v)) < math.inf}

    def _distance(self, a: int, b: int) -> float:
        if a == b:
            return 0.0
        adj, hop = self.adj, self.hop
        dist = ({a: 0.0}, {b: 0.0})
        done: tuple[set[int], set[int]] = (set(), set())
        heaps: tuple[list, list] = ([(0.0, a)], [(0.0, b)])
        best = math.inf
        pop, push = heapq.heappop, heapq.heappush
        while heaps[0] and heaps[1]:
            if heaps[0][0][0] + heaps[1][0][0] >= best:
                break
            side = 0 if heaps[0][0][0] <= heaps[1][0][0] else 1
            d, u = pop(heaps[side])
            if u in done[side]:
                continue
            done[side].add(u)
            mine, other = dist[side], dist[1 - side]
            for v, lat in adj[u].items():
                nd = d + lat + hop
                if nd < mine.get(v, math.inf):
                    mine[v] = nd
                    push(heaps[side], (nd, v))
                if v in other and nd + other[v] < best:
                    best = nd + other[v]
        return best

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


FINGERPRINT_BYTES = 48   # a range's fingerprint with its bounds, in a set-reconciliation round
RECONCILE_BRANCHING = 16  # ranges a differing range splits into


def reconcile_cost(difference: int, certificates: int) -> tuple[int, int]:
    """(messages, bytes of fingerprints) of a range-based set reconciliation between two nodes
    whose certificate sets (of about `certificates` each) differ in `difference` certificates: one
    round trip of whole-set fingerprints when they agree; otherwise each difference costs up to one
    path of `RECONCILE_BRANCHING` fingerprints per level down to it. Proportional to the
    difference, not to the history. The certificates themselves are counted by the caller."""
    if difference == 0:
        return 2, 2 * FINGERPRINT_BYTES
    depth = max(1, math.ceil(math.log(max(2, certificates), RECONCILE_BRANCHING)))
    return 2 * (1 + depth), 2 * FINGERPRINT_BYTES + difference * depth * RECONCILE_BRANCHING * FINGERPRINT_BYTES


class CertificateSets:
    """Every node's certificate set, two ints a node, and its ledger view folded from it.

    Certificate i (in publication order, which in the simulation is certificate time order) is bit
    i. A node holds `base[v]`, and while online also every certificate published from index
    `since[v]` on (gossip reaches every online node), so a publication costs O(1), not O(nodes).
    A node that leaves keeps what it had; `reconcile(v, w)` gives both the union (set
    reconciliation: each pulls the difference, re-verifying every certificate it learns).

    The fold is order-independent (consensus/ledger.py folds certificates in a deterministic
    order), so identical sets give identical views: a `Ledger` is built per distinct set asked for,
    folded in bit order, copied from the largest cached subset it extends, and kept in a small LRU
    cache. Local offences (`apply_offence`) are a node's own and never shared: a node with some has
    a view of its own."""

    def __init__(self, n: int, genesis: int, online: bytearray, cache: int = 256) -> None:
        self.n, self.genesis, self.online = n, genesis, online
        self.base = [0] * n
        self.since = [0] * n
        self.count = 0
        self.certificates: list[CheckedCertificate] = []
        self.sizes: list[int] = []  # each certificate's bytes
        self.offences: dict[int, list[bytes]] = {}
        # (set, -1, 0) for the view of a set; (set, node, offences) for a node with offences of its own.
        self.cache: OrderedDict[tuple[int, int, int], Ledger] = OrderedDict()
        self.cache_size = cache
        self.folds = 0  # real Ledger.apply_certificate calls
        self.builds = 0  # ledgers built (copies of a cached one, or fresh)

    # --- the sets -----------------------------------------------------------------------------------

    def set_of(self, v: int) -> int:
        if self.online[v]:
            return self.base[v] | (((1 << self.count) - 1) ^ ((1 << self.since[v]) - 1))
        return self.base[v]

    def publish(self, checked: CheckedCertificate, size: int) -> int:
        """A certificate gossiped now: every online node holds it. Its bit."""
        self.certificates.append(checked)
        self.sizes.append(size)
        self.count += 1
        return self.count - 1

    def leave(self, v: int) -> None:
        """Call before the node goes offline: it keeps what it holds and learns nothing more."""
        self.base[v] = self.set_of(v)

    def rejoin(self, v: int) -> None:
        """Call once the node is back online: it hears gossip again, from now on."""
        self.since[v] = self.count

    def reconcile(self, v: int, w: int, sets: tuple[int, int] | None = None) -> tuple[int, int]:
        """v and w reconcile (`sets`: theirs as of the round's start, if not now): each ends with
        the union. How many certificates (v learned, w learned)."""
        sv, sw = sets if sets is not None else (self.set_of(v), self.set_of(w))
        union = sv | sw
        for x in (v, w):
            self.base[x] = union | (self.set_of(x) if sets is not None else 0)
            self.since[x] = self.count
        return (union & ~sv).bit_count(), (union & ~sw).bit_count()

    def bytes_of(self, bits: int) -> int:
        total, i = 0, 0
        while bits:
            if bits & 1:
                total += self.sizes[i]
            bits >>= 1
            i += 1
        return total

    # --- the views --------------------------------------------------------------------------------

    def apply_offence(self, v: int, who: bytes) -> None:
        self.offences.setdefault(v, []).append(who)

    def of(self, v: int) -> Ledger:
        """Node v's ledger: its certificates folded, then its own offences."""
        bits = self.set_of(v)
        own = self.offences.get(v)
        if not own:
            return self.ledger_of(bits)
        key = (bits, v, len(own))
        ledger = self._cached(key)
        if ledger is None:
            ledger = _copy(self.ledger_of(bits))
            for who in own:
                ledger.apply_offence(who)
            self._keep(key, ledger)
        return ledger

    def ledger_of(self, bits: int) -> Ledger:
        """The view every node holding exactly these certificates computes."""
        key = (bits, -1, 0)
        ledger = self._cached(key)
        if ledger is not None:
            return ledger
        start, done = Ledger(genesis=self.genesis), 0
        for (cached, owner, _), other in self.cache.items():
            # A cached set this one extends with later certificates only: fold on from a copy of it.
            if owner == -1 and cached & ~bits == 0 and cached.bit_count() > done.bit_count() \
                    and (bits & ~cached) >> cached.bit_length() << cached.bit_length() == bits & ~cached:
                start, done = other, cached
        ledger = _copy(start) if done else start
        self.builds += 1
        rest, i = bits & ~done, 0
        while rest:
            if rest & 1:
                ledger.apply_certificate(self.certificates[i], self.certificates[i].certificate.created_ms)
                self.folds += 1
            rest >>= 1
            i += 1
        self._keep(key, ledger)
        return ledger

    def _cached(self, key: tuple[int, int, int]) -> Ledger | None:
        ledger = self.cache.get(key)
        if ledger is not None:
            self.cache.move_to_end(key)
        return ledger

    def _keep(self, key: tuple[int, int, int], ledger: Ledger) -> None:
        self.cache[key] = ledger
        self.cache.move_to_end(key)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def distinct(self, nodes: Iterable[int]) -> tuple[int, int]:
        """(distinct certificate sets, distinct views counting each node's own offences) among `nodes`."""
        sets = [(self.set_of(v), v) for v in nodes]
        return len({s for s, _ in sets}), len({(s, tuple(self.offences.get(v, ()))) for s, v in sets})


def _copy(ledger: Ledger) -> Ledger:
    """A Ledger to fold more into, sharing nothing that folding changes with `ledger`:
    `Ledger.__deepcopy__` copies its containers and per-identity tracks (reputation and trust),
    and shares only the immutable effects. (A copy of the containers alone shared the tracks,
    so folding into the copy changed the view it was copied from.)"""
    return copy.deepcopy(ledger)
