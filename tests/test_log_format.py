"""Issue 15 item 6: quiet, accurate logs. A real bootstrap and two real nodes log as JSON
(`--log-format json` on the bootstrap and one node, `DISTRIBUTEAI_LOG_FORMAT=json` on the other),
run a job, and stop: every line each process wrote to stderr is one JSON object with time, level,
logger, message and fields; the job's life is at INFO, one line per event, and per-message
protocol noise (rejections) is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from .netfixtures import cli
from .test_identity_faults import POW, first_line, stop

LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def spawn(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "distributeai.cli.main", *args], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def records(log: Path) -> list[dict]:
    """Every line of `log` as a JSON log record; fails on any line that is not one."""
    out = []
    for n, line in enumerate(log.read_text().splitlines(), 1):
        record = json.loads(line)  # a traceback or a text line would fail here
        assert set(record) == {"time", "level", "logger", "message", "fields"}, (log, n, line)
        assert record["level"] in LEVELS and isinstance(record["fields"], dict), (log, n, line)
        assert datetime.fromisoformat(record["time"]).tzinfo is not None, (log, n, line)
        assert isinstance(record["message"], str) and record["logger"], (log, n, line)
        out.append(record)
    return out


def test_a_network_logs_one_json_object_a_line_and_a_job_at_info(tmp_path):
    boot_log, a_log, b_log = tmp_path / "boot.log", tmp_path / "a.log", tmp_path / "b.log"
    procs = []
    try:
        boot = spawn(["bootstrap", "start", "--data-dir", str(tmp_path / "boot"), "--listen", "/ip4/127.0.0.1/tcp/0",
                      "--http", "127.0.0.1:0", "--pow-difficulty", POW, "--log-format", "json"], boot_log)
        procs.append(boot)
        boot_addr = first_line(boot, boot_log)
        node = ["node", "start", "--sandbox", "process", "--pow-difficulty", POW, "--bootstrap", boot_addr]
        a = spawn([*node, "--data-dir", str(tmp_path / "a"), "--log-format", "json"], a_log)
        procs.append(a)
        b = spawn([*node, "--data-dir", str(tmp_path / "b")], b_log, env={"DISTRIBUTEAI_LOG_FORMAT": "json"})
        procs.append(b)
        first_line(a, a_log), first_line(b, b_log)
        out = cli("submit", "--data-dir", str(tmp_path / "a"), "--replicas", "2", "--quorum", "2", "--json",
                  "--image", "alpine:latest", "--cmd", "echo", "hello", timeout=300)
        assert json.loads(out.stdout)["status"] == "verified", (out.stdout, out.stderr)
    finally:
        for proc in reversed(procs):
            stop(proc)
    logs = {name: records(log) for name, log in (("boot", boot_log), ("a", a_log), ("b", b_log))}
    info = {name: [r["message"] for r in recs if r["level"] == "INFO"] for name, recs in logs.items()}
    job_id = json.loads(out.stdout)["job_id"][:12]
    submitter = [m for m in info["a"] if m.startswith(f"job {job_id} ")]
    for event in ("announced", "bid from", "bids_closed", "award", "commit", "reveal", "verified"):
        assert any(m.startswith(f"job {job_id} {event}") for m in submitter), (event, submitter)
    assert len(submitter) == len(set(submitter)), submitter  # one line per event, none repeated
    executor = [m for m in info["b"] if job_id in m]
    for event in ("bidding here", "running here", "executed here"):
        assert any(event in m for m in executor), (event, executor)
    fields = [r["fields"] for r in logs["a"] if r["message"].startswith(f"job {job_id} commit ")]
    assert fields and all(f["event"] == "commit" and f["job_id"].startswith(job_id) and f["peer"] for f in fields)
    for name, messages in info.items():
        assert not [m for m in messages if m.startswith("rejected")], (name, messages)


async def test_a_restarted_submitter_names_a_late_commit_job_finished_not_unknown_job(autojump_clock, tmp_path):
    """A commit for a job that ended before the submitter restarted (its own executor resending
    one the submitter never accepted, or a peer's) is refused as it was before the restart,
    `job_finished`; `unknown_job` was a false name for it."""
    import trio

    from distributeai.consensus.errors import RemoteProtocolError
    from distributeai.consensus.names import COMMIT_PROTOCOL
    from distributeai.node import wire

    from .test_inprocess import make_spec, network, until_done

    async with trio.open_nursery() as nursery:
        net, nodes = await network(nursery, tmp_path, 3)
        sub = nodes[0]
        job_id = await sub.submitting.submit(make_spec(sub))
        assert await until_done(sub, job_id) == "verified"
        executor, commit = next(iter(sub.submitting.jobs[job_id].commits.items()))
        sender = next(n for n in nodes if n.me == executor)
        sub.stop()
        await trio.sleep(0)
        await sub.start(nursery)
        assert job_id not in sub.submitting.jobs  # ended jobs are not rebuilt
        with pytest.raises(RemoteProtocolError) as refused:
            wire.parse_answer(await sub.serve(COMMIT_PROTOCOL, sender.peer_id, commit.raw))
        assert refused.value.detail == "job_finished" and sub.rejected["job_finished"] >= 1
        assert "unknown_job" not in sub.rejected
        nursery.cancel_scope.cancel()


def test_a_remembered_peer_that_is_gone_is_not_called_a_bootstrap(tmp_path):
    """A restarted node dials the peers it stored on its last run as it dials its bootstrap; one
    that is gone is no news (DEBUG), and its address is not warned about as "bootstrap"."""
    import sqlite3

    from .netfixtures import wait_for

    boot_log, a_log, b_log = tmp_path / "boot.log", tmp_path / "a.log", tmp_path / "b.log"
    procs: list[subprocess.Popen] = []
    try:
        boot = spawn(["bootstrap", "start", "--data-dir", str(tmp_path / "boot"), "--listen", "/ip4/127.0.0.1/tcp/0",
                      "--http", "127.0.0.1:0", "--pow-difficulty", POW], boot_log)
        procs.append(boot)
        boot_addr = first_line(boot, boot_log)
        node = ["node", "start", "--sandbox", "process", "--pow-difficulty", POW, "--bootstrap", boot_addr]
        a = spawn([*node, "--data-dir", str(tmp_path / "a")], a_log)
        b = spawn([*node, "--data-dir", str(tmp_path / "b")], b_log)
        procs += [a, b]
        first_line(a, a_log)
        b_id = json.loads(first_line(b, b_log))["peer_id"]

        def a_stored_b() -> bool:
            with sqlite3.connect(tmp_path / "a" / "node.db") as db:
                return b_id in {row[0] for row in db.execute("SELECT peer_id FROM peers")}

        wait_for(a_stored_b, 120, "node a to store node b as a peer")
        for proc in (a, b):
            stop(proc)
            procs.remove(proc)
        a_log.write_text("")
        a = spawn([*node, "--data-dir", str(tmp_path / "a"), "--log-level", "debug"], a_log)
        procs.append(a)
        first_line(a, a_log)
        wait_for(lambda: any("discovery:" in line and b_id in line for line in a_log.read_text().splitlines()),
                 120, "node a's failed dial of node b, at DEBUG")
    finally:
        for proc in reversed(procs):
            stop(proc)
    lines = a_log.read_text().splitlines()
    assert not [line for line in lines if "WARNING" in line and b_id in line], lines
    assert not [line for line in lines if "cannot reach bootstrap" in line], lines
