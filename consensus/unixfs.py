"""UnixFS as `ipfs add --cid-version 1` makes it: the streaming file importer, directory nodes, and
the strict decoder of one block.

Contract:
- `FileBuilder` turns a stream of bytes into the blocks of one file exactly as kubo does with
  `--cid-version 1` (tests/vectors/unixfs.json, made by the reference importer, proves it): fixed
  `CHUNK_SIZE` chunks as raw leaves (codec raw), kubo's balanced layout with at most `MAX_LINKS`
  links per dag-pb node (UnixFS File: filesize, one blocksize per link; links named "", Tsize the
  serialized bytes of the subtree), CIDv1 sha2-256. A one-chunk file is its raw leaf (the empty
  file is the empty raw block). It holds at most one partial chunk plus one pending link list per
  tree level (under `MAX_LINKS` entries each), and hands back each block as soon as it is complete.
  `file_cid(data)` is the root CID alone, of bytes already in memory (a wasm module's).
- `directory_block` makes a UnixFS Directory node, links sorted by name bytes as kubo sorts them;
  ValueError for names a directory cannot hold (see `name_problem`), duplicates, and directories
  kubo would shard (HAMT, not supported here: over `SHARD_THRESHOLD` bytes of names and CIDs).
- `decode_block(cid, block)` reads one block someone sent: a raw CID's block is file bytes; a
  dag-pb block must be a UnixFS File (or Raw) or Directory node. `BadBlock` with the defect for
  anything else: over `MAX_BLOCK`, malformed protobuf (consensus/dagpb.py), a link whose CID is
  not one this network accepts (consensus.cid.check_cid), no Tsize, a file whose filesize is not
  its inline bytes plus its blocksizes or whose blocksizes do not match its links one to one, a
  directory entry whose name is not one path component or appears twice, HAMT-sharded
  directories, symlinks, metadata, unknown types. It does not check the block's hash
  (consensus.cid.verify_block is that one check, done where blocks arrive) nor the children
  (an exporter checks each child's `content_size` against the parent's blocksize).
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .cid import DAG_PB, RAW, BadCid, check_cid, cid_for, raw_cid
from .dagpb import (
    T_DIRECTORY, T_FILE, T_HAMT, T_METADATA, T_RAW, T_SYMLINK, BadBlock, decode_node, decode_unixfs, encode_node,
    encode_unixfs,
)

__all__ = ["CHUNK_SIZE", "MAX_LINKS", "MAX_BLOCK", "SHARD_THRESHOLD", "BadBlock", "FileBuilder", "Link", "Node",
           "directory_block", "decode_block", "children", "file_cid", "name_problem"]

CHUNK_SIZE = 262144  # kubo's default chunker, size-262144
MAX_LINKS = 174  # kubo's balanced layout: links per node
MAX_BLOCK = 1 << 20  # the largest block accepted from anyone (Bitswap's own limit is 2 MiB)
SHARD_THRESHOLD = 262144  # kubo makes a directory a HAMT when its names + CIDs exceed this many bytes

_UNSUPPORTED = {T_METADATA: "metadata", T_SYMLINK: "symlink",
                T_HAMT: "HAMT-sharded directory (kubo shards directories with very many entries)"}


@dataclass(frozen=True)
class Link:
    """One link of a dag-pb node: the child's CID (binary), its name ("" in a file) and Tsize
    (the serialized bytes of the child's whole subtree)."""

    cid: bytes
    name: str
    tsize: int


@dataclass(frozen=True)
class Node:
    """One decoded block. kind: "raw" (a raw leaf: `data` is the bytes), "file" (a UnixFS file
    node: `data` is its inline bytes, usually empty; `filesize`; one `blocksizes` entry per link)
    or "directory" (links are its entries, by name)."""

    links: list[Link]
    kind: str
    data: bytes
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)

    @property
    def content_size(self) -> int:
        """The file bytes this block stands for (its parent's blocksize for it); 0 for a directory."""
        if self.kind == "raw":
            return len(self.data)
        return self.filesize or 0


def name_problem(name: object) -> str | None:
    """Why `name` cannot be a directory entry's name (None if it can): it must be a non-empty
    str, one path component (no "/", not "." or ".."), without NUL."""
    if not isinstance(name, str) or not name:
        return "an entry's name is a non-empty string"
    if name in (".", "..") or "/" in name or "\0" in name:
        return f"{name!r} is not a single path component"
    return None


# --- files ------------------------------------------------------------------------------------------

@dataclass
class _Child:
    cid: bytes
    tsize: int  # serialized bytes of the subtree
    size: int  # file bytes under it


class FileBuilder:
    """Streaming importer of one file. `add(data)` returns the `(cid, block)` pairs completed by
    that data, in order (leaves, then the nodes they completed); `finish()` returns `(root cid,
    file size, the last blocks)` and sets `tsize` (the root's cumulative size, a directory link's
    Tsize) and `cid`. Any piece sizes give the same blocks. Single use: ValueError after finish."""

    def __init__(self) -> None:
        self._buf = bytearray()  # the partial chunk, always under CHUNK_SIZE bytes
        self._levels: list[list[_Child]] = [[]]  # pending links per level; level 0 holds leaves
        self.size = 0
        self.tsize: int | None = None
        self.cid: bytes | None = None
        self._done = False

    def add(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if self._done:
            raise ValueError("FileBuilder.add after finish")
        out: list[tuple[bytes, bytes]] = []
        view = memoryview(data).cast("B")
        self.size += len(view)
        pos = 0
        while pos < len(view):
            if not self._buf and len(view) - pos >= CHUNK_SIZE:  # a whole chunk: no copy through _buf
                self._leaf(bytes(view[pos:pos + CHUNK_SIZE]), out)
                pos += CHUNK_SIZE
                continue
            take = min(CHUNK_SIZE - len(self._buf), len(view) - pos)
            self._buf += view[pos:pos + take]
            pos += take
            if len(self._buf) == CHUNK_SIZE:
                chunk, self._buf = bytes(self._buf), bytearray()
                self._leaf(chunk, out)
        return out

    def finish(self) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
        if self._done:
            raise ValueError("FileBuilder.finish twice")
        self._done = True
        out: list[tuple[bytes, bytes]] = []
        if self._buf or self.size == 0:  # the last partial chunk, or the empty file's empty leaf
            chunk, self._buf = bytes(self._buf), bytearray()
            self._leaf(chunk, out)
        level = 0
        while True:  # close each level bottom-up; the top level's one entry is the root
            pending = self._levels[level]
            higher = any(self._levels[level + 1:])
            if not higher and len(pending) == 1:
                root = pending[0]
                break
            if pending:
                self._levels[level] = []
                self._push(level + 1, self._file_node(pending, out), out)
            level += 1
        self.cid, self.tsize = root.cid, root.tsize
        return root.cid, self.size, out

    def pending_bytes(self) -> int:
        """Bytes of file data held now (the partial chunk): under CHUNK_SIZE."""
        return len(self._buf)

    def pending_links(self) -> list[int]:
        """How many links wait at each level (each under MAX_LINKS)."""
        return [len(level) for level in self._levels]

    def _leaf(self, chunk: bytes, out: list[tuple[bytes, bytes]]) -> None:
        cid = raw_cid(chunk)
        out.append((cid, chunk))
        self._push(0, _Child(cid, len(chunk), len(chunk)), out)

    def _push(self, level: int, child: _Child, out: list[tuple[bytes, bytes]]) -> None:
        while True:  # a full level becomes one node a level up, which may fill that level too
            while len(self._levels) <= level:
                self._levels.append([])
            self._levels[level].append(child)
            if len(self._levels[level]) < MAX_LINKS:
                return
            full, self._levels[level] = self._levels[level], []
            child = self._file_node(full, out)
            level += 1

    @staticmethod
    def _file_node(kids: list[_Child], out: list[tuple[bytes, bytes]]) -> _Child:
        sizes = [k.size for k in kids]
        data = encode_unixfs(T_FILE, filesize=sum(sizes), blocksizes=sizes)
        block = encode_node([(k.cid, "", k.tsize) for k in kids], data)
        cid = cid_for(DAG_PB, block)
        out.append((cid, block))
        return _Child(cid, len(block) + sum(k.tsize for k in kids), sum(sizes))


def file_cid(data: bytes) -> bytes:
    """The CID of `data` as one file (what `ipfs add --cid-version 1` gives it): FileBuilder's
    root, the blocks dropped."""
    builder = FileBuilder()
    builder.add(data)
    return builder.finish()[0]


# --- directories -----------------------------------------------------------------------------------

def directory_block(entries: list[Link]) -> tuple[bytes, bytes]:
    """The `(cid, block)` of a UnixFS directory holding `entries` (each `Link(child cid, name,
    child's tsize)`), links sorted by the names' UTF-8 bytes as kubo writes them. Its own Tsize is
    `len(block) + sum(e.tsize for e in entries)`."""
    names: set[str] = set()
    estimate = 0
    for entry in entries:
        problem = name_problem(entry.name)
        if problem:
            raise ValueError(problem)
        if entry.name in names:
            raise ValueError(f"two entries named {entry.name!r}")
        names.add(entry.name)
        try:
            check_cid(entry.cid)
        except BadCid as exc:
            raise ValueError(f"entry {entry.name!r}: {exc}") from None
        if not isinstance(entry.tsize, int) or entry.tsize < 0:
            raise ValueError(f"entry {entry.name!r}: tsize must be a non-negative int")
        estimate += len(entry.name.encode()) + len(entry.cid)
    if estimate > SHARD_THRESHOLD:
        raise ValueError(f"a directory of {len(entries)} entries: IPFS would shard it (HAMT, over "
                         f"{SHARD_THRESHOLD} bytes of names and CIDs), which this network does not support")
    ordered = sorted(entries, key=lambda e: e.name.encode())
    block = encode_node([(e.cid, e.name, e.tsize) for e in ordered], encode_unixfs(T_DIRECTORY))
    return cid_for(DAG_PB, block), block


# --- decoding ---------------------------------------------------------------------------------------

def decode_block(cid: bytes, block: bytes) -> Node:
    """The node `block` (named by `cid`) holds; BadBlock naming the defect if it is not a block
    this network accepts (see the module's contract)."""
    try:
        codec = check_cid(cid)[1]
    except BadCid as exc:
        raise BadBlock(f"the block's CID: {exc}") from None
    if not isinstance(block, (bytes, bytearray, memoryview)):
        raise BadBlock("a block is bytes")
    if len(block) > MAX_BLOCK:
        raise BadBlock(f"a block of {len(block)} bytes (at most {MAX_BLOCK})")
    block = bytes(block)
    if codec == RAW:
        return Node([], "raw", block)
    raw_links, data = decode_node(block)
    if data is None:
        raise BadBlock("a dag-pb block without UnixFS data")
    info = decode_unixfs(data, len(raw_links))
    if info.type in _UNSUPPORTED:
        raise BadBlock(f"unsupported UnixFS type: {_UNSUPPORTED[info.type]}")
    if info.type not in (T_RAW, T_FILE, T_DIRECTORY):
        raise BadBlock(f"unknown UnixFS type {info.type}")
    if info.has_hamt_fields:
        raise BadBlock("hashType/fanout in a node that is not a HAMT shard")
    links = [_link(i, raw) for i, raw in enumerate(raw_links)]
    if info.type == T_DIRECTORY:
        return _directory(links, info)
    return _file(links, info)


def children(cid: bytes, block: bytes) -> list[bytes]:
    """The CIDs `block` links to, in order ([] for a raw leaf); BadBlock as decode_block."""
    return [link.cid for link in decode_block(cid, block).links]


def _link(index: int, raw) -> Link:
    if raw.hash is None:
        raise BadBlock(f"link {index} has no Hash")
    try:
        cid = check_cid(raw.hash)
    except BadCid as exc:
        raise BadBlock(f"link {index}: {exc}") from None
    try:
        name = (raw.name or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise BadBlock(f"link {index}: its name is not UTF-8") from None
    if raw.tsize is None:
        raise BadBlock(f"link {index} has no Tsize")
    return Link(cid, name, raw.tsize)


def _directory(links: list[Link], info) -> Node:
    if info.data or info.filesize is not None or info.blocksizes:
        raise BadBlock("a directory node with file data, filesize or blocksizes")
    seen: set[str] = set()
    for i, link in enumerate(links):
        problem = name_problem(link.name)
        if problem:
            raise BadBlock(f"directory entry {i}: {problem}")
        if link.name in seen:
            raise BadBlock(f"directory entry {i}: {link.name!r} appears twice")
        seen.add(link.name)
    return Node(links, "directory", b"")


def _file(links: list[Link], info) -> Node:
    if info.filesize is None:
        raise BadBlock("a file node without filesize")
    if len(info.blocksizes) != len(links):
        raise BadBlock(f"a file node with {len(links)} links and {len(info.blocksizes)} blocksizes")
    if any(link.name for link in links):
        raise BadBlock("a file node's link has a name")
    if info.filesize != len(info.data) + sum(info.blocksizes):
        raise BadBlock(f"a file node's filesize {info.filesize} is not its {len(info.data)} inline bytes "
                       f"plus its blocksizes ({sum(info.blocksizes)})")
    return Node(links, "file", info.data, info.filesize, list(info.blocksizes))
