"""Output files as blocks: importing what a job left in /out, and fetching a verified job's files.

Contract:
- `FileCid` is the sandbox's `out_hasher` (sandbox.RunRequest): fed a file's bytes as the sandbox
  copies them out of /out, its `digest()` is the CID `ipfs add --cid-version 1` gives the file
  (consensus.unixfs.FileBuilder, blocks dropped), so the manifest names each file by the CID its
  blocks will be fetched and checked by, from the one read that copies it.
- `import_outputs(blocks, outputs_dir, job_hex, manifest)`, after a run: each manifest file the
  sandbox kept in `outputs_dir/JOB_ID/` (a staging copy) is imported into the block store pinned
  under `outputs:JOB_ID` (`outputs_owner`), checked against the CID the manifest certifies, and
  its staging copy removed: the blocks are the one lasting copy, served by Bitswap (the block
  store is its source). The emptied `outputs/JOB_ID/` stays as retention's record of the job
  (node/retention.py unpins the blocks and removes it `--keep-outputs` after the job ended). A
  file that cannot be imported (the store's cap, a full disk) is not served; it is logged.
- `read_compared(out_dir, files, cap)`, after a run and before the reveal: the bytes of the staged
  files a numeric comparison names, for the reveal to carry (consensus.compare.carried_files).
- `OutputsServing.fetch_outputs(job_hex, out_dir)` / `fetch_output(job_hex, path, target)` /
  `open_output(job_hex, path)`: a verified job's output files, each by its certified CID:
  `fetch_dag` (node/transfer.py: the blocks the store lacks, from the agreeing executors at once,
  each verified against its CID, resumable: blocks already stored are not asked for again) pinned
  under `fetch:JOB_ID` while it is written out (then unpinned: they stay as cache), then `blocks.export` (streaming) or, for the REST
  API, `read_file` (an async iterator of the file's bytes, block by block, each checked). On the
  node that ran the job the blocks are here already and nothing goes over the network. A file
  that cannot be had keeps its own reason (`unavailable`, `store_full`, `write_failed`,
  `bad_path`) and the others are still written.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import trio

from distributeai.consensus.cid import BadCid, cid_text, parse_cid_text, verify_block
from distributeai.consensus.errors import LocalProtocolError
from distributeai.consensus.unixfs import BadBlock, FileBuilder, decode_block
from distributeai.p2p.bitswap_fetch import BlocksUnavailable

from .blockstore import BlockStoreFull, MissingBlock
from .retention import Pins
from .sqlitefile import StoreFull
from .store import Store

log = logging.getLogger("distributeai.node")

FetchDag = Callable[..., Awaitable[object]]  # Agent.fetch_dag(root, providers, *, pin=None, progress=None)


def outputs_owner(job_hex: str) -> str:
    """The pin owner of the output blocks of a job this node ran."""
    return f"outputs:{job_hex}"


def fetch_owner(job_hex: str) -> str:
    """The pin owner of a job's output blocks while this node fetches and writes them out."""
    return f"fetch:{job_hex}"


class FileCid:
    """hashlib's shape for one file: `update(bytes)`, then `digest()` = its binary CIDv1 (UnixFS,
    raw leaves, as `ipfs add --cid-version 1`). Holds at most one chunk and a link list per level."""

    def __init__(self) -> None:
        self._builder = FileBuilder()

    def update(self, data: bytes) -> None:
        self._builder.add(bytes(data))  # the finished blocks are dropped: only the root matters here

    def digest(self) -> bytes:
        return self._builder.finish()[0]


async def import_outputs(blocks, outputs_dir: Path | None, job_hex: str, manifest,
                         announce: Callable[[bytes], None] = lambda cid: None) -> list[str]:
    """Import each manifest file kept in `outputs_dir/job_hex/` (see the module docstring); the
    paths now held as blocks, each root announced (`announce`: a DHT provider record, so a later
    job's input or a `blob get` of the CID finds this node). Never raises for one file: a
    mismatch or a full store is logged."""
    if outputs_dir is None or not manifest:
        return []
    base = outputs_dir / job_hex
    owner = outputs_owner(job_hex)
    held = []
    for path, size, cid in manifest:
        staged = base / path
        if not await trio.to_thread.run_sync(staged.is_file):
            continue  # the sandbox could not keep it (no room): it is listed, not served
        try:
            got, got_size = await blocks.add_path(staged, pin=owner)
        except (BlockStoreFull, StoreFull, OSError, ValueError) as exc:
            log.warning("job %s: output %s not stored: %s", job_hex[:12], path, exc)
            got = None
        else:
            if (got, got_size) != (cid, size):
                log.warning("job %s: output %s imported as %s (%d bytes), not the certified %s (%d bytes)",
                            job_hex[:12], path, cid_text(got), got_size, cid_text(cid), size)
                got = None
        if got is not None:
            held.append(path)
            announce(got)
        try:
            await trio.to_thread.run_sync(staged.unlink)
        except OSError as exc:
            log.warning("job %s: cannot remove the staged output %s: %s", job_hex[:12], path, exc)
    await trio.to_thread.run_sync(_remove_empty_dirs, base)
    return held


def _remove_empty_dirs(base: Path) -> None:
    """Remove the directories the staged files left below `base` (not `base`: retention's record)."""
    for sub in sorted((p for p in base.rglob("*") if p.is_dir() and not p.is_symlink()),
                      key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass


async def read_file(blocks, root: bytes) -> AsyncIterator[bytes]:
    """The bytes of the UnixFS file under `root`, block by block in order, each block checked
    against its CID (MissingBlock when one is not here, BadBlock when the DAG is not a file)."""
    stack = [root]
    while stack:
        cid = stack.pop()
        block = await blocks.get(cid)
        if block is None:
            raise MissingBlock(cid)
        if not verify_block(cid, block):
            raise BadBlock(f"block {cid_text(cid)} does not match its CID")
        node = decode_block(cid, block)
        if node.kind == "directory":
            raise BadBlock(f"{cid_text(cid)} is a directory, not a file")
        if node.data:
            yield node.data
        stack.extend(link.cid for link in reversed(node.links))


class OutputsServing:
    def __init__(self, store: Store, pins: Pins, blocks, fetch_dag: FetchDag,
                 job_status: Callable[[str], Awaitable[dict | None]]) -> None:
        self.store = store
        self.pins = pins
        self.blocks = blocks
        self.fetch_dag = fetch_dag
        self.job_status = job_status

    async def _verified(self, job_hex: str) -> dict:
        view = await self.job_status(job_hex)
        if view is None or view["status"] != "verified":
            raise LocalProtocolError("not_verified", "only a verified job's outputs can be fetched")
        return view

    @staticmethod
    def _entry(view: dict, path: str) -> dict:
        entry = next((f for f in view.get("files") or [] if f["path"] == path), None)
        if entry is None:
            raise LocalProtocolError("no_such_output", f"the job has no output file {path!r}")
        return entry

    async def _present(self, job_hex: str, view: dict, entry: dict) -> bytes:
        """Make the file's blocks present here, pinned under `fetch_owner` (its root CID)."""
        if self.blocks is None:
            raise LocalProtocolError("unavailable", "this node has no block store")
        try:
            root = parse_cid_text(entry["cid"])
        except BadCid as exc:
            raise LocalProtocolError("unavailable", f"{entry['path']}: {exc}") from None
        providers = [e["peer_id"] for e in view["executors"] if e["agreed"]]
        try:
            await self.fetch_dag(root, providers, pin=fetch_owner(job_hex))
            await self.blocks.pin(fetch_owner(job_hex), root)  # also the blocks that were here already
        except (BlockStoreFull, StoreFull) as exc:
            raise LocalProtocolError("store_full", f"no room in the block store for {entry['path']}: {exc}") from None
        except (BlocksUnavailable, LookupError, BadBlock) as exc:  # nobody has it, a block gone in between, a bad DAG
            raise LocalProtocolError("unavailable", f"no agreeing executor served {entry['path']}: {exc}") from None
        return root

    async def fetch_output(self, job_hex: str, path: str, target: Path, view: dict | None = None) -> int:
        """Write one verified output file of a job to `target` (see the module docstring); its size."""
        view = view if view is not None else await self._verified(job_hex)
        entry = self._entry(view, path)
        root = await self._present(job_hex, view, entry)
        try:
            size = await self.blocks.export(root, target)
        except (MissingBlock, BadBlock) as exc:
            raise LocalProtocolError("unavailable", f"{path}: {exc}") from None
        except OSError as exc:
            raise LocalProtocolError("write_failed", f"cannot write {target}: {exc.strerror or exc}") from None
        return size

    async def open_output(self, job_hex: str, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """One verified output file as (size, its bytes as an async iterator), its blocks fetched
        first; the iterator keeps them pinned until it is closed."""
        view = await self._verified(job_hex)
        entry = self._entry(view, path)
        try:
            root = await self._present(job_hex, view, entry)
        except LocalProtocolError:
            if self.blocks is not None:
                await self.blocks.unpin(fetch_owner(job_hex))
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in read_file(self.blocks, root):
                    yield chunk
            finally:
                with trio.CancelScope(shield=True):
                    await self.blocks.unpin(fetch_owner(job_hex))

        return entry["size"], chunks()

    async def fetch_outputs(self, job_hex: str, out_dir: Path) -> tuple[list[dict], list[dict]]:
        """Write the verified output files of a job into `out_dir` (each as `fetch_output`): every
        file that can be had is written; (written, failed), each failure with its reason. The
        fetch pin is released at the end: the blocks stay as the store's cache (evicted least
        recently used first), so asking again after a failure resumes with those still here."""
        view = await self._verified(job_hex)
        written, failed = [], []
        for f in view.get("files") or []:
            target = (out_dir / f["path"]).resolve()
            try:
                if out_dir.resolve() not in target.parents:
                    raise LocalProtocolError("bad_path", f"output path {f['path']!r} leaves the directory")
                try:
                    await trio.to_thread.run_sync(lambda: target.parent.mkdir(parents=True, exist_ok=True))
                except OSError as exc:
                    raise LocalProtocolError("write_failed", f"cannot write {target}: {exc.strerror or exc}") from None
                size = await self.fetch_output(job_hex, f["path"], target, view)
            except LocalProtocolError as exc:
                failed.append({"path": f["path"], "size": f["size"], "reason": exc.reason, "error": str(exc)})
                continue
            written.append({"path": f["path"], "size": size, "cid": f["cid"], "written_to": str(target)})
        if self.blocks is not None:
            await self.blocks.unpin(fetch_owner(job_hex))
        return written, failed


def read_compared(out_dir: str, files: tuple[str, ...], cap: int) -> dict[str, bytes]:
    """On a worker thread: the bytes of each of `files` (relative paths, checked by the spec) the
    sandbox kept in the run's output directory, if a regular file of at most `cap` bytes (a file
    over it is compared by CID alone); missing or unreadable ones are left out. Never follows a
    symlink at the file itself; make_reveal keeps only files whose CID the manifest names."""
    out = {}
    for path in files:
        try:
            fd = os.open(os.path.join(out_dir, path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size <= cap:
                data = os.read(fd, cap + 1)
                if len(data) <= cap:
                    out[path] = data
        except OSError:
            pass
        finally:
            os.close(fd)
    return out
