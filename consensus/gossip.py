"""The one check of a gossiped message, used by every node, the bootstrap, the fuzzer and the
simulator alike.

`check_gossip(data, author, now_ms, pow_difficulty, seen=None)` decides, from the bytes, the
author's public key, the time and the proof-of-work difficulty, whether a message on the jobs
topic is one a node accepts, and returns what it checked (a CheckedAnnounce, CheckedWiden or
CheckedCertificate). In this order:

1. size and encoding: at most MAX_ENVELOPE bytes of canonical MessagePack (`oversize`,
   `malformed`, `noncanonical`); the kind is `announce`, `widen` or `certificate` (`unknown_kind`);
2. an announcement (consensus.validate.check_announce): signatures and signer (`bad_signature`,
   `wrong_signer`, ...), the author is the submitter (`wrong_sender`), freshness (`stale`,
   `future_dated`), the submitter's proof-of-work of `pow_difficulty` bits (`weak_identity`);
2b. a widening (consensus.validate.check_widen): signature, the author is its signer
   (`wrong_sender`), freshness as an announcement's (`stale`, `future_dated`). The caller then
   checks, against the job it knows, that the signer is the job's submitter (`wrong_signer`) and
   that the share grows (`sampling.accept_widen`; else `replay`: a replayed or reordered widening
   changes nothing); a widening of a job the node does not know is dropped (`unknown_job`);
3. a certificate (consensus.certificate.verify_certificate): every signature inside and the
   verdict re-derived from them (`bad_award`, `bad_reveal`, `bad_verdict`, ...), and the author is
   the job's submitter (`wrong_sender`: a certificate relayed under another author is not taken);
4. last, replay (`replay`): `seen(kind, job_id)` says whether the caller already knows the
   message. The rule it must implement, the same everywhere: an announcement is a replay when
   its job id is known at all (announced or certified before); a certificate when a certificate
   of that job was accepted before. Since time is checked first, an announcement's job id only
   needs remembering while its spec is fresh (MAX_SPEC_AGE_MS). A node's memory is its store,
   whose insert-if-absent answers the same question atomically after this check (the store is
   not reachable from a pure function), so a node passes no `seen`.

`author` is the public key of the message's libp2p author (whose pubsub signature the transport
verified); callers convert the peer id with p2p.identity.public_key_from_peer_id. None (a peer id
that is not an Ed25519 key) is never a job's submitter.

Pure: no I/O, no clock. Raises only RemoteProtocolError, whatever the bytes.
"""

from __future__ import annotations

from typing import Callable

from .certificate import CheckedCertificate, verify_certificate
from .codec import decode_canonical
from .errors import RemoteProtocolError
from .messages import MAX_ENVELOPE
from .validate import CheckedAnnounce, CheckedWiden, check_announce, check_widen

GOSSIP_KINDS = ("announce", "widen", "certificate")

# seen(kind, job_id): whether the caller already knows this message (see the module's rule 4).
Seen = Callable[[str, bytes], bool]


def check_gossip(data: bytes, author: bytes | None, now_ms: int, pow_difficulty: int,
                 seen: Seen | None = None) -> CheckedAnnounce | CheckedWiden | CheckedCertificate:
    """The message `data` published by `author` at `now_ms`, checked as every node checks it
    (the module's docstring lists the order and the reasons); an announcement's submitter must
    prove `pow_difficulty` bits of work (a node's own setting; 0, the simulator's, checks none)."""
    value = decode_canonical(data, MAX_ENVELOPE)
    kind = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None
    checked: CheckedAnnounce | CheckedWiden | CheckedCertificate
    if kind == "announce":
        # b"" is no Ed25519 key, so an author that is not one is never the submitter.
        checked = check_announce(data, now_ms, pow_difficulty, author or b"")
        job_id = checked.job_id
    elif kind == "widen":
        checked = check_widen(data, now_ms, author)
        return checked  # its replay rule (the share grows) needs the job: the caller's
    elif kind == "certificate":
        checked = verify_certificate(data)
        if author is None or checked.spec.submitter != author:
            raise RemoteProtocolError("wrong_sender", "certificate relayed under another author")
        job_id = checked.certificate.job_id
    else:
        raise RemoteProtocolError("unknown_kind", f"gossip kind {kind!r}"[:80])
    if seen is not None and seen(kind, job_id):
        raise RemoteProtocolError("replay", f"{kind} of a job already known")
    return checked
