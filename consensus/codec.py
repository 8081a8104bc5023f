"""Canonical MessagePack encoding and the signed envelope.

Contract:
- A message body is a msgpack *array* of fields in a fixed order (never a map), so there is exactly
  one encoding for each value. Integers, strings, bytes, bools, None and nested arrays only: no
  floats (their encodings vary), no maps.
- `decode_canonical` accepts bytes only if re-encoding the decoded value gives the same bytes; any
  other encoding of the same value is rejected as `noncanonical`. Hashes over bytes (job ids, seals)
  are therefore hashes over values.
- An envelope is `[kind, body, signer, signature]` where `signer` is a raw 32-byte Ed25519 public key
  and `signature` signs `DOMAIN || canonical([kind, body, signer])`. The domain string keeps these
  signatures from being valid anywhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import RemoteProtocolError

DOMAIN = b"distributeai/v1\x00"
PUBKEY_LEN = 32
SIG_LEN = 64
MAX_DEPTH = 8


def encode(value: Any) -> bytes:
    """Canonical bytes of a value built from ints, str, bytes, bool, None and lists/tuples."""
    _check_value(value, 0)
    return msgpack.packb(value, use_bin_type=True)


def _check_value(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None or isinstance(value, (bool, int, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            raise ValueError("integer out of range")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            _check_value(item, depth + 1)
        return
    raise TypeError(f"type {type(value).__name__} has no canonical encoding")


def decode_canonical(data: bytes, max_size: int) -> Any:
    """Decode `data`, rejecting anything oversized, malformed, typed wrongly or non-canonical."""
    if not isinstance(data, (bytes, bytearray)):
        raise RemoteProtocolError("malformed", "not bytes")
    if len(data) > max_size:
        raise RemoteProtocolError("oversize", f"{len(data)} bytes > {max_size}")
    try:
        value = msgpack.unpackb(
            bytes(data),
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=max_size,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RemoteProtocolError("malformed", type(exc).__name__) from None
    try:
        again = encode(value)
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError("malformed", str(exc)) from None
    if again != bytes(data):
        raise RemoteProtocolError("noncanonical")
    return value


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Identity:
    """A signing identity: the node's Ed25519 key. Signing is pure computation, so the protocol core
    may hold one; loading it from disk is the node's business."""

    private_key: Ed25519PrivateKey

    @classmethod
    def from_seed(cls, seed: bytes) -> "Identity":
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, kind: str, body: list) -> bytes:
        """The canonical bytes of a signed envelope carrying `body`."""
        signer = self.public_key
        signature = self.private_key.sign(DOMAIN + encode([kind, body, signer]))
        return encode([kind, body, signer, signature])


@dataclass(frozen=True)
class Envelope:
    """A decoded envelope whose signature has been checked. `raw` is its canonical bytes."""

    kind: str
    body: list
    signer: bytes
    signature: bytes
    raw: bytes

    @property
    def digest(self) -> bytes:
        return sha256(self.raw)


# SHA-256 digests of envelopes whose signature already checked out. The same bytes come back
# often (a spec inside its announcement, then inside the certificate; reveals the submitter
# checked, again in its certificate; job views), and a digest costs about 1/50 of an Ed25519
# check. A memo of a pure function: bounded, and cleared rather than evicted when full.
_VERIFIED: dict[bytes, None] = {}
VERIFIED_MEMO_MAX = 16_384


def open_envelope(data: bytes, max_size: int, expect_kind: str | None = None) -> Envelope:
    """Decode and verify a signed envelope. Raises RemoteProtocolError with reason
    `oversize`, `malformed`, `noncanonical`, `wrong_kind` or `bad_signature`."""
    value = decode_canonical(data, max_size)
    if not (isinstance(value, list) and len(value) == 4):
        raise RemoteProtocolError("malformed", "envelope is not a 4-element array")
    kind, body, signer, signature = value
    if not isinstance(kind, str) or not isinstance(body, list):
        raise RemoteProtocolError("malformed", "envelope kind/body types")
    if not (isinstance(signer, bytes) and len(signer) == PUBKEY_LEN):
        raise RemoteProtocolError("malformed", "signer is not a 32-byte key")
    if not (isinstance(signature, bytes) and len(signature) == SIG_LEN):
        raise RemoteProtocolError("malformed", "signature is not 64 bytes")
    if expect_kind is not None and kind != expect_kind:
        raise RemoteProtocolError("wrong_kind", f"expected {expect_kind}, got {kind!r}")
    digest = hashlib.sha256(data).digest()
    if digest not in _VERIFIED:
        try:
            Ed25519PublicKey.from_public_bytes(signer).verify(signature, DOMAIN + encode([kind, body, signer]))
        except (InvalidSignature, ValueError):
            raise RemoteProtocolError("bad_signature", kind) from None
        if len(_VERIFIED) >= VERIFIED_MEMO_MAX:
            _VERIFIED.clear()
        _VERIFIED[digest] = None
    return Envelope(kind, body, signer, signature, bytes(data))
