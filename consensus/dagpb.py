"""The two protobufs of a UnixFS block, hand-rolled: dag-pb's PBNode/PBLink and UnixFS's Data.

Contract:
- `encode_node(links, data)` writes a PBNode as kubo and the reference JavaScript importer do:
  every Link (field 2: Hash, Name, Tsize, in that order, Name written even when empty) before
  Data (field 1). `encode_unixfs(type, ...)` writes a UnixFS Data message: Type, Data (only if
  not empty), filesize (if given), blocksizes (unpacked, one field each), in field order.
- `decode_node` and `decode_unixfs` are strict, bounded and iterative (no recursion; the work is
  linear in the input): a truncated or over-long varint, a length past the end, a wire type a field
  does not have, a field number the message does not define, a repeated singular field, Links on
  both sides of Data, a PBLink without Hash or with its fields out of order: `BadBlock` naming the
  defect. They do not interpret what they read (CIDs, names, sizes): consensus/unixfs.py does.
Pure: no I/O; stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_VARINT_BYTES = 10  # a uint64
VARINT, LENGTH = 0, 2  # the only wire types these messages use
WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "start-group", 4: "end-group", 5: "32-bit"}

# UnixFS Data.Type
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = 0, 1, 2, 3, 4, 5


class BadBlock(ValueError):
    """Bytes that are not a block this network accepts; the message says what is wrong."""


@dataclass(frozen=True)
class RawLink:
    """A PBLink as written: `name`/`tsize` are None when the field is absent."""

    hash: bytes | None
    name: bytes | None
    tsize: int | None


@dataclass(frozen=True)
class UnixFSData:
    """A UnixFS Data message; `has_hamt_fields`: hashType or fanout is present."""

    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    has_hamt_fields: bool = False


# --- encoding -------------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    """The unsigned LEB128 varint of 0 <= n < 2**64."""
    if not 0 <= n < 1 << 64:
        raise ValueError(f"varint out of range: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _key(number, LENGTH) + varint(len(value)) + value


def encode_link(cid: bytes, name: str, tsize: int) -> bytes:
    """One PBLink: Hash, Name (always written, even empty, as kubo does), Tsize."""
    return _bytes_field(1, cid) + _bytes_field(2, name.encode()) + _key(3, VARINT) + varint(tsize)


def encode_node(links: list[tuple[bytes, str, int]], data: bytes) -> bytes:
    """A PBNode: every link `(cid, name, tsize)` in the order given, then Data."""
    parts = [_bytes_field(2, encode_link(cid, name, tsize)) for cid, name, tsize in links]
    parts.append(_bytes_field(1, data))
    return b"".join(parts)


def encode_unixfs(type_: int, *, data: bytes = b"", filesize: int | None = None,
                  blocksizes: list[int] | tuple[int, ...] = ()) -> bytes:
    """A UnixFS Data message (Type, Data if not empty, filesize if given, blocksizes unpacked)."""
    out = [_key(1, VARINT), varint(type_)]
    if data:
        out.append(_bytes_field(2, data))
    if filesize is not None:
        out += [_key(3, VARINT), varint(filesize)]
    for size in blocksizes:
        out += [_key(4, VARINT), varint(size)]
    return b"".join(out)


# --- decoding -------------------------------------------------------------------------------------

def read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """The varint at `pos` in `buf` and the position after it; BadBlock if it is truncated, longer
    than 10 bytes or beyond 64 bits. `what` names the message in errors."""
    if pos < len(buf) and buf[pos] < 0x80:  # one byte: most varints here
        return buf[pos], pos + 1
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            raise BadBlock(f"{what}: truncated varint at byte {pos}")
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            if value >= 1 << 64:
                raise BadBlock(f"{what}: varint at byte {pos} exceeds 64 bits")
            return value, pos + i + 1
    raise BadBlock(f"{what}: varint at byte {pos} is longer than {MAX_VARINT_BYTES} bytes")


def fields(buf: bytes, what: str):
    """Yield `(number, wire, value)` for each field of the message `buf`: value is an int for a
    varint field, bytes for a length-delimited one; BadBlock for any other wire type, field number
    0, or a length past the end."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos, what)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise BadBlock(f"{what}: field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, what)
            yield number, wire, value
        elif wire == LENGTH:
            length, pos = read_varint(buf, pos, what)
            if length > len(buf) - pos:
                raise BadBlock(f"{what}: field {number} claims {length} bytes, {len(buf) - pos} remain")
            yield number, wire, bytes(buf[pos:pos + length])
            pos += length
        else:
            raise BadBlock(f"{what}: field {number} has wire type {WIRE_NAMES.get(wire, wire)}, "
                           "which no field of a UnixFS block has")


def _expect(what: str, number: int, wire: int, want: int, name: str) -> None:
    if wire != want:
        raise BadBlock(f"{what}: {name} (field {number}) must be {WIRE_NAMES[want]}, "
                       f"not {WIRE_NAMES[wire]}")


def decode_link(buf: bytes, index: int) -> RawLink:
    """A PBLink: Hash (1, required), Name (2), Tsize (3), each at most once and in that order."""
    fast = _canonical_link(buf)
    if fast is not None:
        return fast
    what = f"dag-pb link {index}"
    got: dict[int, object] = {}
    names = {1: ("Hash", LENGTH), 2: ("Name", LENGTH), 3: ("Tsize", VARINT)}
    for number, wire, value in fields(buf, what):
        if number not in names:
            raise BadBlock(f"{what}: unknown field {number} (a PBLink has Hash, Name and Tsize)")
        name, want = names[number]
        _expect(what, number, wire, want, name)
        if number in got:
            raise BadBlock(f"{what}: {name} appears twice")
        if any(other > number for other in got):
            raise BadBlock(f"{what}: {name} after a later field (order is Hash, Name, Tsize)")
        got[number] = value
    if 1 not in got:
        raise BadBlock(f"{what}: no Hash")
    return RawLink(got[1], got.get(2), got.get(3))  # type: ignore[arg-type]


def _canonical_link(buf: bytes) -> RawLink | None:
    """A link of the usual shape (a 36-byte Hash, a Name under 128 bytes or none, Tsize), read
    without the generic field loop (a 1 MiB block holds some 25,000 links); None for any other."""
    if len(buf) < 40 or buf[0] != 0x0A or buf[1] != 36:
        return None
    name, end = None, 38
    if buf[38] == 0x12:
        if buf[39] >= 0x80:
            return None
        end = 40 + buf[39]
        name = bytes(buf[40:end])
    if end >= len(buf) or buf[end] != 0x18:
        return None
    try:
        tsize, pos = read_varint(buf, end + 1, "")
    except BadBlock:
        return None
    if pos != len(buf):
        return None
    return RawLink(bytes(buf[2:38]), name, tsize)


def decode_node(block: bytes) -> tuple[list[RawLink], bytes | None]:
    """A PBNode's links and its Data (None when absent). Links and Data may come in either order,
    but the links are contiguous and Data appears at most once (as dag-pb's reference decoder)."""
    what = "dag-pb node"
    links: list[RawLink] = []
    data: bytes | None = None
    links_before_data = False
    for number, wire, value in fields(block, what):
        if number == 1:
            _expect(what, number, wire, LENGTH, "Data")
            if data is not None:
                raise BadBlock(f"{what}: Data appears twice")
            data = value  # type: ignore[assignment]
            links_before_data = bool(links)
        elif number == 2:
            _expect(what, number, wire, LENGTH, "Links")
            if links_before_data:
                raise BadBlock(f"{what}: Links both before and after Data")
            links.append(decode_link(value, len(links)))  # type: ignore[arg-type]
        else:
            raise BadBlock(f"{what}: unknown field {number} (a PBNode has Data and Links)")
    return links, data


_UNIXFS_FIELDS = {1: ("Type", VARINT), 2: ("Data", LENGTH), 3: ("filesize", VARINT), 4: ("blocksizes", VARINT),
                  5: ("hashType", VARINT), 6: ("fanout", VARINT), 7: ("mode", VARINT), 8: ("mtime", LENGTH)}


def decode_unixfs(buf: bytes, max_blocksizes: int) -> UnixFSData:
    """A UnixFS Data message. blocksizes must be unpacked (as kubo writes them), at most
    `max_blocksizes` of them (the node's link count: more is an error, found before reading them
    all); mode and mtime are accepted and ignored (mtime's inside is not parsed); every other field
    at most once."""
    what = "UnixFS data"
    seen: set[int] = set()
    type_: int | None = None
    data, filesize, blocksizes = b"", None, []
    for number, wire, value in fields(buf, what):
        if number not in _UNIXFS_FIELDS:
            raise BadBlock(f"{what}: unknown field {number}")
        name, want = _UNIXFS_FIELDS[number]
        _expect(what, number, wire, want, name)
        if number == 4:
            if len(blocksizes) == max_blocksizes:
                raise BadBlock(f"{what}: more blocksizes than the node's {max_blocksizes} links")
            blocksizes.append(value)
            continue
        if number in seen:
            raise BadBlock(f"{what}: {name} appears twice")
        seen.add(number)
        if number == 1:
            type_ = value  # type: ignore[assignment]
        elif number == 2:
            data = value  # type: ignore[assignment]
        elif number == 3:
            filesize = value
    if type_ is None:
        raise BadBlock(f"{what}: no Type")
    return UnixFSData(type_, data, filesize, blocksizes, bool(seen & {5, 6}))  # type: ignore[arg-type]
