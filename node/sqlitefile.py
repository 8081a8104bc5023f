"""Opening node.db: its schema, its health check and what its errors mean.

`connect(path)` opens the file in WAL mode, checks it (`PRAGMA quick_check`) and creates the
tables: `StoreDamaged` if it is not a sound database (one line with the recovery step),
`StoreFull` if the disk cannot hold what opening needs. `disk_error` tells a full or failing disk
from a bug in a statement, for every write (store.py); `rollback` ends a failed transaction
without hiding the error that ended it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id      TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    signed_spec BLOB NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    submitter_addrs TEXT NOT NULL DEFAULT '[]',
    announce    BLOB,
    certificate BLOB,
    bid         TEXT NOT NULL DEFAULT ''    -- this node's decision on bidding, with the reason
);
-- Output files and wasm modules by SHA-256, in stores of earlier versions: they are blocks by CID
-- now (node/outputs_serving.py, node/job_module.py), found through the block store's index.
DROP TABLE IF EXISTS outputs;
DROP TABLE IF EXISTS blobs;
CREATE TABLE IF NOT EXISTS inputs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    raw     BLOB NOT NULL,
    meta    TEXT NOT NULL DEFAULT '{}',
    now_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS inputs_job ON inputs(job_id, seq);
CREATE TABLE IF NOT EXISTS ledger (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,          -- 'certificate' | 'offence'
    job_id  TEXT NOT NULL,
    peer    BLOB,                   -- offence: the offender's public key
    raw     BLOB,                   -- certificate: its signed bytes
    reason  TEXT NOT NULL DEFAULT '',
    at_ms   INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS ledger_certificate ON ledger(job_id) WHERE kind = 'certificate';
CREATE TABLE IF NOT EXISTS executions (
    job_id      TEXT PRIMARY KEY,
    award       BLOB NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    result      TEXT,
    reveal      BLOB,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS execution_inputs (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    kind    TEXT NOT NULL,
    raw     BLOB NOT NULL,
    meta    TEXT NOT NULL DEFAULT '{}',
    now_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS execution_inputs_job ON execution_inputs(job_id, seq);
-- Sampled bidding (consensus/sampling.py): each known job's eligible share as last announced or
-- widened by its submitter; a job without a row was announced to every node.
CREATE TABLE IF NOT EXISTS job_shares (
    job_id  TEXT PRIMARY KEY,
    share   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS peers (
    peer_id     TEXT PRIMARY KEY,
    addrs       TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL
);
"""


# SQLite's result codes for a file that is not (or no longer) a sound database.
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class StoreDamaged(Exception):
    """node.db is not a sound SQLite database (truncated, overwritten, corrupt). The message is one
    line: what is wrong, how to move the file aside, what that loses and what it keeps."""

    def __init__(self, path: Path, detail: str) -> None:
        d = Path(path).parent
        super().__init__(
            f"{path} is damaged ({detail}); to start with an empty store, move it and its -wal/-shm files "
            f"aside: `mkdir {d}/damaged && mv {path}* {d}/damaged/`. Kept: node.key (this identity), output "
            "files, and what other nodes record about this identity. Lost on this node, not re-fetched from "
            "peers: its job history and results, its jobs in flight, and its view of reputation and credits "
            "(rebuilt only from certificates seen from then on). See docs/architecture.md, "
            "\"Identity faults and recovery\"")
        self.path = Path(path)


# sqlite3 primary result codes (the low byte of an extended code): the disk is full, or it failed.
SQLITE_IOERR = 10
SQLITE_FULL = 13
DISK_ERRORS = (SQLITE_IOERR, SQLITE_FULL)


class StoreFull(Exception):
    """A write could not reach the disk (full, or an I/O error); nothing of it was stored."""


def disk_error(exc: BaseException) -> bool:
    """Whether an sqlite3 error says the disk is full or failed (not a bug in a statement)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in DISK_ERRORS
    return isinstance(exc, sqlite3.OperationalError) and (
        "disk is full" in str(exc) or "disk I/O error" in str(exc))


def rollback(conn: sqlite3.Connection) -> None:
    """End a failed transaction. SQLite may have rolled it back itself (it does on SQLITE_FULL and
    SQLITE_IOERR), and a ROLLBACK then fails with "no transaction is active": never let that
    hide the error that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


# SQLite's page cache per connection, in KiB (its default: 2,000). The OS caches the file anyway,
# and a node's transactions touch a few pages by primary key; the default cache filled as jobs
# ran, and was 2 of the 81.6 MB peak RSS of a node after 200 jobs (`distributeai bench
# --concurrency 20`: 79.5 MB with 256 KiB, jobs/s within the run-to-run noise).
CACHE_KIB = 256


def connect(path: Path, schema: str = SCHEMA, damaged: type[StoreDamaged] = StoreDamaged,
            rows: bool = True) -> sqlite3.Connection:
    """Open node.db (or another of the node's SQLite files, with its `schema` and its `damaged`
    error) and check it (`PRAGMA quick_check`): `damaged` if it is not a sound database,
    StoreFull when the disk cannot hold what opening needs (the WAL's index, a new schema); other
    SQLite errors (locked, unreadable) propagate as themselves. `rows`: rows as sqlite3.Row."""
    conn = None
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        if rows:
            conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise damaged(path, " ".join(" ".join(problems).split()))
        conn.executescript(schema)
    except (sqlite3.Error, StoreDamaged) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StoreDamaged):
            raise
        if getattr(exc, "sqlite_errorcode", None) in _DAMAGED:
            raise damaged(path, str(exc)) from None
        if disk_error(exc):
            raise StoreFull(f"cannot open {path}: {exc}") from exc
        raise
    return conn


def transaction(conn: sqlite3.Connection, fn, what: str):
    """`fn(conn)` in one BEGIN IMMEDIATE transaction, rolled back on any exception; a disk error
    is StoreFull ("`what` could not write to disk: ...") and leaves the connection usable."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
    except sqlite3.Error as exc:
        if disk_error(exc):
            raise StoreFull(f"{what} could not write to disk: {exc}") from exc
        raise
    return out
