"""Bad input from a peer: a real attacker process joins a running 3-node network and sends
malformed, unsigned, forged, misattributed and stale gossip, and bad requests. Each is dropped,
counted by reason, and changes nothing; the network then still verifies a job."""

from __future__ import annotations

import json
import os
import time

import pytest

from distributeai.cli.devnet import Devnet
from distributeai.consensus.codec import Identity, encode
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import Announce, Award, Bid, Commit, JobSpec, job_id_of, sign
from distributeai.consensus.names import AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, JOBS_TOPIC
from distributeai.node.wire import parse_answer
from distributeai.p2p.identity import load_or_create_key

from .netfixtures import DEMO_ARGS, DEMO_STDOUT, submit_json, wait_for
from .test_p2p import PeerProcess, _ready


def spec_by(identity: Identity, created_ms: int) -> bytes:
    return sign(identity, JobSpec(submitter=identity.public_key, nonce=os.urandom(16), created_ms=created_ms,
                                  name="evil", image="alpine:latest", command=("true",)))


def announce_by(identity: Identity, created_ms: int) -> bytes:
    return sign(identity, Announce(spec_by(identity, created_ms), ()))


def flip_last_signature_byte(envelope: bytes) -> bytes:
    import msgpack

    kind, body, signer, sig = msgpack.unpackb(envelope)
    return encode([kind, body, signer, sig[:-1] + bytes([sig[-1] ^ 1])])


def refusal_reason(reply: dict) -> str:
    assert reply["ok"], reply
    with pytest.raises(RemoteProtocolError) as e:
        parse_answer(bytes.fromhex(reply["result"]))
    return e.value.detail


@pytest.mark.slow
async def test_hostile_peer_is_rejected_counted_and_harmless(tmp_path):
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        attacker = PeerProcess("attacker", tmp_path / "attacker.key", tmp_path,
                               "--bootstrap", net.bootstrap_addr, "--topic", JOBS_TOPIC)
        try:
            attacker.wait_sync(_ready, 30)
            me = Identity.from_seed(load_or_create_key(tmp_path / "attacker.key"))
            victim = Identity.from_seed(load_or_create_key(net.node_dirs[0] / "node.key"))
            victim_peer = net.node_info[0]["peer_id"]
            await attacker.wait(lambda ev: any(e["event"] == "mesh" and e["topic"] == JOBS_TOPIC
                                               and len(e["peers"]) >= 2 for e in ev), 30)
            now = int(time.time() * 1000)
            gossip = {
                "malformed": b"\xc1 not msgpack",
                "bad_signature": flip_last_signature_byte(announce_by(me, now)),
                "wrong_sender": announce_by(victim, now),  # the victim's signed words, relayed by us
                "stale": announce_by(me, now - 3600_000),
                "future_dated": announce_by(me, now + 3600_000),
                "unknown_kind": sign(me, Bid(b"\0" * 32, me.public_key, 1, 1, 1, (), now)),
            }
            for data in gossip.values():
                reply = await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=data.hex())
                assert reply["ok"], reply

            # Requests straight to the victim node.
            garbage = await attacker.call(cmd="request", peer=victim_peer, protocol=BID_PROTOCOL,
                                          data=os.urandom(64).hex())
            assert refusal_reason(garbage) in ("malformed", "noncanonical")
            unknown = sign(me, Bid(b"\1" * 32, me.public_key, 1, 1000, 256, ("process",), now))
            assert refusal_reason(await attacker.call(cmd="request", peer=victim_peer, protocol=BID_PROTOCOL,
                                                      data=unknown.hex())) == "unknown_job"
            foreign_bid = sign(victim, Bid(b"\1" * 32, victim.public_key, 1, 1000, 256, ("process",), now))
            assert refusal_reason(await attacker.call(cmd="request", peer=victim_peer, protocol=BID_PROTOCOL,
                                                      data=foreign_bid.hex())) == "wrong_sender"
            forged_commit = flip_last_signature_byte(sign(me, Commit(b"\1" * 32, me.public_key, b"\2" * 32)))
            assert refusal_reason(await attacker.call(cmd="request", peer=victim_peer, protocol=COMMIT_PROTOCOL,
                                                      data=forged_commit.hex())) == "bad_signature"
            # An award for a job the victim never saw announced.
            spec = spec_by(victim, now)
            fake_award = sign(me, Award(job_id_of(spec), victim.public_key, 0, now + 60_000))
            assert refusal_reason(await attacker.call(cmd="request", peer=victim_peer, protocol=AWARD_PROTOCOL,
                                                      data=fake_award.hex())) == "unknown_job"

            # Every node dropped and counted the gossip; the victim also counted the requests.
            for i in range(3):
                wait_for(lambda i=i: set(gossip) <= set(net.info(i)["rejected"]), 15,
                         f"node {i + 1} to count every bad gossip message")
            rejected = net.info(0)["rejected"]
            assert {"unknown_job", "wrong_sender", "bad_signature"} <= set(rejected)
            for i in range(3):
                assert net.node_procs[i].poll() is None
                listed = net.info(i)
                assert listed["active_jobs"] == 0
        finally:
            attacker.stop()
        # Nothing was created by any of it: no node knows a job, and the network still works.
        for d in net.node_dirs:
            from distributeai.node.control import call

            assert call(d / "control.sock", {"op": "list"})["jobs"] == []
        outcome, _ = submit_json(net.node_dirs[1], *DEMO_ARGS)
        assert outcome["status"] == "verified" and outcome["stdout"] == DEMO_STDOUT, json.dumps(outcome)
