"""The block store's files: one file per block under `DATA_DIR/blocks/`, and its index's SQLite
file (`blocks/index.db`: its schema and opening, as node/sqlitefile.py opens node.db). Blocking
calls only.

Contract (the index, node/blockstore.py, decides what is held; this module only moves bytes):
- A block lives at `ROOT/XX/CIDTEXT`: `CIDTEXT` is `consensus.cid.cid_text` (what `blob ls` shows),
  `XX` the first byte of the CID's SHA2-256 digest in hex, so 256 directories share the blocks
  evenly (a 10 GiB store of 256 KiB blocks puts about 160 files in each).
- `write` is atomic: the bytes go to a fresh temp file in `ROOT/tmp/`, which `os.replace` moves
  into place, so a reader sees the whole block or none, and a process killed mid-write leaves
  only a temp file, which `clear_temp` (called at open) removes.
- fsync policy: none per block. A store import of 1 GiB is 4096 files, and an fsync each would
  queue every write on the disk for no gain: a block is self-verifying, so `read` checks its bytes
  against its CID (`consensus.cid.verify_block`, the one rule) and treats a file a power cut
  truncated or the disk damaged as missing (and removes it); the block is fetched again like any
  other. A process crash (kill -9 included) loses nothing: the page cache outlives the process.
- A write the disk cannot hold (ENOSPC, EDQUOT, EIO, EFBIG) raises `node.sqlitefile.StoreFull`
  after removing its temp file; nothing is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import uuid
from pathlib import Path

from distributeai.consensus.cid import check_cid, cid_text, verify_block
from .sqlitefile import StoreDamaged, StoreFull, connect

TEMP_DIR = "tmp"
INDEX_FILE = "index.db"
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}

# The index (node/blockstore.py runs every statement): what is held, with its recency; who pins what;
# what was imported (`blob ls`).
SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    cid       BLOB PRIMARY KEY,
    size      INTEGER NOT NULL,
    last_used INTEGER NOT NULL          -- the store's logical clock: larger is more recent
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_lru ON blocks(last_used);
CREATE TABLE IF NOT EXISTS pins (
    owner TEXT NOT NULL,
    cid   BLOB NOT NULL,
    PRIMARY KEY (owner, cid)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pins_cid ON pins(cid);
CREATE TABLE IF NOT EXISTS roots (
    cid      BLOB PRIMARY KEY,
    name     TEXT NOT NULL,
    size     INTEGER NOT NULL,
    added_ms INTEGER NOT NULL
);
"""


class BlockIndexDamaged(StoreDamaged):
    """`blocks/index.db` is not a sound SQLite database; one line with the recovery."""

    def __init__(self, path: Path, detail: str) -> None:
        Exception.__init__(
            self, f"{path} is damaged ({detail}); to start with an empty block store, move the blocks "
            f"directory aside: `mv {path.parent} {path.parent}.damaged`. Lost on this node: the blocks it "
            "held and their pins (fetched again when a job needs them). Kept: everything else")
        self.path = Path(path)


def connect_index(path: Path) -> sqlite3.Connection:
    """Open (or create) the index as node.db is opened (node/sqlitefile.connect: WAL, quick_check);
    BlockIndexDamaged for a file that is not a sound database, StoreFull for a full disk."""
    return connect(path, SCHEMA, BlockIndexDamaged, rows=False)


class BlockStoreFull(Exception):
    """The store's cap (`max_bytes`) is taken by pinned blocks: there is no room for this put."""


class MissingBlock(Exception):
    """A block of a DAG is not in the store; `.cid` is its CID."""

    def __init__(self, cid: bytes) -> None:
        super().__init__(f"block {cid_text(cid)} is not in the store")
        self.cid = cid


def full_disk(exc: OSError) -> bool:
    """Whether an OSError says the disk cannot hold the write (not a bug, not a permission)."""
    return exc.errno in DISK_ERRNOS


class BlockFiles:
    """The files of one store under `root` (created if absent). Every method blocks: the store
    calls them on a worker thread."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.temp = self.root / TEMP_DIR
        self.temp.mkdir(parents=True, exist_ok=True)
        self._shards: set[str] = set()

    def path_of(self, cid: bytes) -> Path:
        cid = check_cid(cid)
        return self.root / cid[4:5].hex() / cid_text(cid)

    def clear_temp(self) -> int:
        """Remove what writes in flight left in `tmp/` when the process died; how many entries."""
        removed = 0
        for entry in os.scandir(self.temp):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
            removed += 1
        return removed

    def write(self, cid: bytes, block: bytes) -> None:
        """Store `block` as the file of `cid`, atomically (replacing any file already there)."""
        final = self.path_of(cid)
        shard = final.parent.name
        if shard not in self._shards:
            final.parent.mkdir(exist_ok=True)
            self._shards.add(shard)
        tmp = self.temp / f"{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if full_disk(exc):
                raise StoreFull(f"the block store could not write to disk: {exc}") from exc
            raise

    def read(self, cid: bytes) -> bytes | None:
        """The block of `cid`, checked against it; None when there is no file, or when its bytes
        are not that block (the file is then removed: a torn write after a power cut, a bad disk)."""
        path = self.path_of(cid)
        try:
            with open(path, "rb") as f:
                block = f.read()
        except FileNotFoundError:
            return None
        if not verify_block(cid, block):
            self.remove(cid)
            return None
        return block

    def exists(self, cid: bytes) -> bool:
        return self.path_of(cid).is_file()

    def remove(self, cid: bytes) -> None:
        """Remove the file of `cid`, if there is one."""
        try:
            os.unlink(self.path_of(cid))
        except FileNotFoundError:
            pass
