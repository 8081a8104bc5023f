"""Reputation and credits as a fold over verified certificates (and, for reputation, this node's
own observations). Pure: the node feeds events in the order it stored them, so rebuilding from
the store after a restart gives exactly the same figures.

Reputation (per identity, in this node's view):
- starts at REPUTATION_START (0): a new identity is neither trusted nor suspect;
- +5 for each verified certificate in which it agreed, -10 for each in which it dissented
  (the seed's figures); failed and nondeterministic certificates change nobody's reputation;
- -10 for each offence this node saw itself (an award it never committed to, a reveal that broke
  its seal, a commit it had no award for): `apply_offence`, never shared with other nodes;
- clamped to [REPUTATION_MIN, REPUTATION_MAX] = [-100, 100] after every event, so an identity
  cannot bank unlimited goodwill to spend on lies later, nor sink beyond redemption.

Credits (per identity, in this node's view):
- a genesis grant (configurable, default 100) for every identity, the first time it is seen;
- at a verified certificate the submitter pays each agreeing executor `price`, plus, for a wasm
  job priced per fuel, `price_per_mfuel` per million fuel units the agreed result used (paying
  itself is a no-op). Balances may go below zero only if views diverge; nodes do not bid for a
  submitter whose balance cannot cover the most the job can cost (`max_cost`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .certificate import CheckedCertificate
from .messages import JobSpec, Reveal
from .results import fuel_cost

REPUTATION_START = 0
REPUTATION_MIN = -100
REPUTATION_MAX = 100
AGREE_REWARD = 5
DISSENT_PENALTY = -10
OFFENCE_PENALTY = -10
GENESIS_CREDITS = 100


@dataclass(frozen=True)
class Transfer:
    job_id: bytes
    payer: bytes
    payee: bytes
    amount: int
    at_ms: int


@dataclass
class Ledger:
    genesis: int = GENESIS_CREDITS
    reputation: dict[bytes, int] = field(default_factory=dict)
    spent: dict[bytes, int] = field(default_factory=dict)  # net credits moved, without genesis
    transfers: list[Transfer] = field(default_factory=list)
    applied: set[bytes] = field(default_factory=set)  # job ids of certificates already folded in

    def reputation_of(self, who: bytes) -> int:
        return self.reputation.get(who, REPUTATION_START)

    def balance(self, who: bytes) -> int:
        return self.genesis + self.spent.get(who, 0)

    def can_pay(self, spec: JobSpec) -> bool:
        return self.balance(spec.submitter) >= max_cost(spec)

    def _bump(self, who: bytes, delta: int) -> None:
        value = self.reputation_of(who) + delta
        self.reputation[who] = max(REPUTATION_MIN, min(REPUTATION_MAX, value))

    def apply_certificate(self, cert: CheckedCertificate, at_ms: int) -> bool:
        """Fold one verified certificate in; False (and nothing changes) if it was applied before."""
        job_id = cert.certificate.job_id
        if job_id in self.applied:
            return False
        self.applied.add(job_id)
        if cert.certificate.status != "verified":
            return True
        for who in cert.tally.agreeing:
            self._bump(who, AGREE_REWARD)
        for who in cert.tally.dissenting:
            self._bump(who, DISSENT_PENALTY)
        payer = cert.spec.submitter
        price = job_price(cert.spec, cert.reveals[cert.tally.agreeing[0]]) if cert.tally.agreeing else 0
        for payee in cert.tally.agreeing:
            if payee == payer or price == 0:
                continue
            self.spent[payer] = self.spent.get(payer, 0) - price
            self.spent[payee] = self.spent.get(payee, 0) + price
            self.transfers.append(Transfer(job_id, payer, payee, price, at_ms))
        return True

    def apply_offence(self, who: bytes) -> None:
        self._bump(who, OFFENCE_PENALTY)


def job_price(spec: JobSpec, reveal: Reveal) -> int:
    """What one agreeing executor is paid: the price per run (each task of a batch is a run) plus
    the fuel it used at the spec's rate."""
    runs = max(1, len(spec.tasks))
    if spec.is_batch:
        fuel = sum(max(0, t[4]) for t in reveal.tasks)
    else:
        fuel = reveal.fuel_used
    return spec.price * runs + fuel_cost(fuel, spec.price_per_mfuel)


def max_cost(spec: JobSpec) -> int:
    """The most a job can cost its submitter: every target executor paid, fuel at its limit."""
    runs = max(1, len(spec.tasks))
    return spec.replicas * (spec.price * runs + fuel_cost(spec.fuel_limit * runs, spec.price_per_mfuel))
