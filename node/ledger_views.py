"""What the control socket shows of this node's ledger: its credits, the reputations and the
consecutive-valid counts (trust, consensus/trust.py) it holds.
Reads the pure ledger (consensus/ledger.py) only."""

from __future__ import annotations

from typing import Any

from distributeai.consensus.ledger import Ledger
from distributeai.p2p.identity import peer_id_from_public_key


def credits_view(ledger: Ledger, me: bytes, limit: int = 20) -> dict[str, Any]:
    """This node's balance, its genesis grant and its last `limit` transfers, newest first."""
    mine = [t for t in ledger.transfers if me in (t.payer, t.payee)][-limit:]
    return {
        "peer_id": peer_id_from_public_key(me),
        "balance": ledger.balance(me),
        "genesis": ledger.genesis,
        "transfers": [{"job_id": t.job_id.hex(), "from": peer_id_from_public_key(t.payer),
                       "to": peer_id_from_public_key(t.payee),
                       "amount": t.amount if t.payee == me else -t.amount, "at_ms": t.at_ms}
                      for t in reversed(mine)],
    }


def reputation_view(ledger: Ledger) -> dict[str, int]:
    """Every identity this node has a reputation for, by peer id."""
    return {peer_id_from_public_key(k): v for k, v in sorted(ledger.reputation.items())}


def trust_view(ledger: Ledger) -> dict[str, dict[str, int]]:
    """Every executor this node counts consecutive valid results for: peer id -> {runtime class
    (hex, consensus.adaptive.runtime_class): count}."""
    out: dict[str, dict[str, int]] = {}
    for who, cls, cv in ledger.trust_view():
        out.setdefault(peer_id_from_public_key(who), {})[cls.hex()] = cv
    return out
