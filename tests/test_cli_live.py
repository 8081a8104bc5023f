"""The CLI while a job runs, against a real 3-node network (process sandbox): Ctrl-C during
`submit` leaves the job running and says how to follow or cancel it (exit 130); `job status
--watch` follows it; elapsed time ticks on a terminal (tmux) and in the pure progress display;
job ids by unique prefix (the node resolves them; real SQLite for the ambiguous case); the `--`
rule of submit's command line end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import trio
from rich.console import Console

from distributeai.cli.progress import Ticking, elapsed_s
from distributeai.node.control import resolve_job
from distributeai.node.store import Store
from distributeai.tools.devnet import Devnet

from .netfixtures import cli, wait_for
from .test_status_view import Tmux, tmux_or_skip

CLI = [sys.executable, "-m", "distributeai.cli.main"]


# --- pure: the clock the progress display reads --------------------------------------------------------

def drawn(renderable) -> str:
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(renderable)
    return console.export_text()


def test_elapsed_ticks_until_the_verdict_then_stays():
    running = {"status": "running", "created_ms": 10_000, "updated_ms": 10_400, "elapsed_s": 0.4}
    assert elapsed_s(running, 12_500) == 2.5 and elapsed_s(running, 17_000) == 7.0
    done = {**running, "status": "verified", "updated_ms": 13_000, "elapsed_s": 3.0}
    assert elapsed_s(done, 60_000) == 3.0


def test_the_progress_display_reads_the_clock_at_each_draw():
    now = [1_000]
    shown = Ticking({"job_id": "ab" * 32, "status": "announced"}, 2, 3, now_ms=lambda: now[0])
    now[0] = 2_500  # no answer from the node yet: the time since the display began
    assert "elapsed 1.5 s" in drawn(shown)
    shown.update({"job_id": "ab" * 32, "status": "running", "created_ms": 900, "elapsed_s": 0.2})
    now[0] = 5_900
    assert "elapsed 5.0 s" in drawn(shown)
    now[0] = 7_900  # the node did not answer again: the clock moves on all the same
    assert "elapsed 7.0 s" in drawn(shown)
    shown.update({"job_id": "ab" * 32, "status": "verified", "created_ms": 900, "elapsed_s": 6.5})
    now[0] = 60_000
    assert "elapsed 6.5 s" in drawn(shown)


# --- job id prefixes in the store, and the answer the control API makes of them ------------------------

def test_the_node_resolves_a_unique_prefix_and_names_the_candidates_of_an_ambiguous_one(tmp_path):
    ids = ["3f2a9c01" + "0" * 56, "3f2a9c01" + "f" * 56, "3f2a9c02" + "0" * 56, "40" + "0" * 62]

    async def main() -> None:
        store = Store.open_inline(tmp_path / "node.db")
        for i, job in enumerate(ids):
            await store.insert_job(job, "observer", "", b"spec", "announced", i)
        agent = SimpleNamespace(store=store)
        assert await resolve_job(agent, "3f2a9c02") == (ids[2], None)
        assert await resolve_job(agent, ids[3]) == (ids[3], None)
        assert await resolve_job(agent, "3f2a9c01f") == (ids[1], None)
        job, problem = await resolve_job(agent, "3f2a9c01")
        assert job is None and problem["code"] == "ambiguous_job" and problem["candidates"] == ids[:2]
        assert (await resolve_job(agent, "3f2a9c03"))[1]["code"] == "unknown_job"
        assert (await resolve_job(agent, "3f2a9c0"))[1]["code"] == "bad_job_id"
        assert (await resolve_job(agent, "3f2a9c0g"))[1]["code"] == "unknown_job"
        await store.aclose()

    trio.run(main)


# --- against a network ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Devnet(tmp_path_factory.mktemp("live") / "net", nodes=3, sandbox="process") as n:
        n.start()
        n.wait_connected()
        yield n


def default_sigint() -> None:
    """In the child, before exec: Ctrl-C's default disposition. A runner started in the background
    of a non-interactive shell (`nohup ... &`) ignores SIGINT, every child inherits that, and
    Python then installs no KeyboardInterrupt handler: the submit would never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def submitted_id(stderr_file) -> str | None:
    first, newline, _ = stderr_file.read_text().partition("\n")
    return first.split()[1].rstrip(";") if newline and first.startswith("submitted ") else None


@pytest.mark.slow
def test_ctrl_c_during_submit_leaves_the_job_running_and_says_how_to_follow_it(net, tmp_path):
    err = tmp_path / "stderr"
    # The job waits for a file the test makes after the interrupt (the process sandbox sees the
    # host's files), so it is still running when Ctrl-C comes, however slow the machine.
    gate = tmp_path / "gate"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([*CLI, "submit", "--data-dir", str(net.node_dirs[0]), "--image", "alpine:latest",
                                 "--cmd", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done"],
                                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                                preexec_fn=default_sigint)
    try:
        job = wait_for(lambda: submitted_id(err), 60, "submit to print the job id")
        wait_for(lambda: net.call(0, {"op": "status", "job_id": job})["executors"], 60, "the job's awards")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        gate.touch()
    said = err.read_text().splitlines()[1:]
    print("\n".join(said))
    assert said == [f"interrupted: job {job} keeps running",
                    f"  follow it: distributeai job status {job[:12]} --data-dir {net.node_dirs[0]} --watch",
                    f"  cancel it: distributeai job cancel {job[:12]} --data-dir {net.node_dirs[0]}"]
    assert proc.stdout.read() == ""
    # The job runs on to its verdict; the line printed follows it there (without a terminal:
    # it waits, then prints what `job status` prints).
    out = cli("job", "status", job[:12], "--data-dir", str(net.node_dirs[0]), "--watch")
    assert out.returncode == 0, out.stderr
    assert f"job      {job}" in out.stdout and "status   verified" in out.stdout and out.stdout.endswith("done\n")


@pytest.mark.slow
def test_job_ids_by_prefix_and_their_errors(net):
    d = str(net.node_dirs[0])
    out = cli("submit", "--data-dir", d, "--image", "alpine:latest", "--cmd", "echo", "--json", "--", "--json")
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)  # the trailing --json was submit's; the one before -- the job's
    assert view["command"] == ["echo", "--json"] and view["stdout"] == "--json\n"
    job = view["job_id"]
    for given in (job[:8], job[:20].upper(), job):
        shown = cli("job", "status", given, "--data-dir", d, "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["job_id"] == job, shown.stderr
    result = cli("job", "result", job[:8], "--data-dir", d)
    assert result.returncode == 0 and result.stdout == "--json\n", result.stderr
    unknown = "0123456789" if not job.startswith("0123456789") else "9876543210"
    for args, code, needle in ((["job", "status", unknown], 1, f"no job {unknown} known"),
                               (["job", "result", unknown], 1, f"no job {unknown} known"),
                               (["job", "cancel", unknown], 1, f"no job {unknown} known"),
                               (["job", "status", job[:7]], 2, "at least 8")):
        out = cli(*args, "--data-dir", d)
        assert out.returncode == code and len(out.stderr.splitlines()) == 1 and needle in out.stderr, out.stderr
    listed = cli("job", "list", "--data-dir", d)
    assert listed.stdout.splitlines()[0].split() == ["JOB", "ROLE", "STATUS", "AGREE", "ELAPSED", "NAME"]
    assert job in listed.stdout


@pytest.mark.slow
def test_elapsed_ticks_in_status_and_in_job_status_watch_on_a_terminal(net, tmp_path):
    d = str(net.node_dirs[0])
    gate = tmp_path / "gate"  # the job runs until the test has seen the clocks tick, however slow the machine
    out = cli("submit", "--data-dir", d, "--image", "alpine:latest", "--no-wait", "--cmd", "sh", "-c",
              f"while [ ! -e {gate} ]; do sleep 0.05; done")
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip()

    def status_elapsed() -> float:  # `status`'s snapshot, as its live view redraws it
        snap = json.loads(cli("status", "--once", "--json", "--data-dir", d).stdout)
        return next(j["elapsed_s"] for j in snap["submitted"] if j["job_id"] == job)

    before = status_elapsed()
    wait_for(lambda: status_elapsed() > before, 30, f"status to show the job older than {before} s")
    tmux = Tmux(tmux_or_skip(), tmp_path / "tmux.sock")
    rc_file = tmp_path / "rc"
    tmux.start([*CLI, "job", "status", job[:10], "--data-dir", d, "--watch"], rc_file)
    try:
        def elapsed_shown() -> str | None:
            screen = tmux.screen()
            return next((w for line in screen.splitlines() if "elapsed" in line and "verdict —" in line
                         for w in [line.split("elapsed")[1].strip()]), None)

        first = wait_for(elapsed_shown, 30, "the live progress with its elapsed time")
        wait_for(lambda: elapsed_shown() not in (None, first), 30, f"the elapsed time to move on from {first}")
        gate.touch()
        wait_for(lambda: rc_file.exists() and rc_file.read_text().strip(), 60, "job status --watch to end")
        assert rc_file.read_text().strip() == "0"
    finally:
        gate.touch()
        tmux.kill()
