"""Trust from certificates: each executor's consecutive-valid count (CV, BOINC's
`consecutive_valid`) per runtime class, derived from verified certificates alone. Pure: no I/O,
no clock.

Rules:
- The class of an executor in a job is `adaptive.runtime_class(spec, platform)`, with the
  platform of the executor's own signed Bid carried in the certificate (`adaptive.NO_PLATFORM`
  when its bid is not carried): the sandbox kind, what it runs, and the advertised platform. An
  executor is trusted in a class only for results of that class.
- Only a verified certificate whose verdict compared two or more results
  (`CheckedCertificate.compared`) is an event: each agreeing executor +1, each dissenting executor
  back to 0. A single run (`mode == "single"`: its result was compared with nothing), a failed or a
  nondeterministic certificate is no event. (An awarded executor with no reveal in the certificate
  is no event either: the certificate cannot tell a missed deadline from an honest withdrawal,
  or from a reveal its submitter left out.)
- Events are folded in the ledger's order, the certificate key (created_ms, job_id), never the
  order they arrived in, so any two nodes holding the same certificates count the same CVs. Each
  (executor, class) keeps its events in that order with its CV after each (`CvTrack`); a late
  certificate makes the later values stale, refolded lazily on the next read that reaches them.
- `Trust.cv(who, cls, before)` counts only the events with key < `before`: the submitter asks at
  its bid time (`before=(now_ms, b"")`), a certificate check at the certificate's own key.

An adaptive job's certificate carries the CV its submitter counted for the trusted executor
(`adaptive.Evidence.cv`). Whether that claim holds depends on the certificates a node holds, so it
is judged here (`untrusted_reason`), never inside `verify_certificate`. A certificate whose claim
exceeds the node's count still joins the set (sets must converge), and its effects are the same
as any certificate's: a single run moves only credits, a spot check's two results were compared
and count. The node counts it (`UNTRUSTED`) and shows its verdict as rejected. A node missing some
older certificate can count less than the submitter did; it judges again when asked after the
certificate arrives.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from .adaptive import NO_PLATFORM, runtime_class

UNTRUSTED = "untrusted_executor"  # the rejection reason nodes count a certificate under

Key = tuple[int, bytes]  # a certificate's place in the fold: (created_ms, job_id)


def untrusted_reason(claimed: int, counted: int) -> str:
    """The words for a certificate whose claimed CV exceeds the count (the one place they live)."""
    return (f"untrusted executor: the certificate claims {claimed} consecutive valid results in the job's "
            f"class, this node counts {counted}")


@dataclass(frozen=True)
class TrustEvent:
    who: bytes
    cls: bytes  # adaptive.runtime_class
    agreed: bool  # True: +1; False: back to 0


def executor_platform(checked, who: bytes) -> tuple[str, ...]:
    """The platform `who` advertised in its bid carried by a checked certificate, else NO_PLATFORM."""
    bid = checked.bids.get(who)
    return bid.platform if bid is not None else NO_PLATFORM


def executor_class(checked, who: bytes) -> bytes:
    """`who`'s runtime class in a checked certificate's job."""
    return runtime_class(checked.spec, executor_platform(checked, who))


def trust_events(checked) -> tuple[TrustEvent, ...]:
    """The CV events of one checked certificate (see the rules above)."""
    if checked.certificate.status != "verified" or checked.mode == "single" or not checked.compared:
        return ()
    classes: dict[tuple[str, ...], bytes] = {}  # one runtime_class per platform (it hashes a wasm module)

    def event(who: bytes, agreed: bool) -> TrustEvent:
        platform = executor_platform(checked, who)
        if platform not in classes:
            classes[platform] = runtime_class(checked.spec, platform)
        return TrustEvent(who, classes[platform], agreed)

    return tuple(event(w, True) for w in checked.tally.agreeing) + \
        tuple(event(w, False) for w in checked.tally.dissenting)


@dataclass
class CvTrack:
    """One (executor, class)'s events in fold order: `values[t]` is the CV after event t, up to
    date below `clean`."""
    keys: list[Key] = field(default_factory=list)
    agreed: list[bool] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    clean: int = 0

    def insert(self, key: Key, agreed: bool) -> None:
        j = bisect_right(self.keys, key)
        self.keys.insert(j, key)
        self.agreed.insert(j, agreed)
        self.values.insert(j, 0)
        self.clean = min(self.clean, j)

    def before(self, key: Key | None) -> int:
        """The CV over the events with key < `key` (all of them for None), refolding only the
        stale values below that point."""
        j = len(self.keys) if key is None else bisect_left(self.keys, key)
        if j == 0:
            return 0
        if self.clean < j:
            v = self.values[self.clean - 1] if self.clean else 0
            for t in range(self.clean, j):
                v = self.values[t] = v + 1 if self.agreed[t] else 0
            self.clean = j
        return self.values[j - 1]

    def copy(self) -> "CvTrack":
        return CvTrack(list(self.keys), list(self.agreed), list(self.values), self.clean)


@dataclass
class Trust:
    """Every (executor, class) with an event, folded as the rules above say."""
    tracks: dict[tuple[bytes, bytes], CvTrack] = field(default_factory=dict)
    classes: dict[bytes, list[bytes]] = field(default_factory=dict)  # who -> its classes with events

    def add(self, key: Key, events: tuple[TrustEvent, ...]) -> None:
        """The events of the certificate at `key`, whenever it arrives (at most one per executor)."""
        for e in events:
            track = self.tracks.get((e.who, e.cls))
            if track is None:
                track = self.tracks[(e.who, e.cls)] = CvTrack()
                self.classes.setdefault(e.who, []).append(e.cls)
            track.insert(key, e.agreed)

    def cv(self, who: bytes, cls: bytes, before: Key | None = None) -> int:
        track = self.tracks.get((who, cls))
        return 0 if track is None else track.before(before)

    def of(self, who: bytes) -> dict[bytes, int]:
        """`who`'s CV in each class it has an event in, by class (sorted)."""
        return {cls: self.cv(who, cls) for cls in sorted(self.classes.get(who, ()))}

    def view(self) -> list[list]:
        """[executor, class, CV] for every (executor, class) with an event, sorted: what
        `Ledger.view_digest` covers besides reputation and credits."""
        return [[who, cls, self.cv(who, cls)] for who, cls in sorted(self.tracks)]

    def untrusted(self, checked, key: Key) -> str | None:
        """For a certificate carrying a draw's evidence: the reason its claimed CV is unfounded
        (it exceeds this count of the trusted executor in the job's class, over the events before
        the certificate's `key`), else None."""
        evidence = checked.certificate.evidence
        if evidence is None or checked.trusted is None:
            return None
        counted = self.cv(checked.trusted, executor_class(checked, checked.trusted), before=key)
        return untrusted_reason(evidence.cv, counted) if evidence.cv > counted else None

    def copy(self) -> "Trust":
        return Trust({k: t.copy() for k, t in self.tracks.items()}, {w: list(c) for w, c in self.classes.items()})


def bidder_trust(ledger, spec, bid, now_ms: int) -> int:
    """A bidder's CV in the job's runtime class as a submitting node counts it when the bid comes
    (`ledger.trust` before now), or 0 when that node saw the bidder offend itself (the ledger's
    local layer: an award it never committed to, a broken seal, a reveal it never sent): offences
    a certificate cannot prove still keep that node from trusting the bidder alone."""
    if ledger.offences.get(bid.bidder):
        return 0
    return ledger.trust(bid.bidder, runtime_class(spec, bid.platform), before=(now_ms, b""))
