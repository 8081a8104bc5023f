"""One overlay peer as an OS process, driven by tests/test_p2p.py.

    python tests/p2p_peer.py --key-file K [--bootstrap ADDR ...] [--topic T ...] [--dht-server]
                             [--max-bytes N] [--request-rate R]

stdout carries one JSON object per line (events):
    {"event": "ready", "peer_id": ..., "addrs": [...], "t": <time.time()>}
    {"event": "peers", "connected": [...], "t": <time.time()>}          on every change
    {"event": "mesh", "topic": ..., "peers": [...]}                      on every change
    {"event": "gossip", "topic": ..., "from": ..., "data": <hex>, "t": <time.time()>}
    {"event": "reply", "id": N, "ok": true, "result": ...}
    {"event": "reply", "id": N, "ok": false, "error": <exception class>, "message": ...}
stdin takes one JSON command per line; end of stdin stops the peer:
    {"id": N, "cmd": "publish", "topic": ..., "data": <hex>}
    {"id": N, "cmd": "request", "peer": ..., "protocol": ..., "data": <hex>, "timeout": s}
    {"id": N, "cmd": "bench", "peer": ..., "n": count}   -> result: sorted latencies in ms
    {"id": N, "cmd": "connect", "addr": ...}             -> result: peer id
    {"id": N, "cmd": "stats"} / {"id": N, "cmd": "known_peers"}
    {"id": N, "cmd": "flood_gossip", "topic": ..., "rate": per s, "seconds": S[, "batch": B]}
        -> result: {"sent", "targets", "started", "ended", "rate"} (times are time.time())
    {"id": N, "cmd": "flood_requests", "peer": ..., "protocol": ..., "rate": per s, "seconds": S[, "batch": B]}
        -> result: {"sent", "answered", "statuses": {status: n}, "reasons": {reason: n}, "started",
                    "ended", "last_answer", "rate"}
    Floods emit {"event": "flooding", "cmd": ..., "sent": n, "t": ...} after their first second.
Flood messages are built by `flood_announcement` and `flood_bid` (validly signed by this peer's
own key, fresh job ids); a flood writes B of them per frame, on a stream of its own, paced to
`rate`: py-libp2p's publish signs, self-verifies and sends one message per RPC, far below
1,000 a second, and a request a time waits for its answer.
Protocols served: /test/echo/1 (echo), /test/fail/1 (raises), /test/slow/1 (sleeps 30 s).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import time

import trio

from distributeai.consensus.codec import Identity
from distributeai.consensus.messages import Announce, Bid, JobSpec, sign
from distributeai.p2p import identity, session
from distributeai.p2p.overlay import Overlay, open_overlay
from distributeai.p2p.ratelimit import RateLimits

ECHO, FAIL, SLOW = "/test/echo/1", "/test/fail/1", "/test/slow/1"
CHANGE_POLL_S = 0.05  # libp2p has no "connected peers changed" event for callers to await
SEED = b""  # this peer's key seed, set by main()


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def echo(peer: str, data: bytes) -> bytes:
    return data


async def fail(peer: str, data: bytes) -> bytes:
    raise RuntimeError("this handler always fails")


async def slow(peer: str, data: bytes) -> bytes:
    await trio.sleep(30)
    return data


async def watch(overlay: Overlay, topics: list[str]) -> None:
    last_peers: list[str] | None = None
    last_mesh: dict[str, list[str]] = {}
    while True:
        peers = sorted(overlay.connected_peers())
        if peers != last_peers:
            last_peers = peers
            emit(event="peers", connected=peers, t=time.time())
        for topic in topics:
            mesh = sorted(overlay.gossip_peers(topic))
            if mesh != last_mesh.get(topic):
                last_mesh[topic] = mesh
                emit(event="mesh", topic=topic, peers=mesh)
        await trio.sleep(CHANGE_POLL_S)


async def gossip(overlay: Overlay) -> None:
    async for msg in overlay.messages():
        emit(event="gossip", topic=msg.topic, data=msg.data.hex(), t=time.time(), **{"from": msg.from_peer})


# --- floods (tests/test_flood.py) ------------------------------------------------------------

FLOOD_JOB_NAME = "flood"


_POW: dict[bytes, bytes] = {}


def proof_of_work(me: Identity) -> bytes:
    """This peer's proof-of-work nonce at a devnet's difficulty, solved once: the flooder pays
    for one identity, as an attacker would, so its messages pass the nodes' identity check."""
    from distributeai.tools.devnet import DEVNET_POW_DIFFICULTY
    from distributeai.consensus.pow import solve

    if me.public_key not in _POW:
        _POW[me.public_key] = solve(me.public_key, DEVNET_POW_DIFFICULTY)
    return _POW[me.public_key]


def flood_announcement(me: Identity) -> bytes:
    """One flood message: a validly signed announcement of a fresh job (new nonce, so a new job
    id) by this peer's own key, with its proof-of-work, cheap to run. Every flood announcement
    is built here."""
    spec = sign(me, JobSpec(submitter=me.public_key, nonce=os.urandom(16), created_ms=int(time.time() * 1000),
                            name=FLOOD_JOB_NAME, image="alpine:latest", command=("true",)))
    return sign(me, Announce(spec, (), proof_of_work(me)))


def flood_bid(me: Identity) -> bytes:
    """One flood request: a validly signed bid by this peer for a job id nobody announced."""
    return sign(me, Bid(os.urandom(32), me.public_key, 1, 1000, 256, ("process",), int(time.time() * 1000),
                        proof_of_work(me)))


def _pubsub_message(overlay: Overlay, topic: str, data: bytes):
    """A pubsub message signed as `Pubsub.publish` signs it (strict signing)."""
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

    pubsub = overlay._pubsub
    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=pubsub.my_id.to_bytes(), seqno=pubsub._next_seqno())
    msg.signature = pubsub.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = overlay._host.get_public_key().serialize()
    return msg


async def _paced(cmd: dict, frames: list, write) -> tuple[int, float, float]:
    """Call `write(frame)` for each frame on a schedule of `rate` messages a second (each frame
    carries `batch`); returns (messages sent, start, end) in time.time()."""
    batch, rate = cmd.get("batch", 20), cmd["rate"]
    started, t0, sent, told = time.time(), trio.current_time(), 0, False
    for k, frame in enumerate(frames):
        await trio.sleep_until(t0 + k * batch / rate)  # pacing the load, not synchronisation
        await write(frame)
        sent += batch
        if not told and trio.current_time() - t0 >= 1.0:
            told = True
            emit(event="flooding", cmd=cmd["cmd"], sent=sent, t=time.time())
    return sent, started, time.time()


async def flood_gossip(overlay: Overlay, me: Identity, cmd: dict) -> dict:
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.utils import encode_uvarint

    topic, batch = cmd["topic"], cmd.get("batch", 20)
    count = int(cmd["rate"] * cmd["seconds"]) // batch
    frames = []
    for _ in range(count):
        rpc = rpc_pb2.RPC(publish=[_pubsub_message(overlay, topic, flood_announcement(me)) for _ in range(batch)])
        body = rpc.SerializeToString()
        frames.append(encode_uvarint(len(body)) + body)
    peers = list(overlay._pubsub.peer_topics.get(topic, ()))
    streams = [await overlay._host.new_stream(p, [PROTOCOL_ID_V11]) for p in peers]

    async def write(frame: bytes) -> None:
        for stream in streams:
            await stream.write(frame)

    sent, started, ended = await _paced(cmd, frames, write)
    for stream in streams:
        await stream.close()
    return {"sent": sent, "targets": [p.to_base58() for p in peers], "started": started, "ended": ended,
            "rate": sent / (ended - started)}


async def flood_requests(overlay: Overlay, me: Identity, cmd: dict) -> dict:
    from distributeai.node.wire import parse_answer
    from distributeai.consensus.errors import RemoteProtocolError
    from libp2p.custom_types import TProtocol

    batch = cmd.get("batch", 20)
    count = int(cmd["rate"] * cmd["seconds"]) // batch
    frames = [b"".join(session.request_frame(k * batch + i + 1, cmd["protocol"], flood_bid(me)) for i in range(batch))
              for k in range(count)]
    pid = overlay.check_peer_id(cmd["peer"])
    stream = await overlay._host.new_stream(pid, [TProtocol(session.PROTOCOL)])
    statuses: dict[int, int] = {}
    reasons: dict[str, int] = {}
    answered = 0
    last_answer = 0.0
    all_answered = trio.Event()

    async def read() -> None:
        nonlocal answered, last_answer
        from distributeai.p2p.reqresp import read_exactly

        while answered < count * batch:
            length, _, _ = session.HEADER.unpack(await read_exactly(stream, session.HEADER.size))
            body = await read_exactly(stream, length)
            statuses[body[0]] = statuses.get(body[0], 0) + 1
            if body[0] == 0:
                try:
                    parse_answer(body[1:])
                    reason = "ok"
                except RemoteProtocolError as exc:
                    reason = exc.detail
                reasons[reason] = reasons.get(reason, 0) + 1
            answered += 1
            last_answer = time.time()
        all_answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        sent, started, ended = await _paced(cmd, frames, stream.write)
        with trio.move_on_after(30):
            await all_answered.wait()
        nursery.cancel_scope.cancel()
    await stream.reset()
    return {"sent": sent, "answered": answered, "statuses": {str(k): v for k, v in statuses.items()},
            "reasons": reasons, "started": started, "ended": ended, "last_answer": last_answer,
            "rate": sent / (ended - started)}


async def run_command(overlay: Overlay, cmd: dict) -> None:
    try:
        kind = cmd["cmd"]
        if kind == "publish":
            await overlay.publish(cmd["topic"], bytes.fromhex(cmd["data"]))
            result: object = None
        elif kind == "request":
            response = await overlay.request(
                cmd["peer"], cmd["protocol"], bytes.fromhex(cmd["data"]), timeout=cmd.get("timeout", 10.0)
            )
            result = response.hex()
        elif kind == "bench":
            latencies = []
            for i in range(cmd["n"]):
                payload = i.to_bytes(4, "big") * 16
                start = time.perf_counter()
                assert await overlay.request(cmd["peer"], ECHO, payload) == payload
                latencies.append((time.perf_counter() - start) * 1000)
            result = sorted(latencies)
        elif kind == "connect":
            result = await overlay.connect(cmd["addr"])
        elif kind == "stats":
            result = overlay.stats()
        elif kind == "known_peers":
            result = overlay.known_peers()
        elif kind == "flood_gossip":
            result = await flood_gossip(overlay, Identity.from_seed(SEED), cmd)
        elif kind == "flood_requests":
            result = await flood_requests(overlay, Identity.from_seed(SEED), cmd)
        else:
            raise ValueError(f"unknown command {kind!r}")
    except Exception as exc:
        emit(event="reply", id=cmd.get("id"), ok=False, error=type(exc).__name__, message=str(exc))
    else:
        emit(event="reply", id=cmd.get("id"), ok=True, result=result)


async def commands(overlay: Overlay, nursery: trio.Nursery) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                nursery.start_soon(run_command, overlay, json.loads(line))
    nursery.cancel_scope.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key-file", required=True, type=pathlib.Path)
    parser.add_argument("--bootstrap", action="append", default=[])
    parser.add_argument("--topic", action="append", default=[])
    parser.add_argument("--dht-server", action="store_true")
    parser.add_argument("--max-bytes", type=int, default=1 << 20)
    parser.add_argument("--request-rate", type=float, default=None, help="requests/s per peer and protocol (0: off)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    global SEED
    seed = SEED = identity.load_or_create_key(args.key_file)
    options: dict = {"dht_server": True} if args.dht_server else {}  # else: the library default
    if args.request_rate is not None:
        options["rate_limits"] = RateLimits(request_rate=args.request_rate)
    async with open_overlay(
        seed, bootstrap=args.bootstrap, topics=args.topic, max_message_bytes=args.max_bytes, **options
    ) as overlay:
        overlay.set_handler(ECHO, echo)
        overlay.set_handler(FAIL, fail)
        overlay.set_handler(SLOW, slow)
        emit(event="ready", peer_id=overlay.peer_id, addrs=overlay.multiaddrs(), t=time.time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, overlay, args.topic)
            nursery.start_soon(gossip, overlay)
            nursery.start_soon(commands, overlay, nursery)


if __name__ == "__main__":
    trio.run(main)
