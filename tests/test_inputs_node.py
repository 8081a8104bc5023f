"""A job's inputs on a node (issue 16, item 3), component by component: the `inputs_too_large`
bidding predicate (pure), the control request's `inputs`, who is asked for input blocks, and
`JobInputs` over a real block store (import and sizing, what a bid says it holds, the layout an
executor hands the sandbox, the pins)."""

from __future__ import annotations

import os
import stat

import pytest

from distributeai.consensus.cid import raw_cid
from distributeai.consensus.messages import JobSpec
from distributeai.node.bidding import BidContext, Capacity, decide
from distributeai.node.control_request import BadRequest, check_request
from distributeai.node.job_inputs import input_providers

MB = 10**6


def spec_with(size: int) -> JobSpec:
    return JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",), inputs=((raw_cid(b"x"), "data", size),), out_max_bytes=0)


def ctx(spec: JobSpec, **kw) -> BidContext:
    return BidContext(spec=spec, capacity=Capacity(), running=0, sandbox_ok=True, image_ok=lambda _: True, **kw)


def test_a_node_declines_inputs_its_store_or_disk_cannot_take_less_what_it_holds():
    spec = spec_with(300 * MB)
    assert decide(ctx(spec, store_room=None)).bid  # no block store watched: no limit
    no = decide(ctx(spec, store_room=100 * MB))
    assert not no.bid and no.code == "inputs_too_large" and "block store" in no.reason
    assert decide(ctx(spec, store_room=100 * MB, inputs_held=200 * MB)).bid  # only 100 MB to fetch
    disk = decide(ctx(spec, store_room=10**12, disk_headroom=50 * MB, max_output=None))
    assert not disk.bid and disk.code == "inputs_too_large" and "disk" in disk.reason
    assert decide(ctx(spec, store_room=10**12, disk_headroom=50 * MB, inputs_held=300 * MB)).bid


def test_the_control_submit_takes_local_inputs_as_absolute_paths_with_names():
    base = {"op": "submit", "spec": "00"}
    assert check_request(base)["inputs"] == []
    req = check_request({**base, "inputs": [{"path": "/tmp/d", "name": "data"}]})
    assert req["inputs"] == [("/tmp/d", "data")]
    for bad in ("x", [{"path": "rel", "name": "a"}], [{"path": "/a"}], [{"path": "/a", "name": ""}],
                [{"path": "/a", "name": "a", "cid": "b"}], [{"path": "/a", "name": "a"}] * 65):
        with pytest.raises(BadRequest):
            check_request({**base, "inputs": bad})


def test_input_blocks_are_asked_of_the_submitter_first_then_other_peers():
    assert input_providers("S", "me", ["a", "S", "me", "b"]) == ["S", "a", "b"]
    assert len(input_providers("S", "me", [str(i) for i in range(50)])) == 8


# --- JobInputs over a real block store -----------------------------------------------------------

@pytest.fixture
async def store(tmp_path):
    from distributeai.node.blockstore import BlockStore

    s = await BlockStore.open(tmp_path / "blocks", 64 << 20)
    yield s
    await s.close()


def tree(root) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(600_000))


async def test_submitting_imports_paths_sizes_cids_and_pins_until_the_certificate(tmp_path, store):
    from distributeai.node.job_inputs import JobInputs, dag_size

    tree(tmp_path / "d")
    (tmp_path / "f.txt").write_bytes(b"hello\n")
    cid_dir, size_dir = await store.add_path(tmp_path / "d")
    assert size_dir == 600_006 and await dag_size(store, cid_dir) == 600_006

    async def no_fetch(*a, **k):
        raise AssertionError("everything is held: nothing to fetch")

    inputs = JobInputs(store, no_fetch, lambda: [], tmp_path / "inputs")
    spec = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",), inputs=((cid_dir, "data", 0),))
    full = await inputs.prepare(spec, [(str(tmp_path / "f.txt"), "f")])
    assert [(p, s) for _, p, s in full.inputs] == [("data", 600_006), ("f", 6)]
    assert store.stats()["pinned_bytes"] >= 600_012
    assert await inputs.held(full) == 600_012
    await inputs.release_submission(full)
    assert store.stats()["pinned_bytes"] == 0
    assert await inputs.held(full) == 600_012  # unpinned, still held: locality


async def test_an_executor_lays_inputs_out_read_only_for_uid_65534_and_removes_them(tmp_path, store):
    from distributeai.node.job_inputs import InputsUnavailable, JobInputs

    tree(tmp_path / "d")
    cid, size = await store.add_path(tmp_path / "d")
    calls = []

    async def fetch_dag(root, providers, *, pin=None, progress=None, **_):
        calls.append((root, providers, pin))

    inputs = JobInputs(store, fetch_dag, lambda: [], tmp_path / "inputs")
    spec = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",), inputs=((cid, "nested/data", size),))
    job = "cd" * 32
    top = await inputs.fetch(job, spec, ["S"])
    assert calls == []  # held already: nothing fetched
    assert (top / "nested" / "data" / "a.txt").read_bytes() == b"alpha\n"
    assert (top / "nested" / "data" / "sub" / "b.bin").stat().st_size == 600_000
    for where, dirs, files in os.walk(top):
        assert stat.S_IMODE(os.stat(where).st_mode) == 0o755
        assert all(stat.S_IMODE(os.stat(os.path.join(where, f)).st_mode) == 0o644 for f in files)
    assert store.stats()["pinned_bytes"] > 0
    with pytest.raises(InputsUnavailable, match="says 1"):
        await inputs.fetch("ee" * 32, JobSpec(**{**spec.__dict__, "inputs": ((cid, "d", 1),)}), ["S"])
    await inputs.release("ee" * 32)  # as a failed run does (Executing.apply)
    top2 = await inputs.fetch(job, spec, ["S"])  # again, as after a restart: written afresh
    assert top2 == top and (top / "nested" / "data" / "a.txt").exists()
    await inputs.remove_dir(job)
    assert not top.exists()
    await inputs.release(job)
    assert store.stats()["pinned_bytes"] == 0


async def test_a_missing_input_is_fetched_and_one_nobody_has_is_inputs_unavailable(tmp_path, store):
    from distributeai.node.job_inputs import InputsUnavailable, JobInputs

    cid = raw_cid(b"nobody has this")

    async def fetch_dag(root, providers, *, pin=None, progress=None, **_):
        raise LookupError("no provider has it")

    inputs = JobInputs(store, fetch_dag, lambda: [], tmp_path / "inputs")
    spec = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",), inputs=((cid, "x", 15),))
    assert await inputs.held(spec) == 0
    with pytest.raises(InputsUnavailable, match="could not be fetched"):
        await inputs.fetch("ef" * 32, spec, ["S"])

    async def fetch_it(root, providers, *, pin=None, progress=None, **_):
        await store.put(root, b"nobody has this", pin=pin)

    inputs.fetch_dag = fetch_it
    top = await inputs.fetch("ef" * 32, spec, ["S"])
    assert (top / "x").read_bytes() == b"nobody has this"


def test_submit_input_takes_path_and_name(tmp_path, monkeypatch):
    import typer

    from distributeai.cli.job import local_input

    (tmp_path / "data.csv").write_text("1\n")
    (tmp_path / "odd:name").write_text("2\n")
    monkeypatch.chdir(tmp_path)
    assert local_input("data.csv") == (str(tmp_path / "data.csv"), "data.csv")
    assert local_input("data.csv:d/x") == (str(tmp_path / "data.csv"), "d/x")
    assert local_input("odd:name") == (str(tmp_path / "odd:name"), "odd:name")  # it exists as given
    for bad in ("missing", "data.csv:../x", "data.csv:/abs"):
        with pytest.raises(typer.Exit):
            local_input(bad)


async def test_a_fetch_cut_short_resumes_asking_only_for_the_blocks_still_missing(tmp_path, store):
    """As after a SIGKILL mid-fetch: the blocks stored survive (pinned `inputs:JOB`), and the run
    at restart asks the providers for the rest only (node/transfer.py under JobInputs.fetch)."""
    from distributeai.consensus.unixfs import FileBuilder
    from distributeai.node.job_inputs import JobInputs

    data = os.urandom(5 * 262144 + 7)  # six leaves under one file node
    builder = FileBuilder()
    blocks = dict(builder.add(data))
    root, size, last = builder.finish()
    blocks.update(last)
    asked: list[bytes] = []
    via_transfer = serving(store, blocks, asked)

    leaves = [c for c in blocks if c != root]
    for cid in leaves[:3]:  # what arrived before the kill
        await store.put(cid, blocks[cid], pin="inputs:" + "ab" * 32)
    inputs = JobInputs(store, via_transfer, lambda: [], tmp_path / "inputs")
    spec = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",), inputs=((root, "model.bin", size),))
    top = await inputs.fetch("ab" * 32, spec, ["S"])
    assert (top / "model.bin").read_bytes() == data
    assert set(asked) == set(blocks) - set(leaves[:3]) and len(asked) == len(set(asked))


def serving(store, blocks: dict[bytes, bytes], asked: list[bytes]):
    """A node's fetch_dag (node/transfer.py over `store`) whose Bitswap serves `blocks`, noting
    each CID asked in `asked`."""
    from distributeai.node.transfer import fetch_dag

    async def bitswap(cids, providers, deliver):
        for cid in cids:
            asked.append(cid)
            await deliver(cid, blocks[cid])

    async def via_transfer(cid, providers, *, pin=None, progress=None, **kw):
        return await fetch_dag(cid, store, bitswap, providers, pin=pin, progress=progress, **kw)

    return via_transfer


def file_blocks(size: int) -> tuple[bytes, int, dict[bytes, bytes]]:
    """A file of `size` random bytes as UnixFS blocks: (root, size, {cid: block})."""
    from distributeai.consensus.unixfs import FileBuilder

    builder = FileBuilder()
    blocks = dict(builder.add(os.urandom(size)))
    root, size, last = builder.finish()
    blocks.update(last)
    return root, size, blocks


async def test_a_submitter_that_understates_an_input_is_refused_before_the_whole_dag_arrives(tmp_path, store):
    """The spec says 1,000 bytes, the DAG holds 16 MiB: the fetch stops once the spec's bound
    (node/transfer.py size_bound: the size, a margin, one block) is passed, the run is refused."""
    from distributeai.node.job_inputs import InputsUnavailable, JobInputs
    from distributeai.node.transfer import size_bound

    root, size, blocks = file_blocks(64 * 262144)
    asked: list[bytes] = []
    via_transfer = serving(store, blocks, asked)

    inputs = JobInputs(store, via_transfer, lambda: [], tmp_path / "inputs")
    spec = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",), inputs=((root, "data", 1000),))
    with pytest.raises(InputsUnavailable, match="more than the DAG was said to hold"):
        await inputs.fetch("ab" * 32, spec, ["S"])
    arrived = sum(len(blocks[c]) for c in asked)
    assert arrived < size_bound(1000) + 16 * 262144 < size  # at most one stored batch past the bound
    # An honest spec for the same DAG fetches it all.
    honest = JobSpec(**{**spec.__dict__, "inputs": ((root, "data", size),)})
    top = await inputs.fetch("ac" * 32, honest, ["S"])
    assert (top / "data").stat().st_size == size


async def test_blocks_the_named_providers_lack_come_from_the_dhts_providers(store):
    from distributeai.node.transfer import fetch_dag
    from distributeai.p2p.bitswap_fetch import BlocksUnavailable

    root, size, blocks = file_blocks(5 * 262144)
    leaves = [c for c in blocks if c != root]
    holds = {"S": {root, *leaves[:2]}, "D": set(blocks)}  # the submitter lost part; D announced it
    asked: list[tuple[str, bytes]] = []

    async def bitswap(cids, providers, deliver):
        missing = []
        for cid in cids:
            peer = next((p for p in providers if cid in holds.get(p, ())), None)
            if peer is None:
                missing.append(cid)
                continue
            asked.append((peer, cid))
            await deliver(cid, blocks[cid])
        if missing:
            raise BlocksUnavailable(missing)

    async def nobody(cid):
        return []

    with pytest.raises(BlocksUnavailable):
        await fetch_dag(root, store, bitswap, ["S"], find_providers=nobody)

    looked_up = []

    async def dht(cid):
        looked_up.append(cid)
        return ["S", "D"]

    progress = await fetch_dag(root, store, bitswap, ["S"], find_providers=dht)
    assert looked_up == [root] and not await store.walk_missing(root)
    assert any(peer == "D" for peer, _ in asked) and progress.providers == {"S", "D"}
    assert len(asked) == len(blocks)  # each block asked once: the fetch resumed, not restarted


async def test_inputs_held_whole_are_announced(tmp_path, store):
    from distributeai.node.job_inputs import JobInputs

    announced: list[bytes] = []
    (tmp_path / "d.bin").write_bytes(b"data\n")

    async def no_fetch(root, providers, **_):
        raise AssertionError("nothing to fetch")

    inputs = JobInputs(store, no_fetch, lambda: [], tmp_path / "inputs", announced.append)
    spec = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
                   command=("true",))
    prepared = await inputs.prepare(spec, [(str(tmp_path / "d.bin"), "d.bin")])
    assert announced == [prepared.inputs[0][0]]  # the submitter, once imported
    await inputs.fetch("ad" * 32, prepared, ["S"])
    assert announced == [prepared.inputs[0][0]] * 2  # an executor, once it holds it whole


async def test_submission_pins_a_crash_left_are_swept_and_live_ones_kept(tmp_path, store):
    """What `Submitting.recover` does at start: a submission owner no unfinished job claims is
    unpinned (its blocks evictable), the others and every other kind of owner stay."""
    from distributeai.node.job_inputs import JobInputs

    for name in ("stale", "live", "run"):
        (tmp_path / name).write_bytes(name.encode() * 1000)
    await store.add_path(tmp_path / "stale", pin="submission:" + "01" * 16)
    await store.add_path(tmp_path / "live", pin="submission:" + "02" * 16)
    await store.add_path(tmp_path / "run", pin="inputs:" + "03" * 32)
    assert await store.owners("submission:") == ["submission:" + "01" * 16, "submission:" + "02" * 16]
    inputs = JobInputs(store, None, lambda: [], tmp_path / "inputs")
    assert await inputs.sweep_submissions({"submission:" + "02" * 16}) == ["submission:" + "01" * 16]
    assert await store.owners("submission:") == ["submission:" + "02" * 16]
    assert await store.owners("inputs:") == ["inputs:" + "03" * 32]
    assert store.stats()["pinned_bytes"] == 4000 + 3000
