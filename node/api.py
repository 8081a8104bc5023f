"""The node's REST API (`node start --api HOST:PORT`): the seed's endpoints, served by the node itself.

There is no coordinator: the local node signs and announces the jobs its user POSTs, and answers
for what it knows. Routes (the OpenAPI document, `api_schema.py`, is served at /openapi.json):

    POST /api/v1/jobs                       a job file (the seed's JSON, or ours) -> 201, the job object
    GET  /api/v1/jobs[?limit&offset&status&role]  -> {"jobs", "total", "limit", "offset"}, newest first
    GET  /api/v1/jobs/{id}                  the job object (`job status --json`, plus "id")
    GET  /api/v1/jobs/{id}/result           the verified stdout, exit code, result hash, output files and
                                            outputs (quota status, skipped entries)
    GET  /api/v1/jobs/{id}/outputs/{path}   one verified output file's bytes, streamed (any size), its blocks
                                            fetched by CID from the agreeing executors
    POST /api/v1/blobs[?name=]              a file's bytes (the body, streamed, up to the store's cap) -> 201
                                            {"cid", "size", "announced"}: imported and pinned as `blob add`
    GET  /api/v1/blobs                      the blobs added or fetched here (`blob ls`): {"blobs": [...]}
    GET  /api/v1/blobs/{cid}                a file's bytes, streamed, fetched first if not held (`blob get`)
    GET  /api/v1/nodes                      the peers this node knows: reputation, connected, last seen
    GET  /stats (also /api/v1/stats)        this node's view of the network's totals
    GET  /openapi.json

Contract:
- Every error is JSON `{"error": message[, "field": name]}` with a 4xx status: 400 (a field, named),
  404 (no such job, file or route), 405 (method), 409 (the job is not verified yet), 413 (a body over
  `MAX_BODY`, answered by p2p/http.py before this runs). 502 only when a verified output file cannot
  be had (no agreeing executor serves its blocks, or the block store has no room for them). An
  output file is fetched into the block store (verified block by block) before its answer starts,
  then streamed from there (p2p/http.py `Streamed`, with its Content-Length): never held whole. A
  fetch takes as long as it keeps moving: the request's deadline (node/daemon.py, API_DEADLINE_S)
  counts from the last KEEP_ALIVE_S in which it brought bytes; one that stalls that long is cut,
  and asking again resumes with the blocks already here.
- A POST is checked whole (JSON, then `consensus.jobfile.parse_job`, which names the field) before
  anything is signed or sent: nothing reaches the network from a rejected request.
- Blobs (node/blobs.py's rules): an upload is read as it arrives (p2p/http.py `streamed_bodies`:
  `streamed_body` names the route and its limit, the block store's cap: a larger Content-Length is
  413 before anything is read) and imported block by block (`BlockStore.add_stream`); it is never
  held whole. A GET fetches the DAG into the store first (the connected peers, then the DHT's
  providers; pinned `blob:CID` as `blob get` does), then streams it with its Content-Length. A
  directory's CID is 400 (field `cid`: `blob get --out DIR` writes directories); a malformed CID
  400 (field `cid`); a CID no peer serves 404 with the reason; no room for it here 502. An upload
  the store cannot hold (pinned blocks fill its cap) is 507; a full disk 503.
- Off loopback the listener asks for a bearer token (p2p/httpauth.py, as /metrics does).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio

from distributeai.consensus.cid import BadCid, cid_text, parse_cid_text
from distributeai.consensus.errors import JobFileError, LocalProtocolError
from distributeai.consensus.jobfile import load_job_document, parse_job
from distributeai.consensus.messages import JobSpec, encode_body, sign
from distributeai.consensus.unixfs import BadBlock, decode_block
from distributeai.p2p.http import Request, Response, Streamed, json_response
from distributeai.p2p.identity import public_key_from_peer_id

from .api_schema import openapi_document
from .clock import now_ms
from .outputs_serving import read_file
from .sqlitefile import StoreFull

if TYPE_CHECKING:
    from .agent import Agent

MAX_BODY = 1 << 20  # a job file: consensus/jobfile.py MAX_JOB_FILE; a wasm module in base64 fits
DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET = 50, 500, 1 << 31
JOB_STATUSES = ("announced", "bidding", "running", "verified", "failed", "nondeterministic")
ROLES = ("submitter", "executor", "observer")
SANDBOX_KINDS = ("container", "wasm")
_JOB_ID = re.compile(r"[0-9a-f]{64}")
MAX_BLOB_NAME = 255  # ?name= of an upload: a file name, shown by `blob ls`
KEEP_ALIVE_S = 2.0  # how often a GET that fetches first looks whether its fetch still moves


# What GET .../result answers: the verified result, what the job did (limits, exit code), its
# certified stderr and its output files.
RESULT_KEYS = ("id", "job_id", "status", "exit_code", "timed_out", "oom_killed", "timeout_s", "memory_mb", "stdout",
               "stdout_truncated", "stdout_size", "stderr", "stderr_part", "stderr_truncated", "result_hash", "files",
               "outputs", "verification", "executors_run", "rejected", "verification_note")


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or []

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return (*json_response(self.status, body), self.headers)


class RestApi:
    """`await api(request)` -> (status, content type, body); never raises for any request."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self._schema = json.dumps(openapi_document()).encode()

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except ApiError as exc:
            return exc.response()

    async def _route(self, r: Request) -> Response:
        path = r.path.rstrip("/") or "/"
        parts = path.strip("/").split("/")
        if path == "/openapi.json":
            self._method(r, "GET")
            return 200, "application/json", self._schema
        if path in ("/stats", "/api/v1/stats"):
            self._method(r, "GET")
            return json_response(200, await self.stats())
        if path == "/api/v1/nodes":
            self._method(r, "GET")
            return json_response(200, await self.nodes())
        if path == "/api/v1/jobs":
            if self._method(r, "GET", "POST") == "POST":
                return json_response(201, await self.submit(r.body))
            return json_response(200, await self.list_jobs(r.query))
        if path == "/api/v1/blobs":
            if self._method(r, "GET", "POST") == "POST":
                return json_response(201, await self.upload(r))
            return json_response(200, {"blobs": await self._blobs().ls()})
        if parts[:3] == ["api", "v1", "blobs"] and len(parts) == 4:
            self._method(r, "GET")
            return await self.blob(parts[3], r.keep_alive)
        if parts[:3] == ["api", "v1", "jobs"] and len(parts) >= 4:
            self._method(r, "GET")
            job_hex = _job_id(parts[3])
            if len(parts) == 4:
                return json_response(200, await self.job(job_hex))
            if len(parts) == 5 and parts[4] == "result":
                return json_response(200, await self.result(job_hex))
            if len(parts) >= 6 and parts[4] == "outputs":
                return await self.output(job_hex, "/".join(parts[5:]), r.keep_alive)
        raise ApiError(404, f"no route {r.path[:200]!r}")

    @staticmethod
    def _method(r: Request, *allowed: str) -> str:
        method = "GET" if r.method == "HEAD" else r.method
        if method not in allowed:
            raise ApiError(405, f"method {r.method[:16]} not allowed here; use {' or '.join(allowed)}",
                           headers=[("allow", ", ".join([*allowed, "HEAD"] if "GET" in allowed else allowed))])
        return method

    # --- jobs ---------------------------------------------------------------------------------

    async def submit(self, body: bytes) -> dict:
        """Check the job file whole, then sign it with the node's key and announce it."""
        try:
            doc = load_job_document(body)
        except JobFileError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        if not isinstance(doc, dict):
            raise ApiError(400, "the body must be a JSON object (a job file)", "job")
        doc = dict(doc)
        kind = doc.pop("sandbox", None)
        if kind is not None and kind not in SANDBOX_KINDS:
            raise ApiError(400, f"sandbox must be one of {', '.join(SANDBOX_KINDS)}", "sandbox")
        if "wasm_module" in doc:
            doc["wasm_module"] = _base64(doc["wasm_module"], "wasm_module")
        if kind == "wasm" and "wasm_module" not in doc:
            raise ApiError(400, "a wasm job needs wasm_module (the module's bytes, base64)", "wasm_module")
        if kind == "container" and "wasm_module" in doc:
            raise ApiError(400, "a container job takes no wasm_module", "wasm_module")
        try:
            fields = parse_job(doc)
        except JobFileError as exc:
            raise ApiError(400, str(exc), exc.field) from None
        a = self.agent
        spec = JobSpec(submitter=a.me, nonce=os.urandom(16), created_ms=now_ms(), **fields)
        module = doc.get("wasm_module") if spec.wasm_cid else None
        try:
            if spec.inputs:  # by CID: the node sizes each (fetched whole from its peers) before signing
                job_id = await a.submit_unsigned(encode_body(spec), module)
            else:
                job_id = await a.submit(sign(a.identity, spec), module)
        except LocalProtocolError as exc:
            if exc.reason in ("bad_inputs", "inputs_unavailable"):
                raise ApiError(400 if exc.reason == "bad_inputs" else 409, str(exc), "inputs") from None
            if exc.reason == "insufficient_credits":
                raise ApiError(409, str(exc), "price") from None
            if exc.reason == "too_few_nodes":  # the network as this node sees it now
                raise ApiError(409, str(exc), "quorum") from None
            if exc.reason == "store_full":  # the node's disk, not the request: try again later
                raise ApiError(503, str(exc), None, [("retry-after", "60")]) from None
            raise ApiError(400, str(exc), "job") from None
        return await self.job(job_id.hex())

    async def job(self, job_hex: str) -> dict:
        view = await self.agent.job_status(job_hex)
        if view is None:
            raise ApiError(404, f"no job {job_hex} known to this node", "id")
        return {"id": job_hex, **view}

    async def list_jobs(self, query: dict[str, str]) -> dict:
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(query, "offset", 0, 0, MAX_OFFSET)
        status = _choice_param(query, "status", JOB_STATUSES)
        role = _choice_param(query, "role", ROLES)
        total, rows = await self.agent.page_jobs(role, status, offset, limit)
        jobs = []
        for row in rows:
            view = await self.agent.job_status(row["job_id"])
            if view is not None:
                jobs.append({"id": row["job_id"], **view})
        return {"jobs": jobs, "total": total, "limit": limit, "offset": offset}

    async def result(self, job_hex: str) -> dict:
        view = await self.job(job_hex)
        if view["status"] != "verified":
            raise ApiError(409, f"job {job_hex} is {view['status']}, not verified", "id")
        return {k: view.get(k) for k in RESULT_KEYS}

    async def output(self, job_hex: str, path: str, keep_alive: Callable[[], None]) -> Response:
        view = await self.result(job_hex)
        entry = next((f for f in view.get("files") or [] if f["path"] == path), None)
        if entry is None:
            raise ApiError(404, f"job {job_hex} has no output file {path[:200]!r}", "path")
        try:
            size, chunks = await self._fetching(entry.get("cid") or "", keep_alive,
                                                self.agent.outputs.open_output(job_hex, path))
        except LocalProtocolError as exc:
            raise ApiError(502, str(exc), "path") from None
        return 200, "application/octet-stream", Streamed(chunks, size)

    # --- blobs ---------------------------------------------------------------------------------

    def streamed_body(self, method: str, path: str) -> int | None:
        """p2p/http.py's `streamed_bodies`: an upload's body is read as it arrives, up to the
        block store's cap; every other body whole, up to MAX_BODY."""
        if method == "POST" and path.rstrip("/") == "/api/v1/blobs" and self.agent.blocks is not None:
            return self.agent.blocks.max_bytes
        return None

    def _blobs(self):
        if self.agent.blobs is None:
            raise ApiError(404, "this node keeps no block store")
        return self.agent.blobs

    async def upload(self, r: Request) -> dict:
        """Import the body as one file, pinned `blob:CID` and announced (as `blob add`)."""
        blobs = self._blobs()
        name = r.query.get("name", "")
        if len(name) > MAX_BLOB_NAME or not name.isprintable() or "/" in name:
            raise ApiError(400, f"name must be at most {MAX_BLOB_NAME} printable characters, no '/'", "name")
        try:
            return await blobs.add_stream(r.stream if r.stream is not None else _once(r.body), name)
        except LocalProtocolError as exc:  # store_full: pinned blocks fill the store's cap
            raise ApiError(507, str(exc)) from None
        except StoreFull as exc:
            raise ApiError(503, f"the node's disk is full: {exc}", None, [("retry-after", "60")]) from None

    async def _fetching(self, cid: str, keep_alive: Callable[[], None], work: Awaitable[Any]) -> Any:
        """Await `work` (which fetches the DAG `cid` names), keeping the connection alive
        (p2p/http.py `Request.keep_alive`) each KEEP_ALIVE_S that its fetch (in the node's
        transfers) brought more bytes: a large file takes as long as it needs, a stalled one is
        cut at the connection's deadline."""
        async def watch() -> None:
            last = 0
            while True:
                await trio.sleep(KEEP_ALIVE_S)  # a poll of the transfers' counters
                moved = sum(r["bytes"] for r in self.agent.transfers.rows() if r["cid"] == cid)
                if moved > last:
                    keep_alive()
                last = moved

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            try:
                return await work
            finally:
                nursery.cancel_scope.cancel()

    async def blob(self, text: str, keep_alive: Callable[[], None] = lambda: None) -> Response:
        """A file's bytes by CID, streamed from the block store once its DAG is here."""
        blobs = self._blobs()
        try:
            root = parse_cid_text(text)
        except BadCid as exc:
            raise ApiError(400, f"not a CID: {exc}", "cid") from None
        try:
            progress, _ = await self._fetching(cid_text(root), keep_alive, blobs.present(root))
        except LocalProtocolError as exc:
            raise ApiError(404 if exc.reason == "unavailable" else 502, str(exc), "cid") from None
        block = await self.agent.blocks.get(root)
        try:
            if block is None:
                raise BadBlock("its root block is gone")
            node = decode_block(root, block)
        except BadBlock as exc:
            raise ApiError(502, f"{cid_text(root)}: {exc}", "cid") from None
        if node.kind == "directory":
            raise ApiError(400, f"{cid_text(root)} is a directory; `blob get CID --out DIR` writes directories",
                           "cid")
        if progress.blocks:  # fetched here: listed by `blob ls`, as `blob get` lists it
            await self.agent.blocks.record_root(root, "", node.content_size)
        return 200, "application/octet-stream", Streamed(read_file(self.agent.blocks, root), node.content_size)

    # --- the network, as this node sees it ----------------------------------------------------

    async def nodes(self) -> dict:
        a = self.agent
        seen = await a.peers_last_seen()
        connected = set(a.overlay.connected_peers())
        known = {p["peer_id"]: p for p in a.peers()}
        peers = []
        for peer_id in sorted(set(known) | set(seen)):
            pk = public_key_from_peer_id(peer_id)
            peers.append({
                "peer_id": peer_id,
                "addrs": known.get(peer_id, {}).get("addrs", []),
                "connected": peer_id in connected,
                "bootstrap": peer_id in a.settings.bootstrap_peers,
                "reputation": a.ledger.reputation_of(pk) if pk is not None else None,
                "credits": a.ledger.balance(pk) if pk is not None else None,
                "last_seen_ms": now_ms() if peer_id in connected else seen.get(peer_id),
            })
        return {"self": a.peer_id, "nodes": peers, "total": len(peers)}

    async def stats(self) -> dict:
        a = self.agent
        counts = await a.job_counts()
        total = sum(counts.values())
        finished = sum(counts.get(s, 0) for s in ("verified", "failed", "nondeterministic"))
        return {
            "peer_id": a.peer_id,
            # Nodes: this one and its peers, bootstraps aside (they seed discovery and run nothing).
            "active_nodes": len(a.submitting.node_peers()) + 1,
            "known_nodes": len(set(await a.peers_last_seen()) - a.settings.bootstrap_peers) + 1,
            "total_jobs": total,
            "completed_jobs": counts.get("verified", 0),
            "failed_jobs": counts.get("failed", 0) + counts.get("nondeterministic", 0),
            "pending_jobs": total - finished,
            "jobs_by_status": counts,
            "identities_with_reputation": len(a.ledger.reputation),
            "reputation": a.ledger.reputation_of(a.me),
            "credits": a.ledger.balance(a.me),
            "jobs_running_here": a.jobs_running,
        }


async def _once(body: bytes):
    yield body


def _job_id(text: str) -> str:
    job_hex = text.lower()
    if not _JOB_ID.fullmatch(job_hex):
        raise ApiError(400, "a job id is 64 hexadecimal characters", "id")
    return job_hex


def _int_param(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    if name not in query:
        return default
    text = query[name]
    if not (text.isascii() and text.isdigit()) or len(text) > 12 or not lo <= int(text) <= hi:
        raise ApiError(400, f"{name} must be an integer from {lo} to {hi}", name)
    return int(text)


def _choice_param(query: dict[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}", name)
    return value


def _base64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a base64 string", name)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{name} is not valid base64", name) from None
