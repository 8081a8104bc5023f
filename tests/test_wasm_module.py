"""A wasm module too large for its spec, by CID (issue 16 item 2): the spec's `wasm_cid` and its
checks, the job file's CID of a large module, and node/job_module.py on real block stores (SQLite
index, block files), the blocks moved by node/transfer.py's `fetch_dag` from another store.
The module across real nodes: tests/test_wasm_jobs.py."""

from __future__ import annotations

import pytest
import trio

from distributeai.consensus.cid import DAG_PB, codec_of
from distributeai.consensus.errors import JobFileError, LocalProtocolError, RemoteProtocolError
from distributeai.consensus.jobfile import WASM_INLINE_PREFERRED, parse_job
from distributeai.consensus.messages import WASM_MODULE_MAX, JobSpec, sign, verify
from distributeai.consensus.unixfs import CHUNK_SIZE, file_cid
from distributeai.node import job_module
from distributeai.node.blockstore import BlockStore
from distributeai.node.job_inputs import InputsUnavailable, JobInputs, run_owner
from distributeai.node.ports import Content
from distributeai.node.transfer import fetch_dag
from distributeai.p2p.bitswap_fetch import BlocksUnavailable

from .protocol_fixtures import SUBMITTER, make_spec

MODULE = b"\0asm\1\0\0\0" + bytes(range(256)) * (2 * CHUNK_SIZE // 256)  # three leaves under a dag-pb root
CID = file_cid(MODULE)


def wasm_spec(**kw) -> JobSpec:
    return make_spec(image="", sandbox="wasm", command=("run",), **kw)


# --- the spec -----------------------------------------------------------------------------------

def test_a_large_module_is_named_in_the_signed_spec_by_its_file_cid():
    spec = verify(sign(SUBMITTER, wasm_spec(wasm_cid=CID)), JobSpec).msg
    assert spec.wasm_cid == CID and codec_of(CID) == DAG_PB
    assert spec.block_roots == (CID,)


@pytest.mark.parametrize("cid, says", [
    (b"\x01\x70\x12\x20" + bytes(31), "a CID is 36 bytes, not 35"),
    (b"\x00\x70\x12\x20" + bytes(32), "CID version 0"),
    (b"\x01\x71\x12\x20" + bytes(32), "codec 0x71"),
    (b"\x01\x70\x13\x20" + bytes(32), "not a 32-byte sha2-256"),
    (bytes(65), "wrong type or length"),
    ("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "wrong type or length"),
])
def test_every_node_refuses_a_wasm_cid_that_is_not_a_cid_and_says_why(cid, says):
    body = wasm_spec(wasm_cid=CID).to_body()
    body[19] = cid
    with pytest.raises(RemoteProtocolError) as e:
        verify(SUBMITTER.sign("spec", body), JobSpec)
    assert e.value.reason == "malformed"
    assert e.value.detail.startswith("wasm_cid ") and says in e.value.detail


@pytest.mark.parametrize("kw, says", [
    (dict(wasm_module=b"\0asm\1\0\0\0", wasm_cid=CID), "module or its CID, not both or neither"),
    (dict(), "module or its CID, not both or neither"),
])
def test_a_wasm_job_carries_its_module_or_its_cid(kw, says):
    with pytest.raises(RemoteProtocolError, match=says):
        verify(sign(SUBMITTER, wasm_spec(**kw)), JobSpec)


def test_a_container_job_names_no_module():
    with pytest.raises(RemoteProtocolError, match="carries no wasm module"):
        verify(sign(SUBMITTER, make_spec(wasm_cid=CID)), JobSpec)


# --- the job file ---------------------------------------------------------------------------------

def test_the_job_file_inlines_a_small_module_and_names_a_larger_one_by_cid():
    small = MODULE[:WASM_INLINE_PREFERRED]
    fields = parse_job({"wasm_module": small, "command": ["run"]})
    assert (fields["wasm_module"], fields["wasm_cid"]) == (small, b"")
    fields = parse_job({"wasm_module": MODULE, "command": ["run"]})
    assert (fields["wasm_module"], fields["wasm_cid"]) == (b"", CID)
    verify(sign(SUBMITTER, JobSpec(submitter=SUBMITTER.public_key, nonce=b"\1" * 16, created_ms=1, **fields)), JobSpec)


def test_a_module_over_what_a_node_loads_is_a_job_file_error():
    with pytest.raises(JobFileError) as e:
        parse_job({"wasm_module": bytes(WASM_MODULE_MAX + 1), "command": ["run"]})
    assert e.value.field == "wasm_module" and str(WASM_MODULE_MAX) in str(e.value)


# --- the submitter and the executor, on real block stores -----------------------------------------

def from_store(source: BlockStore):
    """A Bitswap `fetch` whose one provider is `source` (a store in this process)."""
    async def fetch(cids, providers, deliver) -> None:
        missing = []
        for cid in cids:
            block = await source.get(cid)
            if block is None:
                missing.append(cid)
            else:
                await deliver(cid, block)
        if missing:
            raise BlocksUnavailable(missing)
    return fetch


def content_of(blocks: BlockStore, source: BlockStore) -> Content:
    async def fetch(root, providers, *, pin=None, progress=None, max_bytes=None):
        return await fetch_dag(root, blocks, from_store(source), providers, pin=pin, progress=progress,
                               max_bytes=max_bytes)
    return Content(blocks, fetch)


def test_the_submitter_keeps_the_module_pinned_for_the_submission_and_refuses_another(tmp_path):
    async def main() -> None:
        blocks = await BlockStore.open(tmp_path / "blocks")
        inputs = JobInputs(blocks, None, lambda: [], None)
        spec = wasm_spec(wasm_cid=CID)
        for module in (None, MODULE + b"\0"):
            with pytest.raises(LocalProtocolError) as e:
                await job_module.store_module(blocks, spec, module)
            assert e.value.reason == "missing_module"
        assert blocks.stats()["blocks"] == 0  # refused: nothing stored
        await job_module.store_module(blocks, spec, MODULE)
        assert await blocks.walk_missing(CID) == [] and blocks.stats()["pinned_bytes"] >= len(MODULE)
        await inputs.release_submission(spec)  # the certificate: the module may be evicted
        assert blocks.stats()["pinned_bytes"] == 0 and await blocks.has(CID)
        await blocks.close()

    trio.run(main)


def test_the_executor_fetches_the_module_pins_it_for_the_run_and_reads_it_whole(tmp_path):
    async def main() -> None:
        submitter = await BlockStore.open(tmp_path / "submitter")
        executor = await BlockStore.open(tmp_path / "executor")
        spec = wasm_spec(wasm_cid=CID)
        await job_module.store_module(submitter, spec, MODULE)
        content = content_of(executor, submitter)
        assert await job_module.fetch_module(content, "ab" * 32, spec, ["submitter"]) == MODULE
        assert executor.stats()["pinned_bytes"] >= len(MODULE)
        await JobInputs(executor, content.fetch_dag, lambda: [], None).release("ab" * 32)  # the job ended here
        assert executor.stats()["pinned_bytes"] == 0
        # A later job with the same module: read from the store, nothing fetched.
        assert await job_module.fetch_module(content_of(executor, await BlockStore.open(tmp_path / "empty")),
                                             "cd" * 32, spec, ["nobody"]) == MODULE
        for store in (submitter, executor):
            await store.close()

    trio.run(main)


def test_a_module_nobody_serves_is_unavailable_and_one_too_large_is_never_read(tmp_path, monkeypatch):
    async def main() -> None:
        executor = await BlockStore.open(tmp_path / "executor")
        empty = await BlockStore.open(tmp_path / "empty")
        spec = wasm_spec(wasm_cid=CID)
        with pytest.raises(InputsUnavailable, match="wasm module .* could not be fetched"):
            await job_module.fetch_module(content_of(executor, empty), "ab" * 32, spec, ["submitter"])
        await job_module.store_module(empty, spec, MODULE)
        monkeypatch.setattr(job_module, "WASM_MODULE_MAX", len(MODULE) - 1)
        with pytest.raises(ValueError, match=f"has {len(MODULE)} bytes; this node loads at most {len(MODULE) - 1}"):
            await job_module.fetch_module(content_of(executor, empty), "ab" * 32, spec, ["submitter"])
        assert executor.stats()["pinned_bytes"] >= len(MODULE)  # pinned for the run until it ends
        await executor.unpin(run_owner("ab" * 32))
        for store in (executor, empty):
            await store.close()

    trio.run(main)


def test_the_bootstrap_page_shows_a_module_by_its_cid():
    from distributeai.bootstrap.jobview import spec_summary
    from distributeai.consensus.cid import cid_text

    assert spec_summary(wasm_spec(wasm_cid=CID))["runs"] == f"wasm module (by CID {cid_text(CID)})"
    assert spec_summary(wasm_spec(wasm_module=b"\0asm\1\0\0\0"))["runs"] == "wasm module (8 bytes inline)"


def test_a_store_of_an_earlier_version_drops_its_blobs_table_and_keeps_its_jobs(tmp_path):
    import sqlite3

    from distributeai.node.store import Store

    old = sqlite3.connect(tmp_path / "node.db")
    old.executescript("CREATE TABLE blobs (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);"
                      "INSERT INTO blobs VALUES ('ab', x'0061736d');")
    old.close()

    async def main() -> None:
        store = await Store.open(tmp_path / "node.db")
        await store.insert_job("j", "observer", "n", b"spec", "announced", 1)
        await store.aclose()
        store = await Store.open(tmp_path / "node.db")  # opening again changes nothing
        assert (await store.get_job("j"))["status"] == "announced"
        await store.aclose()

    trio.run(main)
    tables = {r[0] for r in sqlite3.connect(tmp_path / "node.db").execute("SELECT name FROM sqlite_master")}
    assert "blobs" not in tables and "jobs" in tables
