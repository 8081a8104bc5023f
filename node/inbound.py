"""What a gossip message's bytes go through before they may touch state, as one pure function.

`decode_gossip(data, from_peer, now_ms)` is the agent's whole check of a gossiped message
(`Agent._on_gossip` calls it, then stores and applies what it returns), kept apart from the agent
so that node/fuzz can run it on millions of inputs without a node. It returns a CheckedAnnounce
or a CheckedCertificate, or raises RemoteProtocolError with a reason (malformed, noncanonical,
oversize, bad_signature, wrong_signer, stale, future_dated, bad_award, bad_reveal, bad_verdict,
wrong_sender, unknown_kind, ...); nothing else escapes, for any bytes.
"""

from __future__ import annotations

from distributeai.consensus.certificate import CheckedCertificate, verify_certificate
from distributeai.consensus.codec import decode_canonical
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import MAX_ENVELOPE
from distributeai.consensus.validate import CheckedAnnounce, check_announce
from distributeai.p2p.identity import peer_id_from_public_key


def decode_gossip(data: bytes, from_peer: str, now_ms: int) -> CheckedAnnounce | CheckedCertificate:
    """Decode, verify and attribute one gossip message from `from_peer` (its libp2p author,
    verified by the pubsub signature) at `now_ms`."""
    value = decode_canonical(data, MAX_ENVELOPE)
    kind = value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None
    if kind == "announce":
        ann = check_announce(data, now_ms)
        if peer_id_from_public_key(ann.spec.submitter) != from_peer:
            raise RemoteProtocolError("wrong_sender", "announce relayed under another author")
        return ann
    if kind == "certificate":
        checked = verify_certificate(data)
        if peer_id_from_public_key(checked.spec.submitter) != from_peer:
            raise RemoteProtocolError("wrong_sender", "certificate relayed under another author")
        return checked
    raise RemoteProtocolError("unknown_kind", f"gossip kind {kind!r}"[:80])
