"""consensus/unixfs.py: the CIDs `ipfs add --cid-version 1` gives (tests/vectors/unixfs.json, made by
the reference importer, see tools/unixfs_vectors/), streaming in bounded memory, the decoder's
round trip of our own blocks, and its refusal of broken ones.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from distributeai.consensus.cid import DAG_PB, RAW, cid_for, cid_text, parse_cid_text, raw_cid
from distributeai.consensus.dagpb import encode_link, encode_node, encode_unixfs, varint
from distributeai.consensus.unixfs import (
    CHUNK_SIZE, MAX_BLOCK, MAX_LINKS, BadBlock, FileBuilder, Link, children, decode_block, directory_block,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "unixfs.json").read_text())
EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_DIR = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
PIECE = 64 * 1024


def content(size: int, seed: int = 0) -> bytes:
    """The vectors' formula: byte i is (i * 31 + 7 + seed) % 251 (period 251)."""
    period = bytes((i * 31 + 7 + seed) % 251 for i in range(251))
    return (period * (size // 251 + 1))[:size]


def import_file(data: bytes, piece: int = PIECE) -> tuple[FileBuilder, bytes, dict[bytes, bytes]]:
    """Feed `data` in `piece`-byte pieces, checking after each that the builder holds at most a
    partial chunk and under MAX_LINKS links per level, and that every block it hands back is new."""
    builder, blocks = FileBuilder(), {}
    view = memoryview(data)
    leaf_bytes = 0
    for start in range(0, len(data), piece):
        for cid, block in builder.add(view[start:start + piece]):
            blocks[cid] = block
            leaf_bytes += len(block) if cid[1] == RAW else 0
        # every full chunk is handed back at once; what is held is the partial chunk alone
        assert leaf_bytes + builder.pending_bytes() == min(start + piece, len(data))
        assert builder.pending_bytes() < CHUNK_SIZE
        assert all(n < MAX_LINKS for n in builder.pending_links())
        assert len(builder.pending_links()) <= 3  # 45 MB: leaves, their nodes, the root's level
    root, size, last = builder.finish()
    blocks.update(last)
    assert size == len(data) and builder.cid == root
    return builder, root, blocks


def check_file(root: bytes, blocks: dict[bytes, bytes], data: bytes) -> None:
    """The DAG under `root` holds exactly `data`: walked as an exporter walks it, with an explicit
    stack, each child's size checked against its parent's blocksize."""
    view, offset, stack = memoryview(data), 0, [(root, None)]
    while stack:
        cid, expected = stack.pop()
        node = decode_block(cid, blocks[cid])
        assert node.kind in ("raw", "file")
        assert expected is None or node.content_size == expected
        assert view[offset:offset + len(node.data)] == node.data
        offset += len(node.data)
        stack += reversed([(link.cid, size) for link, size in zip(node.links, node.blocksizes)])
    assert offset == len(data)


# --- the reference vectors ------------------------------------------------------------------------

def test_the_vectors_name_their_importer_and_settings():
    assert VECTORS["importer"] == "ipfs-unixfs-importer" and VECTORS["version"]
    assert VECTORS["options"]["chunker"] == f"fixedSize({{ chunkSize: {CHUNK_SIZE} }})"
    assert VECTORS["options"]["layout"] == f"balanced({{ maxChildrenPerNode: {MAX_LINKS} }})"
    assert VECTORS["options"]["cidVersion"] == 1 and VECTORS["options"]["rawLeaves"] is True
    sizes = [f["size"] for f in VECTORS["files"]]
    assert {0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, MAX_LINKS * CHUNK_SIZE,
            MAX_LINKS * CHUNK_SIZE + 1} <= set(sizes)
    assert VECTORS["files"][0]["cid"] == EMPTY_RAW
    assert [t["cid"] for t in VECTORS["trees"] if not t["entries"]] == [EMPTY_DIR]


@pytest.mark.parametrize("vector", VECTORS["files"], ids=lambda v: str(v["size"]))
def test_a_file_gets_the_cid_ipfs_add_gives_it(vector):
    data = content(vector["size"], vector["seed"])
    builder, root, blocks = import_file(data)
    assert cid_text(root) == vector["cid"]
    assert builder.tsize == vector["tsize"] == sum(len(b) for b in blocks.values())
    assert len(blocks) == vector["blocks"]
    if "root_hex" in vector:
        assert blocks[root].hex() == vector["root_hex"]
    if vector["size"] <= CHUNK_SIZE:  # one chunk: the file is its raw leaf
        assert root == raw_cid(data) and list(blocks) == [root]
    check_file(root, blocks, data)
    if vector["size"] == MAX_LINKS * CHUNK_SIZE + 1:  # depth 2, split as kubo splits it
        top = decode_block(root, blocks[root])
        assert top.blocksizes == [MAX_LINKS * CHUNK_SIZE, 1] and top.filesize == len(data)
        full, last = (decode_block(link.cid, blocks[link.cid]) for link in top.links)
        assert len(full.links) == MAX_LINKS and [link.tsize for link in last.links] == [1]


def build_tree(entries: list[dict]) -> tuple[bytes, int, dict[bytes, bytes]]:
    """A directory tree as `ipfs add -r` builds it from the vector's entries: (root, tsize, blocks)."""
    blocks: dict[bytes, bytes] = {}
    tree: dict = {}
    for entry in entries:
        *parents, name = entry["path"].split("/")
        here = tree
        for part in parents:
            here = here.setdefault(part, {})
        if entry.get("dir"):
            here.setdefault(name, {})
        else:
            builder, root, file_blocks = import_file(content(entry["size"], entry["seed"]))
            blocks.update(file_blocks)
            here[name] = (root, builder.tsize)

    def directory(node: dict) -> tuple[bytes, int]:
        links = []
        for name, child in node.items():
            cid, tsize = directory(child) if isinstance(child, dict) else child
            links.append(Link(cid, name, tsize))
        cid, block = directory_block(links)
        blocks[cid] = block
        return cid, len(block) + sum(link.tsize for link in links)

    root, tsize = directory(tree)
    return root, tsize, blocks


@pytest.mark.parametrize("vector", VECTORS["trees"], ids=lambda v: v["name"])
def test_a_directory_tree_gets_the_cid_ipfs_add_r_gives_it(vector):
    root, tsize, blocks = build_tree(vector["entries"])
    assert cid_text(root) == vector["cid"]
    assert tsize == vector["tsize"]
    assert len(blocks) == vector["blocks"]
    assert blocks[root].hex() == vector["root_hex"]
    node = decode_block(root, blocks[root])
    names = [link.name for link in node.links]
    assert node.kind == "directory" and names == sorted(names, key=str.encode)


def test_the_well_known_empty_blocks():
    assert cid_text(FileBuilder().finish()[0]) == EMPTY_RAW
    assert cid_text(directory_block([])[0]) == EMPTY_DIR


# --- streaming ----------------------------------------------------------------------------------

@pytest.mark.parametrize("piece", [1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 7])
def test_the_blocks_do_not_depend_on_how_the_bytes_arrive(piece):
    data = content(3 * CHUNK_SIZE + 5, seed=9)
    _, expected_root, expected = import_file(data, piece=len(data))
    builder = FileBuilder()
    order = []
    pos = 0
    if piece == 1:  # byte by byte across the first chunk's end only, to stay fast
        order += [cid for cid, _ in builder.add(data[:CHUNK_SIZE - 300])]
        for i in range(CHUNK_SIZE - 300, CHUNK_SIZE + 300):
            order += [cid for cid, _ in builder.add(data[i:i + 1])]
        pos, piece = CHUNK_SIZE + 300, 1 << 20
    for start in range(pos, len(data), piece):
        order += [cid for cid, _ in builder.add(data[start:start + piece])]
    root, _, last = builder.finish()
    order += [cid for cid, _ in last]
    assert root == expected_root and sorted(order) == sorted(expected)
    assert order.index(root) == len(order) - 1  # children before their parents: the root last


def test_blocks_are_handed_back_as_soon_as_they_are_complete():
    builder = FileBuilder()
    assert builder.add(content(CHUNK_SIZE - 1)) == [] and builder.pending_bytes() == CHUNK_SIZE - 1
    [(cid, block)] = builder.add(b"x")
    assert len(block) == CHUNK_SIZE and builder.pending_bytes() == 0
    assert builder.pending_links() == [1]
    root, _, last = builder.finish()
    assert root == cid and last == []  # one chunk: the file is that leaf


def test_a_builder_is_used_once():
    builder = FileBuilder()
    builder.finish()
    with pytest.raises(ValueError):
        builder.add(b"x")
    with pytest.raises(ValueError):
        builder.finish()


# --- directories --------------------------------------------------------------------------------

def test_directory_entries_are_sorted_by_name_bytes():
    leaf = raw_cid(b"x")
    cid, block = directory_block([Link(leaf, n, 1) for n in ("b", "é", "B", "a", "aa")])
    assert [link.name for link in decode_block(cid, block).links] == ["B", "a", "aa", "b", "é"]


@pytest.mark.parametrize("names", [[""], ["."], [".."], ["a/b"], ["a\0"], ["x", "x"]])
def test_a_directory_refuses_names_it_cannot_hold(names):
    with pytest.raises(ValueError):
        directory_block([Link(raw_cid(b""), n, 0) for n in names])


def test_a_directory_ipfs_would_shard_is_refused():
    leaf = raw_cid(b"")
    entries = [Link(leaf, f"{i:0200d}", 0) for i in range(1200)]  # 1200 * (200 + 36) > 256 KiB
    with pytest.raises(ValueError, match="shard"):
        directory_block(entries)
    directory_block(entries[:1000])  # 236,000 bytes: a plain directory


# --- the decoder --------------------------------------------------------------------------------

def test_decoding_our_blocks_round_trips():
    data = content(2 * CHUNK_SIZE + 3)
    _, root, blocks = import_file(data)
    node = decode_block(root, blocks[root])
    assert node.kind == "file" and node.filesize == len(data) and node.data == b""
    assert node.blocksizes == [CHUNK_SIZE, CHUNK_SIZE, 3]
    assert children(root, blocks[root]) == [link.cid for link in node.links]
    assert [link.tsize for link in node.links] == node.blocksizes and {link.name for link in node.links} == {""}
    leaf = node.links[2].cid
    assert decode_block(leaf, blocks[leaf]).kind == "raw" and children(leaf, blocks[leaf]) == []
    dir_cid, dir_block = directory_block([Link(root, "f", 5), Link(leaf, "g", 3)])
    d = decode_block(dir_cid, dir_block)
    assert d.kind == "directory" and d.links == [Link(root, "f", 5), Link(leaf, "g", 3)] and d.content_size == 0


def test_a_file_node_with_inline_data_is_read():
    # What `ipfs add` without raw leaves makes of a small file (CIDv0's default): data in the node.
    block = encode_node([], encode_unixfs(2, data=b"hello", filesize=5))
    node = decode_block(cid_for(DAG_PB, block), block)
    assert (node.kind, node.data, node.content_size, node.links) == ("file", b"hello", 5, [])


def test_a_unixfs_raw_node_reads_as_a_file_and_mode_and_mtime_are_ignored():
    # UnixFS type Raw (old leaves, `ipfs add` without raw leaves at some settings); mode and mtime
    # (`ipfs add --preserve-mode --preserve-mtime`) change nothing this network reads.
    raw = encode_node([], encode_unixfs(0, data=b"abc", filesize=3))
    assert decode_block(cid_for(DAG_PB, raw), raw).content_size == 3
    meta = b"\x38\xed\x03" + b"\x42\x02\x08\x01"  # mode 0o755, mtime {Seconds: 1}
    directory = encode_node([(raw_cid(b"x"), "x", 1)], encode_unixfs(1) + meta)
    assert [link.name for link in decode_block(cid_for(DAG_PB, directory), directory).links] == ["x"]


CID = raw_cid(b"child")
LINK = encode_link(CID, "", 5)
FILE_DATA = encode_unixfs(2, filesize=5, blocksizes=[5])


def _pb(*fields: tuple[int, bytes]) -> bytes:
    """A PBNode from raw (field, bytes) pairs, length-delimited."""
    return b"".join(varint(n << 3 | 2) + varint(len(v)) + v for n, v in fields)


BROKEN = [
    ("truncated varint", b"\x12\x80", "truncated varint"),
    ("length past the end", b"\x0a\x05ab", "claims 5 bytes"),
    ("Data as a varint", b"\x08\x01", "must be length-delimited"),
    ("unknown PBNode field", b"\x1a\x00" + _pb((1, encode_unixfs(1))), "unknown field 3"),
    ("a group wire type", b"\x0b" + _pb((1, encode_unixfs(1))), "wire type start-group"),
    ("field number 0", b"\x02\x00", "field number 0"),
    ("an 11-byte varint", b"\x0a" + b"\xff" * 10 + b"\x01", "longer than 10"),
    ("a varint past 64 bits", b"\x0a" + b"\xff" * 9 + b"\x7f", "64 bits"),
    ("Data twice", _pb((1, encode_unixfs(1)), (1, encode_unixfs(1))), "Data appears twice"),
    ("Links around Data", _pb((2, LINK), (1, FILE_DATA), (2, LINK)), "before and after Data"),
    ("no UnixFS data", _pb((2, LINK)), "without UnixFS data"),
    ("no Type", _pb((1, b"\x18\x00")), "no Type"),
    ("Name before Hash", _pb((2, _pb((2, b"")) + _pb((1, CID))), (1, FILE_DATA)), "order"),
    ("Hash twice", _pb((2, _pb((1, CID), (1, CID))), (1, FILE_DATA)), "Hash appears twice"),
    ("Tsize length-delimited", _pb((2, _pb((1, CID), (3, b"\x05"))), (1, FILE_DATA)), "Tsize (field 3) must be varint"),
    ("a link without Hash", _pb((2, b"\x18\x05"), (1, FILE_DATA)), "no Hash"),
    ("a link without Tsize", _pb((2, _pb((1, CID), (2, b""))), (1, FILE_DATA)), "no Tsize"),
    ("a CIDv0 link", _pb((2, encode_link(CID[2:], "", 5)), (1, FILE_DATA)), "a CID is 36 bytes"),
    ("a dag-cbor link", _pb((2, encode_link(b"\x01\x71" + CID[2:], "", 5)), (1, FILE_DATA)), "codec 0x71"),
    ("a non-UTF-8 name", _pb((2, _pb((1, CID), (2, b"\xff")) + b"\x18\x05"), (1, encode_unixfs(1))), "UTF-8"),
    ("HAMT", _pb((1, encode_unixfs(5))), "HAMT"),
    ("symlink", _pb((1, encode_unixfs(4, data=b"/etc/passwd"))), "symlink"),
    ("metadata", _pb((1, encode_unixfs(3))), "metadata"),
    ("unknown type", _pb((1, encode_unixfs(9))), "unknown UnixFS type 9"),
    ("unknown UnixFS field", _pb((1, encode_unixfs(2, filesize=0) + b"\x48\x01")), "unknown field 9"),
    ("fanout in a file", _pb((1, encode_unixfs(2, filesize=0) + b"\x30\x10")), "hashType/fanout"),
    ("packed blocksizes", _pb((2, LINK), (1, b"\x08\x02\x18\x05\x22\x01\x05")), "blocksizes (field 4) must be varint"),
    ("filesize twice", _pb((1, b"\x08\x02\x18\x00\x18\x00")), "filesize appears twice"),
    ("no filesize", _pb((2, LINK), (1, encode_unixfs(2, blocksizes=[5]))), "without filesize"),
    ("more links than blocksizes", _pb((2, LINK), (2, LINK), (1, FILE_DATA)), "2 links and 1 blocksizes"),
    ("more blocksizes than links", _pb((2, LINK), (1, encode_unixfs(2, filesize=10, blocksizes=[5, 5]))),
     "more blocksizes than the node's 1 links"),
    ("filesize not the sum", _pb((2, LINK), (1, encode_unixfs(2, filesize=6, blocksizes=[5]))), "filesize 6"),
    ("a named file link", _pb((2, encode_link(CID, "x", 5)), (1, FILE_DATA)), "has a name"),
    ("a directory entry ..", _pb((2, encode_link(CID, "..", 5)), (1, encode_unixfs(1))), "single path component"),
    ("a directory entry a/b", _pb((2, encode_link(CID, "a/b", 5)), (1, encode_unixfs(1))), "single path component"),
    ("a nameless entry", _pb((2, encode_link(CID, "", 5)), (1, encode_unixfs(1))), "non-empty"),
    ("a name twice", _pb((2, encode_link(CID, "a", 5)), (2, encode_link(CID, "a", 5)), (1, encode_unixfs(1))),
     "appears twice"),
    ("a directory with data", _pb((1, encode_unixfs(1, data=b"x"))), "directory node with file data"),
    ("a block over MAX_BLOCK", _pb((1, encode_unixfs(2, data=bytes(MAX_BLOCK), filesize=MAX_BLOCK))), "at most"),
]


@pytest.mark.parametrize("block,why", [(b, w) for _, b, w in BROKEN], ids=[name for name, _, _ in BROKEN])
def test_a_broken_block_is_refused_with_its_defect(block, why):
    with pytest.raises(BadBlock, match=re.escape(why)):
        decode_block(cid_for(DAG_PB, block), block)


def test_a_raw_block_over_max_block_and_a_bad_cid_are_refused():
    with pytest.raises(BadBlock, match="at most"):
        decode_block(raw_cid(b""), bytes(MAX_BLOCK + 1))
    decode_block(raw_cid(b""), bytes(MAX_BLOCK))  # the limit itself is fine
    with pytest.raises(BadBlock, match="CID"):
        decode_block(parse_cid_text(EMPTY_RAW)[:-1], b"")


def test_mutated_blocks_decode_or_are_refused_and_nothing_else():
    # What the fuzzer does at length (tools/fuzz: decoder unixfs_block), seeded and short here.
    _, root, blocks = import_file(content(3 * CHUNK_SIZE))
    dir_cid, dir_block = directory_block([Link(root, "a", 9), Link(CID, "b", 5)])
    seeds = [blocks[root], dir_block]
    rng = random.Random(16)
    outcomes = {"ok": 0, "bad": 0}
    for _ in range(3000):
        block = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(block))
            op = rng.randrange(3)
            if op == 0:
                block[i] = rng.randrange(256)
            elif op == 1:
                del block[i:i + rng.randint(1, 8)]
            else:
                block[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        try:
            decode_block(cid_for(DAG_PB, bytes(block)), bytes(block))
            outcomes["ok"] += 1
        except BadBlock:
            outcomes["bad"] += 1
    assert outcomes["bad"] > 1000, outcomes


def test_a_block_of_many_links_decodes_without_recursion():
    links = [(CID, "", 1)] * 5000
    block = encode_node(links, encode_unixfs(2, filesize=5000, blocksizes=[1] * 5000))
    assert len(decode_block(cid_for(DAG_PB, block), block).links) == 5000
