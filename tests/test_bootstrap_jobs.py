"""The bootstrap's job views as pure logic: who agreed, dissented or returned nothing (dissent
means a different result, nothing else), the job detail, the failure reasons, the last hour's
series and the `/api/jobs/ID` route. The page itself, in a real browser against a real network,
is tests/test_bootstrap_page.py."""

from __future__ import annotations

import json

from distributeai.bootstrap.api import bootstrap_app
from distributeai.bootstrap.jobview import executor_verdicts, fallback_reason, majority_hash
from distributeai.bootstrap.series import HOUR_MINUTES, Series
from distributeai.bootstrap.service import Stats
from distributeai.consensus.messages import Announce, Decline, sign, verify
from distributeai.consensus.submitter import apply_input
from distributeai.p2p.http import Request
from distributeai.p2p.identity import peer_id_from_public_key

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, bid, certified_job, new_job

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32
E1, E2, E3, E4, E5 = (bytes([i]) * 32 for i in range(1, 6))
T0 = NOW / 1000  # wall seconds of the fixtures' clock


def test_identical_results_short_of_quorum_agree_and_none_dissents():
    # Issue 15: four identical results that never reached quorum were "4 dissent" in red.
    verdicts = executor_verdicts("failed", b"", [E1, E2, E3, E4, E5], {E1: A, E2: A, E3: A, E4: A})
    assert verdicts == {E1: "agreed", E2: "agreed", E3: "agreed", E4: "agreed", E5: "no_result"}


def test_dissent_is_a_different_result_only():
    assert executor_verdicts("verified", A, [E1, E2, E3, E4], {E1: A, E2: B, E3: A}) == {
        E1: "agreed", E2: "dissented", E3: "agreed", E4: "no_result"}
    assert executor_verdicts("failed", b"", [E1, E2, E3], {E1: A, E2: A, E3: B}) == {
        E1: "agreed", E2: "agreed", E3: "dissented"}
    # No result returned twice, or a tie for the most: no majority to agree or dissent with.
    assert executor_verdicts("nondeterministic", b"", [E1, E2, E3], {E1: A, E2: B, E3: C}) == {
        E1: "split", E2: "split", E3: "split"}
    assert set(executor_verdicts("failed", b"", [E1, E2, E3, E4], {E1: A, E2: A, E3: B, E4: B}).values()) == {"split"}
    assert executor_verdicts("failed", b"", [E1, E2], {}) == {E1: "no_result", E2: "no_result"}
    assert majority_hash("failed", b"", [A]) is None


def test_a_certificate_without_a_reason_is_given_one_from_its_contents():
    # Honest submitters always write one; a certificate with "" still reads as something.
    assert fallback_reason("failed", 3, {E1: "agreed", E2: "agreed", E3: "dissented"}, 3) == \
        "2 matching results, the quorum needs 3"
    assert fallback_reason("failed", 2, {}, 0) == "no bids"
    assert fallback_reason("failed", 2, {E1: "no_result"}, 1) == "no executor returned a result"
    assert fallback_reason("nondeterministic", 2, {E1: "split", E2: "split"}, 2) == "no two results alike"
    assert fallback_reason("verified", 2, {E1: "agreed"}, 1) == ""


def certificate(outputs: list[bytes], nonce: bytes, quorum: int = 2) -> tuple[bytes, bytes]:
    """The announcement and the signed certificate of a job run by EXECUTORS[:len(outputs)]
    with these outputs, no replacements allowed."""
    job = certified_job(outputs, quorum, nonce=nonce, max_total_results=len(outputs))
    return sign(SUBMITTER, Announce(job.signed_spec, ("/ip4/127.0.0.1/tcp/1",))), job.certificate


def test_a_failed_job_shows_its_executors_reason_and_timeline():
    stats = Stats(pow_difficulty=0)
    submitter = peer_id_from_public_key(SUBMITTER.public_key)
    announce, cert = certificate([b"A", b"A", b"B"], b"\x03" * 16, quorum=3)
    stats.observe(announce, submitter, now=T0 + 1)
    job_id = stats.order[0]
    assert stats.jobs[job_id]["status"] == "announced"
    assert [e["event"] for e in stats.job_detail(job_id)["detail"]["timeline"]] == ["announced"]
    stats.observe(cert, submitter, now=T0 + 3.5)
    job = stats.jobs[job_id]
    assert (job["status"], job["agreeing"], job["dissenting"], job["no_result"]) == ("failed", 2, 1, 0)
    assert job["verdict_s"] == 2.5
    assert job["reason"] == "max_total_results reached without a quorum"  # the submitter's, as certified
    assert stats.failure_reasons() == [{"reason": job["reason"], "count": 1}]
    detail = stats.job_detail(job_id[:8])["detail"]  # a unique prefix of 8 hex digits names the job
    assert detail["spec"]["name"] == "demo" and detail["spec"]["quorum"] == 3
    assert detail["spec"]["command"] == ["sh", "-c", "echo 'Hello' | sha256sum"]
    assert [(e["slot"], e["verdict"]) for e in detail["executors"]] == [(0, "agreed"), (1, "agreed"), (2, "dissented")]
    assert [e["event"] for e in detail["timeline"]] == ["announced", *["bid"] * 3, *["awarded"] * 3, "failed"]
    assert len(detail["bids"]) == 3 and detail["declines"] == []
    assert detail["timeline"][-1]["text"] == job["reason"]
    assert stats.job_detail("0" * 7) is None and stats.job_detail("f" * 64) is None
    assert len(json.dumps(detail)) < 8192  # bounded: a few kilobytes per job


def test_nondeterministic_results_are_split_not_dissent():
    stats = Stats(pow_difficulty=0)
    _, cert = certificate([b"A", b"B", b"C"], b"\x02" * 16)
    stats.observe(cert, peer_id_from_public_key(SUBMITTER.public_key), now=T0 + 2)
    job = next(iter(stats.jobs.values()))
    assert (job["status"], job["agreeing"], job["dissenting"], job["split"]) == ("nondeterministic", 0, 0, 3)
    assert job["verdict_s"] is None  # the announcement was not seen here
    assert stats.failure_reasons() == []  # only failed jobs' reasons go on the Failed card


def test_the_last_hour_counts_per_minute_and_forgets_older_minutes():
    series = Series()
    t = 1_000_000 * 60.0  # a minute's start
    series.announced(t + 1)
    series.certified("verified", t + 2, 1.5)
    series.certified("verified", t + 3, 0.5)
    series.certified("failed", t + 4, None)
    series.certified("failed", t - 3600, 9.0)  # an hour ago: outside the window
    snap = series.snapshot(t + 30)
    assert snap["start"] == t - (HOUR_MINUTES - 1) * 60 and snap["step_s"] == 60
    assert all(len(snap[k]) == HOUR_MINUTES for k in ("announced", "verified", "failed", "verdict_p50_s"))
    assert (snap["announced"][-1], snap["verified"][-1], snap["failed"][-1]) == (1, 2, 1)
    assert (snap["verdict_p50_s"][-1], snap["verdict_max_s"][-1]) == (1.0, 1.5)
    assert sum(snap["failed"]) == 1 and snap["verdict_max_s"][0] is None
    series.announced(t + 3600 + 1)  # an hour on, the old minutes are gone from memory too
    assert min(series.minutes) > t // 60


class FakeOverlay:
    peer_id = "12D3KooWbootstrap"

    def connected_peers(self):
        return []

    def multiaddrs(self):
        return ["/ip4/127.0.0.1/tcp/4001"]


async def test_api_jobs_answers_a_job_by_id_and_refuses_others():
    stats = Stats(pow_difficulty=0)
    _, cert = certificate([b"A", b"A", b"A"], b"\x04" * 16)
    stats.observe(cert, peer_id_from_public_key(SUBMITTER.public_key), now=T0 + 2)
    job_id = stats.order[0]
    app = bootstrap_app(FakeOverlay(), stats, metrics=None)

    async def get(path: str):
        status, _, body, *_ = await app(Request("GET", path, {}, {}, b""))
        return status, body

    status, body = await get(f"/api/jobs/{job_id}")
    job = json.loads(body)
    assert status == 200 and job["status"] == "verified" and job["job_id"] == job_id
    # Two agreeing results verify it; the third executor's was not needed, so it has none.
    assert (job["executors"], job["agreeing"], job["dissenting"], job["no_result"]) == (3, 2, 0, 1)
    # (Which slot each executor holds follows the bid ranking's hash of job id and bidder: any order.)
    assert sorted(e["verdict"] for e in job["detail"]["executors"]) == ["agreed", "agreed", "no_result"]
    assert (await get(f"/api/jobs/{'0' * 64}"))[0] == 404
    assert (await get("/api/jobs/xyz"))[0] == 400
    status, body = await get("/api/stats")
    stats_json = json.loads(body)
    assert status == 200 and stats_json["recent_jobs"][0]["job_id"] == job_id
    assert "detail" not in stats_json["recent_jobs"][0]  # /api/stats stays small
    assert (await app(Request("POST", "/api/stats", {}, {}, b"")))[0] == 405


def test_a_job_nobody_could_run_shows_the_bids_and_declines_its_certificate_carries():
    job = new_job(replicas=3, quorum=3, image="python:3.9-slim", nonce=b"\x05" * 16)

    def decline(ex, code: str, detail: str, at_ms: int):
        return verify(sign(ex, Decline(job.job_id, ex.public_key, code, detail, at_ms)), Decline)

    # As the node applies them: each input with the peers still undecided.
    apply_input(job, "bid", bid(EXECUTORS[0], job), {"undecided": 2}, NOW)  # signed at NOW
    apply_input(job, "decline", decline(EXECUTORS[1], "image_missing", "image python:3.9-slim is not available locally",
                                        NOW + 20), {"undecided": 1}, NOW + 20)
    apply_input(job, "decline", decline(EXECUTORS[2], "busy", "all job slots busy", NOW + 30), {"undecided": 0}, NOW + 30)
    apply_input(job, "tick", b"", {"undecided": 0}, NOW + job.timing.bid_window_ms)
    assert job.state == "failed" and job.certificate
    stats = Stats(pow_difficulty=0)
    stats.observe(job.certificate, peer_id_from_public_key(SUBMITTER.public_key), now=T0 + 1)
    job_id = job.job_id.hex()
    summary = stats.jobs[job_id]
    assert summary["reason"] == job.reason  # the submitter's own words, from the certificate
    assert (summary["executors"], summary["bids"], summary["declines"]) == (0, 1, 2)
    assert stats.failure_reasons() == [{"reason": job.reason, "count": 1}]
    detail = stats.job_detail(job_id)["detail"]
    pid = [peer_id_from_public_key(e.public_key) for e in EXECUTORS]
    assert [(b["peer_id"], b["price"]) for b in detail["bids"]] == [(pid[0], 1)]
    assert [(d["peer_id"], d["code"], d["detail"]) for d in detail["declines"]] == [
        (pid[1], "image_missing", "image python:3.9-slim is not available locally"),
        (pid[2], "busy", "all job slots busy")]
    assert [(e["event"], e["peer_id"]) for e in detail["timeline"]] == [
        ("announced", None), ("bid", pid[0]), ("declined", pid[1]), ("declined", pid[2]), ("failed", None)]
    assert detail["timeline"][-1]["text"] == job.reason
