"""Reputation, credits and trust as a fold over verified certificates (and, for reputation, this
node's own observations). Pure: no I/O, no clock; times are arguments.

Three parts:

1. The certificate view, which every node shares. It is the fold of the certificate SET in one
   order, the certificate's `created_ms`, then its job id (`certificate_key`), with clamping applied
   in that order. It depends on which certificates a node holds, never on the order they arrived:
   two nodes holding the same certificates compute byte-identical views (`view_digest`). Clamping
   makes an identity's reputation depend on the order of its own events only, so each identity
   keeps its events in fold order with its value after each (`Track`): a certificate that
   arrives late (older than one already folded) makes the later values of the identities it
   names stale, refolded when next read; one that arrives in order costs one step each.
2. The local layer: offences this node saw itself (`apply_offence`), never shared and never part
   of `view_digest`. They add up per identity, the sum clamped to [REPUTATION_MIN, 0] (so that an
   identity's local record never weighs more than the whole scale), and combine with the
   certificate view as `clamp(certificate_reputation + local_penalty)`. `reputation_of` (what
   bidding and ranking read) and `reputation` include both layers; `certificate_reputation` and
   `view_digest` only the first.
3. Trust (consensus/trust.py): each executor's consecutive-valid count per runtime class, folded
   from the same certificate set in the same order (`trust`, `trust_of`), part of `view_digest`;
   and `untrusted`, whether a certificate's claimed count holds in this node's view.

Reputation (per identity):
- starts at REPUTATION_START (0): a new identity is neither trusted nor suspect;
- +5 for each verified certificate in which it agreed, -10 for each in which it dissented
  (the seed's figures); failed and nondeterministic certificates change nobody's reputation, nor
  does a single run (an adaptive job's `mode == "single"`: its result was compared with nothing).
  A spot check ("spot_checked") is an ordinary verified certificate: two agreeing executors, +5
  each;
- clamped to [REPUTATION_MIN, REPUTATION_MAX] = [-100, 100] after every certificate (in the fold's
  order), so an identity cannot bank unlimited goodwill to spend on lies later, nor sink beyond
  redemption;
- -10 for each offence this node saw itself (an award it never committed to, a reveal that broke
  its seal, a commit it had no award for), in the local layer above.

Credits (per identity, certificate view only):
- a genesis grant (configurable, default 100) for every identity;
- at a verified certificate the submitter pays each agreeing executor `price`, plus, for a wasm
  job priced per fuel, `price_per_mfuel` per million fuel units the agreed result used (paying
  itself is a no-op): a single run pays its one executor once, a spot check both executors.
  Credits are sums, never clamped, so they do not depend on order at all.
  Balances may go below zero only if views diverge; nodes do not bid for a submitter whose
  balance cannot cover the most the job can cost (`max_cost`).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field

from .certificate import CheckedCertificate
from .codec import encode
from .messages import JobSpec, Reveal
from .results import fuel_cost
from .trust import UNTRUSTED, Trust, TrustEvent, trust_events  # noqa: F401  (UNTRUSTED: re-exported for node/)

REPUTATION_START = 0
REPUTATION_MIN = -100
REPUTATION_MAX = 100
AGREE_REWARD = 5
DISSENT_PENALTY = -10
OFFENCE_PENALTY = -10
GENESIS_CREDITS = 100
VIEW_DOMAIN = b"distributeai/ledger-view/v2\x00"  # v2: trust joined the view


@dataclass(frozen=True)
class Transfer:
    job_id: bytes
    payer: bytes
    payee: bytes
    amount: int
    at_ms: int


@dataclass(frozen=True)
class Effect:
    """What one certificate does to the view: reputation deltas (in the order applied), the
    transfers it pays and its trust events. Kept instead of the certificate, so a refold needs no
    re-verification."""
    key: tuple[int, bytes]  # (created_ms, job_id)
    deltas: tuple[tuple[bytes, int], ...]
    transfers: tuple[Transfer, ...]
    trust: tuple[TrustEvent, ...] = ()


def certificate_key(cert: CheckedCertificate) -> tuple[int, bytes]:
    """The fold's order: the certificate's time, then its job id (unique per certificate)."""
    return (cert.certificate.created_ms, cert.certificate.job_id)


def effect_of(cert: CheckedCertificate, at_ms: int) -> Effect:
    """The effect of one checked certificate; `at_ms` is only the transfers' displayed time."""
    key = certificate_key(cert)
    if cert.certificate.status != "verified":
        return Effect(key, (), ())
    deltas = () if cert.mode == "single" else \
        tuple((who, AGREE_REWARD) for who in cert.tally.agreeing) + \
        tuple((who, DISSENT_PENALTY) for who in cert.tally.dissenting)
    payer = cert.spec.submitter
    price = job_price(cert.spec, cert.reveals[cert.tally.agreeing[0]]) if cert.tally.agreeing else 0
    transfers = tuple(Transfer(key[1], payer, payee, price, at_ms) for payee in cert.tally.agreeing
                      if payee != payer and price != 0)
    return Effect(key, deltas, transfers, trust_events(cert))


def _clamp(value: int) -> int:
    return max(REPUTATION_MIN, min(REPUTATION_MAX, value))


@dataclass
class Track:
    """One identity's reputation events in fold order: `values[t]` is its reputation after event
    t, up to date below `clean` (a late event makes the ones after it stale)."""
    keys: list[tuple[int, bytes]] = field(default_factory=list)
    deltas: list[int] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    clean: int = 0

    def insert(self, key: tuple[int, bytes], delta: int) -> None:
        j = bisect_right(self.keys, key)
        self.keys.insert(j, key)
        self.deltas.insert(j, delta)
        self.values.insert(j, 0)
        self.clean = min(self.clean, j)

    def value(self) -> int:
        """The reputation after every event, refolding the stale ones (clamped after each)."""
        if self.clean < len(self.values):
            v = self.values[self.clean - 1] if self.clean else REPUTATION_START
            for t in range(self.clean, len(self.values)):
                v = self.values[t] = _clamp(v + self.deltas[t])
            self.clean = len(self.values)
        return self.values[-1]

    def copy(self) -> "Track":
        return Track(list(self.keys), list(self.deltas), list(self.values), self.clean)


@dataclass
class Ledger:
    genesis: int = GENESIS_CREDITS
    spent: dict[bytes, int] = field(default_factory=dict)  # net credits moved, without genesis
    applied: set[bytes] = field(default_factory=set)  # job ids of certificates in the set
    offences: dict[bytes, int] = field(default_factory=dict)  # the local layer: summed penalties
    _effects: list[Effect] = field(default_factory=list)  # the certificate set, in fold order
    _keys: list[tuple[int, bytes]] = field(default_factory=list)  # their keys, for bisect
    _tracks: dict[bytes, Track] = field(default_factory=dict)  # per identity with a reputation event
    _transfers: list[Transfer] | None = None  # flattened on read, dropped on change
    _digest: bytes | None = None  # view_digest, dropped on change
    _arrivals: list[tuple[int, bytes]] = field(default_factory=list)  # keys in arrival order
    _trust: Trust = field(default_factory=Trust)  # consecutive-valid counts (consensus/trust.py)

    def __deepcopy__(self, memo: dict) -> "Ledger":
        """A copy sharing the immutable parts (effects, keys): what a copy-on-write holder of
        many views (tools/simworld.py) pays is list and dict copies."""
        return Ledger(self.genesis, dict(self.spent), set(self.applied), dict(self.offences), list(self._effects),
                      list(self._keys), {w: t.copy() for w, t in self._tracks.items()}, None, self._digest,
                      list(self._arrivals), self._trust.copy())

    # --- folding ------------------------------------------------------------------------------

    def apply_certificate(self, cert: CheckedCertificate, at_ms: int) -> bool:
        """Add one verified certificate to the set; False (and nothing changes) if it is there
        already. Its place in the fold is its key, whenever it arrives: each identity it names
        has its events after that place refolded, on the next read of that identity."""
        job_id = cert.certificate.job_id
        if job_id in self.applied:
            return False
        self.applied.add(job_id)
        effect = effect_of(cert, at_ms)
        i = bisect_right(self._keys, effect.key)
        self._keys.insert(i, effect.key)
        self._effects.insert(i, effect)
        self._arrivals.append(effect.key)
        for who, delta in effect.deltas:
            track = self._tracks.get(who)
            if track is None:
                track = self._tracks[who] = Track()
            track.insert(effect.key, delta)
        self._trust.add(effect.key, effect.trust)
        for t in effect.transfers:  # sums: their order does not matter
            self.spent[t.payer] = self.spent.get(t.payer, 0) - t.amount
            self.spent[t.payee] = self.spent.get(t.payee, 0) + t.amount
        self._transfers = None
        self._digest = None
        return True

    def apply_offence(self, who: bytes) -> None:
        """An offence this node saw itself: the local layer only (never in `view_digest`)."""
        self.offences[who] = max(REPUTATION_MIN, self.offences.get(who, 0) + OFFENCE_PENALTY)

    # --- reading ------------------------------------------------------------------------------

    def certificate_reputation(self, who: bytes) -> int:
        """`who`'s reputation in the shared certificate view (no local offences)."""
        track = self._tracks.get(who)
        return REPUTATION_START if track is None else track.value()

    def reputation_of(self, who: bytes) -> int:
        """Reputation as this node ranks by it: the certificate view plus its own offences."""
        local = self.offences.get(who, 0)
        base = self.certificate_reputation(who)
        return _clamp(base + local) if local else base

    @property
    def reputation(self) -> dict[bytes, int]:
        """Every identity with a reputation in this node's view (both layers), by public key."""
        return {who: self.reputation_of(who) for who in (*self._tracks, *self.offences)}

    @property
    def transfers(self) -> list[Transfer]:
        """Every transfer, in the fold's order."""
        if self._transfers is None:
            self._transfers = [t for e in self._effects for t in e.transfers]
        return self._transfers

    def balance(self, who: bytes) -> int:
        return self.genesis + self.spent.get(who, 0)

    def can_pay(self, spec: JobSpec) -> bool:
        return self.balance(spec.submitter) >= max_cost(spec)

    def certificate_ids(self) -> list[tuple[int, bytes]]:
        """The keys (created_ms, job_id) of every certificate in the set, in fold order."""
        return list(self._keys)

    def arrived(self, since: int) -> list[tuple[int, bytes]]:
        """The keys of the certificates added after the first `since`, in arrival order: what a
        holder of a copy of the key set (node/reconcile.py) adds to catch up, without a scan."""
        return self._arrivals[since:]

    def trust(self, who: bytes, cls: bytes, before: tuple[int, bytes] | None = None) -> int:
        """`who`'s consecutive-valid count in runtime class `cls` (adaptive.runtime_class), over
        the certificates with key < `before` (all of them for None): a submitter passes
        `(now_ms, b"")`, a certificate check the certificate's key."""
        return self._trust.cv(who, cls, before)

    def trust_of(self, who: bytes) -> dict[bytes, int]:
        """`who`'s consecutive-valid count in every class it has a compared result in, by class."""
        return self._trust.of(who)

    def trust_view(self) -> list[list]:
        """[executor, class, CV] for every (executor, class) with an event, sorted."""
        return self._trust.view()

    def untrusted(self, checked: CheckedCertificate) -> str | None:
        """For a certificate carrying a spot-check draw: why its claimed CV is unfounded (it exceeds
        this view's count of the trusted executor in the job's class, before the certificate's
        key), else None. Whether or not it is, the certificate is in the set like any other; nodes
        and the bootstrap count it under `UNTRUSTED` and show its verdict as rejected."""
        return self._trust.untrusted(checked, certificate_key(checked))

    def view(self) -> list[list]:
        """The certificate view: [identity, reputation, credits] per identity it names, sorted."""
        who_all = sorted(set(self._tracks) | set(self.spent))
        return [[who, self.certificate_reputation(who), self.balance(who)] for who in who_all]

    def view_digest(self) -> bytes:
        """SHA-256 over the canonical encoding of `view()` and the trust counts (local offences
        never count): equal on any two nodes holding the same certificates with the same genesis
        grant."""
        if self._digest is None:
            self._digest = hashlib.sha256(VIEW_DOMAIN + encode([self.genesis, self.view(), self._trust.view()])).digest()
        return self._digest


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
