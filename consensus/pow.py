"""Identity cost: a proof-of-work on a node's public key (issue 7, Sybils).

An identity is admitted (its bids ranked, its announcements bid on) only with a nonce such that

    SHA-256(b"distributeai/pow/v1\\0" || public_key || nonce)

has at least `difficulty` leading zero bits. The nonce is solved once per key and difficulty and
travels in the messages that admit an identity (Bid.pow, Announce.pow). A nonce rather than key
grinding, so that an existing node keeps its identity, reputation and credits and just solves once
more when the network's difficulty is raised. Each bit doubles the expected work: 2**difficulty
hashes on average (20 bits: about half a second of one core); checking costs one hash.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib

DOMAIN = b"distributeai/pow/v1\0"
NONCE_MAX = 16      # bytes; the wire caps the field at this
MAX_DIFFICULTY = 64  # beyond this no key would ever be admitted; a configuration error
# A node's default: about half a second of one core per identity (0.45 us a hash here), paid once
# per key; a thousand Sybils then cost over 8 CPU-minutes, and each further bit doubles that.
DEFAULT_DIFFICULTY = 20


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def pow_ok(public_key: bytes, nonce: bytes, difficulty: int) -> bool:
    """True when `nonce` proves `difficulty` bits of work on `public_key`. Difficulty 0 admits
    every identity (any nonce, the empty one included)."""
    if difficulty <= 0:
        return True
    if len(nonce) > NONCE_MAX:
        return False
    return leading_zero_bits(hashlib.sha256(DOMAIN + public_key + nonce).digest()) >= difficulty


def solve(public_key: bytes, difficulty: int, start: int = 0) -> bytes:
    """The first nonce (an 8-byte big-endian counter from `start`) that satisfies `pow_ok`.
    Expected cost 2**difficulty hashes; the prefix's hash state is computed once and copied."""
    if not 0 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be in [0, {MAX_DIFFICULTY}], got {difficulty}")
    if difficulty == 0:
        return b""
    prefix = hashlib.sha256(DOMAIN + public_key)
    # A digest of `difficulty` leading zero bits is below this bound as an integer.
    bound = 1 << (256 - difficulty)
    counter = start
    while True:
        nonce = counter.to_bytes(8, "big")
        h = prefix.copy()
        h.update(nonce)
        if int.from_bytes(h.digest(), "big") < bound:
            return nonce
        counter += 1
