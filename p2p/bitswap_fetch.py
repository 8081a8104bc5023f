"""Bitswap's client side: fetch a list of blocks from several providers at once.

`fetch(bitswap, cids, providers, deliver, window=, stall_timeout=)`:
- each provider has at most `window` wants outstanding (want-block, sendDontHave); the cids are
  spread over the providers, the least loaded first, so blocks in memory are at most a window per
  provider (plus what `deliver` holds);
- `await deliver(cid, block)` once per cid, in any order, with a block that passed
  `bitswap.verify(cid, block)`;
- a provider's outstanding wants go to the others when it answers DONT_HAVE (for that cid),
  disconnects, cannot be reached, is silent for `stall_timeout` s with wants outstanding, or sends
  a bad block (then it is dropped for the rest of this fetch; bitswap.py counts and reports it);
- a provider that has answered DONT_HAVE for a whole window of cids and sent no block in this
  fetch is dropped from it (`fetch_lacking`): a peer named as a provider that holds none of the
  DAG would otherwise be asked for every cid in turn, a round trip each, before its holder (a
  job's input fetch names up to 8 connected peers; most hold nothing of it);
- once nothing is left to assign, an idle provider is also asked for a cid still outstanding at
  another (each cid at most at two): the first block wins and the other want is cancelled;
- when done, wants still outstanding are cancelled; `BlocksUnavailable(missing)` if no provider
  could give some cids (every block that could be fetched has been delivered by then).
Exceptions from `deliver` end the fetch and reach the caller.
"""

from __future__ import annotations

import collections
import math

import trio
from libp2p.peer.id import ID

from .bitswap_wire import Entry, Message, WireError, parse_cid

ENDGAME_COPIES = 2  # holders of one cid at once, at the tail of a fetch


class BlocksUnavailable(Exception):
    """Some cids could not be fetched from any provider; `missing` lists them."""

    def __init__(self, missing: list[bytes]) -> None:
        super().__init__(f"{len(missing)} blocks unavailable from every provider")
        self.missing = missing


class _Fetch:
    def __init__(self, bitswap, cids: list[bytes], pids: list[ID], window: int, stall: float) -> None:
        self.bitswap = bitswap
        self.todo = collections.deque(cids)
        self.out: dict[ID, dict[bytes, None]] = {pid: {} for pid in pids}  # live providers
        self.refused: collections.defaultdict[bytes, set[ID]] = collections.defaultdict(set)
        self.lacking: collections.Counter[ID] = collections.Counter()  # DONT_HAVEs from each provider
        self.served: set[ID] = set()  # providers that sent a block in this fetch
        self.last: dict[ID, float] = {}
        self.left = set(cids)
        self.missing: list[bytes] = []
        self.window, self.stall = window, stall
        self._send, self._recv = trio.open_memory_channel(math.inf)

    # Events from bitswap.py's readers (never blocking them: at most a window per provider).
    def block(self, pid: ID, cid: bytes, data: bytes) -> None:
        self._send.send_nowait(("block", pid, cid, data))

    def dont_have(self, pid: ID, cid: bytes) -> None:
        self._send.send_nowait(("dont_have", pid, cid, None))

    def peer_failed(self, pid: ID, why: str) -> None:
        if pid in self.out:
            self._send.send_nowait(("failed", pid, None, why))

    async def run(self, deliver) -> None:
        while self.left:
            await self._assign()
            busy = [p for p, wants in self.out.items() if wants]
            if not busy:
                if self.todo and self.out:  # a send failed while assigning: its wants go to the others
                    continue
                break
            event = None
            with trio.move_on_at(min(self.last[p] for p in busy) + self.stall):
                event = await self._recv.receive()
            while event is not None:  # everything already queued, before assigning more
                await self._handle(*event, deliver)  # outside the deadline: never cancel `deliver`
                try:
                    event = self._recv.receive_nowait()
                except trio.WouldBlock:
                    event = None
            now = trio.current_time()
            for p in busy:
                if p in self.out and self.out[p] and self.last[p] + self.stall <= now:
                    self.bitswap.counts["fetch_stalled"] += 1
                    self._drop(p)
        self.missing += [c for c in self.todo if c in self.left]
        if self.missing:
            raise BlocksUnavailable(list(dict.fromkeys(self.missing)))

    async def _handle(self, kind: str, pid: ID, cid: bytes | None, data, deliver) -> None:
        if kind == "failed":
            self._drop(pid)
            return
        wants = self.out.get(pid)
        if wants is None or cid not in wants:
            return
        del wants[cid]
        self.last[pid] = trio.current_time()
        if kind == "dont_have":
            self.refused[cid].add(pid)
            if cid in self.left and not self._holders(cid):
                self.todo.appendleft(cid)
            self.lacking[pid] += 1
            if pid not in self.served and self.lacking[pid] >= self.window:
                self.bitswap.counts["fetch_lacking"] += 1
                self._drop(pid)
            return
        self.served.add(pid)
        if cid not in self.left:
            return
        self.left.discard(cid)
        others = self._holders(cid)
        for other in others:
            del self.out[other][cid]
            self._cancel(other, [cid])
        await deliver(cid, data)

    def _holders(self, cid: bytes) -> list[ID]:
        return [p for p, wants in self.out.items() if cid in wants]

    def _drop(self, pid: ID) -> None:
        """The provider is out of this fetch; its outstanding wants go back to be reassigned."""
        wants = self.out.pop(pid, None)
        if wants is None:
            return
        self.bitswap.counts["fetch_reassigned"] += len(wants)
        for cid in wants:
            if cid in self.left and not self._holders(cid):
                self.todo.appendleft(cid)
        self._cancel(pid, list(wants))

    def _cancel(self, pid: ID, cids: list[bytes]) -> None:
        """Stop waiting on `pid` for `cids`; tell it (cancel entries) in the background."""
        peer = self.bitswap.peer(pid)
        cancels = []
        for cid in cids:
            waiting = peer.asked.get(cid)
            if waiting is not None and self in waiting:
                waiting.remove(self)
                if not waiting:
                    peer.forget(cid)
                    cancels.append(cid)
        if cancels and self.bitswap._host.get_network().connections.get(pid):
            msg = Message(entries=tuple(Entry(cid, cancel=True) for cid in cancels))
            self.bitswap._nursery.start_soon(self.bitswap.send, peer, msg)

    async def _assign(self) -> None:
        """Fill each live provider's window from `todo`, least loaded first; then, with nothing left
        to assign, give idle room to cids outstanding at one provider only."""
        batch: dict[ID, list[bytes]] = {p: [] for p in self.out}

        def load(p: ID) -> int:
            return len(self.out[p]) + len(batch[p])

        skipped = []
        while self.todo and any(load(p) < self.window for p in self.out):
            cid = self.todo.popleft()
            if cid not in self.left:
                continue
            if all(p in self.refused[cid] for p in self.out):
                self.left.discard(cid)
                self.missing.append(cid)
                continue
            free = [p for p in self.out if load(p) < self.window and p not in self.refused[cid]]
            if not free:
                skipped.append(cid)
                continue
            batch[min(free, key=load)].append(cid)
        self.todo.extendleft(reversed(skipped))
        if not self.todo:
            for p in self.out:
                for cid in [c for q, wants in self.out.items() if q != p for c in wants]:
                    if load(p) >= self.window:
                        break
                    if (p not in self.refused[cid] and cid not in batch[p]
                            and len(self._holders(cid)) + sum(cid in b for b in batch.values()) < ENDGAME_COPIES):
                        batch[p].append(cid)
        for p, cids in batch.items():
            if cids:
                await self._ask(p, cids)

    async def _ask(self, pid: ID, cids: list[bytes]) -> None:
        if pid not in self.out:
            return
        if not self.out[pid]:
            self.last[pid] = trio.current_time()
        peer = self.bitswap.peer(pid)
        for cid in cids:
            self.out[pid][cid] = None
            peer.recent.pop(cid, None)
            peer.asked.setdefault(cid, []).append(self)
        entries = tuple(Entry(cid, priority=len(cids) - i, send_dont_have=True) for i, cid in enumerate(cids))
        if not await self.bitswap.send(peer, Message(entries=entries)):
            self._drop(pid)

    def close(self) -> None:
        for pid in list(self.out):
            self._cancel(pid, list(self.out.pop(pid)))


async def fetch(bitswap, cids: list[bytes], providers: list[str], deliver, *, window: int, stall_timeout: float) -> None:
    """See the module docstring. ValueError for a malformed cid, a provider id that does not parse,
    or a window below 1."""
    if window < 1:
        raise ValueError("window must be at least 1")
    cids = list(dict.fromkeys(bytes(c) for c in cids))
    for cid in cids:
        try:
            parse_cid(cid)
        except WireError as exc:
            raise ValueError(f"not a CID: {cid[:40].hex()}") from exc
    me = bitswap._host.get_id()
    pids = []
    for provider in dict.fromkeys(providers):
        try:
            pid = ID.from_base58(provider)
        except Exception as exc:  # libp2p raises several types for a malformed id
            raise ValueError(f"not a peer id: {provider!r}") from exc
        if pid == me:
            continue
        if bitswap.distrusted.get(pid, -math.inf) > trio.current_time():
            bitswap.counts["providers_distrusted"] += 1
            continue
        pids.append(pid)
    if not cids:
        return
    job = _Fetch(bitswap, cids, pids, window, stall_timeout)
    bitswap.fetches.add(job)
    try:
        await job.run(deliver)
    finally:
        bitswap.fetches.discard(job)
        job.close()
