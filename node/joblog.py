"""The node's log of a job's life at INFO: one line per job event, on each side.

Submitter (`submitter_events`, called by Submitting.apply after each input): a bid, and every event
the job's history gained (bids closed, award, replacement, commit, reveal, an executor's error);
the verdict has its own line (Submitting._act, `Finished`). Executor (`executor_events`, called by
Executing.apply; a bid or a decline has its own line in Executing._decided): each change of the execution's state (running, executed, committed, revealed,
failed with its reason). Per-message protocol noise (a replayed announcement, a refusal) is at
DEBUG and counted in `node info`'s `rejected` instead (Agent.reject). Each line carries `job_id`,
`event` and, where there is one, `peer` as fields (`--log-format json` shows them).
"""

from __future__ import annotations

import logging

from distributeai.consensus.submitter import TERMINAL
from distributeai.p2p.identity import peer_id_from_public_key

log = logging.getLogger("distributeai.node.jobs")


def _short(key: bytes) -> str:
    return peer_id_from_public_key(key)[-8:]


def submitter_events(job, kind: str, signer: bytes | None, seen: int) -> None:
    """Log the input `kind` (a bid, by `signer`) and the history entries after index `seen`."""
    job_id = job.job_id.hex()[:12]
    if kind == "bid" and signer is not None:
        log.info("job %s bid from %s", job_id, _short(signer),
                 extra={"job_id": job.job_id.hex(), "event": "bid", "peer": peer_id_from_public_key(signer)})
    for _, event, who, detail in job.history[seen:]:
        if event in TERMINAL:
            continue  # the verdict's own line
        by = f" {_short(who)}" if who else ""
        fields = {"job_id": job.job_id.hex(), "event": event, "detail": detail}
        if who:
            fields["peer"] = peer_id_from_public_key(who)
        log.info("job %s %s%s%s", job_id, event, by, f" ({detail})" if detail else "", extra=fields)


def executor_events(job, before: str) -> None:
    """Log the execution's new state, if `apply` changed it from `before`."""
    if job.state == before:
        return
    reason = f": {job.reason}" if job.state == "failed" and job.reason else ""
    log.info("job %s %s here%s", job.job_id.hex()[:12], job.state, reason,
             extra={"job_id": job.job_id.hex(), "event": job.state, "role": "executor"})
