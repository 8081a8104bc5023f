"""Output files as blocks (node/outputs_serving.py) on a real block store and a real sandbox
stage: `FileCid` gives the CID `ipfs add --cid-version 1` gives (the reference vectors), from the
read that copies a file out of /out; `import_outputs` moves each kept file into the store pinned
for its job, checked against the certified CID, and leaves no second copy; `read_file` streams a
file back block by block; retention unpins a job's blocks when it removes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from distributeai.consensus.cid import cid_text, raw_cid
from distributeai.consensus.unixfs import CHUNK_SIZE, FileBuilder
from distributeai.node.blockstore import BlockStore
from distributeai.node.outputs_serving import FileCid, import_outputs, outputs_owner, read_file

VECTORS = Path(__file__).resolve().parent / "vectors" / "unixfs.json"


def cid_of(data: bytes) -> bytes:
    builder = FileBuilder()
    builder.add(data)
    return builder.finish()[0]


def seeded(size: int) -> bytes:
    return b"".join(i.to_bytes(4, "big") for i in range(size // 4 + 1))[:size]


def test_file_cid_is_the_cid_ipfs_add_gives_whatever_the_pieces():
    data = seeded(3 * CHUNK_SIZE + 12345)
    for piece in (1, 4096, 1 << 20, len(data)):
        h = FileCid()
        for start in range(0, len(data), piece):
            h.update(data[start:start + piece])
        assert h.digest() == cid_of(data)
    assert FileCid().digest() == cid_of(b"")
    empty = FileCid()
    empty.update(b"x")
    assert empty.digest() == raw_cid(b"x")


def test_file_cid_matches_the_reference_vectors():
    """Fed 1 MiB at a time, as the sandbox feeds it, FileCid gives the reference importer's CIDs."""
    files = json.loads(VECTORS.read_text())["files"]
    for v in files:
        if v["size"] > 1 << 20:
            continue  # the largest ones: tests/test_unixfs.py covers them
        data = bytes((i * 31 + 7 + v["seed"]) % 251 for i in range(v["size"]))
        h = FileCid()
        for start in range(0, len(data), 1 << 20):
            h.update(data[start:start + (1 << 20)])
        assert cid_text(h.digest()) == v["cid"], v["size"]


def test_outputs_become_pinned_blocks_checked_against_their_cids_and_stream_back(tmp_path):
    async def main() -> None:
        store = await BlockStore.open(tmp_path / "blocks", 1 << 30)
        outputs = tmp_path / "outputs"
        job = "ab" * 32
        big, small = seeded(2 * CHUNK_SIZE + 7), b"hello\n"
        (outputs / job / "sub").mkdir(parents=True)
        (outputs / job / "big.bin").write_bytes(big)
        (outputs / job / "sub" / "small.txt").write_bytes(small)
        (outputs / job / "lied.txt").write_bytes(b"what the copy says")
        manifest = (("big.bin", len(big), cid_of(big)), ("lied.txt", 4, cid_of(b"what the job wrote")),
                    ("not-kept.txt", 3, cid_of(b"abc")), ("sub/small.txt", len(small), cid_of(small)))
        announced: list[bytes] = []
        held = await import_outputs(store, outputs, job, manifest, announced.append)
        assert held == ["big.bin", "sub/small.txt"]  # a copy that is not what was certified is not served
        assert announced == [manifest[0][2], manifest[3][2]]  # what is served is announced in the DHT
        assert list((outputs / job).iterdir()) == []  # no second copy; the directory is retention's record
        for path, size, cid in (manifest[0], manifest[3]):
            got = b"".join([chunk async for chunk in read_file(store, cid)])
            assert got == (big if path == "big.bin" else small)
        assert store.stats()["pinned_bytes"] >= len(big) + len(small)
        await store.unpin(outputs_owner(job))
        assert store.stats()["pinned_bytes"] == 0
        await store.close()

    trio.run(main)


def test_a_node_that_ran_the_job_writes_and_streams_its_outputs_with_no_network(tmp_path):
    """fetch_outputs / open_output on the executor's own store: nothing is asked of the network
    (the fetch below would fail), a file no one has keeps its own reason, the others are written."""
    from distributeai.consensus.errors import LocalProtocolError
    from distributeai.node.outputs_serving import OutputsServing
    from distributeai.node.retention import Pins
    from distributeai.node.transfer import fetch_dag
    from distributeai.p2p.bitswap_fetch import BlocksUnavailable

    async def main() -> None:
        store = await BlockStore.open(tmp_path / "blocks", 1 << 30)
        outputs, job = tmp_path / "outputs", "cd" * 32
        big = seeded(3 * CHUNK_SIZE + 1)
        (outputs / job).mkdir(parents=True)
        (outputs / job / "big.bin").write_bytes(big)
        manifest = (("big.bin", len(big), cid_of(big)), ("gone.txt", 3, cid_of(b"abc")))
        assert await import_outputs(store, outputs, job, manifest) == ["big.bin"]
        asked = []

        async def network(cids, providers, deliver):
            asked.append(cids)
            raise BlocksUnavailable(cids)

        async def dag(root, providers, *, pin=None, progress=None):
            return await fetch_dag(root, store, network, providers, pin=pin, progress=progress)

        async def status(job_hex):
            return {"status": "verified", "executors": [{"peer_id": "p", "agreed": True}],
                    "files": [{"path": p, "size": n, "cid": cid_text(c)} for p, n, c in manifest]}

        serving = OutputsServing(None, Pins(lambda: 0), store, dag, status)
        out = tmp_path / "got"
        written, failed = await serving.fetch_outputs(job, out)
        assert [(w["path"], w["size"]) for w in written] == [("big.bin", len(big))]
        assert (out / "big.bin").read_bytes() == big
        assert [(f["path"], f["reason"]) for f in failed] == [("gone.txt", "unavailable")]
        assert asked == [[cid_of(b"abc")]]  # only the file this node lacks was asked for
        size, chunks = await serving.open_output(job, "big.bin")
        assert size == len(big) and b"".join([c async for c in chunks]) == big
        try:
            await serving.open_output(job, "gone.txt")
        except LocalProtocolError as exc:
            assert exc.reason == "unavailable"
        else:
            raise AssertionError("a file no one has was served")
        await store.close()

    trio.run(main)
