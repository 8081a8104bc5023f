"""Blobs by CID for the user: add a file or directory, fetch one from the network, list them.

Contract (`Blobs`, reached as `Agent.blobs`):
- `add(path)`: imports a file or directory tree into the block store, streaming (UnixFS, CIDv1,
  raw leaves: the CID `ipfs add --cid-version 1` gives), pinned under `blob:CID` so eviction never
  takes it; the root CID and size.
- `get(cid, out, providers)`: makes the DAG present (node/transfer.py: the blocks the store lacks,
  from several providers at once, each verified), then writes it to `out` (a file, or a directory
  for a directory DAG); a fetch cut short resumes where it stopped when asked again. Providers:
  the peers named; else every connected peer (one that lacks the blocks answers DONT_HAVE and its
  share goes to the others) and, when they do not have it all, the providers the DHT knows
  (`find_providers`; `add` announces the root with `provide`).
- Every import (`add`, `add_stream`) and fetch (`get`, `present`) is listed in `transfers` (the
  node's one `Transfers`, node/transfer.py) while it runs, for the CLI's progress bar.
- `add_stream(chunks, name)`: `add` for one file whose bytes come from an async iterator (the REST
  API's upload), streaming, with the same pin and announcement. `present(root)`: `get`'s fetch alone
  (the DAG present and pinned here; the REST API then streams it from the store).
- `ls()`: the roots added or fetched here, newest first.
Errors are `LocalProtocolError`s with a reason: `bad_cid`, `bad_path`, `unavailable`, `store_full`,
`write_failed`.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

from distributeai.consensus.cid import BadCid, cid_text, parse_cid_text
from distributeai.consensus.errors import LocalProtocolError
from distributeai.p2p.bitswap_fetch import BlocksUnavailable

from .blockstore import BlockStore, BlockStoreFull, MissingBlock
from .transfer import Fetch, Progress, Transfers, fetch_dag


class Blobs:
    def __init__(self, store: BlockStore, fetch: Fetch, connected: Callable[[], list[str]],
                 find_providers: Callable[[bytes], Awaitable[list[str]]],
                 provide: Callable[[bytes], Awaitable[bool]], transfers: Transfers | None = None) -> None:
        self.store = store
        self.fetch = fetch
        self.connected = connected
        self.find_providers = find_providers
        self.provide = provide
        self.transfers = transfers if transfers is not None else Transfers()
        self._ids = itertools.count(1)

    async def add(self, path: Path) -> dict:
        """Import `path` (a file or a directory) and pin it; {"cid", "size", "announced"}."""
        try:
            with self.transfers.track("import", path.name) as progress:
                return await self._add(lambda owner: self.store.add_path(path, pin=owner, progress=progress))
        except FileNotFoundError:
            raise LocalProtocolError("bad_path", f"{path} does not exist") from None
        except (ValueError, OSError) as exc:
            raise LocalProtocolError("bad_path", f"{path}: {exc}") from None

    async def add_stream(self, chunks: AsyncIterator[bytes], name: str = "") -> dict:
        """Import one file from `chunks` (an upload), listed under `name`, and pin it, as `add`."""
        with self.transfers.track("import", name) as progress:
            return await self._add(lambda owner: self.store.add_stream(chunks, name, pin=owner, progress=progress))

    async def _add(self, run: Callable[[str], Awaitable[tuple[bytes, int]]]) -> dict:
        pending = f"blob:pending:{next(self._ids)}"  # one per import: another's end cannot unpin it
        try:
            root, size = await run(pending)
        except BlockStoreFull as exc:
            raise LocalProtocolError("store_full", f"the block store is full: {exc}") from None
        await self.store.pin(f"blob:{cid_text(root)}", root)
        await self.store.unpin(pending)
        announced = await self.provide(root)
        return {"cid": cid_text(root), "size": size, "announced": announced}

    async def get(self, text: str, out: Path, providers: list[str] | None = None) -> dict:
        """Fetch the DAG named by `text` and write it to `out`; {"cid", "size", "fetched", ...}."""
        try:
            root = parse_cid_text(text)
        except BadCid as exc:
            raise LocalProtocolError("bad_cid", str(exc)) from None
        started = time.monotonic()
        progress, peers = await self.present(root, providers)
        fetched = time.monotonic()
        try:
            size = await self.store.export(root, out)
        except MissingBlock as exc:
            raise LocalProtocolError("unavailable", f"block {exc} is missing") from None
        except OSError as exc:
            raise LocalProtocolError("write_failed", f"cannot write {out}: {exc.strerror or exc}") from None
        await self.store.record_root(root, out.name, size)
        return {"cid": cid_text(root), "size": size, "written_to": str(out), "fetched_blocks": progress.blocks,
                "fetched_bytes": progress.bytes, "held_blocks": progress.held, "providers": len(peers),
                "fetch_s": round(fetched - started, 3), "export_s": round(time.monotonic() - fetched, 3)}

    async def present(self, root: bytes, providers: list[str] | None = None) -> tuple[Progress, list[str]]:
        """Make the DAG under `root` present here, pinned `blob:CID` (the providers as `get` says);
        (its progress, the peers asked). LocalProtocolError `unavailable` or `store_full`."""
        peers = list(providers) if providers else self.connected()
        owner = f"blob:{cid_text(root)}"
        find = None if providers else self.find_providers  # peers named: only those
        try:
            progress = await fetch_dag(root, self.store, self.fetch, peers, pin=owner, find_providers=find,
                                       transfers=self.transfers)
        except BlockStoreFull as exc:
            raise LocalProtocolError("store_full", f"the block store is full: {exc}") from None
        except (BlocksUnavailable, LookupError) as exc:
            raise LocalProtocolError("unavailable", f"{cid_text(root)}: {exc} (asked {len(peers)} peers"
                                     f"{'' if providers else ' and the DHT'})") from None
        return progress, sorted(progress.providers)

    async def ls(self) -> list[dict]:
        return await self.store.roots()
