"""Content identifiers (CIDs) as IPFS has them, for the blocks this network moves.

Contract:
- A CID here is its binary form, `bytes`: CIDv1 = varint 1 | varint codec | multihash, where the
  codec is `RAW` (0x55, a file's leaf bytes) or `DAG_PB` (0x70, a UnixFS node) and the multihash is
  SHA2-256 (0x12, 32 bytes). Nothing else is accepted from anyone (`BadCid`): one hash, two codecs,
  so every CID names exactly one block and the check of a block is one hash.
- `cid_text` is the canonical text: multibase base32 lower-case, "b" prefix, no padding (what
  `ipfs add --cid-version 1` prints). `parse_cid_text` also takes a CIDv0 ("Qm...", base58btc,
  always dag-pb) and gives its CIDv1 bytes, so a user may paste either form.
- `verify_block(cid, block)` is the one rule for whether bytes are the block a CID names.
Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib

RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
DIGEST_LEN = 32
CODECS = (RAW, DAG_PB)
CID_LEN = 36  # 0x01, codec (one byte for both), 0x12, 0x20, 32-byte digest
MAX_TEXT = 128  # longer than any CID this module accepts, in any text form

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class BadCid(ValueError):
    """Bytes or text that are not a CID this network accepts; the message says what is wrong."""


def cid_for(codec: int, block: bytes) -> bytes:
    """The CIDv1 of `block` under `codec` (RAW or DAG_PB), hashed with SHA2-256."""
    if codec not in CODECS:
        raise BadCid(f"codec 0x{codec:x} is neither raw (0x55) nor dag-pb (0x70)")
    return bytes([1, codec, SHA2_256, DIGEST_LEN]) + hashlib.sha256(block).digest()


def raw_cid(block: bytes) -> bytes:
    """The CID of a raw leaf (a chunk of a file's bytes)."""
    return cid_for(RAW, block)


def check_cid(cid: bytes) -> bytes:
    """`cid` itself if it is a CID this network accepts, else BadCid naming the defect."""
    if not isinstance(cid, (bytes, bytearray)):
        raise BadCid("a CID is bytes")
    cid = bytes(cid)
    if len(cid) != CID_LEN:
        raise BadCid(f"a CID is {CID_LEN} bytes, not {len(cid)}")
    if cid[0] != 1:
        raise BadCid(f"CID version {cid[0]} (only CIDv1 is accepted in binary form)")
    if cid[1] not in CODECS:
        raise BadCid(f"codec 0x{cid[1]:x} is neither raw (0x55) nor dag-pb (0x70)")
    if cid[2] != SHA2_256 or cid[3] != DIGEST_LEN:
        raise BadCid("the multihash is not a 32-byte sha2-256")
    return cid


def codec_of(cid: bytes) -> int:
    """RAW or DAG_PB (BadCid for anything else)."""
    return check_cid(cid)[1]


def digest_of(cid: bytes) -> bytes:
    """The 32-byte SHA2-256 digest a CID names."""
    return check_cid(cid)[4:]


def verify_block(cid: bytes, block: bytes) -> bool:
    """Whether `block` is the block `cid` names (its SHA2-256 matches; the codec is not parsed)."""
    try:
        return hashlib.sha256(block).digest() == digest_of(cid)
    except BadCid:
        return False


def cid_text(cid: bytes) -> str:
    """Canonical text: "b" + base32 lower-case without padding."""
    return "b" + base64.b32encode(check_cid(cid)).decode().lower().rstrip("=")


def parse_cid_text(text: str) -> bytes:
    """Binary CIDv1 of a CID's text: base32 CIDv1 ("b...") or base58btc CIDv0 ("Qm...")."""
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
        raise BadCid("a CID is text of 1 to 128 characters")
    if text.startswith("Qm") and len(text) == 46:
        raw = _b58decode(text)
        if raw[:2] != bytes([SHA2_256, DIGEST_LEN]) or len(raw) != 34:
            raise BadCid(f"{text!r} is not a CIDv0 (a base58 sha2-256 multihash)")
        return bytes([1, DAG_PB]) + raw
    if not text.startswith("b"):
        raise BadCid(f"{text!r} is not a CID: expected base32 CIDv1 (b...) or CIDv0 (Qm...)")
    body = text[1:]
    if body != body.lower():
        raise BadCid(f"{text!r}: base32 CIDs are lower-case")
    try:
        raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise BadCid(f"{text!r} is not valid base32") from exc
    cid = check_cid(raw)
    if cid_text(cid) != text:  # one text per CID: no stray bits in the last character
        raise BadCid(f"{text!r} is not in canonical form")
    return cid


def _b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        i = _B58.find(ch)
        if i < 0:
            raise BadCid(f"{text!r} is not valid base58")
        n = n * 58 + i
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    pad = len(text) - len(text.lstrip("1"))
    return b"\x00" * pad + raw
