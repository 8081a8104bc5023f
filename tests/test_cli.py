"""The CLI's handling of a user's mistakes: one line on stderr naming the problem, exit code 2;
an unreachable node: one line naming what was tried, exit code 1. No network needed."""

from __future__ import annotations

import json

import pytest

from .netfixtures import cli


def write(tmp_path, doc) -> str:
    path = tmp_path / "job.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("doc,field", [
    ({"name": "x", "command": ["echo"]}, "image"),
    ({"docker_image": "alpine:latest", "command": "echo hi"}, "command"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "required_memory": "lots"}, "required_memory"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "required_cpu": -1}, "required_cpu"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "replicas": 2, "quorum": 3}, "quorum"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "verification": "sometimes"}, "verification"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "compare": {"kind": "numeric", "rel": "x"}}, "compare"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "homogeneous": ["os"]}, "homogeneous"),
])
def test_invalid_job_file_is_one_line_naming_the_field_and_exit_2(tmp_path, doc, field):
    out = cli("submit", "--data-dir", str(tmp_path / "node"), "-f", write(tmp_path, doc))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert field in lines[0]
    assert out.stdout == ""


@pytest.mark.parametrize("args,field", [
    (["--verification", "sometimes"], "verification"),
    (["--trust-threshold", "0"], "trust_threshold"),
    (["--spot-check-floor", "1.5"], "spot_check_floor"),
    (["--verification", "adaptive", "--tasks", "TASKS"], "verification"),  # a batch is replicated
])
def test_bad_verification_flags_are_one_line_and_exit_2(tmp_path, args, field):
    (tmp_path / "tasks").write_text("a\nb\n")
    args = [str(tmp_path / "tasks") if a == "TASKS" else a for a in args]
    out = cli("submit", "--data-dir", str(tmp_path / "node"), "--image", "alpine", *args, "--cmd", "echo")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], out.stderr
    assert out.stdout == ""


def test_job_file_that_is_not_json(tmp_path):
    out = cli("submit", "--data-dir", str(tmp_path), "-f", write(tmp_path, "{not json"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "not valid JSON" in out.stderr


def test_submit_without_a_running_node_says_so(tmp_path):
    out = cli("submit", "--data-dir", str(tmp_path / "nowhere"), "--image", "alpine:latest", "--cmd", "true")
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1
    assert "nowhere" in out.stderr


def test_node_start_rejects_an_unknown_sandbox(tmp_path):
    out = cli("node", "start", "--data-dir", str(tmp_path), "--sandbox", "vm")
    assert out.returncode == 2 and "--sandbox" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_job_status_rejects_a_malformed_id(tmp_path):
    out = cli("job", "status", "xyz", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "64 hex" in out.stderr


def test_a_mistyped_option_before_cmd_is_not_smuggled_into_the_command(tmp_path):
    out = cli("submit", "--data-dir", str(tmp_path), "--image", "alpine:latest", "--memroy", "64",
              "--cmd", "sh", "-c", "true")
    assert out.returncode == 2 and "--memroy" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_sandbox_time_reports_each_backend():
    out = cli("sandbox-time", "wasm", "process", "--runs", "3", "--json")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    for kind in ("wasm", "process"):
        assert figures[kind]["runs"] == 3
        assert 0 < figures[kind]["start_exit_ms_median"] <= figures[kind]["run_ms_median"]


# --- one-line usage errors, help, completion, config (cli/common.py, cli/config.py) ------------

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "distributeai"  # the installed entry point (completion needs its name)


def run_cli(*args: str, env: dict | None = None, home: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI with an environment of our making: no DISTRIBUTEAI_* from the caller, and the default
    config file looked for under `home` (so a developer's own config cannot change the outcome)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTEAI_") and k != "XDG_CONFIG_HOME"}
    if home is not None:
        base["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "distributeai.cli.main", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env={**base, **(env or {})})


def assert_one_line_usage_error(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ")
    for n in needles:
        assert n in lines[0], lines[0]
    assert out.stdout == ""


@pytest.mark.parametrize("args,needles", [
    (["frobnicate"], ["No such command", "frobnicate"]),
    (["job", "frobnicate"], ["No such command", "distributeai job --help"]),
    (["job", "status"], ["Missing argument", "distributeai job status --help"]),
    (["job", "result", "--bogus", "x"], ["No such option", "--bogus"]),
    (["node", "info", "--jsno"], ["No such option", "--jsno", "--json"]),
    (["node", "start", "--data-dir", "x", "--cpu", "lots"], ["--cpu"]),
    (["node", "start", "--data-dir", "x", "--max-jobs", "2.5"], ["--max-jobs"]),
    (["job", "list", "--data-dir", "x", "--limit", "0"], ["--limit"]),
    (["job", "list", "--data-dir", "x", "--role", "boss"], ["--role", "boss"]),
    (["job", "cancel", "nothex", "--data-dir", "x"], ["64 hex"]),
    (["job", "result", "12" * 32], ["--data-dir is required", "DISTRIBUTEAI_DATA_DIR"]),
    (["status", "--once"], ["--data-dir is required"]),
    (["config", "show", "--sandbox", "vm"], ["--sandbox", "vm"]),
    (["config", "show", "--metrics", "nowhere"], ["--metrics", "HOST:PORT"]),
    (["submit", "--data-dir", "x", "--image"], ["--image", "requires an argument"]),
])
def test_usage_errors_are_one_line_on_stderr_and_exit_2(tmp_path, args, needles):
    assert_one_line_usage_error(run_cli(*args, home=tmp_path), *needles)


COMMANDS = [["node", "start"], ["node", "info"], ["node", "peers"], ["bootstrap", "start"], ["submit"],
            ["job", "status"], ["job", "result"], ["job", "list"], ["job", "cancel"], ["credits"], ["reputation"],
            ["status"], ["config", "show"], ["devnet"], ["sandbox-time"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command):
    out = run_cli(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "Example:" in out.stdout and "distributeai " + " ".join(command) in " ".join(out.stdout.split())


def test_reporting_commands_take_json():
    for command in COMMANDS:
        if command not in (["node", "start"], ["bootstrap", "start"], ["devnet"]):  # services, not reports
            assert "--json" in run_cli(*command, "--help").stdout, command


def test_a_group_without_a_command_shows_its_help():
    out = run_cli("job")
    assert out.returncode == 0 and "result" in out.stdout and "cancel" in out.stdout


def test_shell_completion_is_offered_and_completes_commands():
    assert SCRIPT.exists(), SCRIPT
    # Name the shell: typer otherwise ignores "bash" and guesses from the process tree
    # (shellingham), which fails when no shell is among the test's ancestors.
    explicit = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run([str(SCRIPT), "--show-completion", "bash"], capture_output=True, text=True, timeout=60,
                           env=explicit)
    assert shown.returncode == 0 and "_distributeai_completion" in shown.stdout, shown.stderr
    env = {**os.environ, "_DISTRIBUTEAI_COMPLETE": "complete_bash", "COMP_WORDS": "distributeai job ", "COMP_CWORD": "2"}
    words = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=60, env=env)
    assert words.returncode == 0
    assert {"status", "result", "list", "cancel"} <= set(words.stdout.split())


def test_an_unreachable_node_is_one_line_naming_the_socket(tmp_path):
    for args in (["job", "list"], ["node", "peers"], ["reputation"], ["status", "--once"],
                 ["job", "cancel", "ab" * 32], ["job", "result", "ab" * 32]):
        out = run_cli(*args, "--data-dir", str(tmp_path / "gone"), home=tmp_path)
        assert out.returncode == 1, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and str(tmp_path / "gone" / "control.sock") in lines[0], (args, out.stderr)


def config_show(tmp_path, *flags: str, env: dict | None = None) -> dict:
    out = run_cli("config", "show", "--json", *flags, env=env, home=tmp_path)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_config_defaults_file_env_and_flags_in_that_order(tmp_path):
    conf = tmp_path / "dai.toml"
    conf.write_text('data_dir = "nodes/one"\nsandbox = "bwrap"\ncpu = 3\nmax_jobs = 2\n'
                    'bootstrap = ["/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWA"]\nbootstrap_http = "127.0.0.1:8080"\n')
    env = {"DISTRIBUTEAI_CONFIG": str(conf), "DISTRIBUTEAI_SANDBOX": "process", "DISTRIBUTEAI_CPU": "1.5",
           "DISTRIBUTEAI_GPU": "yes", "DISTRIBUTEAI_BOOTSTRAP": "/ip4/10.0.0.2/tcp/1/p2p/X,/ip4/10.0.0.3/tcp/1/p2p/Y"}
    shown = config_show(tmp_path, "--cpu", "4", "--listen", "/ip4/0.0.0.0/tcp/4002", env=env)
    s, src = shown["settings"], shown["sources"]
    assert shown["config_file"] == str(conf) and shown["config_file_exists"]
    # default
    assert s["memory_mb"] == 2048 and src["memory_mb"] == "default"
    assert s["metrics"] is None and s["docker_host"] is None
    # file (a relative path is relative to the file; a bare host:port becomes a URL)
    assert s["data_dir"] == str(tmp_path / "nodes" / "one") and src["data_dir"] == f"file {conf}"
    assert s["max_jobs"] == 2 and s["bootstrap_http"] == "http://127.0.0.1:8080"
    # environment over file
    assert s["sandbox"] == "process" and src["sandbox"] == "env DISTRIBUTEAI_SANDBOX"
    assert s["bootstrap"] == ["/ip4/10.0.0.2/tcp/1/p2p/X", "/ip4/10.0.0.3/tcp/1/p2p/Y"] and s["gpu"] is True
    # flag over environment and file
    assert s["cpu"] == 4.0 and src["cpu"] == "flag --cpu"
    assert s["listen"] == "/ip4/0.0.0.0/tcp/4002" and src["listen"] == "flag --listen"
    # the human form shows the same, with each value's source
    text = run_cli("config", "show", "--cpu", "4", env=env, home=tmp_path).stdout
    assert "# flag --cpu" in text and "# env DISTRIBUTEAI_SANDBOX" in text and f"# file {conf}" in text


def test_config_file_at_the_default_place(tmp_path):
    conf = tmp_path / ".config" / "distributeai" / "config.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('memory_mb = 512\n')
    shown = config_show(tmp_path)
    assert shown["config_file"] == str(conf) and shown["settings"]["memory_mb"] == 512
    xdg = tmp_path / "xdg"
    (xdg / "distributeai").mkdir(parents=True)
    (xdg / "distributeai" / "config.toml").write_text('memory_mb = 256\n')
    assert config_show(tmp_path, env={"XDG_CONFIG_HOME": str(xdg)})["settings"]["memory_mb"] == 256


@pytest.mark.parametrize("text,env,needles", [
    ("cpu = \n", {}, ["not valid TOML"]),
    ('cores = 3\n', {}, ["unknown key 'cores'"]),
    ('max_jobs = "many"\n', {}, ["max_jobs", "integer"]),
    ('bootstrap = "/ip4/1.2.3.4/tcp/1"\n', {}, ["bootstrap", "list"]),
    ("", {"DISTRIBUTEAI_MEMORY_MB": "lots"}, ["DISTRIBUTEAI_MEMORY_MB", "lots"]),
    ("", {"DISTRIBUTEAI_GPU": "maybe"}, ["DISTRIBUTEAI_GPU"]),
    ("", {"DISTRIBUTEAI_CONFIG": "/nonexistent/dai.toml"}, ["DISTRIBUTEAI_CONFIG", "/nonexistent/dai.toml"]),
])
def test_a_bad_config_is_one_line_naming_where_it_came_from(tmp_path, text, env, needles):
    conf = tmp_path / "dai.toml"
    conf.write_text(text)
    out = run_cli("config", "show", env={"DISTRIBUTEAI_CONFIG": str(conf), **env}, home=tmp_path)
    assert_one_line_usage_error(out, *needles)


def test_data_dir_from_the_config_is_used_when_no_flag_is_given(tmp_path):
    # No node runs there, so the command fails; the socket it names shows where it looked.
    env = {"DISTRIBUTEAI_DATA_DIR": str(tmp_path / "from-env")}
    out = run_cli("credits", env=env, home=tmp_path)
    assert out.returncode == 1 and str(tmp_path / "from-env" / "control.sock") in out.stderr
    out = run_cli("credits", "--data-dir", str(tmp_path / "from-flag"), env=env, home=tmp_path)
    assert out.returncode == 1 and str(tmp_path / "from-flag" / "control.sock") in out.stderr


def test_node_start_says_in_one_line_when_its_bootstrap_is_unreachable(tmp_path):
    """A bootstrap address where nothing listens: the node runs (it may find peers later) and its
    log names the address it could not reach, once."""
    import subprocess
    import sys
    import time

    from distributeai.p2p.identity import load_or_create_key, peer_id_from_public_key, public_key_bytes

    dead = peer_id_from_public_key(public_key_bytes(load_or_create_key(tmp_path / "dead.key")))
    s = __import__("socket").socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    addr = f"/ip4/127.0.0.1/tcp/{port}/p2p/{dead}"
    log = tmp_path / "log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "distributeai.cli.main", "node", "start", "--data-dir",
                                 str(tmp_path / "node"), "--sandbox", "process", "--bootstrap", addr],
                                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a safety net: start-up and the dial's own timeout, on loaded cores
        while "cannot reach bootstrap" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)  # polling the node's log for the line; the deadline bounds it
        lines = [line for line in log.read_text().splitlines() if "cannot reach bootstrap" in line]
        assert len(lines) == 1 and addr in lines[0]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        proc.stdout.close()
