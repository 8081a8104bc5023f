"""The node's block store (node/blockstore.py, node/blockfiles.py): real files and a real SQLite
index in tmp_path. What it guarantees: a block is stored only as what its CID names, once; the cap
holds by evicting the least recently used unpinned blocks and never a pinned one; a put pins can't
fit is refused whole; a reopen keeps what was committed and cleans what a crash left."""

from __future__ import annotations

import os

import pytest
import trio

from distributeai.consensus.cid import DAG_PB, cid_for, cid_text, parse_cid_text, raw_cid
from distributeai.node.blockstore import BlockStore, BlockStoreFull, StoreFull

KiB = 1024


def block(i: int, size: int = 10 * KiB) -> tuple[bytes, bytes]:
    data = i.to_bytes(4, "big") * (size // 4)
    return raw_cid(data), data


async def test_put_get_has(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 1 << 20)
    cid, data = block(1)
    assert await store.get(cid) is None and not await store.has(cid)
    await store.put(cid, data)
    assert await store.get(cid) == data and await store.has(cid)
    other, _ = block(2)
    assert await store.have([cid, other, cid]) == {cid}
    path = tmp_path / "blocks" / cid[4:5].hex() / cid_text(cid)
    assert path.read_bytes() == data  # sharded by the digest's first byte, named by the CID's text
    dag = cid_for(DAG_PB, b"\x0a\x02\x08\x01")  # the same store takes dag-pb blocks
    await store.put(dag, b"\x0a\x02\x08\x01")
    assert await store.get(dag) == b"\x0a\x02\x08\x01"
    await store.close()


async def test_a_block_that_is_not_what_its_cid_names_is_refused_and_nothing_stored(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 1 << 20)
    cid, data = block(1)
    good, good_data = block(2)
    with pytest.raises(ValueError, match="bad_block"):
        await store.put(cid, data + b"x")
    with pytest.raises(ValueError, match="bad_block"):  # one bad block refuses the whole batch
        await store.put_many([(good, good_data), (cid, b"")])
    with pytest.raises(ValueError):
        await store.put(b"not a cid", data)
    assert not await store.has(cid) and not await store.has(good)
    assert store.stats()["blocks"] == 0
    assert [p.name for p in (tmp_path / "blocks").iterdir() if p.name != "tmp" and
            not p.name.startswith("index.db")] == []
    await store.close()


async def test_put_is_idempotent(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 1 << 20)
    cid, data = block(1)
    await store.put(cid, data)
    await store.put(cid, data)
    await store.put_many([(cid, data), (cid, data)])
    assert store.stats() == {"blocks": 1, "bytes": len(data), "max_bytes": 1 << 20, "pinned_bytes": 0,
                             "evicted": 0}
    await store.close()


async def test_eviction_takes_the_least_recently_used_first(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 40 * KiB)  # room for four 10 KiB blocks
    blocks = [block(i) for i in range(4)]
    for cid, data in blocks:
        await store.put(cid, data)
    await store.get(blocks[0][0])  # 0 is now more recent than 1, 2, 3
    await store.put(blocks[2][0], blocks[2][1])  # a put again counts as a use: 2 more recent too
    new = block(10)
    await store.put(*new)
    assert await store.have([c for c, _ in blocks]) == {blocks[0][0], blocks[2][0], blocks[3][0]}
    two_new = [block(11), block(12)]
    await store.put_many(two_new)  # one batch: 3 and 0 go (2 and 10 are more recent)
    assert await store.have([c for c, _ in blocks]) == {blocks[2][0]}
    st = store.stats()
    assert st["evicted"] == 3 and st["blocks"] == 4 and st["bytes"] == 40 * KiB
    assert not (tmp_path / "blocks" / blocks[1][0][4:5].hex() / cid_text(blocks[1][0])).exists()
    await store.close()


async def test_concurrent_puts_and_gets_keep_the_cap(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 50 * KiB)
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(store.put, *block(i))
            nursery.start_soon(store.get, block(i)[0])
    held = await store.have([block(i)[0] for i in range(20)])
    assert len(held) == 5 and store.stats()["bytes"] == 50 * KiB and store.stats()["evicted"] == 15
    assert sum(1 for p in (tmp_path / "blocks").rglob("b*") if p.is_file()) == 5  # files match the index
    await store.close()


async def test_pinned_blocks_are_never_evicted_and_a_put_they_leave_no_room_for_is_refused(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 40 * KiB)
    pinned = [block(i) for i in range(3)]
    await store.put_many(pinned[:2], pin="job-a")
    await store.put(*pinned[2], pin="submission:job-b")
    loose = block(3)
    await store.put(*loose)
    await store.put(*block(4))  # evicts the one unpinned block, though it is not the oldest
    assert await store.have([c for c, _ in pinned]) == {c for c, _ in pinned}
    assert not await store.has(loose[0])
    assert store.stats()["pinned_bytes"] == 30 * KiB
    with pytest.raises(BlockStoreFull):
        await store.put_many([block(5), block(6)])  # 20 KiB, only 10 evictable: nothing stored
    assert not await store.has(block(5)[0]) and await store.has(block(4)[0])
    with pytest.raises(BlockStoreFull):
        await store.put(*block(7, 50 * KiB))  # over the cap by itself
    assert store.stats()["blocks"] == 4
    await store.unpin("job-a")  # its two blocks become evictable
    assert store.stats()["pinned_bytes"] == 10 * KiB
    await store.put_many([block(5), block(6)])
    assert await store.have([c for c, _ in pinned]) == {pinned[2][0]}
    assert store.stats()["bytes"] <= 40 * KiB
    await store.close()


async def test_a_block_pinned_by_two_owners_stays_pinned_until_both_release_it(tmp_path):
    store = await BlockStore.open(tmp_path / "blocks", 20 * KiB)
    shared = block(1)
    await store.put(*shared, pin="a")
    await store.put(*shared, pin="b")  # already held: pinned again, not stored again
    assert store.stats()["pinned_bytes"] == 10 * KiB and store.stats()["blocks"] == 1
    await store.unpin("a")
    await store.put_many([block(2)])
    await store.put_many([block(3)])  # evicts 2, not the shared one
    assert await store.has(shared[0]) and not await store.has(block(2)[0])
    await store.unpin("b")
    assert store.stats()["pinned_bytes"] == 0
    await store.put(*block(4))
    assert not await store.has(shared[0])
    with pytest.raises(ValueError):
        await store.unpin("")
    await store.close()


async def test_reopen_keeps_blocks_pins_and_recency_and_cleans_what_a_crash_left(tmp_path):
    root = tmp_path / "blocks"
    store = await BlockStore.open(root, 40 * KiB)
    a, b, c = block(1), block(2), block(3)
    await store.put(*a, pin="job")
    await store.put(*b)
    await store.put(*c)
    await store.get(b[0])  # recency kept in memory, written at close
    await store.close()
    (root / "tmp" / "0123.tmp").write_bytes(b"half a block")  # a write cut by a crash
    store = await BlockStore.open(root, 40 * KiB)
    assert list((root / "tmp").iterdir()) == []
    assert store.stats() == {"blocks": 3, "bytes": 30 * KiB, "max_bytes": 40 * KiB,
                             "pinned_bytes": 10 * KiB, "evicted": 0}
    assert await store.get(a[0]) == a[1]
    await store.put_many([block(4), block(5)])  # 10 KiB to free: c, the least recent unpinned
    assert await store.have([a[0], b[0], c[0]]) == {a[0], b[0]}
    await store.close()


async def test_a_row_whose_file_is_gone_or_damaged_is_dropped_on_first_get(tmp_path):
    root = tmp_path / "blocks"
    store = await BlockStore.open(root, 1 << 20)
    a, b = block(1), block(2)
    await store.put(*a, pin="job")
    await store.put(*b)
    await store.close()
    (root / a[0][4:5].hex() / cid_text(a[0])).unlink()
    (root / b[0][4:5].hex() / cid_text(b[0])).write_bytes(b"torn")
    store = await BlockStore.open(root, 1 << 20)
    assert await store.has(a[0])  # the index still says so until a get reads the file
    assert await store.get(a[0]) is None and await store.get(b[0]) is None
    assert not await store.has(a[0]) and not await store.has(b[0])
    assert store.stats()["blocks"] == 0 and store.stats()["bytes"] == 0 and store.stats()["pinned_bytes"] == 0
    await store.put(*b)  # stored again, whole
    assert await store.get(b[0]) == b[1]
    await store.close()


async def test_a_full_disk_fails_a_put_cleanly_and_the_store_goes_on(tmp_path):
    from .test_disk_full import fill, mount_tmpfs, unmount

    where = tmp_path / "fs"
    mount_tmpfs(where, 4)
    try:
        store = await BlockStore.open(where / "blocks", 1 << 30)
        kept = block(1)
        await store.put(*kept)
        fill(where / "filler")
        with pytest.raises(StoreFull):
            await store.put_many([block(i, 256 * KiB) for i in range(2, 6)])
        assert await store.get(kept[0]) == kept[1]
        assert store.stats()["blocks"] == 1 and list((where / "blocks" / "tmp").iterdir()) == []
        (where / "filler").unlink()
        await store.put_many([block(i, 256 * KiB) for i in range(2, 6)])
        assert store.stats()["blocks"] == 5
        await store.close()
    finally:
        unmount(where)


async def test_stats_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        await BlockStore.open(tmp_path / "blocks", -1)
    store = await BlockStore.open(tmp_path / "blocks", 100 * KiB)
    await store.put_many([block(i) for i in range(3)], pin="p")
    await store.put(*block(3))
    assert store.stats() == {"blocks": 4, "bytes": 40 * KiB, "max_bytes": 100 * KiB,
                             "pinned_bytes": 30 * KiB, "evicted": 0}
    for owner in ("", "x" * 201, "adding:1"):  # "adding:" is the store's own, for imports in flight
        with pytest.raises(ValueError):
            await store.put(*block(9), pin=owner)
    with pytest.raises(ValueError):
        await store.get(b"\x01\x55")
    assert await store.roots() == []
    await store.close()
    assert os.path.exists(tmp_path / "blocks" / "index.db")


# --- the UnixFS side: import, export, walk (node/blockdag.py over consensus.unixfs) -------------

MiB = 1024 * KiB


def tree(where):
    (where / "sub" / "deeper").mkdir(parents=True)
    (where / "empty-dir").mkdir()
    (where / "a.bin").write_bytes(os.urandom(MiB + 17))
    (where / "empty").write_bytes(b"")
    (where / "sub" / "b.txt").write_text("hello\n")
    (where / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(300 * KiB))
    (where / "sub" / "large.bin").write_bytes(os.urandom(5 * MiB))  # over a batch: streamed, in and out
    (where / "sub" / "z.txt").write_text("after the large one\n")
    return where


def same_tree(a, b) -> bool:
    def listing(root):
        return sorted((str(p.relative_to(root)), p.is_dir(), None if p.is_dir() else p.read_bytes())
                      for p in root.rglob("*"))
    return listing(a) == listing(b)


async def test_a_file_goes_in_and_comes_out_the_same(tmp_path):
    src = tmp_path / "data.bin"
    src.write_bytes(os.urandom(9 * MiB + 12345))  # 37 chunks, the last one short; three batches
    store = await BlockStore.open(tmp_path / "blocks", 1 << 30)
    root, size = await store.add_path(src)
    assert size == 9 * MiB + 12345
    assert await store.walk_missing(root) == []
    assert await store.export(root, tmp_path / "out.bin") == size
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    assert (await store.add_path(src)) == (root, size)  # the same bytes, the same CID
    (entry,) = await store.roots()
    assert entry["cid"] == cid_text(root) and entry["name"] == "data.bin" and entry["size"] == size
    assert store.stats()["pinned_bytes"] == 0  # not asked to pin: evictable once imported
    small = tmp_path / "small"
    small.write_bytes(b"tiny")
    tiny, n = await store.add_path(small, pin="submission:x")
    assert n == 4 and await store.get(tiny) is not None and store.stats()["pinned_bytes"] >= 4
    await store.export(tiny, tmp_path / "out.bin")  # an existing file is replaced
    assert (tmp_path / "out.bin").read_bytes() == b"tiny"
    from distributeai.node.blockstore import MissingBlock
    middle = raw_cid(src.read_bytes()[20 * 256 * KiB:21 * 256 * KiB])
    (tmp_path / "blocks" / middle[4:5].hex() / cid_text(middle)).unlink()
    with pytest.raises(MissingBlock) as raised:  # found mid-stream, in the second batch
        await store.export(root, tmp_path / "out.bin")
    assert raised.value.cid == middle and (tmp_path / "out.bin").read_bytes() == b"tiny"  # untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin")]  # no partial file left
    assert await store.walk_missing(root) == [middle]
    await store.close()


def vector_bytes(size: int, seed: int) -> bytes:
    return bytes((i * 31 + 7 + seed) % 251 for i in range(size))


async def test_an_import_gives_the_cids_ipfs_add_gives(tmp_path):
    # tests/vectors/unixfs.json (consensus/unixfs.py's reference vectors): a file of 3 chunks and a tree
    import json
    from pathlib import Path

    vectors = json.loads((Path(__file__).parent / "vectors" / "unixfs.json").read_text())
    store = await BlockStore.open(tmp_path / "blocks", 1 << 30)
    (vec,) = [f for f in vectors["files"] if f["size"] == 786437]
    (tmp_path / "f").write_bytes(vector_bytes(vec["size"], vec["seed"]))
    assert await store.add_path(tmp_path / "f") == (parse_cid_text(vec["cid"]), vec["size"])
    (tree_vec,) = [t for t in vectors["trees"] if t["name"] == "tree"]
    top = tmp_path / "tree"
    for entry in tree_vec["entries"]:
        where = top / entry["path"]
        if entry.get("dir"):
            where.mkdir(parents=True, exist_ok=True)
        else:
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_bytes(vector_bytes(entry["size"], entry["seed"]))
    root, size = await store.add_path(top)
    assert root == parse_cid_text(tree_vec["cid"]) and size == sum(e.get("size", 0) for e in tree_vec["entries"])
    link = tmp_path / "link-to-tree"
    link.symlink_to(top)
    assert (await store.add_path(link))[0] == root  # the path itself may be a symlink: followed
    await store.export(root, tmp_path / "out")
    assert same_tree(top, tmp_path / "out")
    await store.close()


async def test_a_directory_tree_goes_in_and_comes_out_the_same(tmp_path):
    src = tree(tmp_path / "src")
    store = await BlockStore.open(tmp_path / "blocks", 1 << 30)
    root, size = await store.add_path(src, pin="job-1")
    assert size == MiB + 17 + 6 + 300 * KiB + 5 * MiB + 20
    assert await store.export(root, tmp_path / "copy") == size
    assert same_tree(src, tmp_path / "copy")
    with pytest.raises(FileExistsError):
        await store.export(root, tmp_path / "copy")
    assert store.stats()["pinned_bytes"] == store.stats()["bytes"]  # every block, pinned for job-1
    await store.unpin("job-1")
    assert store.stats()["pinned_bytes"] == 0
    await store.pin("job-2", root)  # the walk finds every block of the tree again
    assert store.stats()["pinned_bytes"] == store.stats()["bytes"]
    await store.close()


async def test_an_import_refuses_what_is_not_a_file_or_directory_and_stores_nothing(tmp_path):
    src = tree(tmp_path / "src")
    (src / "sub" / "link").symlink_to(src / "a.bin")
    store = await BlockStore.open(tmp_path / "blocks", 1 << 30)
    with pytest.raises(ValueError, match="link: a symlink"):
        await store.add_path(src)
    (src / "sub" / "link").unlink()
    os.mkfifo(src / "fifo")
    with pytest.raises(ValueError, match="fifo: a FIFO"):
        await store.add_path(src)
    assert store.stats()["blocks"] == 0 and await store.roots() == []
    await store.close()


async def test_an_import_the_cap_cannot_hold_is_refused_and_leaves_nothing_pinned(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 * MiB))
    store = await BlockStore.open(tmp_path / "blocks", MiB)
    with pytest.raises(BlockStoreFull):
        await store.add_path(src, pin="job")
    assert store.stats()["pinned_bytes"] == 0 and await store.roots() == []
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(900 * KiB))
    root, _ = await store.add_path(small)  # what the failed import stored is evictable
    assert await store.walk_missing(root) == []
    await store.close()


async def test_export_of_a_dag_with_a_missing_block_raises_missing_block_and_writes_nothing(tmp_path):
    from distributeai.node.blockstore import MissingBlock

    src = tree(tmp_path / "src")
    root_dir = tmp_path / "blocks"
    store = await BlockStore.open(root_dir, 1 << 30)
    root, _ = await store.add_path(src)
    leaf = raw_cid((src / "sub" / "deeper" / "c.bin").read_bytes()[:256 * KiB])
    assert await store.has(leaf)
    (root_dir / leaf[4:5].hex() / cid_text(leaf)).unlink()  # lost behind the index's back
    with pytest.raises(MissingBlock) as raised:
        await store.export(root, tmp_path / "copy")
    assert raised.value.cid == leaf
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks", "src"]  # no copy, no partial tree
    assert await store.walk_missing(root) == [leaf]  # the export's read dropped its row
    await store.pin("job", root)  # pins what is held now: every block but the lost one
    assert store.stats()["pinned_bytes"] == store.stats()["bytes"] > 0
    await store.put(leaf, (src / "sub" / "deeper" / "c.bin").read_bytes()[:256 * KiB])
    await store.export(root, tmp_path / "copy")
    assert same_tree(src, tmp_path / "copy")
    await store.close()


async def test_export_refuses_a_file_dag_whose_parts_do_not_add_up(tmp_path):
    # A peer can send a well-formed file node whose blocksize for a leaf is not the leaf's size:
    # the export notices, and nothing is written.
    from distributeai.consensus.dagpb import T_FILE, encode_node, encode_unixfs
    from distributeai.consensus.unixfs import BadBlock

    store = await BlockStore.open(tmp_path / "blocks", 1 << 20)
    leaf, data = block(1, 1000)
    node = encode_node([(leaf, "", 1000)], encode_unixfs(T_FILE, filesize=2000, blocksizes=[2000]))
    root = cid_for(DAG_PB, node)
    await store.put_many([(leaf, data), (root, node)])
    with pytest.raises(BadBlock, match="1000 file bytes, its parent says 2000"):
        await store.export(root, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks"]
    await store.close()
