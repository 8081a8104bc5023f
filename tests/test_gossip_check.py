"""`consensus.gossip.check_gossip`, the one check of a gossiped message, on its own (pure): each
rule once, in its order, with the reason every caller (node, bootstrap, fuzzer, simulator)
counts. The bootstrap running it over a real network: tests/test_bootstrap_gossip.py."""

from __future__ import annotations

import pytest

from distributeai.consensus.certificate import CheckedCertificate
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.gossip import check_gossip
from distributeai.consensus.messages import Announce, Bid, job_id_of, sign
from distributeai.consensus.pow import solve
from distributeai.consensus.validate import CheckedAnnounce

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, drive, make_spec

DIFFICULTY = 8  # cheap to solve, and an empty nonce fails it (1 in 256 keys would pass by luck: not these)
STRANGER = EXECUTORS[3]


def reason(data: bytes, author: bytes | None, difficulty: int = DIFFICULTY, seen=None) -> str:
    with pytest.raises(RemoteProtocolError) as e:
        check_gossip(data, author, NOW, difficulty, seen)
    return e.value.reason


def announcement(pow_nonce: bytes) -> tuple[bytes, bytes]:
    spec = sign(SUBMITTER, make_spec())
    return sign(SUBMITTER, Announce(spec, (), pow_nonce)), job_id_of(spec)


def test_an_announcement_from_its_submitter_with_its_work_passes_and_nothing_else_does():
    ann, job_id = announcement(solve(SUBMITTER.public_key, DIFFICULTY))
    checked = check_gossip(ann, SUBMITTER.public_key, NOW, DIFFICULTY)
    assert isinstance(checked, CheckedAnnounce) and checked.job_id == job_id
    assert reason(ann, STRANGER.public_key) == "wrong_sender"  # relayed under another author
    assert reason(ann, None) == "wrong_sender"  # an author that is no Ed25519 key
    weak, _ = announcement(b"")
    assert reason(weak, SUBMITTER.public_key) == "weak_identity"
    assert check_gossip(weak, SUBMITTER.public_key, NOW, 0).job_id == job_id  # difficulty 0: the simulator


def test_a_certificate_counts_only_from_its_submitter():
    cert = drive([b"A", b"A", b"B"])[0].certificate
    checked = check_gossip(cert, SUBMITTER.public_key, NOW, DIFFICULTY)
    assert isinstance(checked, CheckedCertificate) and checked.certificate.status == "verified"
    assert reason(cert, STRANGER.public_key) == "wrong_sender"
    assert reason(cert, None) == "wrong_sender"


def test_replay_is_the_last_check_and_asks_seen_for_kind_and_job():
    ann, job_id = announcement(solve(SUBMITTER.public_key, DIFFICULTY))
    asked = []

    def seen(kind: str, jid: bytes) -> bool:
        asked.append((kind, jid))
        return True

    assert reason(ann, SUBMITTER.public_key, seen=seen) == "replay"
    assert asked == [("announce", job_id)]
    asked.clear()
    assert reason(ann, STRANGER.public_key, seen=seen) == "wrong_sender"  # a bad message is never a replay
    assert asked == []
    assert check_gossip(ann, SUBMITTER.public_key, NOW, DIFFICULTY, lambda kind, jid: False).job_id == job_id


def test_other_kinds_and_junk_are_refused_by_reason():
    bid = sign(SUBMITTER, Bid(b"\0" * 32, SUBMITTER.public_key, 1, 1, 1, (), NOW))
    assert reason(bid, SUBMITTER.public_key) == "unknown_kind"
    assert reason(b"\xc1 not msgpack", SUBMITTER.public_key) == "malformed"
    assert reason(b"\0" * (2 << 20), SUBMITTER.public_key) == "oversize"
