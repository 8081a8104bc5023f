"""How a verdict was reached, in words, the same wherever a verdict is shown (`job status`, the
live status view, `job result`, the bootstrap's page): a single run says it is one, so nobody
takes a trusted executor's unchecked result for an agreement of several.

`mode` is `CheckedCertificate.mode` (consensus/adaptive.py `mode_of`): "single", "spot_checked"
or "replicated"; `rejected` is the reason this node's ledger gives for not accepting a single-run
claim (`Ledger.untrusted`), or None. Pure: no I/O.
"""

from __future__ import annotations


def verification_words(status: str, mode: str | None, executors_run: int | None, rejected: str | None = None) -> str:
    """A short phrase for a job's verdict, "" when there is none yet (no certificate)."""
    if rejected:
        return f"rejected: {rejected}"
    if mode is None or status != "verified":
        return ""
    if mode == "single":
        return "verified, single run (trusted executor, not spot-checked)"
    if mode == "spot_checked":
        return "verified, spot-checked by a second executor"
    n = executors_run or 0
    return f"verified, replicated ({n} executor{'' if n == 1 else 's'} ran it)"
