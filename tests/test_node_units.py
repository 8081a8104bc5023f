"""Node components on their own: bidding predicates (pure), the SQLite store (real SQLite), and how
a node stopping during a run cancels it in the sandbox."""

from __future__ import annotations

import threading
import time
from functools import partial

import pytest
import trio

from distributeai.consensus.messages import JobSpec
from distributeai.node.bidding import BidContext, Capacity, decide
from distributeai.node.executing import SandboxRun
from distributeai.node.ports import offload_to_thread
from distributeai.node.store import Store
from distributeai.sandbox.base import RunRequest, SandboxError

SPEC = JobSpec(submitter=b"\1" * 32, nonce=b"\0" * 16, created_ms=0, name="", image="alpine:latest",
               command=("true",), cpu_millis=1000, memory_mb=256)


def ctx(**kw) -> BidContext:
    fields = dict(spec=SPEC, capacity=Capacity(), running=0, sandbox_ok=True, image_ok=lambda _: True)
    fields.update(kw)
    return BidContext(**fields)


def test_bidding_predicates_each_refuse_with_a_reason():
    assert decide(ctx()).bid
    assert decide(ctx(submitter_can_pay=False)).reason == "the submitter cannot pay for this job"
    assert "sandbox" in decide(ctx(sandbox_ok=False)).reason
    assert "millicores" in decide(ctx(capacity=Capacity(cpu_millis=500))).reason
    assert "MiB" in decide(ctx(capacity=Capacity(memory_mb=128))).reason
    assert "busy" in decide(ctx(running=4)).reason
    assert "not available" in decide(ctx(image_ok=lambda _: False)).reason
    assert "GPU" in decide(ctx(gpu_ok=False)).reason


def test_auto_picks_docker_when_its_daemon_answers_else_bwrap(tmp_path):
    import logging

    from distributeai.node.daemon import NodeConfig, open_sandboxes

    config = NodeConfig(data_dir=tmp_path, sandbox="auto", docker_host=f"unix://{tmp_path}/no-docker.sock")
    sandboxes = open_sandboxes(config, logging.getLogger("test"))
    assert sandboxes["container"].name == "bwrap"
    assert sandboxes["wasm"].name == "wasm"
    for s in sandboxes.values():
        s.close()


async def test_store_keeps_jobs_inputs_ledger_and_peers_across_reopen(tmp_path):
    path = tmp_path / "node.db"
    store = await Store.open(path)
    assert await store.insert_job("ab", "submitter", "n", b"spec", "bidding", 1, announce=b"ann")
    assert not await store.insert_job("ab", "observer", "n", b"spec", "announced", 2)  # replay
    new = await store.record_input("ab", "commit", b"raw", {"reputation": 5}, 3, status="verified", reason="",
                                   certificate=b"cert", offences=[(b"\2" * 32, "never_committed")])
    assert new
    await store.upsert_peers([("peerA", ["/ip4/127.0.0.1/tcp/1/p2p/peerA"])], 4)
    await store.aclose()
    store = await Store.open(path)
    row = await store.get_job("ab")
    assert row["status"] == "verified" and row["certificate"] == b"cert" and row["announce"] == b"ann"
    assert await store.inputs("ab") == [("commit", b"raw", {"reputation": 5}, 3)]
    events = await store.ledger_events()
    assert [(e["kind"], e["reason"]) for e in events] == [("offence", "never_committed"), ("certificate", "")]
    # the same certificate again is not a new ledger event
    assert not await store.record_certificate("ab", b"cert", "verified", "", 5, role_if_new="observer",
                                              name="n", signed_spec=b"spec")
    assert await store.known_peers() == [("peerA", ["/ip4/127.0.0.1/tcp/1/p2p/peerA"])]
    await store.aclose()


async def test_control_find_peers_answers_each_id_and_refuses_bad_requests():
    """The `find_peers` op over a stand-in overlay: every id answered once, found or not, with
    the overlay's `how`; malformed requests refused before any lookup starts."""
    import pytest

    from distributeai.node import control

    asked: list[tuple[str, bool]] = []

    class Overlay:
        def check_peer_id(self, peer_id: str) -> str:
            if not peer_id.startswith("12D3"):
                raise ValueError(f"not a peer id: {peer_id!r}")
            return peer_id

        async def find_peer(self, peer_id: str, *, lookup: bool = False):
            asked.append((peer_id, lookup))
            if peer_id.endswith("gone"):
                return None
            return [f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id}"], "lookup" if lookup else "known"

    class Agent:
        overlay = Overlay()

    answer = await control._dispatch(Agent(), {"op": "find_peers", "peer_ids": ["12D3a", "12D3gone", "12D3a"]})
    assert answer == {"found": {"12D3a": {"addrs": ["/ip4/127.0.0.1/tcp/1/p2p/12D3a"], "how": "known"}},
                      "not_found": ["12D3gone"]}
    assert sorted(asked) == [("12D3a", False), ("12D3gone", False)]
    asked.clear()
    answer = await control._dispatch(Agent(), {"op": "find_peers", "peer_ids": ["12D3b"], "lookup": True})
    assert answer["found"]["12D3b"]["how"] == "lookup" and asked == [("12D3b", True)]
    asked.clear()
    for bad in ({"peer_ids": "12D3a"}, {"peer_ids": [1]}, {"peer_ids": ["12D3"] * (control.FIND_PEERS_MAX + 1)},
                {"peer_ids": ["12D3a", "junk"]}):
        with pytest.raises(ValueError):
            await control._dispatch(Agent(), {"op": "find_peers", **bad})
    assert asked == []


class BlockingBox:
    """A sandbox whose runs block until cancelled (pure logic: what SandboxRun asks of a sandbox)."""

    def __init__(self) -> None:
        self.started, self.cancelled, self.runs = threading.Event(), [], []

    def run(self, request):
        self.runs.append(request.run_id)
        self.started.set()
        if not self._wait_for_cancel(request.run_id):
            raise AssertionError("never cancelled")
        raise SandboxError("cancelled", "stopped")

    def _wait_for_cancel(self, run_id: str) -> bool:
        deadline = time.monotonic() + 60
        while run_id not in self.cancelled:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)


async def test_a_cancelled_node_task_cancels_its_sandbox_run_and_the_rest_never_start():
    box = BlockingBox()
    request = RunRequest(image="alpine:latest", command=["true"])
    run = SandboxRun(box, [request, request])
    assert len({r.run_id for r in run.requests}) == 2  # each run its own id
    with trio.move_on_after(60) as timer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(offload_to_thread, run.run_all, on_cancel=run.cancel))
            await trio.to_thread.run_sync(box.started.wait, 60)
            nursery.cancel_scope.cancel()
    assert not timer.cancelled_caught
    assert box.cancelled == [run.requests[0].run_id]  # the running one, at once
    with pytest.raises(SandboxError) as err:
        run.run_all()  # once cancelled, nothing more starts
    assert err.value.reason == "cancelled" and box.runs == [run.requests[0].run_id]


# --- verification in the job view, and the platform a bid advertises (issue 18) -------------------

def adaptive_certificate(floor_ppm: int, executors: int) -> tuple[bytes, bytes]:
    """A signed spec and a certificate of an adaptive job whose trusted executor (the first) is
    drawn for no check (floor 0, a huge CV: one run) or for a check (floor 1: two runs agree)."""
    from distributeai.consensus.adaptive import Evidence, sign_draw
    from distributeai.consensus.messages import Award, Certificate, Commit, job_id_of, sign, verify
    from tests.protocol_fixtures import EXECUTORS, NOW, SUBMITTER, make_spec, run_executor

    raw = sign(SUBMITTER, make_spec(verification="adaptive", trust_threshold=3, spot_check_floor_ppm=floor_ppm))
    job = job_id_of(raw)
    who = EXECUTORS[:executors]
    awards = tuple(sign(SUBMITTER, Award(job, x.public_key, i, NOW + 90_000)) for i, x in enumerate(who))
    runs = [run_executor(x, job, b"42\n") for x in who]
    commit = runs[0][0]
    draw = sign_draw(SUBMITTER, job, verify(commit, Commit).msg.seal)
    from distributeai.consensus.messages import Reveal
    result = verify(runs[0][1], Reveal).msg.result_hash
    cert = sign(SUBMITTER, Certificate(job, "verified", result, raw, awards, tuple(r for _, r in runs), NOW + 5000,
                                       evidence=Evidence(2**32 if executors == 1 else 3, draw, commit)))
    return raw, cert


def view_of(raw: bytes, cert: bytes | None, **kw) -> dict:
    from distributeai.node.views import job_view
    from distributeai.p2p.identity import peer_id_from_public_key
    row = {"job_id": "ab" * 32, "name": "demo", "role": "submitter", "status": "verified" if cert else "bidding",
           "reason": "", "signed_spec": raw, "created_ms": 0, "updated_ms": 5000, "certificate": cert}
    return job_view(row, None, None, peer_id_from_public_key, **kw)


def test_a_single_run_says_so_in_the_view_the_cli_and_the_page(capsys):
    from distributeai.bootstrap.jobview import certificate_view
    from distributeai.cli.jobview import print_job
    from distributeai.consensus.certificate import verify_certificate

    raw, cert = adaptive_certificate(0, 1)
    view = view_of(raw, cert)
    assert (view["verification"], view["executors_run"], view["rejected"]) == ("single", 1, None)
    assert view["verification_note"] == "verified, single run (trusted executor, not spot-checked)"
    assert view["stdout"] == "42\n" and view["verification_policy"] == "adaptive" and view["trust_threshold"] == 3
    print_job(view, as_json=False)
    assert "verdict  verified, single run (trusted executor, not spot-checked)" in capsys.readouterr().out
    from distributeai.cli.progress import verdict_cell
    from distributeai.cli.status import agreeing_cell
    assert verdict_cell(view, "verified", 1, 2) == "verdict verified, single run (trusted executor, not spot-checked)"
    assert agreeing_cell(view) == "single run (not checked)"
    summary, _ = certificate_view(verify_certificate(cert))
    assert (summary["verification"], summary["executors_run"]) == ("single", 1)
    assert "single run" in summary["verification_note"]
    # The node's ledger refusing the claim (Ledger.untrusted) shows as rejected, with its reason.
    rejected = view_of(raw, cert, untrusted=lambda checked: "untrusted_executor")
    assert rejected["rejected"] == "untrusted_executor"
    assert rejected["verification_note"] == "rejected: untrusted_executor"


def test_a_spot_check_and_a_job_without_certificate_in_the_view():
    raw, cert = adaptive_certificate(1_000_000, 2)
    view = view_of(raw, cert, untrusted=lambda checked: None)
    assert (view["verification"], view["executors_run"]) == ("spot_checked", 2)
    assert view["verification_note"] == "verified, spot-checked by a second executor"
    pending = view_of(raw, None)
    assert pending["verification"] is None and pending["executors_run"] is None and pending["verification_note"] == ""
    assert pending["spot_check_floor"] == 1.0 and pending["compare"] == {"kind": "exact"}


def test_the_platform_a_node_advertises(tmp_path):
    from distributeai.consensus.adaptive import check_platform
    from distributeai.node.hostplatform import PLATFORM_ENV, cpu_vendor, detect_platform

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: x\n")
    assert cpu_vendor(cpuinfo) == "AuthenticAMD"
    assert cpu_vendor(tmp_path / "absent") == ""
    assert detect_platform({PLATFORM_ENV: "aarch64,,NVIDIA A100\x07"}) == ("aarch64", "", "NVIDIA A100")
    assert detect_platform({PLATFORM_ENV: "riscv64"}) == ("riscv64", "", "")
    found = detect_platform({})
    assert check_platform(list(found)) == found and found[0]  # a bid every peer accepts; the arch is known
