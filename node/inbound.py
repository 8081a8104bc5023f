"""What a peer's bytes go through before they may touch state, as pure functions.

The checks of inbound messages that need no store, kept apart from the agent so that node/fuzz
runs these very functions on millions of inputs without a node:
- `decode_gossip(data, from_peer, now_ms)`: the agent's whole check of a gossiped message
  (`Agent._on_gossip` then stores and applies what it returns): a CheckedAnnounce or a
  CheckedCertificate;
- `decode_award(data, me)`, `decode_blob_request(data)`: what the executor's award handler and
  the blob handler check before looking anything up;
- `decode_reveal_answer(payload, executor)`: the reveal a submitter asked `executor` for.
(Bids, commits and withdrawals are `consensus.messages.verify` plus `Submitting._check_sender`.)
Each returns what it checked or raises RemoteProtocolError with a reason (malformed,
noncanonical, oversize, wrong_kind, bad_signature, wrong_signer, stale, future_dated, bad_award,
bad_reveal, bad_verdict, wrong_sender, unknown_kind, ...); nothing else escapes, for any bytes.
"""

from __future__ import annotations

from distributeai.consensus.certificate import CheckedCertificate, verify_certificate
from distributeai.consensus.codec import decode_canonical
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import MAX_ENVELOPE, Award, Reveal, Signed, verify
from distributeai.consensus.validate import CheckedAnnounce, check_announce
from distributeai.p2p.identity import peer_id_from_public_key, public_key_from_peer_id


def decode_gossip(data: bytes, from_peer: str, now_ms: int,
                  pow_difficulty: int = 0) -> CheckedAnnounce | CheckedCertificate:
    """Decode, verify and attribute one gossip message from `from_peer` (its libp2p author,
    verified by the pubsub signature) at `now_ms`; an announcement's submitter must prove
    `pow_difficulty` bits of work (the node's own setting)."""
    value = decode_canonical(data, MAX_ENVELOPE)
    kind = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None
    if kind == "announce":
        # The author must be the submitter; b"" (not an Ed25519 peer id) never is.
        return check_announce(data, now_ms, pow_difficulty, public_key_from_peer_id(from_peer) or b"")
    if kind == "certificate":
        checked = verify_certificate(data)
        if peer_id_from_public_key(checked.spec.submitter) != from_peer:
            raise RemoteProtocolError("wrong_sender", "certificate relayed under another author")
        return checked
    raise RemoteProtocolError("unknown_kind", f"gossip kind {kind!r}"[:80])


def decode_award(data: bytes, me: bytes) -> Signed:
    """An award, which must name this node (`me`) as its executor."""
    signed = verify(data, Award)
    if signed.msg.executor != me:
        raise RemoteProtocolError("malformed", "award names another executor")
    return signed


def decode_blob_request(data: bytes) -> bytes:
    """A blob request: the SHA-256 of the blob wanted."""
    if len(data) != 32:
        raise RemoteProtocolError("malformed", "a blob request is a 32-byte SHA-256")
    return bytes(data)


def decode_reveal_answer(payload: bytes, executor: bytes) -> Signed:
    """The reveal in a positive answer to a reveal request sent to `executor`."""
    signed = verify(payload, Reveal)
    if signed.signer != executor:
        raise RemoteProtocolError("wrong_signer", "reveal signed by another peer")
    return signed
