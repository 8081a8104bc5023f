"""The node's one list of transfers in progress (node/transfer.py `Transfers`) and the CLI's bar
(cli/transfer_bar.py): an import reports its bytes as it goes, and every fetch and import a user
waits on is listed while it runs: `blob add|get`, `submit --input` (JobInputs.prepare), `job
result --out` (OutputsServing.fetch_outputs). Real block stores; a fetch is held open with an
event, so what is listed during it is asserted deterministically."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import trio
import trio.testing

from distributeai.cli.transfer_bar import bar_line, bar_lines
from distributeai.consensus.cid import cid_text
from distributeai.node.blockstore import BlockStore
from distributeai.node.transfer import Progress, Transfers, fetch_dag


@pytest.fixture
async def stores(tmp_path):
    source = await BlockStore.open(tmp_path / "source", 64 << 20)
    dest = await BlockStore.open(tmp_path / "dest", 64 << 20)
    yield source, dest
    await source.close()
    await dest.close()


class HeldFetch:
    """Bitswap's fetch shape over a source store, held until `release` is set: `started` is set
    when the first fetch call arrives."""

    def __init__(self, source: BlockStore) -> None:
        self.source = source
        self.started = trio.Event()
        self.release = trio.Event()

    async def __call__(self, cids, providers, deliver) -> None:
        self.started.set()
        await self.release.wait()
        for cid in cids:
            await deliver(cid, await self.source.get(cid))


def test_a_transfer_is_listed_while_its_block_runs_with_its_rate():
    now = [100.0]
    transfers = Transfers(clock=lambda: now[0])
    with transfers.track("import", "data.bin") as progress:
        progress.bytes, progress.total, progress.blocks = 3 << 20, 8 << 20, 12
        now[0] += 2.0
        (row,) = transfers.rows()
        assert row == {"id": 1, "kind": "import", "name": "data.bin", "cid": None, "bytes": 3 << 20,
                       "total": 8 << 20, "blocks": 12, "held": 0, "seconds": 2.0, "rate": (3 << 20) // 2,
                       "providers": 0}
    assert transfers.rows() == []
    with pytest.raises(RuntimeError):
        with transfers.track("fetch", "bafyx"):
            raise RuntimeError("a failed transfer leaves the list too")
    assert transfers.rows() == []


async def test_an_import_counts_its_file_bytes_as_it_stores_them(tmp_path, stores):
    source, _ = stores
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.bin").write_bytes(os.urandom(5 << 20))
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"hello\n")
    progress = Progress()
    cid, size = await source.add_path(tmp_path / "d", progress=progress)
    assert size == (5 << 20) + 6
    assert progress.total == size and progress.bytes == size and progress.blocks >= 22

    async def chunks():
        yield b"x" * 1000
        yield b"y" * 24

    streamed = Progress()
    await source.add_stream(chunks(), "up.bin", progress=streamed)
    assert streamed.bytes == 1024 and streamed.total is None


async def test_a_fetch_is_listed_with_its_providers_while_it_runs(tmp_path, stores):
    source, dest = stores
    (tmp_path / "f.bin").write_bytes(os.urandom(2 << 20))
    root, size = await source.add_path(tmp_path / "f.bin")
    fetch = HeldFetch(source)
    transfers = Transfers()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: fetch_dag(root, dest, fetch, ["peerA", "peerB"], transfers=transfers))
        await fetch.started.wait()
        (row,) = transfers.rows()
        assert (row["kind"], row["cid"], row["name"], row["providers"]) == ("fetch", cid_text(root), cid_text(root), 2)
        fetch.release.set()
    assert transfers.rows() == []
    assert not await dest.walk_missing(root)


async def test_submit_lists_the_import_of_its_input(tmp_path, stores):
    from distributeai.node.job_inputs import JobInputs
    from .test_inputs_node import spec_with

    _, dest = stores
    (tmp_path / "big.bin").write_bytes(os.urandom(12 << 20))
    transfers = Transfers()
    inputs = JobInputs(dest, None, lambda: [], None, transfers=transfers)
    spec = spec_with(0)
    spec = replace(spec, inputs=())
    seen: list[dict] = []
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def submit() -> None:
            await inputs.prepare(spec, [(str(tmp_path / "big.bin"), "data")])
            done.set()

        nursery.start_soon(submit)
        # The import waits on worker threads (the scan, the reads): the first moment every task
        # waits, it has entered the list; it stays there until its last block is stored.
        while not done.is_set() and not seen:
            await trio.testing.wait_all_tasks_blocked()
            seen = transfers.rows()
    assert [(r["kind"], r["name"]) for r in seen] == [("import", "data")]
    assert seen[0]["total"] in (None, 12 << 20)  # None while the scan runs
    assert transfers.rows() == []


async def test_job_result_lists_the_fetch_of_each_output_file(tmp_path, stores):
    from distributeai.node.outputs_serving import OutputsServing

    source, dest = stores
    (tmp_path / "o.bin").write_bytes(os.urandom(1 << 20))
    root, size = await source.add_path(tmp_path / "o.bin")
    fetch = HeldFetch(source)
    transfers = Transfers()
    view = {"status": "verified", "files": [{"path": "o.bin", "size": size, "cid": cid_text(root)}],
            "executors": [{"peer_id": "ex1", "agreed": True}, {"peer_id": "ex2", "agreed": True},
                          {"peer_id": "ex3", "agreed": False}]}

    async def job_status(_):
        return view

    async def node_fetch_dag(root, providers, *, pin=None, progress=None):  # as Agent.fetch_dag
        return await fetch_dag(root, dest, fetch, providers, pin=pin, progress=progress, transfers=transfers)

    outputs = OutputsServing(None, None, dest, node_fetch_dag, job_status)
    result: list = []
    async with trio.open_nursery() as nursery:
        async def fetch_outputs() -> None:
            result.append(await outputs.fetch_outputs("ab" * 32, tmp_path / "out"))

        nursery.start_soon(fetch_outputs)
        await fetch.started.wait()
        (row,) = transfers.rows()
        assert (row["kind"], row["cid"], row["providers"]) == ("fetch", cid_text(root), 2)
        fetch.release.set()
    written, failed = result[0]
    assert failed == [] and (tmp_path / "out" / "o.bin").read_bytes() == (tmp_path / "o.bin").read_bytes()
    assert transfers.rows() == []


def test_the_bar_says_bytes_of_total_rate_and_providers():
    imp = {"id": 1, "kind": "import", "name": "data.bin", "cid": None, "bytes": 16 << 20, "total": 64 << 20,
           "rate": 32 << 20, "providers": 0}
    assert bar_line(imp) == "import data.bin  [#####...............] 16 MiB of 64 MiB  32 MiB/s"
    got = {"id": 2, "kind": "fetch", "name": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
           "cid": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "bytes": 1536, "total": None,
           "rate": 3 << 20, "providers": 1}
    assert bar_line(got) == "fetch bafkreihdw…tenxquvyku  1.5 KiB  3 MiB/s  from 1 provider"
    assert bar_line({**imp, "name": "evil\x1b[2Jname"}).startswith("import evil\\x1b[2Jname")
    assert bar_lines([imp] * 6)[-1] == "and 2 more" and len(bar_lines([imp] * 6)) == 5


def test_the_bar_is_drawn_on_a_terminal_and_erased_when_the_request_ends(tmp_path, monkeypatch):
    """`_show_bar` on a pty: it draws at once (here "starting...": no node answers `transfers`),
    the request's end (a thread held by an event, released once the drawing was read) ends it,
    and the bar erases itself (transient), leaving the terminal to the command's own output."""
    import pty
    import select
    import sys
    import threading
    import time

    from distributeai.cli import transfer_bar

    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w", buffering=1)
    monkeypatch.setattr(sys, "stderr", terminal)
    release = threading.Event()
    drawn = bytearray()

    def read() -> None:
        deadline = time.monotonic() + 30  # a bar never drawn fails the test, never hangs it
        while b"starting..." not in drawn and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                drawn.extend(os.read(master, 4096))
        release.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    request = threading.Thread(target=release.wait, daemon=True)
    request.start()
    transfer_bar._show_bar(tmp_path, request, 0)
    reader.join(30)
    sys.stderr.flush()
    # A pty hands what was written to its reader asynchronously: read until the erasing arrives.
    deadline = time.monotonic() + 30
    while not drawn.endswith(b"\x1b[2K") and time.monotonic() < deadline:
        if select.select([master], [], [], 1)[0]:
            drawn.extend(os.read(master, 4096))
    monkeypatch.undo()
    terminal.close()
    os.close(master)
    assert b"starting..." in drawn
    assert drawn.endswith(b"\x1b[2K")  # transient: the bar's line erased, the cursor back at its start


def test_without_a_node_the_request_fails_with_the_one_line_error(tmp_path, capsys):
    import typer

    from distributeai.cli.transfer_bar import run_with_bar, transfers

    assert transfers(tmp_path) == []
    with pytest.raises(typer.Exit):
        run_with_bar(tmp_path, {"op": "info"}, as_json=False)
    assert "cannot reach the node" in capsys.readouterr().err


def test_a_rest_get_keeps_its_connection_while_its_fetch_moves_and_not_after():
    """node/api.py `_fetching` on trio's autojump clock: while the transfer named by the CID
    brings bytes, `keep_alive` is called each KEEP_ALIVE_S; once it stalls, no more."""
    from types import SimpleNamespace

    from distributeai.node.api import KEEP_ALIVE_S, RestApi

    async def main() -> None:
        transfers = Transfers()
        api = RestApi.__new__(RestApi)
        api.agent = SimpleNamespace(transfers=transfers)
        kept: list[float] = []
        progress = Progress()

        async def work() -> str:
            with transfers.track("fetch", "bafyX", progress):
                for _ in range(20):  # moves for 10 * KEEP_ALIVE_S, twice in each
                    await trio.sleep(KEEP_ALIVE_S / 2)
                    progress.bytes += 1 << 20
                await trio.sleep(10 * KEEP_ALIVE_S)  # then stalls as long
            return "done"

        start = trio.current_time()
        assert await api._fetching("bafyX", lambda: kept.append(trio.current_time() - start), work()) == "done"
        assert 8 <= len(kept) <= 11 and max(kept) <= 11 * KEEP_ALIVE_S + 1e-6
        assert trio.current_time() - start >= 20 * KEEP_ALIVE_S

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
