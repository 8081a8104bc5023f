"""The submitter's rules that need no job state: the order of bids (`rank_key`), the check of a
reveal against its seal (`check_reveal`), of a bidder's eligibility (`check_eligible`,
consensus/sampling.py) and when a sampled job must widen for reputation (`strangers_ahead`);
and, from a job's bids and declines alone, the best reputation among the connected peers that
could still bid or sit outside the sample (`unbid_best`), which the node and the simulator both
pass with a bid or tick. Re-exported by submitter.py, where callers import them from (all but
`unbid_best`, imported from here).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from .codec import sha256
from .compare import EXACT, carried_problem
from .errors import RemoteProtocolError
from .adaptive import platform_class
from .messages import CERT_BIDS_MAX, Bid, JobSpec, Reveal
from .results import seal as compute_seal
from .ledger import REPUTATION_START
from .sampling import SHARE_ALL, eligible

if TYPE_CHECKING:
    from .submitter import SubmitterJob


def rank_key(job_id: bytes, bid: Bid, spec: JobSpec, reputation: int) -> tuple:
    """Higher reputation first, then more of the job's inputs held (locality), then lower price,
    then more headroom (fit), then a hash of the job id and the bidder that no bidder can predict
    before the job is announced.

    Locality comes second, never first: `held` is the bidder's own word, free to state, while
    reputation is earned (and what keeps fresh identities behind established ones), so a claim of
    holding the data must not lift a stranger over a node with a record. Among equals it beats
    price and fit: moving a dataset to a node that lacks it costs far more time than any
    difference those measure, and a claim is counted at most up to the inputs' total, so lying
    buys no more than a true holder has."""
    fit = min(bid.cpu_millis * 1000 // max(1, spec.cpu_millis), bid.memory_mb * 1000 // max(1, spec.memory_mb))
    held = min(bid.held, spec.inputs_size)
    return (-reputation, -held, bid.price, -fit, sha256(job_id + bid.bidder))


def check_reveal(r: Reveal, committed_seal: bytes, spec: JobSpec | None = None) -> None:
    """A reveal must hash to its own claimed result and match the executor's earlier seal; for a
    batch it must carry one result per task, and nothing else; the output files it carries for a
    numeric comparison must be the manifest's (`bad_reveal`, as in certificate.check_carried)."""
    if spec is not None and (len(r.tasks) != len(spec.tasks) or (spec.is_batch and (r.stdout or r.manifest))):
        raise RemoteProtocolError("bad_result_hash", "reveal does not carry one result per task of the batch")
    if r.result_hash != r.expected_hash():
        raise RemoteProtocolError("bad_result_hash", "result hash does not match the revealed output")
    if compute_seal(r.executor, r.job_id, r.result_hash) != committed_seal:
        raise RemoteProtocolError("seal_mismatch", "reveal does not match the executor's seal")
    problem = carried_problem(spec.compare if spec is not None else EXACT, r.manifest, r.compared)
    if problem is not None:
        raise RemoteProtocolError("bad_reveal", f"reveal {problem}")


def check_eligible(job_id: bytes, peer: bytes, share: int, what: str = "bid") -> None:
    """`not_eligible` unless `peer` may bid on the job at `share` (sampling.eligible): a peer
    outside the sample gains nothing by bidding or declining anyway."""
    if share < SHARE_ALL and not eligible(job_id, peer, share):
        raise RemoteProtocolError("not_eligible", f"{what} from a peer outside the job's eligible share")


def strangers_ahead(ranks: list[tuple], replicas: int, share: int, outside_best: int | None,
                    widened: bool = False) -> bool:
    """A sampled job's n-th best bid (`ranks`: the bids' `rank_key`s) has no earned reputation while
    a connected peer outside the sample has some (`outside_best`): fresh identities (Sybils) would
    take a slot an established node could have had were it eligible. Such a job widens rather
    than close, so reputation keeps Sybils behind established nodes as it does without sampling.

    Only from the job's first sample (`widened`: it has widened before, for whatever reason): the
    rule costs at most one doubling of the bids. Where few peers hold reputation, widening until
    n of them were eligible would undo sampling: the simulator at 10,000 nodes with 10 % liars
    counted 28 bids per job so (one job 343), against 11.3 without the rule."""
    if (widened or outside_best is None or outside_best <= REPUTATION_START or share >= SHARE_ALL
            or len(ranks) < replicas):
        return False
    return -sorted(ranks)[replicas - 1][0] <= REPUTATION_START


def unbid_best(job: "SubmitterJob", peers: Iterable[bytes | None], reputation_of: Callable[[bytes], int],
               bidder: bytes = b"", outside: bool = False) -> int:
    """The best reputation (`reputation_of`, the submitter's view) of a connected peer (`peers`,
    public keys; None, a peer whose key is unknown, is skipped) eligible at the job's share (with
    `outside`, of one NOT eligible) that has neither bid nor declined yet, `bidder` (the input's
    own sender) counted as decided; REPUTATION_START (a stranger's) at least. The submitter counts
    as such a peer too: its own bid or decline, sent as the job is announced or widened, mostly
    comes first, but a remote bid can overtake it (one in flight as the job widens), and an
    established submitter must not lose its own job's slot to strangers, inside the sample or
    outside it (`outside_best`, `strangers_ahead`)."""
    best = REPUTATION_START
    for key in [*peers, job.identity.public_key]:
        if (key is not None and key != bidder and key not in job.bids and key not in job.declines
                and eligible(job.job_id, key, job.share) != outside):
            best = max(best, reputation_of(key))
    return best


def bids_to_show(job) -> list[bytes]:
    """The bidders whose bids a job's certificate carries: the awarded ones in slot order, then
    the best ranked others, CERT_BIDS_MAX in all. (A bid without its signed bytes, as the
    simulator's unsigned bids are, is not carried.)"""
    others = sorted((e for e in job.bids if e not in job.awards), key=lambda e: job.rank[e])
    return [e for e in (*(e for e in job.awards if e in job.bids), *others) if job.bids[e].raw][:CERT_BIDS_MAX]


def homogeneous(candidates: list[bytes], job) -> list[bytes]:
    """For a job with `homogeneous` platform classes, the candidates whose bid advertises the
    first award's values for them (the first award is free: the ranking decides it)."""
    if not job.spec.homogeneous or not job.awards:
        return candidates
    classes = job.spec.homogeneous
    first = next(iter(job.awards))
    want = platform_class(job.bids[first].msg.platform, classes) if first in job.bids else None
    return [e for e in candidates if platform_class(job.bids[e].msg.platform, classes) == want]
