"""Sybil resistance and selection diversity in the pure core (issue 7, items 4 and 5): the
proof-of-work on a public key, its place in Bid and Announce, address ranges, and the submitter's
choice of executors from distinct ranges. The replay test uses a real SQLite store."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import Announce, Bid, JobSpec, Withdraw, sign, verify
from distributeai.consensus.pow import DOMAIN, leading_zero_bits, pow_ok, solve
from distributeai.consensus.subnet import subnet_of
from distributeai.consensus.submitter import SendAward, SubmitterJob, Timing
from distributeai.consensus.validate import check_announce
from distributeai.node.proof import load_or_solve
from distributeai.node.store import Store
from distributeai.node.submitting import replay

NOW = 1_700_000_000_000
SUBMITTER = Identity.from_seed(b"\x01" * 32)
BIDDERS = [Identity.from_seed(bytes([10 + i]) * 32) for i in range(6)]


def digest_bits(public_key: bytes, nonce: bytes) -> int:
    return leading_zero_bits(hashlib.sha256(DOMAIN + public_key + nonce).digest())


# --- proof-of-work ----------------------------------------------------------------------------

def test_leading_zero_bits():
    assert leading_zero_bits(b"\xff" + b"\0" * 31) == 0
    assert leading_zero_bits(b"\x01" + b"\0" * 31) == 7
    assert leading_zero_bits(b"\0\x40" + b"\0" * 30) == 9
    assert leading_zero_bits(b"\0" * 32) == 256


@pytest.mark.parametrize("difficulty", [1, 8, 14])
def test_solved_nonce_proves_its_difficulty_and_is_tied_to_the_key(difficulty):
    key = BIDDERS[0].public_key
    nonce = solve(key, difficulty)
    assert len(nonce) == 8
    assert digest_bits(key, nonce) >= difficulty
    assert pow_ok(key, nonce, difficulty)
    # The first solution from the counter's start: every earlier counter value fails.
    first = int.from_bytes(nonce, "big")
    assert all(digest_bits(key, c.to_bytes(8, "big")) < difficulty for c in range(first))
    # The same nonce on another key proves what that key's hash happens to give, not `difficulty`.
    other = BIDDERS[1].public_key
    assert pow_ok(other, nonce, difficulty) == (digest_bits(other, nonce) >= difficulty)


def test_difficulty_zero_admits_anyone_and_bounds_are_enforced():
    key = BIDDERS[0].public_key
    assert solve(key, 0) == b""
    assert pow_ok(key, b"", 0) and pow_ok(key, b"anything", 0)
    assert pow_ok(key, b"", 12) == (digest_bits(key, b"") >= 12)
    long_nonce = next(n for c in range(1 << 16) if digest_bits(key, n := c.to_bytes(17, "big")) >= 1)
    assert not pow_ok(key, long_nonce, 1)  # the work is there, but over the 16-byte cap: never valid
    with pytest.raises(ValueError):
        solve(BIDDERS[0].public_key, 65)


async def test_node_solves_once_and_again_only_when_the_difficulty_rises(tmp_path):
    path = tmp_path / "node.pow"
    key = BIDDERS[2].public_key
    first = await load_or_solve(path, key, 10)
    assert pow_ok(key, first, 10)
    assert json.loads(path.read_text()) == {"difficulty": 10, "nonce": first.hex()}
    assert await load_or_solve(path, key, 10) == first
    assert await load_or_solve(path, key, 4) == first  # proves fewer bits as well
    raised = await load_or_solve(path, key, 14)
    assert pow_ok(key, raised, 14) and json.loads(path.read_text())["difficulty"] == 14
    other = BIDDERS[3].public_key  # a file left by another key is solved again, not trusted
    assert pow_ok(other, await load_or_solve(path, other, 12), 12)
    path.write_text("not json")
    assert pow_ok(key, await load_or_solve(path, key, 6), 6)


# --- the nonce on the wire --------------------------------------------------------------------

def spec_raw(identity: Identity = SUBMITTER, created_ms: int = NOW) -> bytes:
    return sign(identity, JobSpec(submitter=identity.public_key, nonce=os.urandom(16), created_ms=created_ms,
                                  name="demo", image="alpine:latest", command=("true",)))


def test_bid_and_announce_carry_the_nonce_and_refuse_the_old_arity_or_a_long_nonce():
    bidder = BIDDERS[0]
    bid = Bid(b"\2" * 32, bidder.public_key, 1, 1000, 256, ("process",), NOW, b"\1" * 8)
    assert verify(sign(bidder, bid), Bid).msg.pow == b"\1" * 8
    ann = Announce(spec_raw(), ("/ip4/127.0.0.1/tcp/1",), b"\3" * 16)
    assert verify(sign(SUBMITTER, ann), Announce).msg.pow == b"\3" * 16

    def resigned(identity: Identity, kind: str, body: list) -> bytes:
        return identity.sign(kind, body)

    for identity, kind, body, cls in [
        (bidder, "bid", bid.to_body()[:-2], Bid),                       # no pow field: the old format
        (bidder, "bid", bid.to_body()[:-2] + [b"\0" * 17, 0], Bid),      # over 16 bytes
        (bidder, "bid", bid.to_body()[:-2] + ["nonce", 0], Bid),         # not bytes
        (SUBMITTER, "announce", ann.to_body()[:-2], Announce),
        (SUBMITTER, "announce", ann.to_body()[:-2] + [b"\0" * 17, ann.share], Announce),
    ]:
        with pytest.raises(RemoteProtocolError) as e:
            verify(resigned(identity, kind, body), cls)
        assert e.value.reason == "malformed"


def test_announcement_without_enough_work_is_a_weak_identity():
    raw_spec = spec_raw()
    weak = sign(SUBMITTER, Announce(raw_spec, ()))
    assert check_announce(weak, NOW).spec.submitter == SUBMITTER.public_key  # difficulty 0 (the simulator)
    if digest_bits(SUBMITTER.public_key, b"") < 12:
        with pytest.raises(RemoteProtocolError) as e:
            check_announce(weak, NOW, 12)
        assert e.value.reason == "weak_identity"
    strong = sign(SUBMITTER, Announce(raw_spec, (), solve(SUBMITTER.public_key, 12)))
    assert check_announce(strong, NOW, 12).job_id == check_announce(weak, NOW).job_id
    # Someone else's nonce proves nothing about this submitter.
    borrowed = solve(BIDDERS[0].public_key, 12)
    if digest_bits(SUBMITTER.public_key, borrowed) < 12:
        with pytest.raises(RemoteProtocolError) as e:
            check_announce(sign(SUBMITTER, Announce(raw_spec, (), borrowed)), NOW, 12)
        assert e.value.reason == "weak_identity"
    # Time and signer are judged first: a stale announcement is stale, whatever its work.
    with pytest.raises(RemoteProtocolError) as e:
        check_announce(sign(SUBMITTER, Announce(spec_raw(created_ms=NOW - 3600_000), ())), NOW, 12)
    assert e.value.reason == "stale"


# --- address ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize("ip, subnet", [
    ("192.0.2.7", "192.0.2.0/24"),
    ("192.0.2.255", "192.0.2.0/24"),
    ("192.0.3.1", "192.0.3.0/24"),
    ("127.0.0.1", "127.0.0.0/24"),
    ("2001:db8:1:2::3", "2001:db8:1::/48"),
    ("2001:db8:1:ffff::1", "2001:db8:1::/48"),
    ("::ffff:192.0.2.9", "192.0.2.0/24"),
    (None, None),
    ("", None),
    ("not an address", None),
])
def test_subnet_of(ip, subnet):
    assert subnet_of(ip) == subnet


async def test_the_range_comes_from_the_connection_a_request_arrived_on():
    """Two real overlays on 127.0.0.1: the server's handler sees the client's socket address."""
    import trio

    from distributeai.p2p.overlay import open_overlay

    seen: list[str | None] = []
    async with open_overlay(os.urandom(32)) as server:
        async def handler(peer: str, data: bytes) -> bytes:
            seen.append(server.remote_ip(peer))
            return data

        server.set_handler("/test/ip/1", handler)
        async with open_overlay(os.urandom(32)) as client:
            await client.connect(server.multiaddrs()[0])
            with trio.fail_after(20):
                assert await client.request(server.peer_id, "/test/ip/1", b"x") == b"x"
            assert client.remote_ip(server.peer_id) == "127.0.0.1"
        assert seen == ["127.0.0.1"] and subnet_of(seen[0]) == "127.0.0.0/24"
        assert server.remote_ip("not a peer id") is None
        assert server.remote_ip(server.peer_id) is None  # no connection to itself


# --- diversity in selection -------------------------------------------------------------------

def new_job(replicas: int = 3) -> SubmitterJob:
    spec = JobSpec(submitter=SUBMITTER.public_key, nonce=b"\7" * 16, created_ms=NOW, name="demo",
                   image="alpine:latest", command=("true",), replicas=replicas, quorum=min(2, replicas),
                   max_total_results=6, max_error_results=3)
    return SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW, timing=Timing())


def bid_of(job: SubmitterJob, bidder: Identity):
    return verify(sign(bidder, Bid(job.job_id, bidder.public_key, 1, 1000, 256, ("process",), NOW)), Bid)


def run_bidding(job: SubmitterJob, bids: list[tuple[int, int, str | None]]) -> list[bytes]:
    """bids: (bidder index, reputation, subnet); returns the awarded keys in award order."""
    for i, rep, subnet in bids:
        assert job.receive_bid(bid_of(job, BIDDERS[i]), NOW + 1, rep, None, subnet) == []
    actions = job.tick(NOW + job.timing.bid_window_ms)
    return [a.executor for a in actions if isinstance(a, SendAward)]


def keys(*indices: int) -> list[bytes]:
    return [BIDDERS[i].public_key for i in indices]


def test_slots_go_to_distinct_ranges_before_better_ranked_bidders_of_a_taken_range():
    job = new_job()
    # 0 and 1 rank best but share a /24; 2 and 3 rank below them, each in a range of its own.
    awarded = run_bidding(job, [(0, 20, "10.0.0.0/24"), (1, 15, "10.0.0.0/24"),
                                (2, 5, "10.0.1.0/24"), (3, 0, "10.0.2.0/24")])
    assert awarded == keys(0, 2, 3)


def test_too_few_ranges_fall_back_to_the_best_ranked_bidders():
    job = new_job()
    awarded = run_bidding(job, [(0, 20, "10.0.0.0/24"), (1, 15, "10.0.0.0/24"),
                                (2, 10, "10.0.0.0/24"), (3, 5, "10.0.1.0/24")])
    assert awarded == keys(0, 3, 1)  # one slot per range while ranges last, then by rank
    everyone_on_one_range = new_job()  # what every test on 127.0.0.1 sees: ranking alone
    assert run_bidding(everyone_on_one_range, [(i, 10 - i, "127.0.0.0/24") for i in range(5)]) == keys(0, 1, 2)


def test_an_unknown_range_conflicts_with_nobody():
    job = new_job()
    awarded = run_bidding(job, [(0, 20, None), (1, 15, None), (2, 10, "10.0.0.0/24"), (3, 5, "10.0.0.0/24")])
    assert awarded == keys(0, 1, 2)


def test_a_replacement_keeps_the_ranges_distinct():
    job = new_job()
    awarded = run_bidding(job, [(0, 20, "10.0.0.0/24"), (1, 15, "10.0.0.0/24"), (2, 10, "10.0.1.0/24"),
                                (3, 5, "10.0.2.0/24"), (4, 0, "10.0.1.0/24")])
    assert awarded == keys(0, 2, 3)
    # 2 withdraws: its range is free again; 4 (same range as 2, ranked last) is chosen over 1,
    # whose range 0 still holds.
    withdraw = verify(sign(BIDDERS[2], Withdraw(job.job_id, BIDDERS[2].public_key, "sandbox broke")), Withdraw)
    actions = job.receive_withdraw(withdraw, NOW + 1000)
    assert [a.executor for a in actions if isinstance(a, SendAward)] == keys(4)


async def test_replayed_inputs_give_the_same_awards(tmp_path):
    """The address range is stored with each bid (SQLite, as the node stores it) and a replay
    after a restart makes the same, diversity-dependent, awards."""
    store = await Store.open(tmp_path / "node.db")
    try:
        live = new_job()
        job_hex = live.job_id.hex()
        await store.insert_job(job_hex, "submitter", "demo", live.signed_spec, "bidding", NOW)
        await store.record_input(job_hex, "start", live.signed_spec, {}, NOW, status="bidding", reason="",
                                 certificate=None, offences=[])
        plan = [(0, 20, "10.0.0.0/24"), (1, 15, "10.0.0.0/24"), (2, 5, "10.0.1.0/24"), (3, 0, "10.0.2.0/24")]
        for i, rep, subnet in plan:
            b = bid_of(live, BIDDERS[i])
            live.receive_bid(b, NOW + 1, rep, None, subnet)
            await store.record_input(job_hex, "bid", b.raw, {"reputation": rep, "unbid_best": None, "subnet": subnet},
                                     NOW + 1, status=live.state, reason="", certificate=None, offences=[])
        live.tick(NOW + 300)
        await store.record_input(job_hex, "tick", b"", {}, NOW + 300, status=live.state, reason="",
                                 certificate=None, offences=[])
        assert list(live.awards) == keys(0, 2, 3)
        rebuilt = replay(SUBMITTER, Timing(), await store.inputs(job_hex))
        assert rebuilt is not None and list(rebuilt.awards) == list(live.awards)
        assert rebuilt.subnet == live.subnet
    finally:
        await store.aclose()


def test_a_relayed_announcement_is_the_relay_s_fault_before_it_is_a_weak_identity():
    weak = sign(SUBMITTER, Announce(spec_raw(), ()))
    with pytest.raises(RemoteProtocolError) as e:
        check_announce(weak, NOW, 12, author=BIDDERS[0].public_key)
    assert e.value.reason == "wrong_sender"
    strong = sign(SUBMITTER, Announce(spec_raw(), (), solve(SUBMITTER.public_key, 12)))
    assert check_announce(strong, NOW, 12, author=SUBMITTER.public_key).spec.submitter == SUBMITTER.public_key


# --- the bid window's end does not cut reputation ranking short -------------------------------

def test_window_end_waits_for_a_better_reputed_peer_then_ranks_it_first():
    job = new_job()
    for i in (3, 4, 5):  # three fresh identities answer first
        assert job.receive_bid(bid_of(job, BIDDERS[i]), NOW + 10, 0, 20, "127.0.0.0/24") == []
    end = NOW + job.timing.bid_window_ms
    assert job.tick(end, unbid_best=20) == []  # an established peer (20) has not bid yet
    assert job.state == "bidding" and job.history[-1][1] == "bids_wait"
    assert job.next_deadline_ms() == end + job.timing.bid_wait_reputation_ms
    assert job.receive_bid(bid_of(job, BIDDERS[0]), end + 900, 20, 15, "127.0.0.0/24") == []  # another (15) to come
    actions = job.receive_bid(bid_of(job, BIDDERS[1]), end + 1500, 15, 0, "127.0.0.0/24")
    awarded = [a.executor for a in actions if isinstance(a, SendAward)]
    assert awarded[:2] == keys(0, 1) and awarded[2] in keys(3, 4, 5)
    assert job.history[[h[1] for h in job.history].index("bids_closed")][3].endswith("waited")


def test_the_wait_is_bounded_and_not_taken_when_nobody_better_is_left():
    waited = new_job()
    for i in (3, 4, 5):
        waited.receive_bid(bid_of(waited, BIDDERS[i]), NOW + 10, 0, 20, None)
    end = NOW + waited.timing.bid_window_ms
    assert waited.tick(end, unbid_best=20) == []
    actions = waited.tick(end + waited.timing.bid_wait_reputation_ms, unbid_best=20)  # it never bid
    assert len([a for a in actions if isinstance(a, SendAward)]) == 3 and waited.state == "running"

    short = new_job()  # two bids, and only strangers (reputation 0) could still bid: no wait
    for i in (3, 4):
        short.receive_bid(bid_of(short, BIDDERS[i]), NOW + 10, 0, 0, None)
    actions = short.tick(NOW + short.timing.bid_window_ms, unbid_best=0)
    assert len([a for a in actions if isinstance(a, SendAward)]) == 2 and short.state == "running"


def test_the_difficulty_setting_is_checked_like_every_other():
    from distributeai.cli.config import ConfigError, load_config

    assert load_config(env={"HOME": "/nonexistent"}).pow_difficulty == 20
    assert load_config({"pow_difficulty": 0}, env={"HOME": "/nonexistent"}).pow_difficulty == 0
    assert load_config(env={"HOME": "/nonexistent", "DISTRIBUTEAI_POW_DIFFICULTY": "24"}).pow_difficulty == 24
    for flags, env in [({"pow_difficulty": 65}, {}), ({"pow_difficulty": -1}, {}),
                       ({}, {"DISTRIBUTEAI_POW_DIFFICULTY": "lots"})]:
        with pytest.raises(ConfigError, match="pow_difficulty"):
            load_config(flags, env={"HOME": "/nonexistent", **env})


async def test_a_replay_waits_and_closes_as_the_live_job_did(tmp_path):
    """The bound on unbid reputation is stored with each tick, so the wait replays exactly."""
    store = await Store.open(tmp_path / "node.db")
    try:
        live = new_job()
        job_hex = live.job_id.hex()

        async def record(kind: str, raw: bytes, meta: dict, at: int) -> None:
            await store.record_input(job_hex, kind, raw, meta, at, status=live.state, reason="",
                                     certificate=None, offences=[])

        await store.insert_job(job_hex, "submitter", "demo", live.signed_spec, "bidding", NOW)
        await record("start", live.signed_spec, {}, NOW)
        for i in (3, 4, 5):
            b = bid_of(live, BIDDERS[i])
            live.receive_bid(b, NOW + 10, 0, 20, None)
            await record("bid", b.raw, {"reputation": 0, "unbid_best": 20, "subnet": None}, NOW + 10)
        end = NOW + live.timing.bid_window_ms
        live.tick(end, 20)
        await record("tick", b"", {"unbid_best": 20}, end)
        b = bid_of(live, BIDDERS[0])
        live.receive_bid(b, end + 500, 20, 0, None)
        await record("bid", b.raw, {"reputation": 20, "unbid_best": 0, "subnet": None}, end + 500)
        assert live.state == "running" and list(live.awards)[0] == BIDDERS[0].public_key
        rebuilt = replay(SUBMITTER, Timing(), await store.inputs(job_hex))
        assert rebuilt is not None and rebuilt.history == live.history and list(rebuilt.awards) == list(live.awards)
    finally:
        await store.aclose()
