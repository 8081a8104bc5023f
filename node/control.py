"""The control API: how `distributeai submit`, `job status` and `node info` talk to a running node.

It listens only on a Unix socket, `DATA_DIR/control.sock`, created with mode 0600: only the user who
owns the data directory (and its key) can use it (another uid gets EACCES at connect; root excepted,
as for every file). Whoever can connect controls the node: it can have the node sign and announce
job specs paid from the node's credits (never any other message), but it can never read the key. One request per connection: a JSON object on one
line, answered with a JSON object on one line. Requests are capped at MAX_REQUEST bytes.

    {"op": "info"}                                   -> node info
    {"op": "submit", "signed_spec": HEX[, "module": HEX]} -> {"job_id": HEX}
                                                        (module: a wasm module too large to travel in the spec)
    {"op": "submit", "spec": HEX[, "module": HEX]}   -> {"job_id": HEX}: the node signs the spec (canonical
                                                        body, naming this node as submitter) with its key;
                                                        how `distributeai submit` works, so that the CLI never
                                                        opens the key file (which may be encrypted)
    {"op": "status", "job_id": HEX}                  -> job view
    {"op": "wait", "job_id": HEX, "timeout": SECS}   -> job view once verified/failed (or at timeout)
    {"op": "list"}                                   -> {"jobs": [job view, ...]}
    {"op": "credits"}                                -> {"balance", "genesis", "transfers": [...]}
    {"op": "reputation"}                             -> {"reputation": {peer id: value}}
    {"op": "peers"}                                  -> {"peers": [{peer_id, addrs, connected, reputation}]}
    {"op": "cancel", "job_id": HEX}                  -> job view (failed, "cancelled"); only the submitter's node
    {"op": "result", "job_id": HEX[, "out": DIR]}    -> verified stdout, exit code, files (written into DIR,
                                                        each fetched by SHA-256 from an agreeing executor)
    {"op": "tasks", "job_id": HEX[, "start": N, "limit": N]} -> {"total", "tasks": [per-task verdict,
                                                        args, exit code, stdout]} of a batch job
    {"op": "stored_peers"}                           -> {"peers": [peer id, ...]} remembered for restarts
    {"op": "find_peers", "peer_ids": [ID, ...][, "lookup": true]}
                                                     -> {"found": {peer id: {"addrs", "how"}}, "not_found": [...]}
                                                        resolved as a request would (known addrs, else a DHT
                                                        lookup); "lookup": always a DHT lookup through the network
Errors: {"error": "message", "code": "reason"}.
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

if TYPE_CHECKING:  # the CLI imports `call` from here and must not load libp2p for it
    from .agent import Agent

log = logging.getLogger("distributeai.node.control")
MAX_REQUEST = 4 << 20  # a submit may carry a wasm module (hex) too large for the spec
MAX_WAIT_S = 3600.0


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


async def _dispatch(agent: Agent, req: dict) -> dict:
    op = req.get("op")
    if op == "info":
        return agent.info()
    if op == "submit":
        try:
            module = bytes.fromhex(str(req.get("module", "")))
            if "spec" in req:
                job_id = await agent.submitting.submit_unsigned(bytes.fromhex(str(req["spec"])), module or None)
            else:
                job_id = await agent.submitting.submit(bytes.fromhex(str(req.get("signed_spec", ""))), module or None)
        except LocalProtocolError as exc:
            return {"error": str(exc), "code": exc.reason}
        return {"job_id": job_id.hex()}
    if op in ("status", "wait"):
        job_hex = str(req.get("job_id", "")).lower()
        if op == "wait":
            timeout = min(float(req.get("timeout", 60)), MAX_WAIT_S)
            view = await agent.wait_job(job_hex, timeout)
        else:
            view = await agent.job_status(job_hex)
        return view if view is not None else {"error": f"no job {job_hex} known to this node", "code": "unknown_job"}
    if op == "peers":
        return {"peers": agent.peers()}
    if op == "cancel":
        job_hex = str(req.get("job_id", "")).lower()
        try:
            await agent.submitting.cancel(bytes.fromhex(job_hex))
        except LocalProtocolError as exc:
            return {"error": str(exc), "code": exc.reason}
        return await agent.job_status(job_hex)
    if op == "result":
        job_hex = str(req.get("job_id", "")).lower()
        view = await agent.job_status(job_hex)
        if view is None:
            return {"error": f"no job {job_hex} known to this node", "code": "unknown_job"}
        if view["status"] != "verified":
            return {"error": f"job {job_hex} is {view['status']}, not verified", "code": "not_verified"}
        answer = {k: view.get(k) for k in ("job_id", "status", "exit_code", "stdout", "result_hash", "files")}
        if req.get("out"):
            try:
                answer["written"] = await agent.fetch_outputs(job_hex, Path(str(req["out"])))
            except LocalProtocolError as exc:
                return {"error": str(exc), "code": exc.reason}
        return answer
    if op == "tasks":
        job_hex = str(req.get("job_id", "")).lower()
        try:
            start, limit = int(req.get("start", 0)), min(int(req.get("limit", 100)), 10_000)
        except (TypeError, ValueError):
            return {"error": "start and limit must be integers", "code": "bad_request"}
        answer = await agent.task_results(job_hex, start, limit)
        return answer if answer is not None else {"error": f"no job {job_hex} known to this node",
                                                  "code": "unknown_job"}
    if op == "stored_peers":
        return {"peers": [p for p, _ in await agent.store.known_peers(limit=1000)]}
    if op == "find_peers":
        return await _find_peers(agent, req)
    if op == "credits":
        return agent.credits()
    if op == "reputation":
        return {"reputation": agent.reputation_view()}
    if op == "list":
        rows = await agent.store.list_jobs(limit=int(req.get("limit", 50)))
        return {"jobs": [await agent.job_status(r["job_id"]) for r in rows]}
    return {"error": f"unknown op {op!r}", "code": "bad_request"}


FIND_PEERS_MAX = 1000
FIND_PEERS_PARALLEL = 4  # lookups at once: each queries 3 peers at a time, and a peer serves 12 DHT streams at once


async def _find_peers(agent: Agent, req: dict) -> dict:
    ids = req.get("peer_ids")
    if not isinstance(ids, list) or len(ids) > FIND_PEERS_MAX or not all(isinstance(p, str) for p in ids):
        raise ValueError(f"peer_ids must be a list of at most {FIND_PEERS_MAX} peer ids")
    lookup = bool(req.get("lookup", False))
    found: dict[str, dict] = {}
    limiter = trio.CapacityLimiter(FIND_PEERS_PARALLEL)

    async def one(peer_id: str) -> None:
        async with limiter:
            answer = await agent.overlay.find_peer(peer_id, lookup=lookup)
        if answer is not None:
            found[peer_id] = {"addrs": answer[0], "how": answer[1]}

    ids = list(dict.fromkeys(ids))
    for peer_id in ids:  # all malformed ids are refused before any lookup starts
        agent.overlay.check_peer_id(peer_id)
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
            try:
                line = await _read_line(stream)
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("request must be a JSON object")
                answer = await _dispatch(agent, req)
            except (ValueError, TypeError) as exc:
                answer = {"error": f"bad request: {exc}", "code": "bad_request"}
            try:
                await stream.send_all(json.dumps(answer).encode() + b"\n")
            except trio.BrokenResourceError:
                pass  # the client went away (e.g. Ctrl-C while waiting)

    await trio.serve_listeners(handle, [listener], task_status=task_status)


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
