"""WASM jobs on a real 3-node network: identical results and fuel from 3 executors, a module too
large for the spec named there by its CID and fetched as blocks, fuel exhaustion and the memory
limit as results, and pricing per fuel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributeai.tools.devnet import Devnet
from distributeai.consensus.cid import cid_text
from distributeai.consensus.messages import WASM_INLINE_CAP
from distributeai.consensus.unixfs import CHUNK_SIZE, file_cid

from .netfixtures import DEMO_STDOUT, cli

pytestmark = pytest.mark.slow
WORKLOADS = Path(__file__).resolve().parent.parent / "sandbox" / "workloads"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Devnet(tmp_path_factory.mktemp("wasm") / "net", nodes=3, sandbox="process") as n:
        n.start()
        n.wait_connected()
        yield n


def submit(net: Devnet, *args: str, node: int = 0) -> dict:
    out = cli("submit", "--data-dir", str(net.node_dirs[node]), "--json", *args)
    assert out.stdout, out.stderr
    return json.loads(out.stdout)


def with_custom_section(module: bytes, size: int) -> bytes:
    """The same program with a custom section appended (ignored by the runtime): a larger module."""
    name = b"padding"
    payload = bytes([len(name)]) + name + b"\0" * size
    length, n = b"", len(payload)
    while True:
        byte, n = n & 0x7F, n >> 7
        length += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return module + b"\x00" + length + payload


def test_hashverify_gives_identical_results_and_fuel_on_3_executors(net):
    view = submit(net, "--wasm", str(WORKLOADS / "hashverify.wasm"), "--stdin", "Hello\n",
                  "--replicas", "3", "--quorum", "3", "--cmd", "hashverify")
    print(f"\nwasm hashverify 3-of-3: {view['status']} after {view['elapsed_s']:.2f} s, fuel {view['fuel_used']}")
    assert view["status"] == "verified", view
    assert view["stdout"] == DEMO_STDOUT
    assert view["sandbox"] == "wasm" and view["fuel_used"] > 0
    assert sum(e["agreed"] for e in view["executors"]) == 3
    assert {e["sandbox"] for e in view["executors"]} == {"wasm"}


def test_a_module_too_large_for_the_spec_travels_by_its_cid_as_blocks(net, tmp_path):
    """Over the inline limit and over one chunk (leaves under a dag-pb root): the spec names the
    module by its file CID, and all three nodes run it, so the two that did not submit it fetched
    its blocks from the block store of the node that did (there is no other way to it)."""
    module = with_custom_section((WORKLOADS / "hashverify.wasm").read_bytes(), 3 * CHUNK_SIZE // 2)
    assert len(module) > max(WASM_INLINE_CAP, CHUNK_SIZE)
    big = tmp_path / "big.wasm"
    big.write_bytes(module)
    view = submit(net, "--wasm", str(big), "--stdin", "Hello\n", "--cmd", "hashverify", "--replicas", "3",
                  "--quorum", "3")
    assert view["status"] == "verified", view
    assert view["stdout"] == DEMO_STDOUT
    assert view["wasm_cid"] == cid_text(file_cid(module))
    assert {e["peer_id"] for e in view["executors"] if e["agreed"]} == {info["peer_id"] for info in net.node_info}


def test_fuel_exhaustion_is_a_result(net):
    view = submit(net, "--wasm", str(WORKLOADS / "spin.wasm"), "--fuel", "1000000", "--timeout", "10",
                  "--replicas", "2", "--quorum", "2", "--cmd", "spin")
    assert view["status"] == "verified", view
    assert view["timed_out"] is True and view["exit_code"] == 137
    # The whole budget, the same on both executors: fuel stopped it, not the 10 s wall clock (whose
    # cut would differ between executors and agree with nothing). Not timed here: the job's total
    # time includes bidding and gossip on a possibly loaded machine.
    assert view["fuel_used"] == 1_000_000


def test_memory_limit_holds(net):
    view = submit(net, "--wasm", str(WORKLOADS / "grow.wasm"), "--memory", "16", "--replicas", "2",
                  "--quorum", "2", "--cmd", "grow")
    assert view["status"] == "verified", view
    grew = int(view["stdout"].split()[1])
    assert 0 < grew <= 16


def test_a_wasm_job_is_priced_per_fuel(net):
    view = submit(net, "--wasm", str(WORKLOADS / "hashverify.wasm"), "--stdin", "Hello\n", "--price", "1",
                  "--price-per-mfuel", "500", "--fuel", "50000", "--replicas", "3", "--quorum", "3",
                  "--cmd", "hashverify", node=0)
    assert view["status"] == "verified", view
    expected = 1 + -(-view["fuel_used"] * 500 // 1_000_000)  # the price, plus 500 per million fuel, rounded up
    from .netfixtures import wait_for

    # This job's own transfer: the balance may still be moving with earlier jobs' certificates.
    def payment() -> list:
        return [t for t in net.call(1, {"op": "credits"})["transfers"] if t["job_id"] == view["job_id"]]

    [paid] = wait_for(payment, 60, "the payment")
    assert paid["amount"] == expected and paid["to"] == net.node_info[1]["peer_id"], paid
