"""Checks on gossiped announcements and widenings that need only the message and the time.

Replay detection (a spec seen before) needs a memory of seen job ids: `gossip.check_gossip` takes
it as `seen`, and a node's is its store. Everything that can be decided from the bytes, `now_ms`
and the node's proof-of-work difficulty lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RemoteProtocolError
from .messages import Announce, JobSpec, Signed, Widen, job_id_of, verify
from .pow import pow_ok
from .sampling import SHARE_ALL, accept_widen

# A spec may be at most this old when first seen, and at most this far in the future: clocks of
# volunteers' machines drift, but an announcement travels in well under a second.
MAX_SPEC_AGE_MS = 10 * 60 * 1000
MAX_CLOCK_SKEW_MS = 60 * 1000


@dataclass(frozen=True)
class CheckedAnnounce:
    job_id: bytes
    spec: JobSpec
    signed_spec: bytes
    submitter_addrs: tuple[str, ...]
    raw: bytes
    share: int = SHARE_ALL  # the eligible share the job starts with (consensus/sampling.py)


@dataclass(frozen=True)
class CheckedWiden:
    """A widening whose signature, sender and time were checked; the caller still checks that
    `signer` is the job's submitter and that the share grows (`sampling.accept_widen`)."""

    job_id: bytes
    share: int
    signer: bytes
    created_ms: int
    raw: bytes


def check_time(created_ms: int, now_ms: int, what: str = "spec") -> None:
    """A dated message is at most MAX_SPEC_AGE_MS old and MAX_CLOCK_SKEW_MS in the future."""
    if created_ms > now_ms + MAX_CLOCK_SKEW_MS:
        raise RemoteProtocolError("future_dated", f"{what} created in the future")
    if created_ms < now_ms - MAX_SPEC_AGE_MS:
        raise RemoteProtocolError("stale", f"{what} is too old")


def check_spec_time(spec: JobSpec, now_ms: int) -> None:
    check_time(spec.created_ms, now_ms)


def check_announce(raw: bytes, now_ms: int, pow_difficulty: int = 0,
                   author: bytes | None = None) -> CheckedAnnounce:
    """The announcement, verified in this order: signatures and signer; `author` (the public key
    that published it as gossip, if given) is the submitter (`wrong_sender`: only a job's submitter
    announces it); time; and last the submitter's proof-of-work of at least `pow_difficulty` bits
    (`weak_identity`; 0, the simulator's setting, checks none). A node passes its own difficulty:
    the minimum it demands of others."""
    ann: Signed = verify(raw, Announce)
    spec: Signed = verify(ann.msg.signed_spec, JobSpec)
    if ann.signer != spec.msg.submitter:
        raise RemoteProtocolError("wrong_signer", "announce not signed by the spec's submitter")
    if author is not None and author != spec.msg.submitter:
        raise RemoteProtocolError("wrong_sender", "announce relayed under another author")
    check_spec_time(spec.msg, now_ms)
    if not pow_ok(spec.msg.submitter, ann.msg.pow, pow_difficulty):
        raise RemoteProtocolError("weak_identity", f"the submitter's proof-of-work is under {pow_difficulty} bits")
    return CheckedAnnounce(job_id_of(ann.msg.signed_spec), spec.msg, ann.msg.signed_spec,
                           ann.msg.submitter_addrs, raw, ann.msg.share)


def check_widen(raw: bytes, now_ms: int, author: bytes | None) -> CheckedWiden:
    """A widening, verified in this order: signature (`bad_signature`, `malformed`, ...); the
    author that published it as gossip is its signer (`wrong_sender`); time, as an announcement's
    (`stale`, `future_dated`). Whether the signer is the job's submitter and the share grows
    needs the job: the caller's (`wrong_signer`, `replay` by `sampling.accept_widen`)."""
    signed: Signed = verify(raw, Widen)
    if author != signed.signer:
        raise RemoteProtocolError("wrong_sender", "widen relayed under another author")
    check_time(signed.msg.created_ms, now_ms, "widen")
    return CheckedWiden(signed.msg.job_id, signed.msg.share, signed.signer, signed.msg.created_ms, raw)



def widened_share(widen: CheckedWiden, submitter: bytes, known_share: int) -> int:
    """The job's new share after a checked widening, given the job's submitter and the share the
    node knows: `wrong_signer` if another identity signed it, `replay` if it does not grow the
    share (`sampling.accept_widen`: replayed or reordered widenings change nothing)."""
    if widen.signer != submitter:
        raise RemoteProtocolError("wrong_signer", "widen not signed by the job's submitter")
    if not accept_widen(known_share, widen.share):
        raise RemoteProtocolError("replay", "widen does not grow the job's share")
    return widen.share
