"""One overlay peer as an OS process, driven by tests/test_p2p.py.

    python tests/p2p_peer.py --key-file K [--bootstrap ADDR ...] [--topic T ...] [--dht-server]
                             [--max-bytes N]

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

from distributeai.p2p import identity
from distributeai.p2p.overlay import Overlay, open_overlay

ECHO, FAIL, SLOW = "/test/echo/1", "/test/fail/1", "/test/slow/1"
CHANGE_POLL_S = 0.05  # libp2p has no "connected peers changed" event for callers to await


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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    seed = identity.load_or_create_key(args.key_file)
    options: dict = {"dht_server": True} if args.dht_server else {}  # else: the library default
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
