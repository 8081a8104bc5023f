"""A job's inputs as pure code (issue 16, item 3): JobSpec.inputs and its checks, the job file's
`inputs`, the `inputs_too_large` decline's wording, and locality in the submitter's ranking
(`Bid.held`)."""

from __future__ import annotations

import pytest

from distributeai.consensus.cid import cid_text, raw_cid
from distributeai.consensus.declines import failure_reason
from distributeai.consensus.errors import JobFileError, RemoteProtocolError
from distributeai.consensus.jobfile import check_input_paths, parse_job
from distributeai.consensus.messages import (
    INPUTS_MAX_BYTES, MAX_INPUTS, Bid, Decline, JobSpec, job_id_of, sign, verify,
)
from distributeai.consensus.submitter import SendAward, SubmitterJob
from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, make_spec

CID_A, CID_B = raw_cid(b"a"), raw_cid(b"b")


def roundtrip(**kw) -> JobSpec:
    return verify(sign(SUBMITTER, make_spec(**kw)), JobSpec).msg


def test_inputs_travel_in_the_signed_spec_and_the_job_id_covers_them():
    spec = roundtrip(inputs=((CID_A, "data", 300), (CID_B, "model/weights.bin", 5)))
    assert spec.inputs == ((CID_A, "data", 300), (CID_B, "model/weights.bin", 5))
    assert spec.inputs_size == 305
    ids = {job_id_of(sign(SUBMITTER, make_spec(inputs=inputs)))
           for inputs in [(), ((CID_A, "data", 300),), ((CID_B, "data", 300),), ((CID_A, "data", 301),),
                          ((CID_A, "dat", 300),)]}
    assert len(ids) == 5


@pytest.mark.parametrize("inputs, why", [
    ([[b"\1\x55", "data", 1]], "cid"),
    ([[raw_cid(b"a")[:-1] + b"", "data", 1]], "cid"),
    ([[CID_A, "/data", 1]], "path"),
    ([[CID_A, "a/../b", 1]], "path"),
    ([[CID_A, "a//b", 1]], "path"),
    ([[CID_A, ".", 1]], "path"),
    ([[CID_A, "", 1]], "path"),
    ([[CID_A, "x" * 256, 1]], "path"),
    ([[CID_A, "a\nb", 1]], "path"),
    ([[CID_A, "data", -1]], "size"),
    ([[CID_A, "data", INPUTS_MAX_BYTES + 1]], "size"),
    ([[CID_A, "data", INPUTS_MAX_BYTES], [CID_B, "more", 1]], "total"),
    ([[CID_A, "data", 1], [CID_B, "data", 1]], "twice"),
    ([[CID_A, "data", 1], [CID_B, "data/x", 1]], "inside"),
    ([[CID_A, "a/b", 1], [CID_B, "a/b/c/d", 1]], "inside"),
    ([[CID_A, "data", 1]] * (MAX_INPUTS + 1), "count"),
    ([[CID_A, "data"]], "shape"),
])
def test_every_node_refuses_inputs_it_cannot_lay_out(inputs, why):
    body = make_spec().to_body()
    body[26] = inputs  # JobSpec.inputs
    with pytest.raises(RemoteProtocolError) as e:
        verify(SUBMITTER.sign("spec", body), JobSpec)
    assert e.value.reason == "malformed"
    assert "inputs" in e.value.detail


def test_neighbouring_paths_that_share_a_prefix_string_are_fine():
    spec = roundtrip(inputs=((CID_A, "data", 1), (CID_B, "data2", 1), (raw_cid(b"c"), "data x/y", 1)))
    assert len(spec.inputs) == 3


def test_the_old_spec_arity_is_refused():
    body = make_spec().to_body()[:-1]
    with pytest.raises(RemoteProtocolError):
        verify(SUBMITTER.sign("spec", body), JobSpec)


def test_a_job_file_names_inputs_by_cid_and_the_node_fills_the_sizes():
    doc = {"image": "alpine:latest", "command": ["ls", "-R", "/in"],
           "inputs": [{"cid": cid_text(CID_A), "path": "data"}, {"cid": cid_text(CID_B), "path": "m/w"}]}
    fields = parse_job(doc)
    assert fields["inputs"] == ((CID_A, "data", 0), (CID_B, "m/w", 0))
    assert parse_job({k: v for k, v in doc.items() if k != "inputs"})["inputs"] == ()


@pytest.mark.parametrize("inputs, says", [
    ("bafy", "list"),
    ([{"cid": cid_text(CID_A)}], "exactly"),
    ([{"cid": cid_text(CID_A), "path": "x", "size": 3}], "exactly"),
    ([{"cid": "nonsense", "path": "x"}], "not a CID"),
    ([{"cid": 5, "path": "x"}], "CID's text"),
    ([{"cid": cid_text(CID_A), "path": "../x"}], "plain relative"),
    ([{"cid": cid_text(CID_A), "path": 7}], "not a string"),
    ([{"cid": cid_text(CID_A), "path": "x"}, {"cid": cid_text(CID_B), "path": "x/y"}], "inside"),
    ([{"cid": cid_text(CID_A), "path": "x"}] * (MAX_INPUTS + 1), "at most"),
])
def test_a_bad_inputs_entry_is_a_job_file_error_naming_the_field(inputs, says):
    with pytest.raises(JobFileError) as e:
        parse_job({"image": "alpine:latest", "command": ["true"], "inputs": inputs})
    assert e.value.field == "inputs" and says in str(e.value)


def test_paths_from_the_command_line_and_the_file_are_checked_together():
    check_input_paths(["data", "model"])
    with pytest.raises(JobFileError, match="twice|one path"):
        check_input_paths(["data", "data"])


def test_the_decline_is_worded_with_the_inputs_size():
    spec = make_spec(inputs=((CID_A, "data", 200_000_000), (CID_B, "more", 100_000_000)))
    assert failure_reason(spec, ["inputs_too_large"] * 2, 0) == "no bids: 2 nodes lack room for the inputs (286.1 MiB)"
    d = Decline(b"\1" * 32, EXECUTORS[0].public_key, "inputs_too_large", "the inputs need 300 MB", NOW)
    assert verify(sign(EXECUTORS[0], d), Decline).msg.code == "inputs_too_large"


# --- locality ------------------------------------------------------------------------------------

SIZE = 1000


def job_with_inputs(replicas: int = 2, **kw) -> SubmitterJob:
    spec = make_spec(replicas=replicas, quorum=min(2, replicas), inputs=((CID_A, "data", SIZE),), **kw)
    return SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW)


def held_bid(ex, job: SubmitterJob, held: int, price: int = 1):
    return verify(sign(ex, Bid(job.job_id, ex.public_key, price, 1000, 256, ("process",), NOW, b"", held)), Bid)


def awarded(actions) -> set[bytes]:
    return {a.executor for a in actions if isinstance(a, SendAward)}


def test_holders_of_the_inputs_are_awarded_before_others_of_equal_reputation():
    job = job_with_inputs()
    for ex, held in zip(EXECUTORS, [0, SIZE, 0, SIZE]):
        job.receive_bid(held_bid(ex, job, held), NOW)
    assert awarded(job.tick(NOW + job.timing.bid_window_ms)) == {EXECUTORS[1].public_key, EXECUTORS[3].public_key}


def test_holding_more_beats_a_lower_price_but_never_reputation():
    job = job_with_inputs(replicas=1)
    job.receive_bid(held_bid(EXECUTORS[0], job, 0, price=0), NOW)
    job.receive_bid(held_bid(EXECUTORS[1], job, SIZE // 2, price=5), NOW)
    assert awarded(job.tick(NOW + job.timing.bid_window_ms)) == {EXECUTORS[1].public_key}
    job = job_with_inputs(replicas=1)
    job.receive_bid(held_bid(EXECUTORS[0], job, 0), NOW, reputation=5)
    job.receive_bid(held_bid(EXECUTORS[1], job, SIZE), NOW, reputation=0)
    assert awarded(job.tick(NOW + job.timing.bid_window_ms)) == {EXECUTORS[0].public_key}


def test_a_claim_counts_no_more_than_the_inputs_total():
    job = job_with_inputs(replicas=1)
    liar = held_bid(EXECUTORS[0], job, INPUTS_MAX_BYTES)
    honest = held_bid(EXECUTORS[1], job, SIZE)
    job.receive_bid(liar, NOW)
    job.receive_bid(honest, NOW)
    assert job.rank[EXECUTORS[0].public_key][:2] == job.rank[EXECUTORS[1].public_key][:2]


def test_without_inputs_held_changes_nothing():
    spec = make_spec(replicas=1, quorum=1)
    job = SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW)
    job.receive_bid(held_bid(EXECUTORS[0], job, 10**9), NOW)
    assert job.rank[EXECUTORS[0].public_key][1] == 0


def test_early_close_waits_for_holders_unless_the_bids_in_hand_hold_everything():
    job = job_with_inputs()
    for ex in EXECUTORS[:2]:  # n bids, nobody better reputed left, but neither holds the inputs
        assert job.receive_bid(held_bid(ex, job, 0), NOW, unbid_best=0) == []
    assert job.state == "bidding"
    actions = job.receive_bid(held_bid(EXECUTORS[2], job, SIZE), NOW + 1, unbid_best=0)
    assert job.state == "bidding" and actions == []  # the 2nd best still holds nothing
    actions = job.receive_bid(held_bid(EXECUTORS[3], job, SIZE), NOW + 2, unbid_best=0)
    assert job.state == "running"  # the two best hold it all: nothing to wait for
    assert awarded(actions) == {EXECUTORS[2].public_key, EXECUTORS[3].public_key}


def test_the_window_s_end_closes_whatever_the_bids_hold():
    job = job_with_inputs()
    for ex in EXECUTORS[:2]:
        job.receive_bid(held_bid(ex, job, 0), NOW, unbid_best=0)
    actions = job.tick(NOW + job.timing.bid_window_ms, unbid_best=0)
    assert job.state == "running" and len(awarded(actions)) == 2


def test_held_is_signed_with_the_bid_and_bounded():
    job = job_with_inputs()
    bid = held_bid(EXECUTORS[0], job, 42)
    assert bid.msg.held == 42
    body = bid.msg.to_body()
    for bad in (-1, INPUTS_MAX_BYTES + 1, "42"):
        with pytest.raises(RemoteProtocolError):
            verify(EXECUTORS[0].sign("bid", body[:-1] + [bad]), Bid)
