"""Results as they are (issue 15, item 2), through the real CLI on a real 3-node network in
bubblewrap: the human output of `submit`, `job status` and `job result` states a timeout (with
its value), an OOM kill, a non-zero exit code, a cut stdout (with the sizes, and where to get all
of it) and the certified stderr; `submit --exit-code` exits with the job's own code."""

from __future__ import annotations

import json

import pytest

from distributeai.consensus.units import human_bytes
from distributeai.consensus.fields import STDERR_CAP, STDOUT_SEEN_MAX
from distributeai.tools.devnet import Devnet

from .netfixtures import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def net(tmp_path_factory, bwrap_ready):
    with Devnet(tmp_path_factory.mktemp("shown") / "net", nodes=3, sandbox="bwrap") as n:
        n.start()
        n.wait_connected()
        yield n


def submit(net: Devnet, *args: str):
    """`submit` as a person runs it (human output), with --exit-code."""
    return cli("submit", "--data-dir", str(net.node_dirs[0]), "--exit-code", *args)


def job_id_of(out) -> str:
    return next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("job "))


def test_a_job_killed_at_its_timeout_says_so(net):
    out = submit(net, "--timeout", "2", "--image", "alpine:latest", "--cmd", "sleep", "30")
    assert out.returncode == 124, out.stdout + out.stderr  # as coreutils timeout
    assert "status   verified: the executors agree that the job failed (timed out after 2 s)" in out.stdout
    assert "timeout  the job ran past its timeout of 2 s and was killed (exit code 137)" in out.stdout
    status = cli("job", "status", job_id_of(out), "--data-dir", str(net.node_dirs[0]))
    assert status.returncode == 0 and "timed out after 2 s" in status.stdout, status.stdout + status.stderr


def test_a_failing_job_shows_its_exit_code_and_the_end_of_its_stderr(net):
    script = ('i=0; while [ $i -lt 300 ]; do echo "warning $i" >&2; i=$((i+1)); done; '
              'echo partial; echo "error: bad input" >&2; exit 3')
    out = submit(net, "--image", "alpine:latest", "--cmd", "sh", "-c", script)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "the executors agree that the job failed (exit code 3)" in out.stdout
    assert "\nexit code 3\n" in out.stdout
    assert f"stderr (its last {human_bytes(STDERR_CAP)}; the rest was cut):" in out.stdout
    assert "error: bad input\n" in out.stdout and "warning 0\n" not in out.stdout
    assert out.stdout.endswith("stdout:\npartial\n")
    job = job_id_of(out)
    result = cli("job", "result", job, "--data-dir", str(net.node_dirs[0]), "--json")
    answer = json.loads(result.stdout)
    assert answer["exit_code"] == 3 and answer["stderr_part"] == "last" and answer["stderr_truncated"]
    assert answer["stderr"].endswith("warning 299\nerror: bad input\n") and len(answer["stderr"]) == STDERR_CAP
    human = cli("job", "result", job, "--data-dir", str(net.node_dirs[0]))
    assert human.stdout == "partial\n"
    assert "exit code 3" in human.stderr and "error: bad input" in human.stderr


def test_a_job_writing_to_stderr_shows_it_whole(net):
    out = submit(net, "--image", "alpine:latest", "--cmd", "sh", "-c", "echo done; echo 'note: used defaults' >&2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "status   verified\n" in out.stdout and "exit code 0" in out.stdout
    assert "stderr:\nnote: used defaults\n" in out.stdout and out.stdout.endswith("stdout:\ndone\n")
    view = json.loads(cli("job", "status", job_id_of(out), "--data-dir", str(net.node_dirs[0]), "--json").stdout)
    assert (view["stderr"], view["stderr_part"], view["stdout_size"]) == ("note: used defaults\n", "all", 5)


def test_ten_megabytes_of_stdout_say_how_much_is_certified_and_where_to_get_all(net):
    out = submit(net, "--image", "alpine:latest", "--cmd", "sh", "-c", "head -c 10000000 /dev/zero | tr '\\0' x")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr
    job = job_id_of(out)
    assert (f"stdout   the first 32 KiB of more than 1 MiB are certified; to get all of it, write it to /out "
            f"(`cmd > /out/stdout.txt`) and fetch it with `distributeai job result {job} --out DIR`") in out.stdout
    assert out.stdout.endswith("stdout:\n" + "x" * 32 * 1024)
    view = json.loads(cli("job", "status", job, "--data-dir", str(net.node_dirs[0]), "--json").stdout)
    assert view["stdout_truncated"] and view["stdout_size"] == STDOUT_SEEN_MAX + 1


def test_an_oom_killed_job_says_so(net):
    out = submit(net, "--memory", "64", "--image", "alpine:latest", "--cmd", "python3", "-c",
                 "x = bytearray(512 << 20)")
    assert out.returncode == 137, out.stdout + out.stderr
    assert "the executors agree that the job failed (killed: out of memory)" in out.stdout
    assert "memory   the job ran out of memory (its limit: 64 MiB) and was killed (exit code 137)" in out.stdout


def test_an_executor_without_a_result_shows_why(capsys):
    """The reason the submitter recorded for an executor's failure is on its line, not only in --json."""
    from distributeai.cli.jobview import print_job

    view = {"job_id": "ab" * 32, "status": "failed", "reason": "no bidders left to replace failed executors",
            "elapsed_s": 1.7, "result_hash": None,
            "executors": [{"peer_id": "12D3KooWA", "agreed": False, "result_hash": None, "state": "withdrawn"},
                          {"peer_id": "12D3KooWB", "agreed": False, "result_hash": None, "state": "awarded"}],
            "history": [{"at_ms": 1, "event": "award", "peer_id": "12D3KooWA", "detail": ""},
                        {"at_ms": 2, "event": "error", "peer_id": "12D3KooWA",
                         "detail": "withdrawn the job's inputs are not available: no provider has them"}]}
    print_job(view, as_json=False)
    out = capsys.readouterr().out
    assert "executor 12D3KooWA  no result (withdrawn the job's inputs are not available: no provider has them)" in out
    assert "executor 12D3KooWB  no result (awarded)" in out
