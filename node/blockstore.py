"""The node's content-addressed block store: IPFS blocks by CID in `DATA_DIR/blocks/`, capped in size.

Contract:
- `await BlockStore.open(root, max_bytes)`: `root` is the store's directory (`DATA_DIR/blocks`,
  created if absent). Blocks are files there (node/blockfiles.py: layout, atomic writes, fsync
  policy); the index is SQLite in `root/index.db` (stdlib `sqlite3`, WAL, `synchronous=NORMAL` as
  node/store.py argues), reached through one worker thread with a one-slot limiter.
- `put` checks the block against its CID first (`consensus.cid.verify_block`; ValueError
  "bad_block" and nothing stored when it is not that block), is idempotent, and keeps the store
  within `max_bytes` by evicting the least recently used UNPINNED blocks, in one batch per put.
  Pinned blocks are never evicted: a put that only pinned blocks leave no room for raises
  `BlockStoreFull` and stores nothing. `put_many` is the same for a batch in one transaction.
- Recency (LRU) is a logical clock, not wall time: every put and every `get` takes the next tick.
  A get's tick is kept in memory and written with the next write (or every `TOUCH_FLUSH` gets, or
  at close), so reads cost no transaction.
- Pins are by owner (a job id's hex, "submission:<job>", ...): `put(..., pin=owner)` pins as it
  stores; `pin(owner, root)` pins every block of the DAG under `root` held now; `unpin(owner)`
  releases all of that owner's; `owners(prefix)` lists the owners holding pins. A block is pinned
  while any owner pins it.
- Reopen after a crash: `tmp/` is emptied (writes in flight), the pins of imports in flight are
  dropped; an index row whose file is gone (or whose file no longer holds its block) is dropped on
  the first `get` of it (a scan at open would cost a stat per block, at every start). A block file
  written just before a crash, whose row was not committed yet, stays as an unindexed file until
  the same block is stored again (at most one batch of 4 MiB per crash).
- A write the disk cannot hold raises `node.sqlitefile.StoreFull` (file or index) and stores
  nothing; the store stays usable. `BlockStoreFull` is the cap, `StoreFull` the disk.
- `add_path`, `add_stream`, `export`, `walk_missing` are the UnixFS side (node/blockdag.py, over
  `consensus.unixfs`). `stats()` reads counters kept in memory: no I/O.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import trio

from distributeai.consensus.cid import check_cid, cid_text, verify_block
from . import blockdag, clock
from .blockfiles import (  # noqa: F401 (BlockIndexDamaged, BlockStoreFull, MissingBlock: re-exported)
    INDEX_FILE, BlockFiles, BlockIndexDamaged, BlockStoreFull, MissingBlock, connect_index,
)
from .sqlitefile import StoreFull, disk_error, rollback, transaction

DEFAULT_MAX_BYTES = 10 << 30  # `node start --store-max` (10g)
TOUCH_FLUSH = 1024  # gets whose recency is kept in memory before it is written
EVICT_PAGE = 256  # eviction candidates read per query
IN_CHUNK = 500  # cids per `IN (...)` (SQLite's default limit on variables is 32766; this is plenty)
ADDING = "adding:"  # owner prefix of the pins an import holds while it runs (dropped at open)
MAX_OWNER = 200


def _chunks(items: list, size: int = IN_CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _pinned_bytes(c: sqlite3.Connection) -> int:
    return c.execute(
        "SELECT COALESCE(SUM(size), 0) FROM blocks WHERE cid IN (SELECT cid FROM pins)").fetchone()[0]


def check_owner(owner: str) -> str:
    """A pin owner: text of 1 to MAX_OWNER characters (ADDING... is the store's own)."""
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER or owner.startswith(ADDING):
        raise ValueError(f"a pin owner is text of 1 to {MAX_OWNER} characters, not starting {ADDING!r}")
    return owner


class BlockStore:
    """One store; every method but `stats` is a coroutine. See the module docstring."""

    def __init__(self, files: BlockFiles, conn: sqlite3.Connection, max_bytes: int,
                 now_ms: Callable[[], int]) -> None:
        self.files = files
        self.max_bytes = max_bytes
        self._conn = conn
        self._limiter = trio.CapacityLimiter(1)
        self._now_ms = now_ms
        self._touched: dict[bytes, int] = {}
        self._tick = 0
        self._blocks = 0
        self._bytes = 0
        self._pinned = 0
        self._evicted = 0
        self._imports = 0

    @classmethod
    async def open(cls, root: Path, max_bytes: int = DEFAULT_MAX_BYTES, *,
                   now_ms: Callable[[], int] = clock.now_ms) -> "BlockStore":
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError("max_bytes is a number of bytes (0 or more)")

        def opening() -> "BlockStore":
            files = BlockFiles(Path(root))
            files.clear_temp()
            conn = connect_index(files.root / INDEX_FILE)
            store = cls(files, conn, max_bytes, now_ms)
            try:
                store._recover(conn)
            except BaseException:
                conn.close()
                raise
            return store

        return await trio.to_thread.run_sync(opening)

    def _recover(self, c: sqlite3.Connection) -> None:
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("DELETE FROM pins WHERE owner >= ? AND owner < ?", (ADDING, ADDING[:-1] + ";"))
            c.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(c)
            if not disk_error(exc):
                raise  # a full disk: the stale import pins stay until the next open
        self._blocks, self._bytes, self._tick = c.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MAX(last_used), 0) FROM blocks").fetchone()
        self._pinned = _pinned_bytes(c)

    async def close(self) -> None:
        try:
            await self._flush_touches()
        except StoreFull:
            pass  # recency only: nothing held is lost
        await trio.to_thread.run_sync(self._conn.close, limiter=self._limiter)

    # --- running statements ------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], Any], *, tx: bool = True) -> Any:
        """`fn(conn)` on the worker thread; in one transaction when `tx` (StoreFull on a disk error)."""
        def call() -> Any:
            return self._tx(fn) if tx else fn(self._conn)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    def _tx(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return transaction(self._conn, fn, "the block index")

    async def _set_pinned(self, fn: Callable[[sqlite3.Connection], int]) -> None:
        """Run a transaction that changes pins and returns the pinned bytes after it."""
        def call() -> None:
            self._pinned = self._tx(fn)  # set on the worker thread, after the commit

        await trio.to_thread.run_sync(call, limiter=self._limiter)

    def _take_touches(self) -> list[tuple[int, bytes]]:
        touched, self._touched = self._touched, {}
        return [(tick, cid) for cid, tick in touched.items()]

    @staticmethod
    def _write_touches(c: sqlite3.Connection, touches: list[tuple[int, bytes]]) -> None:
        if touches:
            c.executemany("UPDATE blocks SET last_used=? WHERE cid=?", touches)

    async def _flush_touches(self) -> None:
        touches = self._take_touches()
        if touches:
            await self._run(lambda c: self._write_touches(c, touches))

    def _next_ticks(self, n: int) -> int:
        """Reserve `n` ticks of the logical clock; the first of them."""
        first = self._tick + 1
        self._tick += n
        return first

    # --- blocks --------------------------------------------------------------------------------

    async def put(self, cid: bytes, block: bytes, *, pin: str | None = None) -> None:
        """Store one block (see the module docstring)."""
        await self.put_many([(cid, block)], pin=pin)

    async def put_many(self, pairs: list[tuple[bytes, bytes]], *, pin: str | None = None) -> None:
        """Store a batch of (cid, block) in one transaction: all of it or (on an error) none.
        Every block is checked against its CID first: ValueError "bad_block" when one is not."""
        if pin is not None:
            check_owner(pin)
        pairs = [(check_cid(cid), bytes(block)) for cid, block in pairs]

        def verify() -> bool:
            return all(verify_block(cid, block) for cid, block in pairs)

        if not await trio.to_thread.run_sync(verify):
            raise ValueError("bad_block")
        await self._store(pairs, pin)

    async def _store(self, pairs: list[tuple[bytes, bytes]], owner: str | None) -> None:
        """Store blocks already checked against their CIDs (put_many; an import, which made the
        CIDs from the bytes itself), pinned for `owner` (checked by the caller) if not None."""
        unique = dict(pairs)
        if not unique:
            return
        touches = self._take_touches()
        first = self._next_ticks(len(unique))

        def run() -> None:  # on the worker thread, under the limiter: counters change only there
            cids = list(unique)
            held: set[bytes] = set()
            for part in _chunks(cids):
                held.update(r[0] for r in self._conn.execute(
                    f"SELECT cid FROM blocks WHERE cid IN ({_marks(len(part))})", part))
            new = [cid for cid in cids if cid not in held]
            written: list[bytes] = []
            try:
                for cid in new:
                    self.files.write(cid, unique[cid])
                    written.append(cid)
                victims, pinned_delta = self._tx(lambda c: self._index(
                    c, unique, held, new, first, owner, touches))
            except BaseException:
                for cid in written:
                    self.files.remove(cid)
                raise
            self._blocks += len(new) - len(victims)
            self._bytes += sum(len(unique[cid]) for cid in new) - sum(size for _, size in victims)
            self._pinned += pinned_delta
            self._evicted += len(victims)
            for cid, _ in victims:
                self.files.remove(cid)

        try:
            await trio.to_thread.run_sync(run, limiter=self._limiter)
        except BaseException:
            for tick, cid in touches:  # rolled back with the put: kept for the next write
                self._touched.setdefault(cid, tick)
            raise

    def _index(self, c: sqlite3.Connection, unique: dict[bytes, bytes], held: set[bytes], new: list[bytes],
               first: int, owner: str | None, touches: list) -> tuple[list[tuple[bytes, int]], int]:
        """The index side of a store, in its transaction: recency, room (eviction), rows, pins.
        Returns the evicted (cid, size) and the change in pinned bytes."""
        self._write_touches(c, touches)
        cids = list(unique)
        pinned_before: set[bytes] = set()
        for part in _chunks(cids):
            pinned_before.update(r[0] for r in c.execute(
                f"SELECT DISTINCT cid FROM pins WHERE cid IN ({_marks(len(part))})", part))
        pinned_delta = sum(len(unique[cid]) for cid in cids
                           if (owner is not None or cid in pinned_before)
                           and not (cid in held and cid in pinned_before))
        need = self._bytes + sum(len(unique[cid]) for cid in new) - self.max_bytes
        victims = self._choose_victims(c, need, unique) if need > 0 else []
        if victims:
            gone = [(cid,) for cid, _ in victims]
            c.executemany("DELETE FROM blocks WHERE cid=?", gone)
            c.executemany("DELETE FROM roots WHERE cid=?", gone)
        c.executemany("INSERT INTO blocks(cid, size, last_used) VALUES (?,?,?)",
                      [(cid, len(unique[cid]), first + i) for i, cid in enumerate(cids) if cid not in held])
        if held:
            c.executemany("UPDATE blocks SET last_used=? WHERE cid=?",
                          [(first + i, cid) for i, cid in enumerate(cids) if cid in held])
        if owner is not None:
            c.executemany("INSERT OR IGNORE INTO pins(owner, cid) VALUES (?,?)", [(owner, cid) for cid in cids])
        return victims, pinned_delta

    def _choose_victims(self, c: sqlite3.Connection, need: int,
                        keep: dict[bytes, bytes]) -> list[tuple[bytes, int]]:
        """Unpinned blocks, least recently used first, until `need` bytes are freed, read a page
        at a time; BlockStoreFull (the transaction rolls back) when there are not enough."""
        victims: list[tuple[bytes, int]] = []
        freed, after = 0, -1
        while freed < need:
            rows = c.execute(
                "SELECT cid, size, last_used FROM blocks WHERE last_used > ? AND NOT EXISTS"
                " (SELECT 1 FROM pins WHERE pins.cid = blocks.cid) ORDER BY last_used LIMIT ?",
                (after, EVICT_PAGE)).fetchall()
            if not rows:
                raise BlockStoreFull(
                    f"the block store is full: {self._pinned} of its {self.max_bytes} bytes are pinned, "
                    f"and {need - freed} more are needed")
            for cid, size, after in rows:
                if cid in keep:
                    continue
                victims.append((cid, size))
                freed += size
                if freed >= need:
                    break
        return victims

    async def get(self, cid: bytes) -> bytes | None:
        """The block, checked against its CID, or None if it is not here; marks it used (LRU).
        A row whose file is gone or damaged is dropped here (BadCid for bytes that are no CID)."""
        cid = check_cid(cid)
        block = await trio.to_thread.run_sync(self.files.read, cid)
        if block is None:
            await self._drop(cid)
            return None
        self._mark_used([cid])
        await self._maybe_flush()
        return block

    def _mark_used(self, cids: list[bytes]) -> None:
        for cid in cids:
            self._touched[cid] = self._next_ticks(1)

    async def _maybe_flush(self) -> None:
        if len(self._touched) >= TOUCH_FLUSH:
            try:
                await self._flush_touches()
            except StoreFull:
                pass  # recency only: nothing held is lost

    async def _drop(self, cid: bytes) -> None:
        def fn(c: sqlite3.Connection) -> tuple[int, bool] | None:
            row = c.execute("SELECT size FROM blocks WHERE cid=?", (cid,)).fetchone()
            if row is None:
                return None
            pinned = c.execute("SELECT 1 FROM pins WHERE cid=? LIMIT 1", (cid,)).fetchone() is not None
            c.execute("DELETE FROM blocks WHERE cid=?", (cid,))
            return row[0], pinned

        def run() -> None:
            if self._conn.execute("SELECT 1 FROM blocks WHERE cid=?", (cid,)).fetchone() is None:
                return  # not held: no transaction for a plain miss
            if self.files.exists(cid):
                return  # stored again meanwhile
            dropped = self._tx(fn)
            if dropped is not None:
                size, pinned = dropped
                self._blocks -= 1
                self._bytes -= size
                self._pinned -= size if pinned else 0

        try:
            await trio.to_thread.run_sync(run, limiter=self._limiter)
        except StoreFull:
            pass  # the row stays; the next get tries again

    async def has(self, cid: bytes) -> bool:
        cid = check_cid(cid)
        return await self._run(
            lambda c: c.execute("SELECT 1 FROM blocks WHERE cid=?", (cid,)).fetchone() is not None, tx=False)

    async def have(self, cids: Iterable[bytes]) -> set[bytes]:
        """Which of `cids` are held."""
        wanted = list(dict.fromkeys(check_cid(cid) for cid in cids))

        def fn(c: sqlite3.Connection) -> set[bytes]:
            held: set[bytes] = set()
            for part in _chunks(wanted):
                held.update(r[0] for r in c.execute(
                    f"SELECT cid FROM blocks WHERE cid IN ({_marks(len(part))})", part))
            return held

        return await self._run(fn, tx=False) if wanted else set()

    # --- pins ----------------------------------------------------------------------------------

    async def pin(self, owner: str, root: bytes) -> None:
        """Pin for `owner` every block of the DAG under `root` that is held now (what is missing is
        not walked: `walk_missing` says what to fetch, and a put with `pin=owner` pins it)."""
        check_owner(owner)
        held, _missing = await blockdag.walk(self, check_cid(root))
        await self._pin_cids(owner, held)

    async def _pin_cids(self, owner: str, cids: list[bytes]) -> None:
        def fn(c: sqlite3.Connection) -> int:
            c.executemany("INSERT OR IGNORE INTO pins(owner, cid) SELECT ?, cid FROM blocks WHERE cid=?",
                          [(owner, cid) for cid in cids])
            return _pinned_bytes(c)

        await self._set_pinned(fn)

    async def unpin(self, owner: str) -> None:
        """Release every pin of `owner` (its blocks stay, evictable unless another owner pins them)."""
        check_owner(owner)

        def fn(c: sqlite3.Connection) -> int:
            c.execute("DELETE FROM pins WHERE owner=?", (owner,))
            return _pinned_bytes(c)

        await self._set_pinned(fn)

    async def owners(self, prefix: str) -> list[str]:
        """The owners starting with `prefix` that hold a pin (for a sweep of pins a crash left)."""
        def fn(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT DISTINCT owner FROM pins WHERE substr(owner, 1, ?) = ? ORDER BY owner",
                             (len(prefix), prefix))
            return [r[0] for r in rows]

        return await self._run(fn, tx=False)

    async def _finish_import(self, temp: str, owner: str | None, root: bytes | None, name: str,
                             size: int) -> None:
        """An import ended: its blocks move from its temporary owner to `owner` (if any), and its
        root row is recorded (when it succeeded: `root` given)."""
        added = self._now_ms()

        def fn(c: sqlite3.Connection) -> int:
            if owner is not None:
                c.execute("INSERT OR IGNORE INTO pins(owner, cid) SELECT ?, cid FROM pins WHERE owner=?",
                          (owner, temp))
            c.execute("DELETE FROM pins WHERE owner=?", (temp,))
            if root is not None:
                c.execute("INSERT OR REPLACE INTO roots(cid, name, size, added_ms) VALUES (?,?,?,?)",
                          (root, name, size, added))
            return _pinned_bytes(c)

        await self._set_pinned(fn)

    def _import_owner(self) -> str:
        self._imports += 1
        return f"{ADDING}{id(self):x}:{self._imports}"

    # --- the UnixFS side (node/blockdag.py) --------------------------------------------------

    async def add_path(self, path: Path, *, pin: str | None = None, progress=None) -> tuple[bytes, int]:
        """Import a file or a directory tree (streaming); (root cid, total file bytes). Symlinks,
        FIFOs, devices, sockets inside are refused before anything is stored (ValueError naming
        the entry). While it runs its blocks are pinned (an import the cap cannot hold raises
        BlockStoreFull); after, they are pinned for `pin` or left evictable; a root row is kept.
        `progress` (node/transfer.py's Progress), when given, counts the blocks and file bytes
        stored as it goes, and its `total` is the tree's file bytes."""
        if pin is not None:
            check_owner(pin)
        return await blockdag.add_path(self, Path(path), pin, progress)

    async def add_stream(self, chunks: AsyncIterator[bytes], name: str = "", *,
                         pin: str | None = None, progress=None) -> tuple[bytes, int]:
        """Import one file whose bytes come from `chunks` (streaming, as `add_path` does a file);
        (root cid, file bytes); its root row is listed under `name`; `progress` as `add_path`'s."""
        if pin is not None:
            check_owner(pin)
        return await blockdag.add_stream(self, chunks, name, pin, progress)

    async def export(self, root: bytes, dest: Path) -> int:
        """Write the file or directory tree under `root` to `dest` (streaming, each block checked);
        the file bytes written. MissingBlock(cid) when a block is not here: `dest` is then
        untouched (the tree is written beside it and renamed into place at the end)."""
        return await blockdag.export(self, check_cid(root), Path(dest))

    async def walk_missing(self, root: bytes) -> list[bytes]:
        """The blocks of the DAG under `root` not held, as far as the held blocks tell (the
        children of a missing node are unknown until it is fetched)."""
        return (await blockdag.walk(self, check_cid(root)))[1]

    # --- listing -------------------------------------------------------------------------------

    async def record_root(self, root: bytes, name: str, size: int) -> None:
        """List `root` in `roots()` (a DAG fetched whole, as an import's root is listed)."""
        added = self._now_ms()

        def fn(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO roots(cid, name, size, added_ms) VALUES (?,?,?,?)",
                      (check_cid(root), name, size, added))

        await self._run(fn)

    async def roots(self) -> list[dict]:
        """The imported roots (`blob ls`), newest first: cid (text), name, size (file bytes), added (ms)."""
        def fn(c: sqlite3.Connection) -> list[dict]:
            rows = c.execute("SELECT cid, name, size, added_ms FROM roots ORDER BY added_ms DESC, cid")
            return [{"cid": cid_text(r[0]), "name": r[1], "size": r[2], "added": r[3]} for r in rows]

        return await self._run(fn, tx=False)

    def stats(self) -> dict:
        """blocks, bytes (held), max_bytes, pinned_bytes, evicted (blocks, since open)."""
        return {"blocks": self._blocks, "bytes": self._bytes, "max_bytes": self.max_bytes,
                "pinned_bytes": self._pinned, "evicted": self._evicted}
