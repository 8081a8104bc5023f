"""Serving and fetching output files and blobs by SHA-256, for the agent.

Contract: `handle_blob` answers a peer's blob request (a wasm module this node holds, or an output
file of a job it ran, read under a pin so retention skips it and re-hashed before it is sent);
`fetch_output` / `fetch_outputs` fetch a verified job's output files from its agreeing executors,
each checked against the certified manifest's SHA-256. It reaches the node through what it is
given: the store, the outputs dir, the pins, `deliver` (Agent.deliver) and `job_status`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Awaitable, Callable

import trio

from distributeai.consensus.codec import sha256
from distributeai.consensus.errors import LocalProtocolError, RemoteProtocolError
from distributeai.consensus.names import BLOB_PROTOCOL
from distributeai.p2p.identity import public_key_from_peer_id
from distributeai.p2p.overlay import RemoteError

from . import wire
from .inbound import decode_blob_request
from .retention import Pins
from .store import Store

log = logging.getLogger("distributeai.node")


class OutputsServing:
    def __init__(self, store: Store, outputs_dir: Path | None, pins: Pins,
                 deliver: Callable[[bytes, str, bytes], Awaitable[bytes]],
                 job_status: Callable[[str], Awaitable[dict | None]]) -> None:
        self.store = store
        self.outputs_dir = outputs_dir
        self.pins = pins
        self.deliver = deliver
        self.job_status = job_status

    async def handle_blob(self, peer: str, data: bytes) -> bytes:
        """Serve a blob this node holds (a wasm module of one of its jobs) by its SHA-256."""
        digest = decode_blob_request(data)
        blob = await self.store.get_blob(digest.hex())
        if blob is None:
            blob = await self._read_output(digest.hex())
        if blob is None:
            raise RemoteProtocolError("unknown_blob", "no such blob here")
        return wire.ok(blob)

    async def _read_output(self, digest: str) -> bytes | None:
        """An output file of a job this node ran, if it still has it and it still hashes right."""
        found = await self.store.find_output(digest)
        if found is None or self.outputs_dir is None:
            return None
        path = self.outputs_dir / found[0] / found[1]
        try:
            with self.pins.hold(found[0]):  # retention skips it while (and just after) it is served
                data = await trio.to_thread.run_sync(path.read_bytes)
        except OSError:
            return None
        return data if sha256(data).hex() == digest else None

    async def fetch_output(self, job_hex: str, path: str) -> bytes:
        """One verified output file of a job, fetched by its SHA-256 from an agreeing executor and
        checked against the certified manifest (LocalProtocolError if none serves it)."""
        view = await self.job_status(job_hex)
        if view is None or view["status"] != "verified":
            raise LocalProtocolError("not_verified", "only a verified job's outputs can be fetched")
        entry = next((f for f in view.get("files", []) if f["path"] == path), None)
        if entry is None:
            raise LocalProtocolError("no_such_output", f"the job has no output file {path!r}")
        for peer in [e["peer_id"] for e in view["executors"] if e["agreed"]]:
            try:
                blob = await self.deliver(public_key_from_peer_id(peer), BLOB_PROTOCOL, bytes.fromhex(entry["sha256"]))
            except (RemoteError, RemoteProtocolError) as exc:
                log.info("output %s not served by %s: %s", path, peer, exc)
                continue
            if sha256(blob).hex() == entry["sha256"]:
                return blob
        raise LocalProtocolError("unavailable", f"no agreeing executor served {path}")

    async def fetch_outputs(self, job_hex: str, out_dir: Path) -> tuple[list[dict], list[dict]]:
        """Write the verified output files of a job into `out_dir` (each as `fetch_output`): every
        file that can be had is written; (written, failed), each failure with its reason."""
        view = await self.job_status(job_hex)
        if view is None or view["status"] != "verified":
            raise LocalProtocolError("not_verified", "only a verified job's outputs can be fetched")
        written, failed = [], []
        for f in view.get("files", []):
            target = (out_dir / f["path"]).resolve()
            try:
                if out_dir.resolve() not in target.parents:
                    raise LocalProtocolError("bad_path", f"output path {f['path']!r} leaves the directory")
                data = await self.fetch_output(job_hex, f["path"])
                target.parent.mkdir(parents=True, exist_ok=True)
                await trio.to_thread.run_sync(target.write_bytes, data)
            except LocalProtocolError as exc:
                failed.append({"path": f["path"], "size": f["size"], "reason": exc.reason, "error": str(exc)})
                continue
            except OSError as exc:
                failed.append({"path": f["path"], "size": f["size"], "reason": "write_failed",
                               "error": f"cannot write {target}: {exc.strerror or exc}"})
                continue
            written.append({"path": f["path"], "size": len(data), "sha256": f["sha256"], "written_to": str(target)})
        return written, failed
