"""p2p/: identity units and a network of real peer processes (in-process overlay checks:
tests/test_overlay.py).

The network is one bootstrap (DHT server) and three peers that know only the bootstrap's
address, each an OS process running tests/p2p_peer.py on 127.0.0.1. It is started once for
the module; the tests that use it wait for the state they need (events, with deadlines).
Figures worth knowing are printed (run with -s to see them).
"""

from __future__ import annotations

import itertools
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from distributeai.p2p import identity

PEER_SCRIPT = pathlib.Path(__file__).with_name("p2p_peer.py")
TOPIC = "test/announce"
ECHO, FAIL, SLOW = "/test/echo/1", "/test/fail/1", "/test/slow/1"
SMALL_LIMIT = 4096  # max_message_bytes of peer "c", to test refusals of large requests
# Safety nets, not speed checks: they cost nothing when things work, and CI runs on 2 loaded cores.
STARTUP_S = 120.0  # four processes importing libp2p (~0.5 s CPU each) on two cores
DISCOVERY_S = 60.0


# --- identity -------------------------------------------------------------------------------


def test_key_file_is_created_0600_and_reused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data" / "node.key"
    seed = identity.load_or_create_key(path)
    assert len(seed) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert identity.load_or_create_key(path) == seed


def test_key_file_with_group_or_other_bits_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "node.key"
    identity.load_or_create_key(path)
    path.chmod(0o640)
    with pytest.raises(identity.KeyFileError, match=str(path)):
        identity.load_or_create_key(path)


def test_peer_id_matches_libp2p_and_round_trips() -> None:
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    for _ in range(20):
        seed = os.urandom(32)
        pub = identity.public_key_bytes(seed)
        peer_id = identity.peer_id_from_public_key(pub)
        assert peer_id == ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()
        assert identity.public_key_from_peer_id(peer_id) == pub
    assert identity.public_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N") is None
    assert identity.public_key_from_peer_id("not a peer id 0OIl") is None
    assert identity.public_key_from_peer_id("") is None


# --- the multi-process network --------------------------------------------------------------


class PeerProcess:
    """A tests/p2p_peer.py process: its events (from a reader thread) and a command channel."""

    def __init__(self, name: str, key_file: pathlib.Path, log_dir: pathlib.Path, *args: str) -> None:
        self.name = name
        self.key_file = key_file
        self.stderr_path = log_dir / f"{name}.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER_SCRIPT), "--key-file", str(key_file), "--topic", TOPIC, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        threading.Thread(target=self._read, daemon=True).start()
        self.peer_id = ""
        self.addr = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self.events.append({"event": "exit"})
            self._cond.notify_all()

    def wait_sync(self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float) -> Any:
        with self._cond:
            result = self._cond.wait_for(lambda: pred(self.events), timeout)
        if not result:
            raise TimeoutError(f"{self.name}: condition not met in {timeout} s; stderr in {self.stderr_path}")
        return result

    async def wait(self, pred: Callable[[list[dict[str, Any]]], Any], timeout: float) -> Any:
        """Wait for pred(events) to be truthy, return it. The thread gives up 1 s after us."""
        with trio.fail_after(timeout):
            return await trio.to_thread.run_sync(
                lambda: self.wait_sync(pred, timeout + 1), abandon_on_cancel=True
            )

    async def call(self, wait_s: float = 60.0, **command: Any) -> dict[str, Any]:
        command["id"] = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        return await self.wait(lambda events: _reply(events, command["id"]), wait_s)

    def connected(self) -> set[str]:
        with self._cond:
            peers = [e for e in self.events if e["event"] == "peers"]
            return set(peers[-1]["connected"]) if peers else set()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # end of stdin stops the peer

    def stop(self) -> None:
        self.close_stdin()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def _reply(events: list[dict[str, Any]], command_id: int) -> dict[str, Any] | None:
    for event in reversed(events):
        if event["event"] == "reply" and event["id"] == command_id:
            return event
        if event["event"] == "exit":
            raise RuntimeError("peer process exited before replying")
    return None


def _ready(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in events if e["event"] == "ready"), None)


class Network:
    def __init__(self, boot: PeerProcess, peers: list[PeerProcess]) -> None:
        self.boot = boot
        self.peers = peers
        self.all = [boot, *peers]

    async def wait_fully_connected(self, timeout: float = DISCOVERY_S) -> None:
        ids = {p.peer_id for p in self.all}
        for p in self.all:
            others = ids - {p.peer_id}
            await p.wait(lambda events, o=others: _last_peers(events) >= o, timeout)


def _last_peers(events: list[dict[str, Any]]) -> set[str]:
    for event in reversed(events):
        if event["event"] == "peers":
            return set(event["connected"])
    return set()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("p2p")
    started: list[PeerProcess] = []
    try:
        boot = PeerProcess("boot", root / "boot.key", root, "--dht-server")
        started.append(boot)
        boot.peer_id = _ready_sync(boot)["peer_id"]
        boot.addr = _ready_sync(boot)["addrs"][0]
        # No request rate limit: these peers measure the session's own speed (hundreds of
        # requests a second from one peer); tests/test_flood.py covers the limits.
        unlimited = ("--request-rate", "0")
        specs = [("a", unlimited), ("b", unlimited), ("c", ("--max-bytes", str(SMALL_LIMIT), *unlimited))]
        for name, extra in specs:
            started.append(PeerProcess(name, root / f"{name}.key", root, "--bootstrap", boot.addr, *extra))
        for p in started[1:]:
            ready = _ready_sync(p)
            p.peer_id, p.addr = ready["peer_id"], ready["addrs"][0]
        yield Network(boot, started[1:])
    finally:
        for p in started:
            p.close_stdin()  # all at once: they shut down in parallel
        for p in started:
            p.stop()


def _ready_sync(p: PeerProcess) -> dict[str, Any]:
    return p.wait_sync(_ready, STARTUP_S)


def test_running_host_peer_id_is_the_key_files(network: Network) -> None:
    for p in network.all:
        seed = identity.load_or_create_key(p.key_file)
        assert p.peer_id == identity.peer_id_from_public_key(identity.public_key_bytes(seed))
        assert identity.public_key_from_peer_id(p.peer_id) == identity.public_key_bytes(seed)


async def test_peers_find_each_other_through_the_dht(network: Network) -> None:
    """Each peer knows only the bootstrap, yet ends up connected to the other two."""
    await network.wait_fully_connected()
    for p in network.peers:
        others = {q.peer_id for q in network.peers if q is not p}
        assert others <= p.connected()
        ready_t = p.wait_sync(lambda ev: next((e["t"] for e in ev if e["event"] == "ready"), None), 1)
        full_t = p.wait_sync(
            lambda ev, o=others: next((e["t"] for e in ev if e["event"] == "peers" and o <= set(e["connected"])), None),
            1,
        )
        print(f"discovery {p.name}: {full_t - ready_t:.2f} s from ready to connected to both other peers")
    # The peerstore learns a peer's addrs from identify or the DHT, shortly after connecting.
    a = network.peers[0]
    expected = {q.peer_id for q in network.all if q is not a}
    with trio.fail_after(60):
        while True:
            known = (await a.call(cmd="known_peers"))["result"]
            if expected <= {peer for peer, _ in known}:
                break
            await trio.sleep(0.1)
    for peer, addrs in known:
        assert addrs and all(addr.endswith(f"/p2p/{peer}") for addr in addrs), (peer, addrs)


async def test_gossip_reaches_every_other_node_with_its_author(network: Network) -> None:
    await network.wait_fully_connected()
    a = network.peers[0]
    receivers = [q for q in network.all if q is not a]
    # The publisher's mesh must hold its peers, or GossipSub sends to no one (a mesh forms on
    # heartbeats, 1 s apart).
    await a.wait(lambda ev: _mesh(ev) >= {q.peer_id for q in receivers}, 60)
    payload = os.urandom(16).hex()
    sent_at = time.time()
    reply = await a.call(cmd="publish", topic=TOPIC, data=payload)
    assert reply["ok"], reply
    delays = []
    for q in receivers:
        msg = await q.wait(lambda ev: _gossip(ev, payload), 60)
        assert msg["from"] == a.peer_id and msg["topic"] == TOPIC
        delays.append(msg["t"] - sent_at)
    print(f"gossip delivery: max {max(delays) * 1000:.1f} ms to {len(receivers)} nodes")
    # Own publishes are not delivered back; the stats agree.
    assert _gossip(a.events, payload) is None
    stats = (await a.call(cmd="stats"))["result"]
    assert stats["gossip_out"] >= 1 and stats["gossip_dropped"] == 0


def _mesh(events: list[dict[str, Any]]) -> set[str]:
    for event in reversed(events):
        if event["event"] == "mesh" and event["topic"] == TOPIC:
            return set(event["peers"])
    return set()


def _gossip(events: list[dict[str, Any]], payload: str) -> dict[str, Any] | None:
    return next((e for e in events if e["event"] == "gossip" and e["data"] == payload), None)


async def test_request_round_trip(network: Network) -> None:
    await network.wait_fully_connected()
    a, b = network.peers[0], network.peers[1]
    data = os.urandom(1000).hex()
    reply = await a.call(cmd="request", peer=b.peer_id, protocol=ECHO, data=data)
    assert reply["ok"] and reply["result"] == data
    bench = await a.call(cmd="bench", peer=b.peer_id, n=200, wait_s=120)
    latencies = bench["result"]
    print(
        f"request round trip (in a session): p50 {statistics.median(latencies):.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.2f} ms over {len(latencies)}"
    )


async def test_oversized_request_is_refused_and_the_server_keeps_serving(network: Network) -> None:
    await network.wait_fully_connected()
    a, c = network.peers[0], network.peers[2]
    # 100 KB fits in one yamux window (256 KB): the writer finishes, then reads the refusal.
    # 600 KB does not: the writer blocks, and the refusal is read while it is blocked (not at the
    # request's timeout, 60 s: the bound below is half that, wide for a loaded machine).
    for size in (100_000, 600_000):
        started = trio.current_time()
        reply = await a.call(cmd="request", peer=c.peer_id, protocol=ECHO, data="00" * size, timeout=60, wait_s=90)
        assert not reply["ok"] and reply["error"] == "RemoteError", reply
        assert "request too large" in reply["message"] and str(SMALL_LIMIT) in reply["message"]
        assert trio.current_time() - started < 30
    reply = await a.call(cmd="request", peer=c.peer_id, protocol=ECHO, data="ab" * 100)
    assert reply["ok"] and reply["result"] == "ab" * 100, reply["message"]
    stats = (await c.call(cmd="stats"))["result"]
    assert stats["requests_rejected_too_large"] == 2


async def test_unknown_peer_is_a_prompt_remote_error(network: Network) -> None:
    await network.wait_fully_connected()
    a = network.peers[0]
    stranger = identity.peer_id_from_public_key(identity.public_key_bytes(os.urandom(32)))
    started = trio.current_time()
    # Prompt: a failed lookup, not the request's 60 s timeout (the bound is half that, wide for a
    # loaded machine).
    reply = await a.call(cmd="request", peer=stranger, protocol=ECHO, data="00", timeout=60, wait_s=90)
    assert not reply["ok"] and reply["error"] == "RemoteError" and "unknown" in reply["message"]
    assert trio.current_time() - started < 30
    reply = await a.call(cmd="request", peer="garbage", protocol=ECHO, data="00")
    assert not reply["ok"] and reply["error"] == "RemoteError"


async def test_handler_exception_is_a_remote_error_and_the_server_keeps_serving(network: Network) -> None:
    await network.wait_fully_connected()
    a, b = network.peers[0], network.peers[1]
    before = (await b.call(cmd="stats"))["result"]["requests_failed"]
    reply = await a.call(cmd="request", peer=b.peer_id, protocol=FAIL, data="00")
    assert not reply["ok"] and reply["error"] == "RemoteError"
    assert "handler raised RuntimeError" in reply["message"] and b.peer_id in reply["message"]
    reply = await a.call(cmd="request", peer=b.peer_id, protocol=ECHO, data="0102")
    assert reply["ok"] and reply["result"] == "0102"
    assert (await b.call(cmd="stats"))["result"]["requests_failed"] == before + 1


async def test_slow_handler_and_missing_protocol_are_remote_errors(network: Network) -> None:
    await network.wait_fully_connected()
    a, b = network.peers[0], network.peers[1]
    reply = await a.call(cmd="request", peer=b.peer_id, protocol=SLOW, data="00", timeout=0.5)
    assert not reply["ok"] and reply["error"] == "RemoteError" and "timed out" in reply["message"]
    reply = await a.call(cmd="request", peer=b.peer_id, protocol="/test/none/1", data="00")
    assert not reply["ok"] and reply["error"] == "RemoteError"


def test_peers_log_no_libp2p_noise(network: Network) -> None:
    """docs/libp2p.md item 8: DHT stream-close warnings and auto-connector INFO lines stay quiet."""
    for p in network.all:
        text = p.stderr_path.read_text()
        assert "libp2p" not in text, f"{p.name} stderr:\n{text[:2000]}"
