"""Bad input from a peer: a real attacker process joins a running 3-node network and sends
malformed, forged, misattributed, replayed, stale, future-dated and oversized gossip, and bad
requests on every protocol (forged, misattributed, oversized, about unknown jobs). Each is
dropped, counted by reason, and changes nothing (every node's jobs, reputation and credits are
the same before and after); the network then still verifies a job."""

from __future__ import annotations

import json
import os
import time

import pytest

from distributeai.tools.devnet import Devnet
from distributeai.consensus.codec import Identity, encode
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import (
    Announce, Award, Bid, Commit, JobSpec, RevealRequest, Withdraw, job_id_of, sign,
)
from distributeai.consensus.names import (
    AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, JOBS_TOPIC, REVEAL_PROTOCOL, WITHDRAW_PROTOCOL,
)
from distributeai.node.wire import parse_answer
from distributeai.p2p.identity import load_or_create_key

from .p2p_peer import proof_of_work
from .netfixtures import DEMO_ARGS, DEMO_STDOUT, submit_json, wait_for
from .test_p2p import PeerProcess, _ready


def spec_by(identity: Identity, created_ms: int) -> bytes:
    return sign(identity, JobSpec(submitter=identity.public_key, nonce=os.urandom(16), created_ms=created_ms,
                                  name="evil", image="alpine:latest", command=("true",)))


def announce_by(identity: Identity, created_ms: int) -> bytes:
    """A valid announcement by `identity`, with its proof-of-work at a devnet's difficulty."""
    return sign(identity, Announce(spec_by(identity, created_ms), (), proof_of_work(identity)))


def flip_last_signature_byte(envelope: bytes) -> bytes:
    import msgpack

    kind, body, signer, sig = msgpack.unpackb(envelope)
    return encode([kind, body, signer, sig[:-1] + bytes([sig[-1] ^ 1])])


def refusal_reason(reply: dict) -> str:
    assert reply["ok"], reply
    with pytest.raises(RemoteProtocolError) as e:
        parse_answer(bytes.fromhex(reply["result"]))
    return e.value.detail


def oversized(identity: Identity, kind: str, size: int) -> bytes:
    """A correctly signed envelope of `kind` whose body is one blob of `size` bytes."""
    return identity.sign(kind, [b"\0" * size])


def state_of(net: Devnet, i: int) -> dict:
    """What a bad message must not change on node i: the jobs it knows, reputation and credits."""
    from distributeai.node.control import call

    sock = net.node_dirs[i] / "control.sock"
    jobs = [(j["job_id"], j["status"], j.get("role")) for j in call(sock, {"op": "list"})["jobs"]]
    return {"jobs": sorted(jobs), "reputation": call(sock, {"op": "reputation"})["reputation"],
            "credits": call(sock, {"op": "credits"})["balance"]}


async def meshed_attacker(net: Devnet, tmp_path) -> tuple[PeerProcess, Identity]:
    """A real attacker process joined to `net`'s gossip, and its identity, once every node is in
    its mesh: bad gossip is dropped, never relayed, so each node counts it only if the attacker
    sends it straight there. The caller stops the process."""
    attacker = PeerProcess("attacker", tmp_path / "attacker.key", tmp_path,
                           "--bootstrap", net.bootstrap_addr, "--topic", JOBS_TOPIC)
    try:
        attacker.wait_sync(_ready, 60)
        node_ids = {n["peer_id"] for n in net.node_info}

        def meshed_with_every_node(ev: list) -> bool:
            meshes = [e for e in ev if e["event"] == "mesh" and e["topic"] == JOBS_TOPIC]
            return bool(meshes) and node_ids <= set(meshes[-1]["peers"])

        await attacker.wait(meshed_with_every_node, 120)
    except BaseException:
        attacker.stop()
        raise
    return attacker, Identity.from_seed(load_or_create_key(tmp_path / "attacker.key"))


@pytest.mark.slow
async def test_hostile_peer_is_rejected_counted_and_harmless(tmp_path):
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        attacker, me = await meshed_attacker(net, tmp_path)
        try:
            victim = Identity.from_seed(load_or_create_key(net.node_dirs[0] / "node.key"))
            victim_peer = net.node_info[0]["peer_id"]
            # One valid announcement of the attacker's: every node stores it (and may bid; the
            # attacker never answers). Its replay below must then change nothing.
            now = int(time.time() * 1000)
            genuine = announce_by(me, now)
            assert (await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=genuine.hex()))["ok"]
            for i in range(3):
                wait_for(lambda i=i: len(state_of(net, i)["jobs"]) == 1, 60, f"node {i + 1} to store the announcement")
            before = [state_of(net, i) for i in range(3)]

            gossip = {
                "malformed": b"\xc1 not msgpack",
                "bad_signature": flip_last_signature_byte(announce_by(me, now)),
                "wrong_sender": announce_by(victim, now),  # the victim's signed words, relayed by us
                "replay": genuine,  # the same job id again
                "stale": announce_by(me, now - 3600_000),
                "future_dated": announce_by(me, now + 3600_000),
                "oversize": oversized(me, "announce", 70 * 1024),  # an announcement may be 66 KiB
                "unknown_kind": sign(me, Bid(b"\0" * 32, me.public_key, 1, 1, 1, (), now)),
            }
            for data in gossip.values():
                reply = await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=data.hex())
                assert reply["ok"], reply

            # Requests straight to the victim node, on every protocol, each refused with its reason.
            async def refused(protocol: str, data: bytes) -> str:
                return refusal_reason(await attacker.call(cmd="request", peer=victim_peer, protocol=protocol,
                                                          data=data.hex()))

            assert await refused(BID_PROTOCOL, os.urandom(64)) in ("malformed", "noncanonical")
            unknown_job = b"\1" * 32
            requests = {
                "unknown_job": [
                    (BID_PROTOCOL, sign(me, Bid(unknown_job, me.public_key, 1, 1000, 256, ("process",), now))),
                    (COMMIT_PROTOCOL, sign(me, Commit(unknown_job, me.public_key, b"\2" * 32))),
                    (WITHDRAW_PROTOCOL, sign(me, Withdraw(unknown_job, me.public_key, "no"))),
                    (REVEAL_PROTOCOL, sign(me, RevealRequest(unknown_job, victim.public_key))),
                    # an award for a job the victim never saw announced
                    (AWARD_PROTOCOL, sign(me, Award(job_id_of(spec_by(victim, now)), victim.public_key, 0, now + 60_000))),
                ],
                "wrong_sender": [
                    (BID_PROTOCOL, sign(victim, Bid(unknown_job, victim.public_key, 1, 1000, 256, ("process",), now))),
                    (COMMIT_PROTOCOL, sign(victim, Commit(unknown_job, victim.public_key, b"\2" * 32))),
                ],
                "bad_signature": [
                    (COMMIT_PROTOCOL, flip_last_signature_byte(sign(me, Commit(unknown_job, me.public_key, b"\2" * 32)))),
                    (AWARD_PROTOCOL, flip_last_signature_byte(sign(me, Award(unknown_job, victim.public_key, 0, now)))),
                ],
                "oversize": [(BID_PROTOCOL, oversized(me, "bid", 2048)), (COMMIT_PROTOCOL, oversized(me, "commit", 2048)),
                             (AWARD_PROTOCOL, oversized(me, "award", 2048))],
            }
            for reason, sends in requests.items():
                for protocol, data in sends:
                    assert await refused(protocol, data) == reason, (reason, protocol)

            # Every node dropped and counted the gossip; the victim also counted the requests.
            for i in range(3):
                wait_for(lambda i=i: set(gossip) <= set(net.info(i)["rejected"]), 60,
                         f"node {i + 1} to count every bad gossip message")
            rejected = net.info(0)["rejected"]
            for reason, sends in requests.items():
                assert rejected.get(reason, 0) >= len(sends), (reason, rejected)
            for i in range(3):
                assert net.node_procs[i].poll() is None
                assert net.info(i)["active_jobs"] == 0
            for i in range(3):
                print(f"\nnode {i + 1} rejected: {json.dumps(dict(sorted(net.info(i)['rejected'].items())))}")
            # Nothing changed: every node knows the same jobs, reputations and credits as before.
            assert [state_of(net, i) for i in range(3)] == before
        finally:
            attacker.stop()
        # The network still works.
        outcome, _ = submit_json(net.node_dirs[1], *DEMO_ARGS)
        assert outcome["status"] == "verified" and outcome["stdout"] == DEMO_STDOUT, json.dumps(outcome)


@pytest.mark.slow
def test_garbage_on_the_libp2p_port_is_harmless(tmp_path):
    """Below our own decoders sit libp2p's (multistream-select, Noise, yamux): raw garbage, a valid
    multistream header followed by garbage, a truncated Noise handshake and an abandoned half-open
    connection, 200 connections in all, leave every node up and the network verifying jobs."""
    import random
    import socket

    rng = random.Random(7)
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        ma = next(a for a in net.node_info[0]["multiaddrs"] if a.startswith("/ip4/127.0.0.1/tcp/"))
        port = int(ma.split("/")[4])
        multistream = b"\x13/multistream/1.0.0\n"
        payloads = [
            lambda: rng.randbytes(rng.randrange(1, 4096)),
            lambda: multistream + b"\x07/noise\n" + rng.randbytes(rng.randrange(0, 512)),
            lambda: multistream + b"\x07/noise\n" + b"\x00\x20" + rng.randbytes(16),  # cut-off Noise msg
            lambda: multistream + rng.randbytes(rng.randrange(0, 64)),
            lambda: b"\xff" * rng.randrange(1, 100_000),
        ]
        half_open = []
        for n in range(200):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                s.sendall(payloads[n % len(payloads)]())
            except OSError:
                pass  # the node may close on us mid-send: that is a fine answer
            if n % 50 == 0:
                half_open.append(s)  # left open, silent
            else:
                s.close()
        assert net.node_procs[0].poll() is None
        outcome, _ = submit_json(net.node_dirs[0], *DEMO_ARGS)
        assert outcome["status"] == "verified" and outcome["stdout"] == DEMO_STDOUT, json.dumps(outcome)
        for s in half_open:
            s.close()
        assert all(p.poll() is None for p in net.node_procs)


@pytest.mark.slow
def test_a_bug_in_handling_one_gossip_message_does_not_end_the_node(tmp_path):
    """Fault injection: node 2 fails (RuntimeError) on every gossip message containing b"boom". It
    logs and counts `internal_error` for each and keeps serving: the next job verifies with it."""
    import sys
    from pathlib import Path

    fragile = [sys.executable, str(Path(__file__).with_name("byzantine_node.py")), "fragile"]
    with Devnet(tmp_path / "net", nodes=2, sandbox="process", programs={1: fragile}) as net:
        net.start()
        net.wait_connected()
        boom, _ = submit_json(net.node_dirs[0], "--replicas", "1", "--quorum", "1", "--image", "alpine:latest",
                              "--cmd", "echo", "boom")
        assert boom["status"] == "verified"
        wait_for(lambda: net.info(1)["rejected"].get("internal_error", 0) >= 1, 60,
                 "the fragile node to count its failure")
        assert net.node_procs[1].poll() is None
        assert "could not be handled" in (net.node_dirs[1] / "log").read_text()
        outcome, _ = submit_json(net.node_dirs[0], "--replicas", "2", "--quorum", "2", *DEMO_ARGS)
        assert outcome["status"] == "verified" and outcome["stdout"] == DEMO_STDOUT, json.dumps(outcome)
