"""Checks on gossiped announcements that need only the message and the time.

Replay detection (a spec seen before) needs a memory of seen job ids: `gossip.check_gossip` takes
it as `seen`, and a node's is its store. Everything that can be decided from the bytes, `now_ms`
and the node's proof-of-work difficulty lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RemoteProtocolError
from .messages import Announce, JobSpec, Signed, job_id_of, verify
from .pow import pow_ok

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


def check_spec_time(spec: JobSpec, now_ms: int) -> None:
    if spec.created_ms > now_ms + MAX_CLOCK_SKEW_MS:
        raise RemoteProtocolError("future_dated", "spec created in the future")
    if spec.created_ms < now_ms - MAX_SPEC_AGE_MS:
        raise RemoteProtocolError("stale", "spec is too old")


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
                           ann.msg.submitter_addrs, raw)
