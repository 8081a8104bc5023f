"""Batch jobs (job arrays): one announcement, many tasks, each task verified k-of-n on its own.

The pure part drives `SubmitterJob` and `verify_certificate` with no network; the end-to-end
test submits a batch through the CLI to three node processes and reads every task's result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from distributeai.tools.devnet import Devnet
from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import JobFileError, RemoteProtocolError
from distributeai.consensus.jobfile import parse_job
from distributeai.consensus.ledger import Ledger, max_cost
from distributeai.consensus.messages import (
    BATCH_MAX_TOTAL_RESULTS, CERTIFICATE_CAP, MAX_SIZE, MAX_TASKS, Bid, Commit, JobSpec, Reveal, sign,
    task_stdout_cap, verify,
)
from distributeai.consensus.results import batch_hash, result_hash, seal
from distributeai.consensus.submitter import Penalize, SubmitterJob
from distributeai.consensus.verdict import job_tally, task_tallies

from .netfixtures import cli, submit_json

NOW = 1_700_000_000_000
SUBMITTER = Identity.from_seed(b"\x01" * 32)
EXECUTORS = [Identity.from_seed(bytes([i]) * 32) for i in (2, 3, 4)]


def batch_spec(n_tasks: int = 5, **kw) -> JobSpec:
    fields = dict(submitter=SUBMITTER.public_key, nonce=b"\x07" * 16, created_ms=NOW, name="batch",
                  image="alpine:latest", command=("sh", "-c", 'echo "$1" | sha256sum', "task"),
                  tasks=tuple((f"input {i}",) for i in range(n_tasks)), max_total_results=4)
    fields.update(kw)
    return JobSpec(**fields)


def honest_output(spec: JobSpec, i: int) -> bytes:
    return hashlib.sha256(spec.tasks[i][0].encode() + b"\n").hexdigest().encode() + b"  -\n"


def batch_reveal(ex: Identity, job_id: bytes, outputs: list[bytes]) -> tuple[bytes, bytes]:
    tasks = tuple((0, False, out, False, -1) for out in outputs)
    rh = batch_hash([result_hash(0, False, out, False) for out in outputs])
    reveal = sign(ex, Reveal(job_id, ex.public_key, rh, 0, b"", False, False, (), -1, False, "process", tasks))
    commit = sign(ex, Commit(job_id, ex.public_key, seal(ex.public_key, job_id, rh)))
    return commit, reveal


def run_batch(spec: JobSpec, outputs_by_executor: list[list[bytes]]) -> tuple[SubmitterJob, list]:
    job = SubmitterJob(SUBMITTER, sign(SUBMITTER, spec), spec, started_ms=NOW)
    for ex in EXECUTORS[: len(outputs_by_executor)]:
        job.receive_bid(verify(sign(ex, Bid(job.job_id, ex.public_key, 1, 1000, 256, ("process",), NOW)), Bid), NOW)
    job.tick(NOW + job.timing.bid_window_ms)
    reveals = {}
    for ex, outs in zip(EXECUTORS, outputs_by_executor):
        commit, reveals[ex.public_key] = batch_reveal(ex, job.job_id, outs)
        job.receive_commit(verify(commit, Commit), NOW + 1)
    actions = []
    for e, r in reveals.items():
        if not job.done:
            actions += job.receive_reveal(verify(r, Reveal), NOW + 2)
    return job, actions


def test_each_task_is_verified_on_its_own_even_when_no_two_executors_agree_on_every_task():
    spec = batch_spec(5)
    honest = [honest_output(spec, i) for i in range(5)]
    a = list(honest)
    a[1] = b"lie\n"
    b = list(honest)
    b[3] = b"another lie\n"
    job, _ = run_batch(spec, [a, b, list(honest)])
    # No two executors agree on the whole batch, yet every task has two agreeing results.
    assert job.state == "verified"
    checked = verify_certificate(job.certificate)
    tallies = task_tallies(spec, checked.reveals)
    assert [t.outcome for t in tallies] == ["verified"] * 5
    assert [t.result_hash for t in tallies] == [result_hash(0, False, o, False) for o in honest]
    honest_id = EXECUTORS[2].public_key
    assert checked.tally.agreeing == (honest_id,)
    assert set(checked.tally.dissenting) == {EXECUTORS[0].public_key, EXECUTORS[1].public_key}
    ledger = Ledger()
    ledger.apply_certificate(checked, NOW)
    assert ledger.reputation_of(honest_id) == 5 and ledger.reputation_of(EXECUTORS[0].public_key) == -10
    # price is per task: the one executor right on every task is paid for all five
    assert ledger.balance(honest_id) == ledger.genesis + 5 * spec.price
    assert max_cost(spec) == spec.replicas * 5 * spec.price


def test_a_task_without_two_agreeing_results_is_not_verified_and_the_others_are():
    spec = batch_spec(3, replicas=3, max_total_results=3)
    honest = [honest_output(spec, i) for i in range(3)]
    outs = [list(honest), list(honest), list(honest)]
    outs[0][2], outs[1][2], outs[2][2] = b"x", b"y", b"z"  # task 2 gives a different answer everywhere
    job, _ = run_batch(spec, outs)
    assert job.state == "nondeterministic"
    checked = verify_certificate(job.certificate)
    assert [t.outcome for t in task_tallies(spec, checked.reveals)] == ["verified", "verified", "no_quorum"]
    assert job_tally(spec, checked.reveals).outcome == "no_quorum"


def test_a_reveal_with_the_wrong_number_of_tasks_is_an_offence_and_a_forged_certificate_is_refused():
    spec = batch_spec(4)
    honest = [honest_output(spec, i) for i in range(4)]
    job, actions = run_batch(spec, [honest[:3], list(honest), list(honest)])
    assert Penalize(EXECUTORS[0].public_key, "bad_result_hash") in actions
    assert job.state == "verified"
    checked = verify_certificate(job.certificate)
    assert EXECUTORS[0].public_key not in checked.reveals
    # A certificate whose reveal lost a task (re-signed by the executor itself) does not check out.
    cert = checked.certificate
    short = dataclasses.replace(verify(cert.reveals[0], Reveal).msg)
    short = dataclasses.replace(short, tasks=short.tasks[:3])
    short = dataclasses.replace(short, result_hash=short.expected_hash())
    signer = next(e for e in EXECUTORS if e.public_key == short.executor)
    forged = dataclasses.replace(cert, reveals=(sign(signer, short), *cert.reveals[1:]))
    with pytest.raises(RemoteProtocolError):
        verify_certificate(sign(SUBMITTER, forged))


def test_the_largest_batch_fits_its_reveal_and_certificate_caps():
    spec = batch_spec(MAX_TASKS)
    assert len(sign(SUBMITTER, spec)) <= MAX_SIZE["spec"]
    cap = task_stdout_cap(MAX_TASKS)
    outs = [b"o" * cap for _ in range(MAX_TASKS)]
    job, _ = run_batch(spec, [outs, outs, outs])
    assert job.state == "verified"
    for raw in verify_certificate(job.certificate).certificate.reveals:
        assert len(raw) <= MAX_SIZE["reveal"]
    # the worst case: BATCH_MAX_TOTAL_RESULTS reveals of the largest size
    assert len(job.certificate) + (BATCH_MAX_TOTAL_RESULTS - 2) * MAX_SIZE["reveal"] <= CERTIFICATE_CAP


def test_job_files_take_tasks_and_bound_them():
    fields = parse_job({"image": "alpine", "command": ["echo"], "tasks": [["a"], ["b", "c"]]})
    assert fields["tasks"] == (("a",), ("b", "c")) and fields["max_total_results"] == BATCH_MAX_TOTAL_RESULTS
    for bad in ("x", [["a"], "b"], [[1]], [["a"]] * (MAX_TASKS + 1)):
        with pytest.raises(JobFileError, match="tasks"):
            parse_job({"image": "alpine", "command": ["echo"], "tasks": bad})
    with pytest.raises(JobFileError, match="max_total_results"):
        parse_job({"image": "alpine", "command": ["echo"], "tasks": [["a"]], "max_total_results": 6})


def test_batch_through_the_cli_on_three_nodes(tmp_path):
    tasks = [f"item {i}" for i in range(20)]
    tasks_file = tmp_path / "tasks.txt"
    tasks_file.write_text("# one task per line\n" + "".join(f"'{t}'\n" for t in tasks))
    with Devnet(tmp_path / "net", nodes=3, sandbox="process") as net:
        net.start()
        net.wait_connected()
        outcome, elapsed = submit_json(net.node_dirs[0], "--tasks", str(tasks_file), "--image", "alpine:latest",
                                       "--cmd", "sh", "-c", 'echo "$1" | sha256sum', "task")
        print(f"\nbatch of {len(tasks)} tasks verified in {elapsed:.3f} s")
        assert outcome["status"] == "verified", outcome
        assert outcome["tasks"] == 20 and outcome["tasks_verified"] == 20
        d = str(net.node_dirs[0])
        listed = cli("job", "result", outcome["job_id"], "--data-dir", d, "--json")
        assert listed.returncode == 0, listed.stderr
        results = json.loads(listed.stdout)["tasks"]
        assert [r["task"] for r in results] == list(range(20))
        for r, t in zip(results, tasks):
            assert r["args"] == [t] and r["status"] == "verified" and r["agreeing"] >= 2
            assert r["stdout"] == hashlib.sha256(t.encode() + b"\n").hexdigest() + "  -\n"
        one = cli("job", "result", outcome["job_id"], "--task", "7", "--data-dir", d)
        assert one.returncode == 0 and one.stdout == results[7]["stdout"]
        beyond = cli("job", "result", outcome["job_id"], "--task", "20", "--data-dir", d)
        assert beyond.returncode == 2 and "0 to 19" in beyond.stderr
