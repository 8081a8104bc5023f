"""The block store's UnixFS side: importing a file or directory tree as blocks, writing one back
out, and walking a DAG to see what is held. Thin over `consensus.unixfs` (the format) and
`BlockStore` (the blocks); `BlockStore.add_path`, `.export`, `.walk_missing`, `.pin` call these.

Contract:
- `add_path` streams: a file is read `BATCH` bytes at a time on a worker thread and chunked there
  (`FileBuilder`, which hashes each chunk into its CID), while the blocks of the batch before are
  written; blocks are stored `BATCH` bytes per transaction, across small files too. Files of at
  most `BATCH` bytes are read and chunked whole, many in one worker-thread call (and written out
  so by `export`): a tree of many small files costs a thread hop per few MiB, not per file. It
  holds at most a few batches in memory, whatever the size. The tree is checked before anything is stored:
  an entry that is not a regular file or a directory (symlink, FIFO, device, socket), a name that
  is not UTF-8, a directory IPFS would shard (HAMT, unsupported), or a tree deeper than
  `MAX_DEPTH` is a ValueError naming the entry. The path itself may be a symlink (followed, as
  `cp` does); nothing inside one is followed.
- `add_path` and `add_stream` report as they go when given a `progress` (node/transfer.py's
  Progress): `blocks` stored, `bytes` of file data stored (its raw leaves), and for `add_path`
  `total`, the tree's file bytes from the scan.
- `add_stream` imports one file whose bytes come from an async iterator (an HTTP upload), by the
  same rules: gathered into BATCH bytes, chunked on a worker thread, stored BATCH bytes per
  transaction, pinned for its own owner while it runs (an error from the iterator ends it, and
  drops those pins); memory: about two batches, whatever the size.
- Blocks an import made are not hashed a second time: their CIDs were just computed from their
  bytes. Every block from anywhere else goes through `put` (`verify_block`).
- `export` writes the tree beside `dest` under a temp name and renames it into place at the end:
  on any error (MissingBlock, a malformed DAG, a full disk) `dest` is untouched and the partial
  tree removed. A file's blocks are read (each checked against its CID) on one worker thread while
  the batch before is written on another; each child must hold the file bytes its parent's
  blocksize says, and the whole the root's filesize (BadBlock). A directory's entry names are
  checked by `consensus.unixfs.decode_block` (one path component, no duplicates) before they
  touch the file system. A directory `dest` that exists is refused (FileExistsError); an
  existing file is replaced.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import trio

from distributeai.consensus.cid import CID_LEN, RAW, cid_text, codec_of
from distributeai.consensus.unixfs import (
    SHARD_THRESHOLD, BadBlock, FileBuilder, Link, children, decode_block, directory_block,
)
from .blockfiles import MissingBlock

BATCH = 4 << 20  # bytes of blocks per transaction (and per read of a file)
MAX_DEPTH = 128  # directory levels an import or an export accepts


async def pipeline(produce: Callable[[], list | None], consume: Callable[[list], Awaitable[None]]) -> None:
    """`produce()` on a worker thread, batch after batch until it returns None, while `consume`
    takes the batch before (one batch in between). The first error comes out as itself."""
    send, recv = trio.open_memory_channel[list](1)

    async def producer() -> None:
        async with send:
            while (batch := await trio.to_thread.run_sync(produce)) is not None:
                await send.send(batch)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            async with recv:
                async for batch in recv:
                    await consume(batch)
    except BaseExceptionGroup as group:
        error: BaseException = group
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        raise error from None


class _Entry:
    """A file or directory of the tree to import, found by the scan."""

    __slots__ = ("path", "name", "is_dir", "size", "entries")

    def __init__(self, path: Path, name: str, is_dir: bool, size: int) -> None:
        self.path, self.name, self.is_dir, self.size = path, name, is_dir, size
        self.entries: list[_Entry] = []


def scan(path: Path) -> _Entry:
    """The tree under `path`, sorted by name, or ValueError naming the first entry refused."""
    top = os.stat(path)  # the path itself: followed
    if not (stat.S_ISREG(top.st_mode) or stat.S_ISDIR(top.st_mode)):
        raise ValueError(f"{path}: not a regular file or a directory")
    root = _Entry(Path(os.path.realpath(path)), _utf8(path, path.name or str(path)), stat.S_ISDIR(top.st_mode),
                  top.st_size)
    stack = [(root, 0)]
    while stack:
        entry, depth = stack.pop()
        if not entry.is_dir:
            continue
        if depth >= MAX_DEPTH:
            raise ValueError(f"{entry.path}: deeper than {MAX_DEPTH} directory levels")
        with os.scandir(entry.path) as it:
            items = sorted(it, key=lambda e: os.fsencode(e.name))
        if sum(len(os.fsencode(item.name)) + CID_LEN for item in items) > SHARD_THRESHOLD:
            raise ValueError(f"{entry.path}: {len(items)} entries, a directory IPFS would shard (HAMT), "
                             "which this network does not support")
        for item in items:
            child_path = entry.path / item.name
            st = item.stat(follow_symlinks=False)
            mode = st.st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = "a symlink" if stat.S_ISLNK(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                    "a socket" if stat.S_ISSOCK(mode) else "a device"
                raise ValueError(f"{child_path}: {kind}, not a regular file or a directory (refused)")
            child = _Entry(child_path, _utf8(child_path, item.name), stat.S_ISDIR(mode), st.st_size)
            entry.entries.append(child)
            stack.append((child, depth + 1))
    return root


def _utf8(path: Path, name: str) -> str:
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path!r}: the name is not UTF-8") from None
    return name


def _open_regular(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO swapped in: no hang
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path}: not a regular file (refused)")
    return fd


def _read_small(path: Path) -> tuple[bytes, int, int, list[tuple[bytes, bytes]]] | None:
    """(cid, size, tsize, blocks) of a whole file of at most BATCH bytes; None if it is larger."""
    builder = FileBuilder()
    pairs: list[tuple[bytes, bytes]] = []
    fd = _open_regular(path)
    try:
        while data := os.read(fd, BATCH):
            if builder.size + len(data) > BATCH:
                return None  # grew since the scan: imported streaming instead
            pairs += builder.add(data)
    finally:
        os.close(fd)
    cid, size, last = builder.finish()
    return cid, size, builder.tsize, pairs + last


def _read_smalls(entries: list[_Entry]) -> list[tuple | None]:
    """`_read_small` of files one after another (one worker-thread call for many small files),
    until BATCH bytes or the first that is larger."""
    out: list[tuple | None] = []
    total = 0
    for entry in entries:
        out.append(found := _read_small(entry.path))
        if found is None or (total := total + found[1]) >= BATCH:
            break
    return out


class _Importer:
    """Blocks of one import, pinned for its temporary owner, stored BATCH bytes at a time."""

    def __init__(self, store, owner: str, progress=None) -> None:
        self.store, self.owner, self.progress = store, owner, progress
        self.pending: list[tuple[bytes, bytes]] = []
        self.pending_bytes = 0

    async def emit(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.pending.extend(pairs)
        self.pending_bytes += sum(len(block) for _, block in pairs)
        if self.pending_bytes >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        pairs, self.pending, self.pending_bytes = self.pending, [], 0
        if pairs:
            await self.store._store(pairs, self.owner)
            if self.progress is not None:
                self.progress.blocks += len(pairs)
                self.progress.bytes += sum(len(block) for cid, block in pairs if codec_of(cid) == RAW)

    async def add_file(self, path: Path) -> tuple[bytes, int, int]:
        """(cid, file bytes, tsize) of one regular file."""
        builder = FileBuilder()
        fd = await trio.to_thread.run_sync(_open_regular, path)
        try:
            def read() -> list[tuple[bytes, bytes]] | None:
                data = os.read(fd, BATCH)
                return builder.add(data) if data else None

            await pipeline(read, self.emit)
        finally:
            os.close(fd)
        cid, size, last = await trio.to_thread.run_sync(builder.finish)
        await self.emit(last)
        return cid, size, builder.tsize

    async def add_dir(self, entry: _Entry) -> tuple[bytes, int, int]:
        """(cid, file bytes, tsize) of a scanned directory, its entries imported first."""
        links, size = [], 0
        kids, i = entry.entries, 0
        while i < len(kids):
            small = 0
            while i + small < len(kids) and not kids[i + small].is_dir and kids[i + small].size <= BATCH:
                small += 1
            found = await trio.to_thread.run_sync(_read_smalls, kids[i:i + small]) if small else [None]
            for child, one in zip(kids[i:], found):
                if one is not None:
                    cid, n, tsize, pairs = one
                    await self.emit(pairs)
                else:  # a directory, or a file over BATCH bytes
                    cid, n, tsize = await (self.add_dir(child) if child.is_dir else self.add_file(child.path))
                links.append(Link(cid, child.name, tsize))
                size += n
            i += len(found)
        cid, block = directory_block(links)
        await self.emit([(cid, block)])
        return cid, size, len(block) + sum(link.tsize for link in links)


    async def add_chunks(self, chunks: AsyncIterator[bytes]) -> tuple[bytes, int, int]:
        """(cid, file bytes, tsize) of one file whose bytes come from `chunks`, gathered into
        BATCH bytes and chunked on a worker thread (add_file's rules, another source)."""
        builder = FileBuilder()
        batch: list[bytes] = []
        n = 0
        async for data in chunks:
            batch.append(data)
            n += len(data)
            if n >= BATCH:
                joined, batch, n = b"".join(batch), [], 0
                await self.emit(await trio.to_thread.run_sync(builder.add, joined))
        if batch:
            await self.emit(await trio.to_thread.run_sync(builder.add, b"".join(batch)))
        cid, size, last = await trio.to_thread.run_sync(builder.finish)
        await self.emit(last)
        return cid, size, builder.tsize


async def _import(store, pin: str | None, name: str,
                  work: Callable[[_Importer], Awaitable[tuple[bytes, int, int]]], progress=None) -> tuple[bytes, int]:
    """Run one import (`work`) under a temporary owner; its blocks then go to `pin` (or are left
    evictable) and its root is recorded under `name`; after a failure its pins are dropped."""
    temp = store._import_owner()
    importer = _Importer(store, temp, progress)
    try:
        cid, size, _ = await work(importer)
        await importer.flush()
    except BaseException:
        with trio.CancelScope(shield=True):
            try:
                await store._finish_import(temp, None, None, "", 0)
            except Exception:
                pass  # its pins are dropped at the next open
        raise
    await store._finish_import(temp, pin, cid, name, size)
    return cid, size


def tree_bytes(entry: _Entry) -> int:
    """The file bytes of a scanned tree (as the scan saw them)."""
    return entry.size if not entry.is_dir else sum(tree_bytes(child) for child in entry.entries)


async def add_path(store, path: Path, pin: str | None, progress=None) -> tuple[bytes, int]:
    tree = await trio.to_thread.run_sync(scan, path)
    if progress is not None:
        progress.total = tree_bytes(tree)
    return await _import(store, pin, tree.name,
                         lambda importer: importer.add_dir(tree) if tree.is_dir else importer.add_file(tree.path),
                         progress)


async def add_stream(store, chunks: AsyncIterator[bytes], name: str, pin: str | None,
                     progress=None) -> tuple[bytes, int]:
    return await _import(store, pin, name, lambda importer: importer.add_chunks(chunks), progress)


async def walk(store, root: bytes) -> tuple[list[bytes], list[bytes]]:
    """(held, missing) blocks of the DAG under `root`, breadth first, each once. Raw leaves are
    only looked up; dag-pb nodes are read for their links (BadBlock for a malformed one)."""
    held: list[bytes] = []
    missing: list[bytes] = []
    seen = {root}
    level = [root]
    while level:
        have = await store.have(level)
        below: list[bytes] = []
        for cid in level:
            if cid not in have:
                missing.append(cid)
                continue
            if codec_of(cid) == RAW:
                held.append(cid)
                continue
            block = await store.get(cid)
            if block is None:
                missing.append(cid)
                continue
            held.append(cid)
            for child in children(cid, block):
                if child not in seen:
                    seen.add(child)
                    below.append(child)
        level = below
    return held, missing


class _FileReader:
    """The bytes of a file DAG, depth first in link order, `BATCH` bytes per call (on a worker
    thread): each block read from its file and checked against its CID (MissingBlock if gone)."""

    def __init__(self, files, root: bytes, root_block: bytes) -> None:
        self.files = files
        self.stack: list[tuple[bytes, bytes | None, int | None]] = [(root, root_block, None)]
        self.used: list[bytes] = []
        self.filesize = decode_block(root, root_block).filesize

    def next_batch(self) -> list[bytes] | None:
        if not self.stack:
            return None
        out: list[bytes] = []
        n = 0
        while self.stack and n < BATCH:
            cid, block, expected = self.stack.pop()
            if block is None:
                block = self.files.read(cid)
                if block is None:
                    raise MissingBlock(cid)
            self.used.append(cid)
            node = decode_block(cid, block)
            if node.kind == "directory":
                raise BadBlock("a directory inside a file's DAG")
            if expected is not None and node.content_size != expected:
                raise BadBlock(f"block {cid_text(cid)} holds {node.content_size} file bytes, its parent says "
                               f"{expected}")
            if node.data:
                out.append(node.data)
                n += len(node.data)
            for link, size in reversed(list(zip(node.links, node.blocksizes))):
                self.stack.append((link.cid, None, size))
        return out


    def check_total(self, written: int) -> None:
        if self.filesize is not None and self.filesize != written:
            raise BadBlock(f"the file's DAG holds {written} bytes, its root says {self.filesize}")


def _write_smalls(files, links: list[Link], where: Path) -> list[tuple[int, list[bytes]] | None]:
    """Write the entries `links` of a directory into `where`, one worker-thread call for many
    small files: each a file of at most BATCH bytes written whole, as (bytes, cids read), until
    BATCH bytes; it stops at the first entry that is not (None for it: exported the usual way)."""
    out: list[tuple[int, list[bytes]] | None] = []
    total = 0
    for link in links:
        block = files.read(link.cid)
        if block is None:
            raise MissingBlock(link.cid)
        node = decode_block(link.cid, block)
        if node.kind == "directory" or node.content_size > BATCH:
            out.append(None)
            break
        reader = _FileReader(files, link.cid, block)
        chunks: list[bytes] = []
        while (batch := reader.next_batch()) is not None:  # each leaf checked against its parent
            chunks += batch
        fd = os.open(where / link.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            written = _write_all(fd, chunks)
        finally:
            os.close(fd)
        reader.check_total(written)
        out.append((written, reader.used))
        if (total := total + written) >= BATCH:
            break
    return out


def _write_all(fd: int, chunks: list[bytes]) -> int:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    return sum(len(chunk) for chunk in chunks)


async def _export_file(store, cid: bytes, block: bytes, target: Path) -> int:
    """Write a file DAG to the new file `target`: reading (and checking) the next batch of blocks
    on one worker thread while the batch before is written on another."""
    reader = _FileReader(store.files, cid, block)
    written = 0
    fd = await trio.to_thread.run_sync(os.open, target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    async def write(chunks: list[bytes]) -> None:
        nonlocal written
        written += await trio.to_thread.run_sync(_write_all, fd, chunks)

    try:
        await _dropping_missing(store, pipeline(reader.next_batch, write))
    finally:
        os.close(fd)
    reader.check_total(written)
    store._mark_used(reader.used)
    await store._maybe_flush()
    return written


async def _export_node(store, cid: bytes, target: Path, depth: int = 0) -> int:
    block = await store.get(cid)
    if block is None:
        raise MissingBlock(cid)
    node = decode_block(cid, block)
    if node.kind != "directory":
        return await _export_file(store, cid, block, target)
    if depth >= MAX_DEPTH:
        raise BadBlock(f"directories nested deeper than {MAX_DEPTH} levels")
    await trio.to_thread.run_sync(os.mkdir, target)
    total, links, i = 0, node.links, 0
    while i < len(links):
        done = await _dropping_missing(store, trio.to_thread.run_sync(_write_smalls, store.files, links[i:], target))
        for link, one in zip(links[i:], done):
            if one is None:  # a directory, or a file over BATCH bytes
                total += await _export_node(store, link.cid, target / link.name, depth + 1)
            else:
                total += one[0]
                store._mark_used(one[1])
        i += len(done)
    await store._maybe_flush()
    return total


async def _dropping_missing(store, work: Awaitable) -> Any:
    """`await work`; on MissingBlock, first drop the block's index row (if it still had one)."""
    try:
        return await work
    except MissingBlock as exc:
        await store._drop(exc.cid)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


async def export(store, root: bytes, dest: Path) -> int:
    if dest.is_dir() and not dest.is_symlink():
        raise FileExistsError(f"{dest} exists and is a directory")
    tmp = dest.parent / f".{dest.name}.part-{uuid.uuid4().hex[:12]}"
    try:
        written = await _export_node(store, root, tmp)
        await trio.to_thread.run_sync(os.replace, tmp, dest)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove, tmp)
        raise
    return written
