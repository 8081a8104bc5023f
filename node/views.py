"""The job status object shown by `job status --json`, `submit --json` and the control API.

Built from what the node has: the live `SubmitterJob` while it runs (or after a restart, rebuilt
from the store), else the stored certificate (re-checked, so the view can never show a verdict the
signatures do not support). Keys: job_id, name, role, status, reason, spec fields (timeout_s and
memory_mb among them), result_hash, exit_code, timed_out, oom_killed, stdout (stdout_truncated;
stdout_size: how much the job wrote, STDOUT_SEEN_MAX + 1 for more, null when not stated), stderr
(stderr_part: "all", or its "first" or "last" bytes; stderr_truncated), files and outputs (quota
status, files left, skipped entries), executors (each awarded peer: its slot, state, result hash,
whether it agreed), on the submitter `share` (the fraction of the network that may bid, 1.0 for
every node: consensus/sampling.py) and `widenings` (how often it was widened), history (awards, replacements, commits, reveals, errors with reasons), and for
a nondeterministic job `differences` (what differs between the executors' results).
Verification: the spec's policy (`verification_policy`, `trust_threshold`, `spot_check_floor`,
`compare`, `homogeneous`) and, once a certificate exists (else null), how the verdict was reached:
`verification` ("single", "spot_checked" or "replicated": `CheckedCertificate.mode`),
`executors_run` (the reveals it carries), `rejected` (the reason the node's ledger refuses a
single-run claim, `untrusted`, else null) and `verification_note`
(consensus/verdict_words.py: what people read).
"""

from __future__ import annotations

from typing import Callable

from distributeai.consensus.certificate import CheckedCertificate, verify_certificate
from distributeai.consensus.codec import sha256
from distributeai.consensus.messages import Award, JobSpec, Reveal, verify
from distributeai.consensus.cid import cid_text
from distributeai.consensus.outputs import manifest_truncated
from distributeai.consensus.sampling import SHARE_ALL
from distributeai.consensus.fields import PPM
from distributeai.consensus.submitter import SubmitterJob
from distributeai.consensus.verdict_words import verification_words
from distributeai.consensus.verdict import job_tally, task_tallies


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def job_view(row: dict, machine: SubmitterJob | None, execution: dict | None,
             peer_id_of: Callable[[bytes], str],
             untrusted: Callable[[CheckedCertificate], str | None] | None = None) -> dict:
    """`untrusted`: the node's `Ledger.untrusted` (a reason a single-run claim is refused, or None)."""
    spec: JobSpec = verify(row["signed_spec"], JobSpec).msg
    view: dict = {
        "job_id": row["job_id"],
        "name": row["name"],
        "role": row["role"],
        "status": row["status"],
        "reason": row["reason"],
        "image": spec.image,
        "wasm_cid": cid_text(spec.wasm_cid) if spec.wasm_cid else None,  # a module too large for the spec
        "command": list(spec.command),
        "replicas": spec.replicas,
        "quorum": spec.quorum,
        "target_nresults": spec.replicas,
        "min_quorum": spec.quorum,
        "max_error_results": spec.max_error_results,
        "max_total_results": spec.max_total_results,
        "result_deadline_s": spec.result_deadline_s,
        "timeout_s": spec.timeout_s,
        "memory_mb": spec.memory_mb,
        "price": spec.price,
        "submitter": peer_id_of(spec.submitter),
        "created_ms": row["created_ms"],
        "updated_ms": row["updated_ms"],
        "elapsed_s": round((row["updated_ms"] - row["created_ms"]) / 1000, 3),
        "result_hash": None,
        "exit_code": None,
        "stdout": None,
        "executors": [],
    }
    reveals: dict[bytes, Reveal] = {}
    awards: dict[bytes, Award] = {}
    slots: dict[bytes, str] = {}
    winner: bytes | None = None
    agreed: tuple[bytes, ...] = ()  # the executors whose results make the verdict (within the comparator)
    declines: dict = {}
    if machine is not None:
        reveals = {e: s.msg for e, s in machine.reveals.items()}
        awards = {e: s.msg for e, s in machine.awards.items()}
        slots = dict(machine.slot)
        declines = {e: d.msg for e, d in machine.declines.items()}
        view.update(share=machine.share / SHARE_ALL,  # who may bid (consensus/sampling.py); 1.0: every node
                    widenings=sum(1 for h in machine.history if h[1] == "bids_widened"))
        view.update(bids=len(machine.bids), commits=len(machine.commits), errors=machine.errors,
                    history=[{"at_ms": t, "event": ev, "peer_id": peer_id_of(e) if e else None, "detail": d}
                             for t, ev, e, d in machine.history])
        t = machine.result if machine.state == "verified" and machine.result is not None else job_tally(spec, reveals)
        winner = t.result_hash if machine.state == "verified" else None
        agreed = t.agreeing if winner is not None else ()
    checked = verify_certificate(row["certificate"]) if row.get("certificate") else None
    view.update(verification_view(spec, checked, untrusted, row["status"]))
    if checked is not None and (machine is None or machine.state == "verified"):
        # The certificate's tally counts with the quorum of its mode (one result for a single run).
        if machine is None:
            reveals, awards, declines = checked.reveals, checked.awards, checked.declines
        winner = checked.tally.result_hash if checked.certificate.status == "verified" else None
        agreed = checked.tally.agreeing if winner is not None else ()
    if checked is not None and checked.trusted is not None:
        view["trusted"] = peer_id_of(checked.trusted)  # an adaptive job's trusted executor
    if winner is not None:
        agreeing = next(r for r in reveals.values() if r.result_hash == winner)
        view.update(result_hash=winner.hex(), exit_code=agreeing.exit_code, stdout=_text(agreeing.stdout),
                    timed_out=agreeing.timed_out, stdout_truncated=agreeing.stdout_truncated,
                    stdout_size=agreeing.stdout_size if agreeing.stdout_size >= 0 else None,
                    stderr=_text(agreeing.stderr), stderr_part=agreeing.stderr_part,
                    stderr_truncated=agreeing.stderr_part != "all",
                    oom_killed=agreeing.oom_killed, sandbox_used=agreeing.sandbox,
                    fuel_used=agreeing.fuel_used if agreeing.fuel_used >= 0 else None,
                    files=[{"path": p, "size": n, "cid": cid_text(d)} for p, n, d in agreeing.manifest],
                    outputs=outputs_view(spec, agreeing))
    view["executors"] = [
        {
            "peer_id": peer_id_of(e),
            "slot": a.slot,
            "state": slots.get(e, "revealed" if e in reveals else "unknown"),
            "result_hash": reveals[e].result_hash.hex() if e in reveals else None,
            "exit_code": reveals[e].exit_code if e in reveals else None,
            "sandbox": reveals[e].sandbox if e in reveals else None,
            "agreed": e in agreed,
            # Dissent is a result the verdict's comparator does not match with the verified one.
            "dissented": winner is not None and e in reveals and e not in agreed,
        }
        for e, a in sorted(awards.items(), key=lambda kv: kv[1].slot)
    ]
    view["declines"] = [{"peer_id": peer_id_of(e), "code": d.code, "detail": d.detail} for e, d in declines.items()]
    if spec.is_batch:
        verdicts = task_tallies(spec, reveals)
        view["tasks"] = len(spec.tasks)
        view["tasks_verified"] = sum(1 for t in verdicts if t.outcome == "verified")
    view["sandbox"] = spec.sandbox
    view["gpu"] = spec.gpu
    view["bid"] = row.get("bid", "")
    if row["status"] == "nondeterministic":
        view["differences"] = differences(reveals, peer_id_of)
    if execution is not None:
        view["execution"] = {"status": execution["status"], "reason": execution["reason"],
                             "result": execution["result"]}
    return view


def verification_view(spec: JobSpec, checked: CheckedCertificate | None,
                      untrusted: Callable[[CheckedCertificate], str | None] | None, status: str) -> dict:
    """The spec's verification policy, and how the certificate (if any) reached its verdict."""
    mode = checked.mode if checked is not None else None
    run = len(checked.reveals) if checked is not None else None
    rejected = untrusted(checked) if untrusted is not None and checked is not None \
        and checked.certificate.evidence is not None else None
    return {"verification_policy": spec.verification, "trust_threshold": spec.trust_threshold,
            "spot_check_floor": spec.spot_check_floor_ppm / PPM, "compare": compare_view(spec),
            "homogeneous": list(spec.homogeneous), "verification": mode, "executors_run": run,
            "rejected": rejected, "verification_note": verification_words(status, mode, run, rejected)}


def compare_view(spec: JobSpec) -> dict:
    """The spec's comparator as a job file writes it (tolerances as the spec's decimal strings)."""
    c = spec.compare
    return {"kind": c.kind} if c.kind == "exact" else {"kind": c.kind, "rel": c.rel, "abs": c.abs, "files": list(c.files)}


def outputs_view(spec: JobSpec, r: Reveal) -> dict:
    """What the certified result says about the job's output files beyond the list: whether it
    hit its quota, how many files it left (the list may be cut), what was skipped and why."""
    o = r.outputs
    return {"status": o.status or "ok", "files": o.files, "listed": len(r.manifest),
            "manifest_truncated": manifest_truncated(r.manifest, o),
            "skipped": o.skipped, "skipped_entries": [{"name": n, "reason": why} for n, why in o.notes],
            "quota": {"bytes": spec.out_max_bytes, "files": spec.out_max_files}}


def task_results(spec: JobSpec, reveals: dict[bytes, Reveal], start: int = 0, limit: int = 100) -> list[dict]:
    """Tasks start..start+limit of a batch, each on its own: its arguments, its verdict from the
    reveals in hand (verified only with k agreeing, as in the certificate), and for a verified
    task the agreed exit code and stdout."""
    verdicts = task_tallies(spec, reveals)
    out = []
    for i in range(max(0, start), min(len(spec.tasks), max(0, start) + max(0, limit))):
        t = verdicts[i]
        item: dict = {"task": i, "args": list(spec.tasks[i]), "status": t.outcome if t.outcome == "verified" else
                      ("pending" if not reveals else "no_quorum"), "agreeing": len(t.agreeing),
                      "exit_code": None, "stdout": None}
        if t.outcome == "verified":
            code, timed_out, stdout, truncated, fuel = reveals[t.agreeing[0]].tasks[i]
            item.update(exit_code=code, stdout=_text(stdout), timed_out=timed_out, stdout_truncated=truncated,
                        fuel_used=fuel if fuel >= 0 else None)
        out.append(item)
    return out


def differences(reveals: dict[bytes, Reveal], peer_id_of: Callable[[bytes], str]) -> dict:
    """What differs between the executors' results: for each part of the result hash that is not
    the same everywhere, each executor's value (stdout as its SHA-256; stderr as the SHA-256 of
    its bytes and part), and the output-file
    manifest entries that differ (path, and each executor's size and CID or null)."""
    parts = {
        "exit_code": {peer_id_of(e): r.exit_code for e, r in reveals.items()},
        "timed_out": {peer_id_of(e): r.timed_out for e, r in reveals.items()},
        "stdout_sha256": {peer_id_of(e): sha256(r.stdout).hex() for e, r in reveals.items()},
        "stdout_truncated": {peer_id_of(e): r.stdout_truncated for e, r in reveals.items()},
        "stdout_size": {peer_id_of(e): r.stdout_size for e, r in reveals.items()},
        "stderr_sha256": {peer_id_of(e): sha256(r.stderr + r.stderr_part.encode()).hex() for e, r in reveals.items()},
        "outputs": {peer_id_of(e): r.outputs.to_body() for e, r in reveals.items()},
    }
    differing = {k: v for k, v in parts.items() if len({repr(x) for x in v.values()}) > 1}  # outputs: lists
    manifests = {peer_id_of(e): {p: (n, cid_text(d)) for p, n, d in r.manifest} for e, r in reveals.items()}
    paths = sorted({p for m in manifests.values() for p in m})
    manifest = [{"path": p, "entries": {who: m.get(p) for who, m in manifests.items()}}
                for p in paths if len({str(m.get(p)) for m in manifests.values()}) > 1]
    return {"result_hash": {peer_id_of(e): r.result_hash.hex() for e, r in reveals.items()},
            "differing": differing, "manifest": manifest}
