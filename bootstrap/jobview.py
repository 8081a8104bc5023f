"""One job as the page shows it: a short summary for the jobs table and a bounded detail for the
job view, read from a verified announcement or certificate. Pure: no I/O, times passed in.

Times are wall-clock seconds. The spec's, the awards' and the certificate's times are the
submitter's signed clock, a bid's or decline's its bidder's; the page shows them relative to the
announcement, as the parties wrote them.

"Dissent" means a different result, nothing else: an executor agrees when its result is the
verified one (or, in a job that did not verify, the one most executors returned, if two or more
did and no other result tied it), dissents when it returned another result, and has "no result"
when it never revealed one. When no result was returned by two executors or tied for the most
(a nondeterministic job), there is no majority to agree with: each result is `split`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from distributeai.consensus.certificate import CheckedCertificate
from distributeai.consensus.cid import cid_text
from distributeai.consensus.fields import PPM
from distributeai.consensus.messages import JobSpec
from distributeai.consensus.verdict_words import verification_words
from distributeai.p2p.identity import peer_id_from_public_key

TEXT_MAX = 200  # a stranger's string (name, image, one argument) as shown: at most this many characters
COMMAND_ARGS_MAX = 24  # arguments of a command shown; the rest are counted
HASH_SHOWN = 16  # hex digits of a result hash shown
VERDICTS = ("agreed", "dissented", "no_result", "split")


def cut(text: str, limit: int = TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def spec_summary(spec: JobSpec) -> dict[str, Any]:
    """What to run, how it is verified and what it pays, in at most a few kilobytes."""
    command = [cut(a) for a in spec.command[:COMMAND_ARGS_MAX]]
    if spec.sandbox == "wasm":
        module = f"{len(spec.wasm_module):,} bytes inline" if spec.wasm_module else f"by CID {cid_text(spec.wasm_cid)}"
        runs = f"wasm module ({module})"
    else:
        runs = cut(spec.image)
    return {
        "name": cut(spec.name), "runs": runs, "sandbox": spec.sandbox, "command": command,
        "command_more": max(0, len(spec.command) - COMMAND_ARGS_MAX), "tasks": len(spec.tasks),
        "replicas": spec.replicas, "quorum": spec.quorum, "timeout_s": spec.timeout_s, "price": spec.price,
        "cpu_millis": spec.cpu_millis, "memory_mb": spec.memory_mb, "gpu": spec.gpu,
        "submitter": peer_id_from_public_key(spec.submitter), "created_at": spec.created_ms / 1000,
        "verification": spec.verification, "trust_threshold": spec.trust_threshold,
        "spot_check_floor": spec.spot_check_floor_ppm / PPM, "compare": spec.compare.kind,
        "homogeneous": list(spec.homogeneous),
    }


def majority_hash(status: str, result_hash: bytes, hashes: list[bytes]) -> bytes | None:
    """The result an executor agrees with: the verified one, else the one returned most often if
    at least two executors returned it and no other result tied it; None when there is none."""
    if status == "verified":
        return result_hash
    ranked = Counter(hashes).most_common(2)
    if not ranked or ranked[0][1] < 2 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def executor_verdicts(status: str, result_hash: bytes, awarded: list[bytes],
                      revealed: Mapping[bytes, bytes]) -> dict[bytes, str]:
    """Each awarded executor's part in the verdict (one of VERDICTS); `revealed` maps an executor
    to the result hash it revealed."""
    majority = majority_hash(status, result_hash, list(revealed.values()))
    verdicts = {}
    for ex in awarded:
        if ex not in revealed:
            verdicts[ex] = "no_result"
        elif majority is None:
            verdicts[ex] = "split"
        else:
            verdicts[ex] = "agreed" if revealed[ex] == majority else "dissented"
    return verdicts


def fallback_reason(status: str, quorum: int, verdicts: Mapping[bytes, str], bids: int) -> str:
    """Why a job that did not verify ended, worded from its certificate when the submitter gave no
    reason (a certificate from before reasons travelled)."""
    if status == "verified":
        return ""
    counts = Counter(verdicts.values())
    if status == "nondeterministic":
        return "no two results alike"
    if not verdicts:
        return "no bids" if bids == 0 else "no executor was awarded"
    if counts["no_result"] == len(verdicts):
        return "no executor returned a result"
    if counts["agreed"]:
        return f"{counts['agreed']} matching results, the quorum needs {quorum}"
    return f"no result reached the quorum of {quorum}"


def certificate_view(checked: CheckedCertificate, rejected: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A certified job's summary (for the jobs table) and detail (for the job view). `rejected`:
    the reason the ledger refuses its single-run claim (`Ledger.untrusted`), or None. The summary
    says how the verdict was reached: `verification` (`CheckedCertificate.mode`), `executors_run`
    and `verification_note` (consensus/verdict_words.py), so a single run is shown as one."""
    cert, spec = checked.certificate, checked.spec
    bids = checked.bids
    declines = checked.declines
    awards = sorted(checked.awards.values(), key=lambda a: a.slot)
    revealed = {ex: r.result_hash for ex, r in checked.reveals.items()}
    verdicts = executor_verdicts(cert.status, cert.result_hash, [a.executor for a in awards], revealed)
    if cert.status == "verified":  # the verdict's own group: under a numeric comparison agreeing hashes differ
        verdicts.update({e: "agreed" if e in checked.tally.agreeing else "dissented" for e in checked.reveals})
    counts = Counter(verdicts.values())
    reason = cert.reason or fallback_reason(cert.status, spec.quorum, verdicts, len(bids))
    executors = []
    for a in awards:
        r = checked.reveals.get(a.executor)
        row = {"peer_id": peer_id_from_public_key(a.executor), "slot": a.slot, "verdict": verdicts[a.executor],
               "result": r.result_hash.hex()[:HASH_SHOWN] if r else None}
        if r is not None:
            row.update(exit_code=r.exit_code, timed_out=r.timed_out, oom_killed=r.oom_killed,
                       sandbox=cut(r.sandbox, 32))
        executors.append(row)
    offers = [{"peer_id": peer_id_from_public_key(b.bidder), "price": b.price, "cpu_millis": b.cpu_millis,
               "memory_mb": b.memory_mb, "sandboxes": [cut(s, 32) for s in b.sandboxes[:8]],
               "at": b.created_ms / 1000} for b in bids.values()]
    refusals = [{"peer_id": peer_id_from_public_key(d.bidder), "code": d.code, "detail": cut(d.detail),
                 "at": d.created_ms / 1000} for d in declines.values()]
    offers.sort(key=lambda b: (b["at"], b["peer_id"]))
    refusals.sort(key=lambda d: (d["at"], d["peer_id"]))
    summary = {
        "status": cert.status, "executors": len(awards), "revealed": len(checked.reveals),
        "agreeing": counts["agreed"], "dissenting": counts["dissented"], "no_result": counts["no_result"],
        "split": counts["split"], "result_hash": cert.result_hash.hex(), "reason": reason,
        "bids": len(bids), "declines": len(declines), "certified_ms": cert.created_ms,
        "verification": checked.mode, "executors_run": len(checked.reveals), "rejected": rejected,
        "verification_note": verification_words(cert.status, checked.mode, len(checked.reveals), rejected),
    }
    detail = {"executors": executors, "bids": offers, "declines": refusals,
              "timeline": timeline(spec, cert.status, reason, cert.created_ms, awards, bids, declines)}
    return summary, detail


def timeline(spec: JobSpec, status: str, reason: str, certified_ms: int, awards: list, bids: Mapping,
             declines: Mapping) -> list[dict[str, Any]]:
    """The job's events as its parties signed them, oldest first: announced, each bid and
    decline, each award (its deadline less the spec's `result_deadline_s`, as the submitter sets
    it), and last the verdict."""
    events = [{"at": spec.created_ms / 1000, "event": "announced", "peer_id": None, "text": ""}]
    for b in bids.values():
        events.append({"at": b.created_ms / 1000, "event": "bid", "peer_id": peer_id_from_public_key(b.bidder),
                       "text": f"price {b.price}"})
    for d in declines.values():
        events.append({"at": d.created_ms / 1000, "event": "declined", "peer_id": peer_id_from_public_key(d.bidder),
                       "text": cut(d.detail) or d.code})
    for a in awards:
        at_ms = a.deadline_ms - spec.result_deadline_s * 1000
        events.append({"at": at_ms / 1000, "event": "awarded", "peer_id": peer_id_from_public_key(a.executor),
                       "text": f"slot {a.slot}"})
    order = {"announced": 0, "bid": 1, "declined": 1, "awarded": 2}
    events.sort(key=lambda e: (e["at"], order[e["event"]]))
    return events + [{"at": certified_ms / 1000, "event": status, "peer_id": None, "text": reason}]


def announce_view(spec: JobSpec) -> dict[str, Any]:
    """A job only announced so far: its detail's timeline holds the announcement."""
    return {"executors": [], "bids": [], "declines": [],
            "timeline": [{"at": spec.created_ms / 1000, "event": "announced", "peer_id": None, "text": ""}]}
