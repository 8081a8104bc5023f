"""A job's inputs on this node (issue 16, item 3): the CIDs a spec names (`JobSpec.inputs`), in
the block store (node/blockstore.py), moved by node/transfer.py's `fetch_dag`.

Contract (`JobInputs`, one per node; the submitter's and the executor's sides both use it):
- submitting: `prepare(spec, local, owner)` gives the spec to sign: each local path (a file or a
  directory the user named with `submit --input PATH[:NAME]`) imported into the store (CID and
  size filled in), and each input the spec names by CID fetched whole from the connected peers
  and sized (the sum of its files' bytes). Fetching the whole DAG at submit time, not only its
  root, is deliberate: it proves the CID exists on the network, it gives the exact size of a
  directory (a walk of the nodes above the files; the file roots' sizes are in their root blocks),
  and the submitter is the first provider every executor asks. Everything is pinned from the
  start under `submission_owner(spec)`, "submission:" and the spec's nonce (the job id is not
  known before the spec holds the CIDs, and one owner from import to certificate leaves no
  moment the blocks could be evicted); `release_submission(spec)` drops the pins once the job
  has its certificate, and `abandon` when the submission is refused. Each import is listed in
  `transfers` (node/transfer.py, kind "import", with its bytes so far) while it runs; the
  fetches list themselves (the node's `fetch_dag`). A pin a crash left behind
  (between the import and the announcement, or the certificate and the release) is dropped at
  the next start: `sweep_submissions(live)` unpins every submission owner not in `live` (the
  owners of the submitter's recovered, unfinished jobs).
- bidding: `held(spec)` is the file bytes of the job's inputs whose whole DAG this store holds
  (an input held in part counts 0): a walk of the DAG's held blocks (its dag-pb nodes are read,
  its leaves only looked up), remembered per root while the store has evicted nothing since, so
  a bid on a dataset already checked costs no walk. `room()` is what the store can still take
  (its cap less its pinned bytes).
- executing: `fetch(job_hex, spec, providers)` pins what is held under `inputs:JOB`, fetches the
  rest from `providers` (the submitter first), and writes every input out to
  `inputs_dir/JOB/PATH` (directories 0755, files 0644: the job reads them as uid 65534), after
  checking each input's size against the spec's (a misstated size is refused like a missing
  block: the spec's sizes are what nodes decided to bid on); the
  directory, for `RunRequest.in_dir`. A fetch cut short (SIGKILL, restart) is resumed by calling
  it again: stored blocks are not asked for twice, and the directory is written afresh.
  `InputsUnavailable` (a LookupError) when no provider has some block, with the CID in words.
  A fetch is bounded by the spec's size (node/transfer.py `size_bound`): a submitter that
  understates an input is refused once that much has arrived, not after the whole DAG. When the
  submitter and the connected peers lack a block, the DHT's provider records name more peers.
- announcing: every input root this node holds whole (imported for its submission, or fetched
  for a run) is announced in the DHT (`Content.announce`, in the background: a provider record
  that other nodes' fetches find), so a dataset spreads from every node that has it.
  Each fetch logs one INFO line on `distributeai.node.jobs` (event `inputs_fetched`: bytes and
  blocks that came over the network, blocks already held, the seconds the fetch and the write-out
  took), which `distributeai bench --data SIZE --through-jobs` reads as each executor's fetch throughput.
  `remove_dir(job_hex)` after the run; `release(job_hex)` when the job has ended here.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Awaitable, Callable

import trio

from distributeai.consensus.cid import cid_text
from distributeai.consensus.messages import JobSpec
from distributeai.consensus.unixfs import decode_block

from .blockstore import BlockStoreFull, MissingBlock
from .transfer import Progress, Transfers, size_bound

log = logging.getLogger("distributeai.node.jobs")

# Agent.fetch_dag(root, providers, *, pin=None, progress=None): every block of the DAG in the store.
FetchDag = Callable[..., Awaitable[Any]]
INPUT_PROVIDERS = 8  # peers asked at once for a job's input blocks


class InputsUnavailable(LookupError):
    """No provider could give some block of a job's input."""


def submission_owner(spec: JobSpec) -> str:
    return f"submission:{spec.nonce.hex()}"


def run_owner(job_hex: str) -> str:
    return f"inputs:{job_hex}"


def input_providers(submitter: str, me: str, connected: list[str]) -> list[str]:
    """Who may hold a job's input blocks (peer ids): its submitter first, then up to
    INPUT_PROVIDERS - 1 connected peers (an executor of the job or of an earlier job on the same
    data; one that lacks them says DONT_HAVE and its share goes to the others)."""
    others = [p for p in connected if p not in (submitter, me)]
    return [submitter, *others[:INPUT_PROVIDERS - 1]]


async def dag_size(blocks, root: bytes) -> int:
    """The file bytes under `root`, a file or a directory DAG held here: a file's root block
    states its size; a directory's is the sum over its entries (only directory nodes are walked).
    LookupError if a directory node or a file's root is not here."""
    total = 0
    stack = [root]
    while stack:
        cid = stack.pop()
        block = await blocks.get(cid)
        if block is None:
            raise InputsUnavailable(f"block {cid_text(cid)} of input {cid_text(root)} is not held")
        node = decode_block(cid, block)
        if node.kind == "directory":
            stack.extend(link.cid for link in node.links)
        else:
            total += node.content_size
    return total


async def present_for_run(blocks, fetch_dag: FetchDag, cid: bytes, providers: list[str], owner: str,
                          max_bytes: int, what: str, progress: Progress | None = None) -> None:
    """The DAG under `cid` whole in `blocks`, pinned under `owner` (a run's inputs or module):
    what is held is pinned first, so it stays while the rest arrives from `providers` (at most
    `max_bytes` new bytes), then the whole DAG. InputsUnavailable, naming `what`, when it cannot
    be had."""
    await blocks.pin(owner, cid)
    if await blocks.walk_missing(cid):
        try:
            await fetch_dag(cid, providers, pin=owner, progress=progress, max_bytes=max_bytes)
        except Exception as exc:  # BlocksUnavailable, BlockStoreFull, a bad block: cannot run
            raise InputsUnavailable(f"{what} could not be fetched: {exc or type(exc).__name__}") from None
        await blocks.pin(owner, cid)


def open_up(path: Path) -> None:
    """Directories 0755, files 0644 under `path` (and `path` itself): readable by the job's uid."""
    os.chmod(path, 0o755)
    for where, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(where, name), 0o755)
        for name in files:
            os.chmod(os.path.join(where, name), 0o644)


def job_inputs(ports, settings) -> "JobInputs | None":
    """The JobInputs of a role, on its ports' block store (`Ports.content`; None without one)."""
    content = getattr(ports, "content", None)
    if content is None:
        return None
    # Absolute: the sandbox takes only an absolute in_dir, and --data-dir may be relative.
    inputs_dir = settings.data_dir.absolute() / "inputs" if settings.data_dir is not None else None
    return JobInputs(content.blocks, content.fetch_dag, ports.transport.connected_peers, inputs_dir,
                     content.announce, content.transfers)


class JobInputs:
    def __init__(self, blocks, fetch_dag: FetchDag, connected: Callable[[], list[str]],
                 inputs_dir: Path | None, announce: Callable[[bytes], None] = lambda cid: None,
                 transfers: Transfers | None = None) -> None:
        self.blocks = blocks
        self.transfers = transfers if transfers is not None else Transfers()
        self.fetch_dag = fetch_dag
        self.connected = connected
        self.inputs_dir = inputs_dir
        self.announce = announce
        self._whole: dict[bytes, int] = {}  # root -> the store's eviction count when found whole

    # --- submitting ------------------------------------------------------------------------------

    async def prepare(self, spec: JobSpec, local: list[tuple[str, str]]) -> JobSpec:
        """The spec with every input's CID and size: its CID inputs fetched (from the connected
        peers) and sized, then each (path, name) of `local` imported, all pinned for the
        submission. ValueError for a path that cannot be imported, InputsUnavailable for a CID
        nobody serves, BlockStoreFull."""
        owner = submission_owner(spec)
        inputs = []
        for cid, path, _ in spec.inputs:
            if await self.blocks.walk_missing(cid):
                try:
                    await self.fetch_dag(cid, self.connected(), pin=owner)
                except BlockStoreFull:
                    raise
                except Exception as exc:  # BlocksUnavailable, a peer gone, a bad block: no DAG
                    raise InputsUnavailable(f"input {path}: {cid_text(cid)} could not be fetched from the "
                                            f"connected peers ({exc or type(exc).__name__})") from None
            await self.blocks.pin(owner, cid)
            inputs.append((cid, path, await dag_size(self.blocks, cid)))
        for source, name in local:
            with self.transfers.track("import", name) as progress:
                cid, size = await self.blocks.add_path(Path(source), pin=owner, progress=progress)
            inputs.append((cid, name, size))
        for cid, _, _ in inputs:
            self.announce(cid)
        return replace(spec, inputs=tuple(inputs))

    async def sweep_submissions(self, live: set[str]) -> list[str]:
        """At start, before any submission: unpin each `submission:` owner not in `live`; those."""
        stale = [o for o in await self.blocks.owners("submission:") if o not in live]
        for owner in stale:
            await self.blocks.unpin(owner)
        return stale

    async def release_submission(self, spec: JobSpec) -> None:
        """The submission's job has its certificate, or was refused: its inputs may be evicted."""
        await self.blocks.unpin(submission_owner(spec))

    # --- bidding ---------------------------------------------------------------------------------

    async def held(self, spec: JobSpec) -> int:
        """File bytes of `spec`'s inputs whose whole DAG is in the store."""
        total = 0
        for cid, _, size in spec.inputs:
            try:
                if await self._holds(cid):
                    total += size
            except Exception:  # a damaged block here (BadBlock): not held, never a failed bid
                continue
        return total

    async def _holds(self, root: bytes) -> bool:
        evicted = self.blocks.stats()["evicted"]
        if self._whole.get(root) == evicted:
            return True
        if not await self.blocks.has(root) or await self.blocks.walk_missing(root):
            return False
        if len(self._whole) > 4096:
            self._whole.clear()
        self._whole[root] = evicted
        return True

    def room(self) -> int:
        """Bytes the store can still take for a job's inputs: its cap less what is pinned."""
        stats = self.blocks.stats()
        return max(0, stats["max_bytes"] - stats["pinned_bytes"])

    # --- executing -------------------------------------------------------------------------------

    def run_dir(self, job_hex: str) -> Path:
        assert self.inputs_dir is not None
        return self.inputs_dir / job_hex

    async def fetch(self, job_hex: str, spec: JobSpec, providers: list[str]) -> Path:
        """Every input of the job in the store (pinned `inputs:JOB`) and written out under a fresh
        `inputs_dir/JOB/`; that directory. InputsUnavailable when a block cannot be had."""
        owner = run_owner(job_hex)
        progress = Progress()
        started = time.monotonic()
        for cid, path, size in spec.inputs:
            await present_for_run(self.blocks, self.fetch_dag, cid, providers, owner, size_bound(size),
                                  f"input {path} ({cid_text(cid)})", progress)
            actual = await dag_size(self.blocks, cid)
            if actual != size:  # every honest executor refuses a spec that misstates its inputs
                raise InputsUnavailable(f"input {path} holds {actual} bytes, the job's spec says {size}")
            self.announce(cid)
        fetched = time.monotonic()
        top = self.run_dir(job_hex)
        await self.remove_dir(job_hex)  # a run cut short left it half written
        await trio.to_thread.run_sync(lambda: top.mkdir(parents=True))
        for cid, path, _ in spec.inputs:
            dest = top / path
            await trio.to_thread.run_sync(lambda: dest.parent.mkdir(parents=True, exist_ok=True))
            try:
                await self.blocks.export(cid, dest)
            except (LookupError, MissingBlock) as exc:  # evicted under us, which the pin prevents
                raise InputsUnavailable(f"input {path}: a block went missing ({exc!r})") from None
        await trio.to_thread.run_sync(open_up, top)
        fetch_s, write_s = fetched - started, time.monotonic() - fetched
        log.info("job %s inputs fetched: %d bytes in %d blocks in %.3f s (%d blocks held), written out in %.3f s",
                 job_hex[:12], progress.bytes, progress.blocks, fetch_s, progress.held, write_s,
                 extra={"job_id": job_hex, "event": "inputs_fetched", "role": "executor", "bytes": progress.bytes,
                        "blocks": progress.blocks, "held_blocks": progress.held, "fetch_s": round(fetch_s, 4),
                        "write_s": round(write_s, 4)})
        return top

    async def remove_dir(self, job_hex: str) -> None:
        if self.inputs_dir is None:
            return
        top = self.run_dir(job_hex)
        if top.exists():
            await trio.to_thread.run_sync(shutil.rmtree, top)

    async def release(self, job_hex: str) -> None:
        """The job ended here: its inputs may be evicted (they stay while there is room: locality),
        and what a run stopped mid-fetch left in `inputs_dir/JOB/` goes."""
        with trio.CancelScope(shield=True):
            await self.blocks.unpin(run_owner(job_hex))
            await self.remove_dir(job_hex)
