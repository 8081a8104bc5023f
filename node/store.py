"""The node's SQLite store: stdlib `sqlite3` in WAL mode behind trio.

aiosqlite binds to asyncio's loop and cannot be awaited from trio. One connection, one transaction
at a time (a one-slot limiter). A transaction that touches a handful of rows (insert a job, record
an input, read one job) runs on the trio thread: it takes 25-40 us of CPU there, where a hop to a
worker thread and back cost 180-200 us of CPU and the GIL handoffs with it (measured with this
Store, 2,000 calls each way), and a node makes dozens per job. What may scan a table (`ledger_events`,
`job_counts`, `page_jobs`, `jobs_ended`, `executions_with_status`, `peers_last_seen`,
`certificates`, `upsert_peers`) runs on a worker thread, as does the WAL checkpoint: the
connection's automatic checkpoint (which writes the WAL back and fsyncs, on whichever thread
commits) is off, and every CHECKPOINT_EVERY commits one runs on a worker thread instead, so the
trio thread never waits for the disk to sync. `synchronous=NORMAL`: in WAL mode a committed
transaction survives the process
being killed (SIGKILL included: the WAL is written before COMMIT returns, the OS keeps it), which
is the contract; only a power loss or kernel crash may roll back the last commits. FULL added an
fsync to every commit, and with five jobs in flight the fsyncs of six node processes queued on the
disk: `distributeai bench` went from 7.9 to 15 jobs/s and p50 from 551 to 333 ms with NORMAL.

What is stored (and why):
- `jobs`: every job this node knows, in any role (submitter, executor, observer), with its signed
  spec and, once known, the certificate. The job id doubles as the replay filter for announcements.
- `inputs`: every message that advanced one of this node's own submitter jobs, with the time it
  was applied. Replaying them through `SubmitterJob` rebuilds the job after a restart.
- `executions`: what this node ran as an executor: the award, the sandbox result, the commit state.
- `execution_inputs`: every input that advanced one of this node's executions (`ExecutorJob`),
  with the time it was applied. Replaying them rebuilds the execution after a restart.
- `ledger`: the events reputation and credits are folded from: verified certificates (this node's
  own and those received over gossip or pulled by reconciliation, node/reconcile.py, which also
  serves them from here to peers by job id) and offences this node saw itself. Rebuilding the
  ledger from it after a restart gives the same figures: the fold orders certificates by their own
  time and id (consensus/ledger.py), not by the order they were stored.
- `job_shares`: each known job's eligible share for sampled bidding (consensus/sampling.py), as
  announced or last widened by its submitter; written before the node acts on it.
- `peers`: known peers and their addresses, so a restarted node rejoins without the bootstrap.
- `meta`: the peer id this store belongs to, recorded at the first start (`check_identity`): a node
  whose key file gives another peer id refuses to start instead of taking this history as its own.
- `outputs` and `blobs`: dropped at open (sqlitefile.SCHEMA). They held, in stores of earlier
  versions, output files and wasm modules by SHA-256; both are blocks by CID now
  (node/outputs_serving.py, node/job_module.py).

A full or failing disk: a transaction that SQLite cannot write (SQLITE_FULL "database or disk is
full", or an SQLITE_IOERR) raises `StoreFull`, after its transaction is rolled back, so the
connection is usable again and the next write succeeds once space returns, with no restart (WAL
mode: a commit that could not be written never reaches the database; readers keep the last
committed state). `StoreFull` must never end the node: each task boundary drops the input it was
handling, counts it and tells the disk guard (node/disk.py), which stops bidding.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

import trio

from .sqlitefile import (  # noqa: F401 (StoreDamaged, StoreFull, disk_error: re-exported)
    StoreDamaged, StoreFull, connect as _connect, disk_error, transaction,
)


CHECKPOINT_EVERY = 500  # commits between WAL checkpoints (SQLite's automatic one: about 1,000 pages)


class Store:
    """Open with `await Store.open(path)`; every method is a coroutine that runs one transaction."""

    def __init__(self, conn: sqlite3.Connection, inline: bool = False) -> None:
        self._conn = conn
        self._inline = inline
        self._limiter = trio.CapacityLimiter(1)
        self._commits = 0  # since the last checkpoint
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on a worker thread (_run)

    @classmethod
    async def open(cls, path: Path) -> "Store":
        return cls(await trio.to_thread.run_sync(_connect, path))

    @classmethod
    def open_inline(cls, path: Path) -> "Store":
        """The same store with every transaction, scans and checkpoints too, run on the calling
        trio thread: for tests of protocol logic on trio's autojump clock, which a thread hop would
        let run ahead while SQLite works. A node never uses it (a scan would block the trio thread)."""
        return cls(_connect(path), inline=True)

    async def _run(self, fn: Callable[[sqlite3.Connection], Any], scan: bool = False) -> Any:
        """`fn` in one transaction: on the trio thread, or with `scan` (it may read a whole table)
        on a worker thread; then, every CHECKPOINT_EVERY commits, a WAL checkpoint on a worker."""
        def tx() -> Any:
            return transaction(self._conn, fn, "the store")

        if scan and not self._inline:
            out = await trio.to_thread.run_sync(tx, limiter=self._limiter)
        else:
            async with self._limiter:
                out = tx()
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY:
            self._commits = 0
            if self._inline:
                self._checkpoint()
            else:
                await trio.to_thread.run_sync(self._checkpoint, limiter=self._limiter)
        await trio.lowlevel.checkpoint()
        return out

    def _checkpoint(self) -> None:
        """Write the WAL back into the database. One that fails (a full disk) loses nothing: the
        WAL keeps every commit, and the next checkpoint tries again."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._conn.close, limiter=self._limiter)

    async def check_identity(self, peer_id: str) -> str | None:
        """The data dir's identity: the first call records `peer_id` (in a `meta` row) as the one
        this store belongs to; later calls return the recorded peer id when it is not `peer_id`
        (the key file was changed or damaged), None when it is."""

        def fn(c: sqlite3.Connection) -> str | None:
            c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            c.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('peer_id', ?)", (peer_id,))
            recorded = c.execute("SELECT value FROM meta WHERE key = 'peer_id'").fetchone()[0]
            return None if recorded == peer_id else recorded

        return await self._run(fn)

    # --- jobs ---------------------------------------------------------------------------------

    async def insert_job(self, job_id: str, role: str, name: str, signed_spec: bytes, status: str,
                         now_ms: int, submitter_addrs: list[str] | None = None,
                         announce: bytes | None = None) -> bool:
        """Insert a job seen for the first time; False if the job id is already known (a replay)."""

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO jobs(job_id, role, name, signed_spec, status, created_ms, updated_ms,"
                " submitter_addrs, announce) VALUES (?,?,?,?,?,?,?,?,?)",
                (job_id, role, name, signed_spec, status, now_ms, now_ms, json.dumps(submitter_addrs or []), announce),
            )
            return cur.rowcount == 1

        return await self._run(fn)

    async def set_job_status(self, job_id: str, status: str, reason: str, now_ms: int,
                             certificate: bytes | None = None) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE jobs SET status=?, reason=?, updated_ms=?, certificate=COALESCE(?, certificate) WHERE job_id=?",
                (status, reason, now_ms, certificate, job_id),
            )

        await self._run(fn)

    async def set_bid_decision(self, job_id: str, decision: str) -> None:
        await self._run(lambda c: c.execute("UPDATE jobs SET bid=? WHERE job_id=?", (decision, job_id)))

    async def jobs_ended(self, job_ids: list[str]) -> dict[str, int]:
        """Of `job_ids`, those whose part here is over, with when (ms): a certificate is recorded
        (the job's last update), or this node's execution of it failed (that execution's last
        update). Retention (node/retention.py) removes their outputs some time after."""
        def fn(c: sqlite3.Connection) -> dict[str, int]:
            ended: dict[str, int] = {}
            for i in range(0, len(job_ids), 500):
                chunk = job_ids[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for r in c.execute(f"SELECT job_id, updated_ms FROM jobs WHERE certificate IS NOT NULL"
                                   f" AND job_id IN ({marks})", chunk):
                    ended[r["job_id"]] = r["updated_ms"]
                for r in c.execute(f"SELECT job_id, updated_ms FROM executions WHERE status='failed'"
                                   f" AND job_id IN ({marks})", chunk):
                    ended[r["job_id"]] = min(ended.get(r["job_id"], r["updated_ms"]), r["updated_ms"])
            return ended

        return await self._run(fn, scan=True)

    async def get_job(self, job_id: str) -> dict | None:
        def fn(c: sqlite3.Connection) -> dict | None:
            row = c.execute("SELECT * FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            return dict(row) if row else None

        return await self._run(fn)

    async def job_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` ids of known jobs that start with `prefix` (lowercase hex), in order:
        a range scan of the primary key, so it costs the same for any number of jobs."""
        def fn(c: sqlite3.Connection) -> list[str]:
            rows = c.execute("SELECT job_id FROM jobs WHERE job_id >= ? AND job_id < ? ORDER BY job_id LIMIT ?",
                             (prefix, prefix + "g", limit))  # 'g' sorts after every hex digit
            return [r[0] for r in rows]

        return await self._run(fn)

    async def list_jobs(self, role: str | None = None, limit: int = 100) -> list[dict]:
        def fn(c: sqlite3.Connection) -> list[dict]:
            if role:
                rows = c.execute("SELECT * FROM jobs WHERE role=? ORDER BY created_ms DESC LIMIT ?", (role, limit))
            else:
                rows = c.execute("SELECT * FROM jobs ORDER BY created_ms DESC LIMIT ?", (limit,))
            return [dict(r) for r in rows]

        return await self._run(fn)

    async def page_jobs(self, role: str | None, status: str | None, offset: int,
                        limit: int) -> tuple[int, list[dict]]:
        """(how many jobs match, one page of them newest first), filtered by role and status."""
        def fn(c: sqlite3.Connection) -> tuple[int, list[dict]]:
            where, args = [], []
            if role:
                where.append("role=?")
                args.append(role)
            if status:
                where.append("status=?")
                args.append(status)
            clause = f" WHERE {' AND '.join(where)}" if where else ""
            total = c.execute(f"SELECT COUNT(*) FROM jobs{clause}", args).fetchone()[0]
            rows = c.execute(f"SELECT * FROM jobs{clause} ORDER BY created_ms DESC, job_id LIMIT ? OFFSET ?",
                             [*args, limit, offset])
            return total, [dict(r) for r in rows]

        return await self._run(fn, scan=True)

    async def job_counts(self) -> dict[str, int]:
        """How many jobs this node knows, by status."""
        def fn(c: sqlite3.Connection) -> dict[str, int]:
            return {r[0]: r[1] for r in c.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status")}

        return await self._run(fn, scan=True)

    async def add_job_role(self, job_id: str, role: str) -> None:
        """A job this node observed and now also executes keeps one row; the strongest role wins."""
        order = {"observer": 0, "executor": 1, "submitter": 2}

        def fn(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT role FROM jobs WHERE job_id=?", (job_id,)).fetchone()
            if row and order[role] > order[row["role"]]:
                c.execute("UPDATE jobs SET role=? WHERE job_id=?", (role, job_id))

        await self._run(fn)

    # --- sampled bidding -----------------------------------------------------------------------

    async def set_job_share(self, job_id: str, share: int) -> None:
        """A job's eligible share (consensus/sampling.py), as announced or widened: it only grows, so
        widenings stored out of order keep the largest."""
        await self._run(lambda c: c.execute(
            "INSERT INTO job_shares(job_id, share) VALUES (?,?)"
            " ON CONFLICT(job_id) DO UPDATE SET share=MAX(share, excluded.share)", (job_id, share)))

    async def job_share(self, job_id: str) -> int | None:
        """The share `set_job_share` stored for the job; None if none was."""
        def fn(c: sqlite3.Connection) -> int | None:
            row = c.execute("SELECT share FROM job_shares WHERE job_id=?", (job_id,)).fetchone()
            return None if row is None else int(row[0])

        return await self._run(fn)

    # --- submitter inputs -----------------------------------------------------------------------

    async def record_input(self, job_id: str, kind: str, raw: bytes, meta: dict, now_ms: int, *,
                           status: str, reason: str, certificate: bytes | None,
                           offences: list[tuple[bytes, str]]) -> bool:
        """One input to a submitter job and everything it changed, in one transaction: the input,
        the job's status, its certificate (also a ledger event) and any offences it revealed.
        Returns True if the certificate was new to the ledger."""

        def fn(c: sqlite3.Connection) -> bool:
            c.execute("INSERT INTO inputs(job_id, kind, raw, meta, now_ms) VALUES (?,?,?,?,?)",
                      (job_id, kind, raw, json.dumps(meta), now_ms))
            c.execute("UPDATE jobs SET status=?, reason=?, updated_ms=?, certificate=COALESCE(?, certificate)"
                      " WHERE job_id=?", (status, reason, now_ms, certificate, job_id))
            for peer, why in offences:
                c.execute("INSERT INTO ledger(kind, job_id, peer, reason, at_ms) VALUES ('offence',?,?,?,?)",
                          (job_id, peer, why, now_ms))
            if certificate is None:
                return False
            cur = c.execute("INSERT OR IGNORE INTO ledger(kind, job_id, raw, at_ms) VALUES ('certificate',?,?,?)",
                            (job_id, certificate, now_ms))
            return cur.rowcount == 1

        return await self._run(fn)

    async def inputs(self, job_id: str) -> list[tuple[str, bytes, dict, int]]:
        def fn(c: sqlite3.Connection) -> list[tuple[str, bytes, dict, int]]:
            rows = c.execute("SELECT kind, raw, meta, now_ms FROM inputs WHERE job_id=? ORDER BY seq", (job_id,))
            return [(r["kind"], r["raw"], json.loads(r["meta"]), r["now_ms"]) for r in rows]

        return await self._run(fn)

    # --- the ledger -----------------------------------------------------------------------------

    async def record_certificate(self, job_id: str, raw: bytes, status: str, reason: str, now_ms: int,
                                 *, role_if_new: str, name: str, signed_spec: bytes) -> bool:
        """A certificate received over gossip: stored on its job (created if unknown) and appended
        to the ledger. False if this job's certificate was recorded before (a replay)."""

        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute("INSERT OR IGNORE INTO ledger(kind, job_id, raw, at_ms) VALUES ('certificate',?,?,?)",
                            (job_id, raw, now_ms))
            if cur.rowcount == 0:
                return False
            c.execute("INSERT OR IGNORE INTO jobs(job_id, role, name, signed_spec, status, created_ms, updated_ms)"
                      " VALUES (?,?,?,?,?,?,?)", (job_id, role_if_new, name, signed_spec, status, now_ms, now_ms))
            c.execute("UPDATE jobs SET status=?, reason=?, updated_ms=?, certificate=? WHERE job_id=?",
                      (status, reason, now_ms, raw, job_id))
            return True

        return await self._run(fn)

    async def record_offence(self, job_id: str, peer: bytes, reason: str, now_ms: int) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO ledger(kind, job_id, peer, reason, at_ms) VALUES ('offence',?,?,?,?)",
            (job_id, peer, reason, now_ms)))

    async def certificates(self, job_ids: list[str]) -> dict[str, bytes]:
        """The stored bytes of the certificates of `job_ids` (hex) this node holds: what it serves
        to a peer reconciling with it (node/reconcile.py). Absent ids are left out."""

        def fn(c: sqlite3.Connection) -> dict[str, bytes]:
            marks = ",".join("?" * len(job_ids))
            rows = c.execute(f"SELECT job_id, raw FROM ledger WHERE kind='certificate' AND job_id IN ({marks})",
                             list(job_ids))
            return {r["job_id"]: r["raw"] for r in rows}

        return await self._run(fn, scan=True) if job_ids else {}

    async def ledger_events(self) -> list[dict]:
        def fn(c: sqlite3.Connection) -> list[dict]:
            return [dict(r) for r in c.execute("SELECT * FROM ledger ORDER BY seq")]

        return await self._run(fn, scan=True)

    # --- executions ---------------------------------------------------------------------------

    async def insert_execution(self, job_id: str, award: bytes, now_ms: int) -> bool:
        def fn(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "INSERT OR IGNORE INTO executions(job_id, award, status, updated_ms) VALUES (?,?,?,?)",
                (job_id, award, "awarded", now_ms),
            )
            return cur.rowcount == 1

        return await self._run(fn)

    async def update_execution(self, job_id: str, now_ms: int, *, status: str, reason: str = "",
                               result: dict | None = None, reveal: bytes | None = None) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE executions SET status=?, reason=?, result=COALESCE(?, result),"
                " reveal=COALESCE(?, reveal), updated_ms=? WHERE job_id=?",
                (status, reason, json.dumps(result) if result is not None else None, reveal, now_ms, job_id),
            )

        await self._run(fn)

    async def record_execution_input(self, job_id: str, kind: str, raw: bytes, meta: dict, now_ms: int, *,
                                     status: str, reason: str = "", result: dict | None = None,
                                     reveal: bytes | None = None) -> None:
        """One input to an execution and the state it led to, in one transaction."""

        def fn(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO execution_inputs(job_id, kind, raw, meta, now_ms) VALUES (?,?,?,?,?)",
                      (job_id, kind, raw, json.dumps(meta), now_ms))
            c.execute("UPDATE executions SET status=?, reason=?, result=COALESCE(?, result),"
                      " reveal=COALESCE(?, reveal), updated_ms=? WHERE job_id=?",
                      (status, reason, json.dumps(result) if result is not None else None, reveal, now_ms, job_id))

        await self._run(fn)

    async def execution_inputs(self, job_id: str) -> list[tuple[str, bytes, dict, int]]:
        def fn(c: sqlite3.Connection) -> list[tuple[str, bytes, dict, int]]:
            rows = c.execute("SELECT kind, raw, meta, now_ms FROM execution_inputs WHERE job_id=? ORDER BY seq",
                             (job_id,))
            return [(r["kind"], bytes(r["raw"]), json.loads(r["meta"]), r["now_ms"]) for r in rows]

        return await self._run(fn)

    async def get_execution(self, job_id: str) -> dict | None:
        def fn(c: sqlite3.Connection) -> dict | None:
            row = c.execute("SELECT * FROM executions WHERE job_id=?", (job_id,)).fetchone()
            if not row:
                return None
            out = dict(row)
            out["result"] = json.loads(out["result"]) if out["result"] else None
            return out

        return await self._run(fn)

    async def executions_with_status(self, *statuses: str) -> list[dict]:
        def fn(c: sqlite3.Connection) -> list[dict]:
            marks = ",".join("?" * len(statuses))
            rows = c.execute(f"SELECT * FROM executions WHERE status IN ({marks})", statuses)
            return [dict(r) for r in rows]

        return await self._run(fn, scan=True)

    # --- peers --------------------------------------------------------------------------------

    async def upsert_peers(self, peers: list[tuple[str, list[str]]], now_ms: int) -> None:
        def fn(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO peers(peer_id, addrs, last_seen_ms) VALUES (?,?,?)"
                " ON CONFLICT(peer_id) DO UPDATE SET addrs=excluded.addrs, last_seen_ms=excluded.last_seen_ms",
                [(p, json.dumps(a), now_ms) for p, a in peers if a],
            )

        await self._run(fn, scan=True)

    async def peers_last_seen(self) -> dict[str, int]:
        """Every peer remembered, with when it was last seen connected (ms)."""
        def fn(c: sqlite3.Connection) -> dict[str, int]:
            return {r["peer_id"]: r["last_seen_ms"] for r in c.execute("SELECT peer_id, last_seen_ms FROM peers")}

        return await self._run(fn, scan=True)

    async def known_peers(self, limit: int = 50) -> list[tuple[str, list[str]]]:
        def fn(c: sqlite3.Connection) -> list[tuple[str, list[str]]]:
            rows = c.execute("SELECT peer_id, addrs FROM peers ORDER BY last_seen_ms DESC LIMIT ?", (limit,))
            return [(r["peer_id"], json.loads(r["addrs"])) for r in rows]

        return await self._run(fn)
