"""Checking a certificate without trusting its publisher.

`verify_certificate` re-derives the verdict from the signatures inside the certificate: the spec
signed by the submitter, the awards signed by the submitter, and the reveals signed by the
executors themselves. A certificate whose claimed verdict does not follow from those is rejected.
The bids and declines it carries are checked the same way (each signed by its bidder, for this
job, one per bidder), so a reason counted from them ("3 nodes lack image X") rests on signatures.
An adaptive job's draw (consensus/adaptive.py) is re-derived too, and decides how many agreeing
results the verdict needs (`mode`); a homogeneous job's executors must share the named platform
classes, on their own signed bids.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .adaptive import check_evidence, mode_of, mode_quorum, platform_class
from .compare import carried_problem
from .errors import RemoteProtocolError
from .messages import Award, Bid, Certificate, Commit, Decline, JobSpec, Reveal, Signed, job_id_of, verify
from .results import seal
from .tally import Tally
from .verdict import job_tally, nondeterministic


@dataclass(frozen=True)
class CheckedCertificate:
    certificate: Certificate
    spec: JobSpec
    awards: dict[bytes, Award]
    reveals: dict[bytes, Reveal]
    tally: Tally
    raw: bytes
    bids: dict[bytes, Bid] = field(default_factory=dict)
    declines: dict[bytes, Decline] = field(default_factory=dict)
    mode: str = "replicated"  # adaptive.mode_of: "single", "spot_checked" or "replicated"
    trusted: bytes | None = None  # an adaptive job's trusted executor (it carries Evidence)

    @property
    def compared(self) -> bool:
        """Whether the verdict rests on two or more results compared (what trust.py counts)."""
        return len(self.reveals) >= 2


def verify_certificate(raw: bytes) -> CheckedCertificate:
    signed = verify(raw, Certificate)
    cert: Certificate = signed.msg
    spec_signed: Signed = verify(cert.signed_spec, JobSpec)
    spec: JobSpec = spec_signed.msg
    if signed.signer != spec.submitter:
        raise RemoteProtocolError("wrong_signer", "certificate not signed by the job's submitter")
    if job_id_of(cert.signed_spec) != cert.job_id:
        raise RemoteProtocolError("malformed", "certificate job_id does not match its spec")
    awards: dict[bytes, Award] = {}
    for raw_award in cert.awards:
        a = verify(raw_award, Award)
        if a.signer != spec.submitter or a.msg.job_id != cert.job_id:
            raise RemoteProtocolError("bad_award", "award not by the submitter or for another job")
        if a.msg.executor in awards:
            raise RemoteProtocolError("bad_award", "one executor holds two slots")
        awards[a.msg.executor] = a.msg
    reveals: dict[bytes, Reveal] = {}
    for raw_reveal in cert.reveals:
        r: Reveal = verify(raw_reveal, Reveal).msg
        if r.job_id != cert.job_id:
            raise RemoteProtocolError("bad_reveal", "reveal for another job")
        if r.executor not in awards:
            raise RemoteProtocolError("bad_reveal", "reveal from an executor that was not awarded")
        if r.executor in reveals:
            raise RemoteProtocolError("bad_reveal", "two reveals from one executor")
        if r.expected_hash() != r.result_hash:
            raise RemoteProtocolError("bad_reveal", "reveal's hash does not match its output")
        if len(r.tasks) != len(spec.tasks):
            raise RemoteProtocolError("bad_reveal", "reveal does not carry one result per task")
        check_carried(spec, r)
        reveals[r.executor] = r
    bids = _signed_by_bidders(cert.bids, Bid, cert.job_id)
    declines = _signed_by_bidders(cert.declines, Decline, cert.job_id)
    trusted, drawn = _check_draw(cert, spec, awards, reveals)
    check_homogeneous(spec, awards, bids)
    mode = mode_of(drawn, trusted, set(reveals))
    result = job_tally(spec, reveals, quorum=mode_quorum(mode, spec))
    if cert.status == "verified":
        if result.outcome != "verified" or result.result_hash != cert.result_hash:
            raise RemoteProtocolError("bad_verdict", "the reveals do not support the claimed result")
    elif result.outcome == "verified":
        raise RemoteProtocolError("bad_verdict", f"certificate says {cert.status} but the reveals agree")
    elif cert.status == "nondeterministic" and not nondeterministic(spec, reveals):
        raise RemoteProtocolError("bad_verdict", "nondeterministic needs two or more reveals, no two alike")
    if cert.status != "verified" and cert.result_hash:
        raise RemoteProtocolError("bad_verdict", "only a verified certificate names a result")
    if cert.status == "verified" and cert.reason:
        raise RemoteProtocolError("bad_verdict", "a verified certificate gives no failure reason")
    return CheckedCertificate(cert, spec, awards, reveals, result, raw, bids, declines, mode, trusted)


def _check_draw(cert: Certificate, spec: JobSpec, awards: dict[bytes, Award],
                reveals: dict[bytes, Reveal]) -> tuple[bytes | None, bool | None]:
    """An adaptive job's trusted executor and whether the draw called a check (None, None: the
    certificate carries no draw). The commit is the executor's own, for an executor awarded
    first, and its reveal (if carried) keeps that commit's seal; the draw is checked by
    `adaptive.check_evidence`."""
    if cert.evidence is None:
        return None, None
    commit = verify(cert.evidence.commit, Commit).msg
    first = min(awards.values(), key=lambda a: a.slot, default=None)
    if first is None or first.executor != commit.executor:
        raise RemoteProtocolError("bad_evidence", "the draw's executor does not hold the job's first slot")
    revealed = reveals.get(commit.executor)
    if revealed is not None and seal(commit.executor, cert.job_id, revealed.result_hash) != commit.seal:
        raise RemoteProtocolError("bad_evidence", "the trusted executor's reveal breaks the seal the draw signed")
    return commit.executor, check_evidence(cert.evidence, spec, spec.submitter, cert.job_id, commit)


def check_carried(spec: JobSpec, r: Reveal) -> None:
    """`bad_reveal` unless the files a reveal carries (for a numeric comparison) are ones the spec
    names, each the UnixFS file its manifest entry's CID names (compare.carried_problem)."""
    problem = carried_problem(spec.compare, r.manifest, r.compared)
    if problem is not None:
        raise RemoteProtocolError("bad_reveal", f"reveal {problem}")


def check_homogeneous(spec: JobSpec, awards: dict, bids: dict[bytes, Bid]) -> None:
    """A job with `homogeneous` classes: every awarded executor's signed bid is carried, and all
    of them advertise the same values for those classes."""
    if not spec.homogeneous:
        return
    if any(e not in bids for e in awards):
        raise RemoteProtocolError("bad_award", "a homogeneous job's certificate lacks an awarded executor's bid")
    if len({platform_class(bids[e].platform, spec.homogeneous) for e in awards}) > 1:
        raise RemoteProtocolError("bad_award", "a homogeneous job was awarded to executors of different platforms")


def _signed_by_bidders(raws: tuple[bytes, ...], kind: type, job_id: bytes) -> dict:
    """Bids or declines, each signed by its bidder (`verify` checks that), for this job, one per bidder."""
    out: dict = {}
    for raw in raws:
        msg = verify(raw, kind).msg
        if msg.job_id != job_id:
            raise RemoteProtocolError("malformed", f"{kind.kind} for another job")
        if msg.bidder in out:
            raise RemoteProtocolError("malformed", f"two {kind.kind}s from one bidder")
        out[msg.bidder] = msg
    return out

