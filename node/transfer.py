"""Fetching a whole UnixFS DAG (a file or a directory) into the block store, block by block.

Contract: `fetch_dag(root, store, fetch, providers, pin=...)` walks the DAG from its root level by
level: at each level it asks `fetch` (Bitswap.fetch: several providers at once, every block
verified against its CID before `deliver` sees it) only for the blocks the store does not hold,
stores each as it arrives (pinned under `pin`), then reads the level's dag-pb nodes from the store
to learn the next level (each CID once, however often the DAG links it). Memory stays bounded by the DAG's
distinct CIDs (36 bytes each: 4,096 for a 1 GiB file) plus Bitswap's window; no file is ever held whole. A fetch cut short (a dropped
connection, a killed provider, a restart) is resumed by calling it again: blocks already stored
are never asked for twice. `Progress` counts what arrived, for the CLI's bar.

Two bounds a caller may add: `max_bytes` stops the fetch (DagTooLarge) once more new bytes have
arrived than the caller was told the DAG holds (a job's spec states each input's size: a
submitter that lies gets refused after at most `max_bytes`, not after the whole DAG), and
`find_providers` (the DHT's provider records, `Overlay.find_providers`) is asked for more peers
when `providers` cannot give some block; the fetch then resumes from them.

`Transfers` is the node's one list of the transfers in progress (the `transfers` control op, the
CLI's progress bar): `track(kind, name, progress)` registers one for as long as its `with` block
runs; kind "fetch" (a DAG from peers, `name` its CID: `blob get`, a job's inputs, `job result`'s
outputs) or "import" (a file or a directory into the block store, `name` its file name: `blob
add`, `submit --input`, an upload). `rows()`: each one's id, kind, name, cid (a fetch's; None for
an import), bytes so far, total (an import's file bytes; None when unknown), blocks, held,
seconds, rate (bytes a second) and providers (a fetch's peers asked; 0 for an import).
"""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator, Protocol

from distributeai.consensus.cid import DAG_PB, cid_text, codec_of
from distributeai.consensus.unixfs import MAX_BLOCK, children
from distributeai.p2p.bitswap_fetch import BlocksUnavailable

BATCH = 512  # CIDs handed to one Bitswap fetch: bounds the bookkeeping, not the transfer's window
PUT_BATCH = 16  # blocks stored per transaction (4 MiB of leaves): single puts ran at half the speed


class BlockSink(Protocol):
    async def have(self, cids: list[bytes]) -> set[bytes]: ...
    async def get(self, cid: bytes) -> bytes | None: ...
    async def put_many(self, pairs: list[tuple[bytes, bytes]], *, pin: str | None = None) -> None: ...


Fetch = Callable[[list[bytes], list[str], Callable[[bytes, bytes], Awaitable[None]]], Awaitable[None]]
FindProviders = Callable[[bytes], Awaitable[list[str]]]


class DagTooLarge(ValueError):
    """A fetch brought more bytes than the caller's bound: the DAG is not what it was said to be."""


def size_bound(size: int) -> int:
    """The most new block bytes a fetch of a DAG holding `size` file bytes may bring: the files,
    plus the dag-pb nodes above them (under 0.2 % for 256 KiB chunks: 174 links of about 40 bytes
    each per 45 MB) with room to spare, plus one block for a directory's own nodes."""
    return size + size // 64 + MAX_BLOCK


@dataclass
class Progress:
    """What a transfer moved so far: a fetch's blocks and bytes that arrived (those already held
    are `held`), or an import's blocks stored and file bytes read (`total`: its file bytes)."""
    blocks: int = 0
    bytes: int = 0
    held: int = 0
    providers: set[str] = field(default_factory=set)
    total: int | None = None


class Transfers:
    """The transfers in progress on this node (see the module docstring)."""

    KINDS = ("fetch", "import")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rows: dict[int, tuple[str, str, float, Progress]] = {}
        self._ids = itertools.count(1)

    @contextmanager
    def track(self, kind: str, name: str, progress: Progress | None = None) -> Iterator[Progress]:
        """Listed while the block runs; yields its Progress (the one given, or a new one)."""
        assert kind in self.KINDS, kind
        progress = progress if progress is not None else Progress()
        key = next(self._ids)
        self._rows[key] = (kind, name, self._clock(), progress)
        try:
            yield progress
        finally:
            del self._rows[key]

    def rows(self) -> list[dict]:
        now = self._clock()
        out = []
        for key, (kind, name, started, p) in self._rows.items():
            seconds = max(now - started, 0.0)
            out.append({"id": key, "kind": kind, "name": name, "cid": name if kind == "fetch" else None,
                        "bytes": p.bytes, "total": p.total, "blocks": p.blocks, "held": p.held,
                        "seconds": round(seconds, 3), "rate": int(p.bytes / seconds) if seconds > 0 else 0,
                        "providers": len(p.providers)})
        return out


async def fetch_dag(root: bytes, store: BlockSink, fetch: Fetch, providers: list[str], *,
                    pin: str | None = None, progress: Progress | None = None, max_bytes: int | None = None,
                    find_providers: FindProviders | None = None, transfers: Transfers | None = None) -> Progress:
    """Make every block of the DAG under `root` present in `store`. When `providers` cannot give
    some block, `find_providers(root)` (if given) names more peers and the fetch resumes from
    them; BlocksUnavailable when none of them has it either (the blocks fetched so far stay
    stored). DagTooLarge once more than `max_bytes` new bytes arrived. Listed in `transfers`
    (kind "fetch") while it runs."""
    if transfers is not None:
        with transfers.track("fetch", cid_text(root), progress) as progress:
            return await fetch_dag(root, store, fetch, providers, pin=pin, progress=progress, max_bytes=max_bytes,
                                   find_providers=find_providers)
    progress = progress if progress is not None else Progress()
    limit = progress.bytes + max_bytes if max_bytes is not None else None
    try:
        return await _fetch_dag(root, store, fetch, providers, pin, progress, limit)
    except BlocksUnavailable:
        if find_providers is None:
            raise
        found = [p for p in await find_providers(root) if p not in providers]
        if not found:
            raise
        return await _fetch_dag(root, store, fetch, found, pin, progress, limit)


async def _fetch_dag(root: bytes, store: BlockSink, fetch: Fetch, providers: list[str], pin: str | None,
                     progress: Progress, limit: int | None) -> Progress:
    """fetch_dag from these providers, until `progress.bytes` passes `limit`. Verified blocks are
    stored in batches of PUT_BATCH, so at most that many wait in memory besides Bitswap's window."""
    progress.providers.update(providers)

    pending: list[tuple[bytes, bytes]] = []

    async def flush() -> None:
        batch = pending[:]
        pending.clear()
        if batch:
            await store.put_many(batch, pin=pin)
            progress.blocks += len(batch)
            progress.bytes += sum(len(b) for _, b in batch)
            if limit is not None and progress.bytes > limit:
                raise DagTooLarge(f"{progress.bytes} bytes arrived, more than the DAG was said to hold")

    async def deliver(cid: bytes, block: bytes) -> None:
        pending.append((cid, block))
        if len(pending) >= PUT_BATCH:
            await flush()

    level, seen = [root], {root}
    while level:
        held = await store.have(level)
        progress.held += len(held)
        missing = [c for c in level if c not in held]
        for start in range(0, len(missing), BATCH):
            try:
                await fetch(missing[start:start + BATCH], providers, deliver)
            finally:  # what arrived is kept, also when the rest is unavailable: a retry resumes
                await flush()
        following: list[bytes] = []
        for cid in level:
            if codec_of(cid) != DAG_PB:
                continue
            block = await store.get(cid)
            if block is None:  # evicted in between: the caller's pin prevents it; a retry fetches it again
                raise LookupError(f"block {cid.hex()} left the store during the fetch")
            for child in children(cid, block):  # a subtree linked twice is fetched once
                if child not in seen:
                    seen.add(child)
                    following.append(child)
        level = following
    return progress
