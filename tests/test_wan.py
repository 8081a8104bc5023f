"""A WAN on one machine (issue 17, item 3): network namespaces, one /24 per site, a delaying relay.

- the relay really adds its delay: a TCP round trip between two sites takes at least twice the
  pair's one-way delay (the relay holds every packet at least that long: a bound it guarantees,
  not a speed), the server sees the client's own address (no NAT), and two hosts of one site talk
  directly;
- /24 diversity decides awards for real: 5 nodes, two of them in one /24, jobs of 3 replicas
  submitted one at a time by the others: at each award, read from the submitter's own log, a
  bidder whose /24 already holds a live slot of the job gets it only if no bidder of another range
  (or of unknown range: the submitter itself) was left (consensus/submitter.py, "diversity").
  Whether the two ever both bid before the awards depends on timing, so that is counted and
  printed, not asserted.

The relay's queue on its own (pure: packets and times passed in) runs anywhere. The rest needs root,
`ip` and /dev/net/tun (CI has them: there these tests must run; elsewhere they skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from distributeai.consensus.codec import Identity
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.messages import JobSpec, sign
from distributeai.consensus.subnet import subnet_of
from distributeai.node.paths import key_path
from distributeai.p2p.identity import load_or_create_key
from distributeai.tools.devnet import Devnet
from distributeai.tools.netns import Wan, remove_leftovers, unavailable
from distributeai.tools.wanrelay import Relay, pair_delay_ms

from .netfixtures import DEMO_STDOUT, missing


DIVERSITY_JOBS = 6
JOB_S = 120.0
DEMO_JOB = {"image": "alpine:latest", "command": ["sh", "-c", "echo 'Hello' | sha256sum"],
            "replicas": 3, "quorum": 2}

ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0)); s.listen()
print(s.getsockname()[1], flush=True)
c, peer = s.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
print(peer[0], flush=True)
while True:
    d = c.recv(64)
    if not d:
        break
    c.sendall(d)
"""
ECHO_CLIENT = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(20):
    t = time.monotonic(); c.sendall(b"x"); assert c.recv(1) == b"x"; rtts.append(time.monotonic() - t)
print(min(rtts) * 1000, max(rtts) * 1000)
"""


@pytest.fixture
def netns():
    why = unavailable()
    if why:
        missing(f"a WAN of network namespaces: {why}")


def round_trip(wan: Wan, client, server) -> tuple[float, float, str]:
    """(min, max) ms of 20 one-byte TCP echoes from `client` to `server`, and the address the
    server saw the connection come from."""
    srv = subprocess.Popen(server.command([sys.executable, "-c", ECHO_SERVER, server.ip]),
                           stdout=subprocess.PIPE, text=True)
    try:
        port = srv.stdout.readline().strip()
        out = subprocess.run(client.command([sys.executable, "-c", ECHO_CLIENT, server.ip, port]),
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen = srv.stdout.readline().strip()
        low, high = map(float, out.stdout.split())
        return low, high, seen
    finally:
        srv.kill()
        srv.wait()


def test_the_relay_queue_holds_each_packet_its_pairs_delay_and_never_reorders_a_flow():
    relay = Relay(10, 40, jitter=30, seed=3)
    sent = []
    for n in range(300):
        src, dst = (1, 2) if n % 3 else (2, 5)
        pkt = bytes([0x45]) + bytes(11) + bytes([10, 77, src, 9, 10, 77, dst, 9]) + n.to_bytes(4, "big")
        relay.take(pkt, n / 1000)
        sent.append((n / 1000, pkt))
    out = []
    t = 0.0
    while relay.next_at() is not None:
        t = relay.next_at()
        out += [(t, p) for p in relay.due(t)]
    assert len(out) == 300
    at = {p: when for when, p in out}
    for when, p in sent:
        assert at[p] - when >= pair_delay_ms(p[14], p[18], 10, 40, 3) / 1000 - 1e-9
    for flow in (bytes([10, 77, 1, 9, 10, 77, 2, 9]), bytes([10, 77, 2, 9, 10, 77, 5, 9])):
        order = [int.from_bytes(p[20:], "big") for _, p in out if p[12:20] == flow]
        assert order == sorted(order)
    assert pair_delay_ms(2, 5, 10, 40, 3) == pair_delay_ms(5, 2, 10, 40, 3)
    relay.take(b"\x60" + bytes(39), 0.0)  # IPv6: never queued
    assert relay.dropped == 1 and relay.next_at() is None


@pytest.mark.slow
def test_relay_adds_the_pairs_delay_and_keeps_addresses(tmp_path, netns):
    with Wan([1, 1, 2], delay_ms=(20, 40), jitter_ms=5, log=tmp_path / "relay.log") as wan:
        a, b, c, d = wan.hosts
        figures = {}
        for x, y in ((a, b), (a, c), (c, d)):
            low, high, seen = round_trip(wan, x, y)
            assert seen == x.ip  # the relay rewrites nothing: the server sees the client's address
            assert low >= 2 * wan.delay(x, y), (x, y, low, wan.delay(x, y))
            figures[f"{x.ip}->{y.ip}"] = {"one_way_ms": wan.delay(x, y), "rtt_ms": [round(low, 1), round(high, 1)]}
        assert wan.delay(c, d) == 0 and 20 <= wan.delay(a, b) <= 40
        prefix = wan.prefix
    stats = wan.relay_stats
    assert stats["relayed"] > 0
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed  # torn down
    print("\nwan figures:", figures, "relay:", stats)


@pytest.mark.slow
def test_leftovers_of_a_dead_run_are_removed(netns):
    """A namespace named for a process that no longer exists is deleted by the next Wan."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"dwan{dead.pid}x0-h0"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in remove_leftovers()
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def job_events(log_path, job_id: str) -> list[tuple[str, str | None]]:
    """(event, peer id) of `job_id` in the order the submitter logged them (--log-format json)."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            fields = json.loads(line).get("fields", {})
        except ValueError:
            continue
        if fields.get("job_id") == job_id:
            out.append((fields.get("event"), fields.get("peer")))
    return out


def check_diversity(events, submitter: str, range_of: dict[str, str]) -> tuple[bool, bool]:
    """AssertionError if an award broke the rule: a bidder whose range a live slot already held got
    a slot while a bidder of another range (or of none: the submitter's own bid) was left.
    Returns (the two of the shared range both bid before the first award, they shared the job)."""
    bidders: list[str] = []
    live: set[str] = set()
    awarded: set[str] = set()
    both_before_award = False

    def rng(peer: str) -> str | None:
        return None if peer == submitter else range_of[peer]

    for event, peer in events:
        if event == "bid":
            bidders.append(peer)
        elif event in ("award", "replacement"):
            if not awarded:
                shared = [p for p in bidders if rng(p) == "shared"]
                both_before_award = len(shared) == 2
            taken = {rng(p) for p in live} - {None}
            left = [p for p in bidders if p not in awarded and p != peer]
            if rng(peer) in taken:
                assert not [p for p in left if rng(p) is None or rng(p) not in taken], (peer, events)
            live.add(peer)
            awarded.add(peer)
        elif event == "error":
            live.discard(peer)
    shared_awarded = [p for p in awarded if rng(p) == "shared"]
    return both_before_award, len(shared_awarded) == 2


@pytest.mark.slow
def test_two_nodes_of_one_slash24_never_share_a_job_while_others_bid(tmp_path, netns):
    # Sites: the bootstrap, three nodes on their own /24, two nodes on one /24.
    with Wan([1, 1, 1, 1, 2], log=tmp_path / "relay.log") as wan, \
            Devnet(tmp_path / "net", nodes=5, hosts=wan.hosts, sandbox="process", log_level="info",
                   extra_args=("--log-format", "json")) as net:
        net.start()
        net.wait_connected()
        ids = [n["peer_id"] for n in net.node_info]
        for i, n in enumerate(net.node_info):
            assert all(a.startswith(f"/ip4/{wan.hosts[i + 1].ip}/") for a in n["multiaddrs"]), n
        assert subnet_of(wan.hosts[4].ip) == subnet_of(wan.hosts[5].ip) != subnet_of(wan.hosts[1].ip)
        range_of = {ids[i]: "shared" if i >= 3 else f"own{i}" for i in range(5)}
        identities = [Identity.from_seed(load_or_create_key(key_path(d))) for d in net.node_dirs]
        fields = parse_job(DEMO_JOB)
        exercised = shared = 0
        for k in range(DIVERSITY_JOBS):
            i = k % 3  # the submitters: the nodes on a /24 of their own
            spec = JobSpec(submitter=identities[i].public_key, nonce=os.urandom(16),
                           created_ms=int(time.time() * 1000), **fields)
            answer = net.call(i, {"op": "submit", "signed_spec": sign(identities[i], spec).hex()})
            job_id = answer["job_id"]
            view = net.call(i, {"op": "wait", "job_id": job_id, "timeout": JOB_S}, timeout=JOB_S + 30)
            assert view["status"] == "verified", view
            assert view["stdout"] == DEMO_STDOUT
            both_bid, both_hold = check_diversity(job_events(net.node_dirs[i] / "log", job_id), ids[i], range_of)
            exercised += both_bid
            shared += both_hold
        print(f"\ndiversity: {DIVERSITY_JOBS} jobs; both nodes of the shared /24 had bid before the awards in "
              f"{exercised}; both held a slot in {shared}; relay {wan.relay_cpu_s():.2f} CPU-s")
