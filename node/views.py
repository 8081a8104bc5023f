"""The job status object shown by `job status --json`, `submit --json` and the control API.

Built from what the node has: the live `SubmitterJob` while a job runs, the stored certificate once
it is done (re-checked, so the view can never show a verdict the signatures do not support).
"""

from __future__ import annotations

from typing import Callable

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.messages import JobSpec, Reveal, verify
from distributeai.consensus.submitter import SubmitterJob
from distributeai.consensus.tally import tally


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="replace")


def job_view(row: dict, machine: SubmitterJob | None, execution: dict | None,
             peer_id_of: Callable[[bytes], str]) -> dict:
    spec: JobSpec = verify(row["signed_spec"], JobSpec).msg
    view: dict = {
        "job_id": row["job_id"],
        "name": row["name"],
        "role": row["role"],
        "status": row["status"],
        "reason": row["reason"],
        "image": spec.image,
        "command": list(spec.command),
        "replicas": spec.replicas,
        "quorum": spec.quorum,
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
    awarded: list[bytes] = []
    winner: bytes | None = None
    if row.get("certificate"):
        checked = verify_certificate(row["certificate"])
        reveals, awarded = checked.reveals, sorted(checked.awards)
        winner = checked.tally.result_hash
    elif machine is not None:
        reveals = {e: s.msg for e, s in machine.reveals.items()}
        awarded = sorted(machine.awards)
        view.update(bids=len(machine.bids), commits=len(machine.commits))
        t = tally({e: r.result_hash for e, r in reveals.items()}, spec.quorum,
                  outstanding=len(machine.commits) - len(reveals))
        winner = t.result_hash
    if winner is not None:
        agreeing = next(r for r in reveals.values() if r.result_hash == winner)
        view.update(result_hash=winner.hex(), exit_code=agreeing.exit_code, stdout=_text(agreeing.stdout))
    view["executors"] = [
        {
            "peer_id": peer_id_of(e),
            "result_hash": reveals[e].result_hash.hex() if e in reveals else None,
            "exit_code": reveals[e].exit_code if e in reveals else None,
            "agreed": winner is not None and e in reveals and reveals[e].result_hash == winner,
        }
        for e in awarded
    ]
    if execution is not None:
        view["execution"] = {"status": execution["status"], "reason": execution["reason"],
                             "result": execution["result"]}
    return view
