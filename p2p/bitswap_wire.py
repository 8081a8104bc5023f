"""Bitswap 1.2.0's wire format, pure: encode and decode its protobuf `Message`, CIDs and prefixes.

A message on a stream is `uvarint length | protobuf Message` (the IPFS Bitswap spec, the schema
of go-bitswap's message.proto, which `libp2p/bitswap/pb/bitswap_pb2.py` also has):

    Message { Wantlist wantlist = 1; repeated bytes blocks = 2 (1.0.0, skipped);
              repeated Block payload = 3; repeated BlockPresence blockPresences = 4;
              int32 pendingBytes = 5 }
    Wantlist { repeated Entry entries = 1; bool full = 2 }
    Entry { bytes block = 1 (a CID); int32 priority = 2; bool cancel = 3;
            WantType wantType = 4 (Block 0, Have 1); bool sendDontHave = 5 }
    Block { bytes prefix = 1; bytes data = 2 }
    BlockPresence { bytes cid = 1; BlockPresenceType type = 2 (Have 0, DontHave 1) }

Hand-rolled rather than protobuf's generated class: upb parses a whole message before anything
can count its entries, and 4 MiB of empty wantlist entries cost it 113 MB and 0.6 s of CPU to
parse and walk (docs/libp2p.md item 14). `decode_message` walks the bytes once and refuses a message past
MAX_ENTRIES entries, presences or blocks, or with a block over MAX_BLOCK, before it builds
anything more. Every defect is a `WireError` whose `reason` is the label the node counts it under
("malformed" or "too_large"); nothing else is raised for any input. tests/test_bitswap.py checks
the codec against the generated class both ways; tools/fuzz fuzzes `decode_message`.

A block travels as its data and its CID's prefix (version, codec, multihash type, digest length,
as uvarints); the receiver rebuilds the CID by hashing the data (`cid_from_prefix`; SHA2-256 only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PROTOCOL = "/ipfs/bitswap/1.2.0"
MAX_MESSAGE = 4 << 20  # the spec's largest message
# The largest block sent or accepted: 1 MiB (the unixfs MAX_BLOCK) plus room for a dag-pb node's links.
MAX_BLOCK = (1 << 20) + (64 << 10)
MAX_ENTRIES = 1024  # wantlist entries, presences or blocks in one message
MAX_CID = 128  # bytes; far above any CID in use (36)
SHA2_256, SHA2_256_LEN, DAG_PB = 0x12, 32, 0x70
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a Bitswap message this node accepts. `reason`: "malformed" or "too_large"."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Entry:
    """A wantlist entry: want the block (or only to know we have it: `want_have`), or cancel."""
    cid: bytes
    priority: int = 1
    cancel: bool = False
    want_have: bool = False
    send_dont_have: bool = False


@dataclass(frozen=True)
class Message:
    entries: tuple[Entry, ...] = ()
    full: bool = False
    blocks: tuple[tuple[bytes, bytes], ...] = ()  # (cid prefix, data)
    presences: tuple[tuple[bytes, bool], ...] = ()  # (cid, have)
    pending_bytes: int = 0


# --- varints and CIDs -------------------------------------------------------------------------

def uvarint(n: int) -> bytes:
    """The unsigned LEB128 encoding of n >= 0."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_uvarint(buf: bytes | memoryview, pos: int, end: int | None = None) -> tuple[int, int]:
    """(value, position after it). WireError "malformed" if it runs past `end` or over 10 bytes."""
    end = len(buf) if end is None else end
    value = shift = 0
    while True:
        if pos >= end:
            raise WireError("malformed", "truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("malformed", "varint over 10 bytes")


def parse_cid(cid: bytes) -> tuple[int, int, int, int]:
    """(version, codec, multihash type, digest length) of a binary CID: CIDv1, or CIDv0 (a bare
    34-byte sha2-256 multihash). WireError "malformed" for anything else."""
    if not isinstance(cid, (bytes, bytearray)) or not 2 <= len(cid) <= MAX_CID:
        raise WireError("malformed", "a CID is 2 to 128 bytes")
    if len(cid) == 34 and cid[0] == SHA2_256 and cid[1] == SHA2_256_LEN:
        return 0, DAG_PB, SHA2_256, SHA2_256_LEN
    version, pos = read_uvarint(cid, 0)
    codec, pos = read_uvarint(cid, pos)
    mh_type, pos = read_uvarint(cid, pos)
    mh_len, pos = read_uvarint(cid, pos)
    if version != 1 or mh_len != len(cid) - pos or mh_len == 0:
        raise WireError("malformed", "not a CIDv1 with a whole multihash")
    return version, codec, mh_type, mh_len


def multihash_of(cid: bytes) -> bytes:
    """The multihash a CID names (what DHT provider records are keyed by)."""
    _, _, mh_type, mh_len = parse_cid(cid)
    return uvarint(mh_type) + uvarint(mh_len) + bytes(cid[len(cid) - mh_len:])


def cid_prefix(cid: bytes) -> bytes:
    """The prefix a block of `cid` travels with: uvarints version, codec, multihash type, length."""
    return b"".join(uvarint(v) for v in parse_cid(cid))


def cid_from_prefix(prefix: bytes, data: bytes) -> bytes:
    """The CID of `data` under `prefix` (hashed here). WireError "malformed" for a prefix that does
    not parse or names a hash other than SHA2-256 (32 bytes)."""
    version, pos = read_uvarint(prefix, 0)
    codec, pos = read_uvarint(prefix, pos)
    mh_type, pos = read_uvarint(prefix, pos)
    mh_len, pos = read_uvarint(prefix, pos)
    if pos != len(prefix) or mh_type != SHA2_256 or mh_len != SHA2_256_LEN or version not in (0, 1):
        raise WireError("malformed", "a block prefix other than CIDv0/v1 with sha2-256")
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != DAG_PB:
            raise WireError("malformed", "a CIDv0 prefix names dag-pb")
        return bytes([SHA2_256, SHA2_256_LEN]) + digest
    return prefix + digest


# --- encoding ---------------------------------------------------------------------------------

def _key(field: int, wire_type: int) -> bytes:
    return uvarint(field << 3 | wire_type)


def _int32(n: int) -> bytes:
    return uvarint(n & 0xFFFFFFFFFFFFFFFF if n < 0 else n)


def _bytes_field(field: int, value: bytes) -> list[bytes]:
    return [_key(field, _BYTES), uvarint(len(value)), value]


def encode_message(msg: Message) -> bytes:
    """The protobuf bytes of `msg` (without the length prefix: `encode_frame` has it)."""
    return b"".join(_parts(msg))


def encode_frame(msg: Message) -> bytes:
    """`msg` as it goes on a stream, its uvarint length first (one copy of the blocks)."""
    parts = _parts(msg)
    return b"".join([uvarint(sum(map(len, parts))), *parts])


def _parts(msg: Message) -> list[bytes]:
    parts: list[bytes] = []
    if msg.entries or msg.full:
        wl: list[bytes] = []
        for e in msg.entries:
            inner = _bytes_field(1, e.cid)
            if e.priority:
                inner += [_key(2, _VARINT), _int32(e.priority)]
            if e.cancel:
                inner += [_key(3, _VARINT), b"\x01"]
            if e.want_have:
                inner += [_key(4, _VARINT), b"\x01"]
            if e.send_dont_have:
                inner += [_key(5, _VARINT), b"\x01"]
            wl += _bytes_field(1, b"".join(inner))
        if msg.full:
            wl += [_key(2, _VARINT), b"\x01"]
        parts += _bytes_field(1, b"".join(wl))
    for prefix, data in msg.blocks:
        head = _bytes_field(1, prefix) + [_key(2, _BYTES), uvarint(len(data))]
        size = sum(map(len, head)) + len(data)
        parts += [_key(3, _BYTES), uvarint(size), *head, data]
    for cid, have in msg.presences:
        inner = _bytes_field(1, cid) + ([] if have else [_key(2, _VARINT), b"\x01"])
        parts += _bytes_field(4, b"".join(inner))
    if msg.pending_bytes:
        parts += [_key(5, _VARINT), _int32(msg.pending_bytes)]
    return parts


# --- decoding ---------------------------------------------------------------------------------

def _fields(buf: memoryview, pos: int, end: int):
    """(field number, wire type, value) for each field in buf[pos:end]: a varint's value, or the
    (start, end) of a length-delimited field. Fixed-width fields are skipped; groups refused."""
    while pos < end:
        key, pos = read_uvarint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WireError("malformed", "field number 0")
        if wire_type == _VARINT:
            value, pos = read_uvarint(buf, pos, end)
            yield field, wire_type, value
        elif wire_type == _BYTES:
            size, pos = read_uvarint(buf, pos, end)
            if size > end - pos:
                raise WireError("malformed", "a field runs past its message")
            yield field, wire_type, (pos, pos + size)
            pos += size
        elif wire_type in (_FIXED64, _FIXED32):
            pos += 8 if wire_type == _FIXED64 else 4
            if pos > end:
                raise WireError("malformed", "a fixed field runs past its message")
        else:
            raise WireError("malformed", f"wire type {wire_type}")


def _expect(wire_type: int, want: int, what: str) -> None:
    if wire_type != want:
        raise WireError("malformed", f"{what} has wire type {wire_type}")


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _enum(value: int, what: str) -> bool:
    if value not in (0, 1):
        raise WireError("malformed", f"{what} {value}")
    return value == 1


def _entry(buf: memoryview, start: int, end: int) -> Entry:
    cid, fields = b"", {}
    for field, wire_type, value in _fields(buf, start, end):
        if field == 1:
            _expect(wire_type, _BYTES, "an entry's block")
            cid = bytes(buf[value[0]:value[1]])
        elif field in (2, 3, 4, 5):
            _expect(wire_type, _VARINT, "an entry's flag")
            fields[field] = value
    parse_cid(cid)
    return Entry(cid, _signed32(fields.get(2, 0)), bool(fields.get(3)),
                 _enum(fields.get(4, 0), "want type"), bool(fields.get(5)))


def _count(items: list, what: str) -> None:
    if len(items) >= MAX_ENTRIES:
        raise WireError("too_large", f"more than {MAX_ENTRIES} {what} in one message")


def decode_message(body: bytes | memoryview) -> Message:
    """The Message in `body` (without its length prefix). WireError ("malformed" or "too_large")
    for bytes that do not parse, a CID that does not parse, an unknown enum value, more than
    MAX_ENTRIES entries, blocks or presences, a block over MAX_BLOCK, or a body over MAX_MESSAGE."""
    if len(body) > MAX_MESSAGE:
        raise WireError("too_large", f"a message of {len(body)} bytes")
    buf = memoryview(body)
    entries: list[Entry] = []
    blocks: list[tuple[bytes, bytes]] = []
    presences: list[tuple[bytes, bool]] = []
    full, pending = False, 0
    for field, wire_type, value in _fields(buf, 0, len(buf)):
        if field == 1:
            _expect(wire_type, _BYTES, "the wantlist")
            for f, wt, v in _fields(buf, *value):
                if f == 1:
                    _expect(wt, _BYTES, "a wantlist entry")
                    _count(entries, "wantlist entries")
                    entries.append(_entry(buf, *v))
                elif f == 2:
                    _expect(wt, _VARINT, "the wantlist's full flag")
                    full = bool(v)
        elif field == 3:
            _expect(wire_type, _BYTES, "a block")
            _count(blocks, "blocks")
            prefix, data = b"", b""
            for f, wt, v in _fields(buf, *value):
                if f in (1, 2):
                    _expect(wt, _BYTES, "a block's prefix or data")
                    if f == 2 and v[1] - v[0] > MAX_BLOCK:
                        raise WireError("too_large", f"a block of {v[1] - v[0]} bytes")
                    if f == 1 and v[1] - v[0] > MAX_CID:
                        raise WireError("malformed", "a block prefix over 128 bytes")
                    if f == 1:
                        prefix = bytes(buf[v[0]:v[1]])
                    else:
                        data = bytes(buf[v[0]:v[1]])
            blocks.append((prefix, data))
        elif field == 4:
            _expect(wire_type, _BYTES, "a block presence")
            _count(presences, "presences")
            cid, kind = b"", 0
            for f, wt, v in _fields(buf, *value):
                if f == 1:
                    _expect(wt, _BYTES, "a presence's cid")
                    cid = bytes(buf[v[0]:v[1]])
                elif f == 2:
                    _expect(wt, _VARINT, "a presence's type")
                    kind = v
            parse_cid(cid)
            presences.append((cid, not _enum(kind, "presence type")))
        elif field == 5:
            _expect(wire_type, _VARINT, "pendingBytes")
            pending = _signed32(value)
    return Message(tuple(entries), full, tuple(blocks), tuple(presences), pending)
