"""What a peer's bytes go through before they may touch state, as pure functions.

The checks of inbound requests that need no store, kept apart from the agent so that tools/fuzz
runs these very functions on millions of inputs without a node (a gossiped message's check is
`consensus.gossip.check_gossip`, shared with the bootstrap, the fuzzer and the simulator):
- `decode_award(data, me)`: what the executor's award handler checks before looking anything up;
- `decode_reveal_answer(payload, executor)`: the reveal a submitter asked `executor` for.
(Bids, commits and withdrawals are `consensus.messages.verify` plus `Submitting._check_sender`.)
Each returns what it checked or raises RemoteProtocolError with a reason (malformed,
noncanonical, oversize, wrong_kind, bad_signature, wrong_signer, ...); nothing else escapes, for
any bytes.
"""

from __future__ import annotations

from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import Award, Reveal, Signed, verify


def decode_award(data: bytes, me: bytes) -> Signed:
    """An award, which must name this node (`me`) as its executor."""
    signed = verify(data, Award)
    if signed.msg.executor != me:
        raise RemoteProtocolError("malformed", "award names another executor")
    return signed


def decode_reveal_answer(payload: bytes, executor: bytes) -> Signed:
    """The reveal in a positive answer to a reveal request sent to `executor`."""
    signed = verify(payload, Reveal)
    if signed.signer != executor:
        raise RemoteProtocolError("wrong_signer", "reveal signed by another peer")
    return signed
