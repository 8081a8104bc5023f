"""The control API: how `distributeai submit`, `job status` and `node info` talk to a running node.

It listens only on a Unix socket, `DATA_DIR/control.sock`, created with mode 0600: only the user who
owns the data directory (and its key) can use it (another uid gets EACCES at connect; root excepted,
as for every file). Whoever can connect controls the node: it can have the node sign and announce
job specs paid from the node's credits (never any other message), but it can never read the key. One request per connection: a JSON object on one
line, answered with a JSON object on one line. Requests are capped at MAX_REQUEST bytes.

    {"op": "info"}                                   -> node info
    {"op": "submit", "signed_spec": HEX[, "module": HEX]} -> {"job_id": HEX}
                                                        (module: a wasm module too large to travel in the spec)
    {"op": "submit", "spec": HEX[, "module": HEX][, "inputs": [{"path": ABS, "name": NAME}, ...]]}
                                                     -> {"job_id": HEX}: the node signs the spec (canonical
                                                        body, naming this node as submitter) with its key;
                                                        how `distributeai submit` works, so that the CLI never
                                                        opens the key file (which may be encrypted). Before
                                                        signing, it imports each input path into its block
                                                        store (shown to the job at /in/NAME) and fills in the
                                                        size of each input the spec names by CID (fetched
                                                        whole from its peers): node/job_inputs.py
    {"op": "status", "job_id": HEX}                  -> job view (every op's job_id may be a unique prefix
                                                        of 8 or more hex digits; an ambiguous one is
                                                        answered with code "ambiguous_job" and "candidates")
    {"op": "wait", "job_id": HEX, "timeout": SECS}   -> job view once verified/failed (or at timeout)
    {"op": "list"}                                   -> {"jobs": [job view, ...]}
    {"op": "credits"}                                -> {"balance", "genesis", "transfers": [...]}
    {"op": "reputation"}                             -> {"reputation": {peer id: value}, "trust": {peer id:
                                                        {runtime class hex: consecutive valid results}}}
    {"op": "peers"}                                  -> {"peers": [{peer_id, addrs, connected, reputation}]}
    {"op": "cancel", "job_id": HEX}                  -> job view (failed, "cancelled"); only the submitter's node
    {"op": "result", "job_id": HEX[, "out": DIR]}    -> verified stdout, stderr, exit code, limits hit,
                                                        files, outputs (quota, skipped entries); with DIR, "written" (each file
                                                        fetched by SHA-256 from an agreeing executor) and
                                                        "not_fetched" (each file that could not be, why)
    {"op": "tasks", "job_id": HEX[, "start": N, "limit": N]} -> {"total", "tasks": [per-task verdict,
                                                        args, exit code, stdout]} of a batch job
    {"op": "stored_peers"}                           -> {"peers": [peer id, ...]} remembered for restarts
    {"op": "find_peers", "peer_ids": [ID, ...][, "lookup": true]}
                                                     -> {"found": {peer id: {"addrs", "how"}}, "not_found": [...]}
                                                        resolved as a request would (known addrs, else a DHT
                                                        lookup); "lookup": always a DHT lookup through the network
    {"op": "blob_add", "path": PATH}                 -> {"cid", "size", "announced"}: a file or directory (a path
                                                        on this host) into the block store, pinned (node/blobs.py)
    {"op": "blob_get", "cid": CID, "out": PATH[, "providers": [ID, ...]]}
                                                     -> {"cid", "size", "written_to", "fetched_blocks", ...}
    {"op": "blob_ls"}                                -> {"blobs": [{"cid", "name", "size", "added"}]}
    {"op": "transfers"}                              -> {"transfers": [{"id", "kind", "name", "cid", "bytes", "total",
                                                        "blocks", "held", "seconds", "rate", "providers"}]}: the
                                                        imports and fetches in progress (node/transfer.py Transfers)
Errors: {"error": "message", "code": "reason"}. Every argument is checked before any op runs
(control_request.py); a malformed request is answered with code "bad_request" and counted in
`rejected` (reason "control_bad_request"); nothing a client sends ends the node.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from typing import TYPE_CHECKING

import trio

from distributeai.consensus.errors import LocalProtocolError

from .control_request import (
    CANDIDATES_SHOWN, FIND_PEERS_MAX, MAX_REQUEST, REJECT_REASON, BadRequest, check_request, decode_line,
    job_id_problem, resolve_job_id,
)

if TYPE_CHECKING:  # the CLI imports `call` from here and must not load libp2p for it
    from .agent import Agent

log = logging.getLogger("distributeai.node.control")


async def _read_line(stream: trio.SocketStream) -> bytes:
    buf = bytearray()
    while b"\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too large")
    return bytes(buf.split(b"\n", 1)[0])


async def resolve_job(agent: Agent, given: str) -> tuple[str | None, dict | None]:
    """(the full id of the job `given` names, None) or (None, error answer): every op that
    takes a job id accepts a unique prefix of at least 8 hex digits of it (control_request)."""
    problem = job_id_problem(given)
    if problem is not None:
        return None, problem
    return resolve_job_id(given, await agent.store.job_ids_with_prefix(given, CANDIDATES_SHOWN + 1))


async def _dispatch(agent: Agent, request: dict) -> dict:
    """Answer one request object; BadRequest (a ValueError) if it is malformed."""
    req = check_request(request)
    op = req["op"]
    if "job_id" in req:
        req["job_id"], problem = await resolve_job(agent, req["job_id"])
        if problem is not None:
            return problem
    if op == "info":
        return agent.info()
    if op == "submit":
        try:
            if req.get("spec") is not None:
                job_id = await agent.submit_unsigned(req["spec"], req["module"], req["inputs"])
            else:
                job_id = await agent.submit(req["signed_spec"], req["module"])
        except LocalProtocolError as exc:
            return {"error": str(exc), "code": exc.reason}
        return {"job_id": job_id.hex()}
    if op in ("status", "wait"):
        job_hex = req["job_id"]
        if op == "wait":
            view = await agent.wait_job(job_hex, req["timeout"])
        else:
            view = await agent.job_status(job_hex)
        return view if view is not None else {"error": f"no job {job_hex} known to this node", "code": "unknown_job"}
    if op == "peers":
        return {"peers": agent.peers()}
    if op == "cancel":
        job_hex = req["job_id"]
        try:
            await agent.cancel(bytes.fromhex(job_hex))
        except LocalProtocolError as exc:
            return {"error": str(exc), "code": exc.reason}
        return await agent.job_status(job_hex)
    if op == "result":
        job_hex = req["job_id"]
        view = await agent.job_status(job_hex)
        if view is None:
            return {"error": f"no job {job_hex} known to this node", "code": "unknown_job"}
        if view["status"] != "verified":
            return {"error": f"job {job_hex} is {view['status']}, not verified", "code": "not_verified"}
        answer = {k: view.get(k) for k in ("job_id", "status", "exit_code", "stdout", "result_hash", "files",
                                           "outputs", "timed_out", "timeout_s", "oom_killed", "memory_mb",
                                           "stdout_truncated", "stdout_size", "stderr", "stderr_part",
                                           "stderr_truncated", "sandbox", "verification", "executors_run",
                                           "rejected", "verification_note")}
        if "out" in req:
            try:
                answer["written"], answer["not_fetched"] = await agent.outputs.fetch_outputs(job_hex, Path(req["out"]))
            except LocalProtocolError as exc:
                return {"error": str(exc), "code": exc.reason}
        return answer
    if op == "tasks":
        job_hex = req["job_id"]
        answer = await agent.task_results(job_hex, req["start"], req["limit"])
        return answer if answer is not None else {"error": f"no job {job_hex} known to this node",
                                                  "code": "unknown_job"}
    if op == "stored_peers":
        return {"peers": await agent.stored_peers(limit=1000)}
    if op == "find_peers":
        return await _find_peers(agent, req["peer_ids"], req["lookup"])
    if op == "transfers":  # imports and fetches in progress: [] on a node without a block store
        return {"transfers": agent.transfers.rows()}
    if op in ("blob_add", "blob_get", "blob_ls"):
        return await _blob_op(agent, req)
    if op in ("credits", "reputation"):
        from .ledger_views import credits_view, reputation_view, trust_view  # loads libp2p: not at the CLI's import
        if op == "credits":
            return credits_view(agent.ledger, agent.me)
        return {"reputation": reputation_view(agent.ledger), "trust": trust_view(agent.ledger)}
    assert op == "list", op  # check_request admits only the ops above
    rows = await agent.recent_jobs(req["limit"])
    return {"jobs": [await agent.job_status(r["job_id"]) for r in rows]}


async def _blob_op(agent: Agent, req: dict) -> dict:
    if agent.blobs is None:
        return {"error": "this node has no block store", "code": "no_block_store"}
    try:
        if req["op"] == "blob_add":
            return await agent.blobs.add(Path(req["path"]))
        if req["op"] == "blob_get":
            return await agent.blobs.get(req["cid"], Path(req["out"]), req["providers"])
    except LocalProtocolError as exc:
        return {"error": str(exc), "code": exc.reason}
    return {"blobs": await agent.blobs.ls()}


FIND_PEERS_PARALLEL = 4  # lookups at once: each queries 3 peers at a time, and a peer serves 12 DHT streams at once


async def _find_peers(agent: Agent, ids: list[str], lookup: bool) -> dict:
    found: dict[str, dict] = {}
    limiter = trio.CapacityLimiter(FIND_PEERS_PARALLEL)

    async def one(peer_id: str) -> None:
        async with limiter:
            answer = await agent.overlay.find_peer(peer_id, lookup=lookup)
        if answer is not None:
            found[peer_id] = {"addrs": answer[0], "how": answer[1]}

    for peer_id in ids:  # all malformed ids are refused before any lookup starts
        try:
            agent.overlay.check_peer_id(peer_id)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    async with trio.open_nursery() as nursery:
        for peer_id in ids:
            nursery.start_soon(one, peer_id)
    return {"found": found, "not_found": [p for p in ids if p not in found]}


async def serve_control(agent: Agent, path: Path, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    if path.exists():
        path.unlink()  # a socket left by a killed node; the data dir's lock guards against two nodes
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window in which others could connect
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(64)
    listener = trio.SocketListener(sock)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            answer = await answer_line(agent, stream)
            try:
                await stream.send_all(json.dumps(answer).encode() + b"\n")
            except trio.BrokenResourceError:
                pass  # the client went away (e.g. Ctrl-C while waiting)

    await trio.serve_listeners(handle, [listener], task_status=task_status)


async def answer_line(agent: Agent, stream: trio.SocketStream) -> dict:
    """Read one request line and answer it. A malformed request is answered with code
    bad_request and counted (`agent.reject`); nothing a client sends can end the node: any other
    failure is logged and answered with code "internal" (a bug to fix, not a reason to stop)."""
    try:
        try:
            line = await _read_line(stream)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return await _dispatch(agent, decode_line(line))
    except BadRequest as exc:
        agent.reject(REJECT_REASON, str(exc)[:200])
        return {"error": f"bad request: {exc}", "code": BadRequest.reason}
    except trio.BrokenResourceError:
        return {"error": "the client went away", "code": "closed"}
    except Exception as exc:  # task boundary: one connection's failure must not stop the node
        log.exception("control request failed")
        return {"error": f"internal error: {type(exc).__name__}", "code": "internal"}


def call(path: Path, request: dict, timeout: float | None = None) -> dict:
    """Blocking client used by the CLI. Raises ConnectionError if no node listens at `path`."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError(f"no node is running with control socket {path}") from exc
        s.sendall(json.dumps(request).encode() + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    if not buf:
        raise ConnectionError(f"node at {path} closed the connection without answering")
    return json.loads(buf)
