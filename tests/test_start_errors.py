"""Issue 15 item 5: every foreseeable failure of `node start` and `bootstrap start` is one line on
stderr saying what is wrong and what to do, never a traceback; exit 1, or 2 for a usage mistake
(a bad flag or config value, a key file that cannot be used).

Each case is made for real: the ports and the data dirs are held by a real running node and a
real running bootstrap, and the CLI is run as a user runs it. An unreachable bootstrap is not a
start failure (the node runs and keeps trying; one WARNING line): tests/test_cli.py.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from .netfixtures import cli
from .test_identity_faults import POW, START_DEADLINE_S, first_line, spawn, stop


def assert_one_line(out: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == "", out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def node_start(data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("node", "start", "--data-dir", str(data_dir), "--sandbox", "process", "--pow-difficulty", POW,
               *extra, timeout=START_DEADLINE_S)


def bootstrap_start(data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("bootstrap", "start", "--data-dir", str(data_dir), "--pow-difficulty", POW, *extra,
               timeout=START_DEADLINE_S)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A running node (its data dir, libp2p port, --api and --metrics ports) and a running
    bootstrap (its data dir, libp2p and --http ports)."""
    root = tmp_path_factory.mktemp("running")
    node = spawn(["node", "start", "--data-dir", str(root / "node"), "--sandbox", "process", "--pow-difficulty", POW,
                  "--api", "127.0.0.1:0", "--metrics", "127.0.0.1:0"], root / "node.log")
    procs = [node]
    try:
        ready = json.loads(first_line(node, root / "node.log"))
        boot = spawn(["bootstrap", "start", "--data-dir", str(root / "boot"), "--listen", "/ip4/127.0.0.1/tcp/0",
                      "--http", "127.0.0.1:0", "--pow-difficulty", POW], root / "boot.log")
        procs.append(boot)
        boot_addr, page = stdout_lines(boot, root / "boot.log", 2)
        assert page.startswith("page: http://") and page.endswith("/") and "/api/stats" not in page, page
        yield {
            "root": root, "node_dir": root / "node", "boot_dir": root / "boot",
            "node_listen": ready["multiaddrs"][0].split("/p2p/")[0],
            "api": urlparse(ready["api_url"]).netloc, "metrics": urlparse(ready["metrics_url"]).netloc,
            "boot_listen": boot_addr.split("/p2p/")[0], "boot_http": urlparse(page.split()[-1]).netloc,
        }
    finally:
        for proc in procs:
            stop(proc)


def stdout_lines(proc: subprocess.Popen, log: Path, n: int) -> list[str]:
    """The process's first `n` stdout lines, within START_DEADLINE_S."""
    deadline = time.monotonic() + START_DEADLINE_S
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while data.count(b"\n") < n:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"not ready; log:\n{log.read_text()[-3000:]}"
            if sel.select(timeout=min(left, 1.0)):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"stdout closed; log:\n{log.read_text()[-3000:]}"
                data += chunk
    return data.decode().splitlines()[:n]


# --- node start -----------------------------------------------------------------------------------


def test_a_data_dir_another_node_runs_in(running):
    assert_one_line(node_start(running["node_dir"]), 1, "another process is using", str(running["node_dir"]),
                    "--data-dir")


@pytest.mark.parametrize("option,held", [("--listen", "node_listen"), ("--api", "api"), ("--metrics", "metrics"),
                                         ("--listen", "boot_listen")])
def test_an_address_in_use(running, tmp_path, option, held):
    value = running[held]
    line = assert_one_line(node_start(tmp_path / "n", option, value), 1, value, option, "address already in use")
    assert "choose another port" in line
    assert not (tmp_path / "n" / "node.db").exists()  # refused before the store was opened


def test_an_address_this_host_does_not_have(tmp_path):
    assert_one_line(node_start(tmp_path / "n", "--listen", "/ip4/192.0.2.1/tcp/0"), 1,
                    "/ip4/192.0.2.1/tcp/0", "--listen")
    assert_one_line(node_start(tmp_path / "n", "--api", "192.0.2.1:0"), 1, "192.0.2.1:0", "--api")


def test_a_key_file_of_garbage_or_open_to_others(tmp_path):
    data = tmp_path / "n"
    data.mkdir(mode=0o700)
    key = data / "node.key"
    key.write_bytes(b"not a key\n")
    key.chmod(0o600)
    assert_one_line(node_start(data), 2, str(key), "32-byte")
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    assert_one_line(node_start(data), 2, str(key), "chmod 600")


@pytest.mark.parametrize("env,needles", [
    ({"DISTRIBUTEAI_CPU": "many"}, ["DISTRIBUTEAI_CPU", "cpu"]),
    ({"DISTRIBUTEAI_LOG_FORMAT": "xml"}, ["DISTRIBUTEAI_LOG_FORMAT", "text, json"]),
])
def test_a_bad_config_value(tmp_path, env, needles):
    out = subprocess.run([*cli_argv(), "node", "start", "--data-dir", str(tmp_path / "n")], capture_output=True,
                         text=True, timeout=START_DEADLINE_S, stdin=subprocess.DEVNULL,
                         env={**os.environ, "HOME": str(tmp_path), **env})
    assert_one_line(out, 2, *needles)


def cli_argv() -> list[str]:
    import sys

    return [sys.executable, "-m", "distributeai.cli.main"]


def test_a_bootstrap_address_without_its_peer_id(tmp_path):
    assert_one_line(node_start(tmp_path / "n", "--bootstrap", "/ip4/127.0.0.1/tcp/4001"), 2, "--bootstrap",
                    "/p2p/")
    assert_one_line(node_start(tmp_path / "n", "--bootstrap", "127.0.0.1:4001"), 2, "--bootstrap")


def test_docker_named_but_unreachable(tmp_path):
    sock = f"unix://{tmp_path}/no-docker.sock"
    line = assert_one_line(node_start(tmp_path / "n", "--sandbox", "docker", "--docker-host", sock), 1,
                           "--sandbox docker", sock, "--sandbox auto")
    assert "--docker-host" in line


def test_a_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    assert_one_line(node_start(tmp_path / "f"), 1, str(tmp_path / "f"), "not a directory")


# --- bootstrap start ------------------------------------------------------------------------------


def test_a_bootstrap_data_dir_in_use(running):
    assert_one_line(bootstrap_start(running["boot_dir"], "--listen", "/ip4/127.0.0.1/tcp/0", "--http",
                                    "127.0.0.1:0"), 1, "another process is using", str(running["boot_dir"]))


@pytest.mark.parametrize("option,held", [("--listen", "boot_listen"), ("--http", "boot_http"),
                                         ("--listen", "node_listen"), ("--http", "api")])
def test_a_bootstrap_address_in_use(running, tmp_path, option, held):
    args = {"--listen": "/ip4/127.0.0.1/tcp/0", "--http": "127.0.0.1:0", option: running[held]}
    out = bootstrap_start(tmp_path / "b", *[x for kv in args.items() for x in kv])
    assert_one_line(out, 1, running[held], option, "address already in use")


def test_bootstrap_usage_mistakes(tmp_path):
    assert_one_line(bootstrap_start(tmp_path / "b", "--log-level", "loud"), 2, "--log-level")
    assert_one_line(bootstrap_start(tmp_path / "b", "--log-format", "xml"), 2, "--log-format")
    assert_one_line(bootstrap_start(tmp_path / "b", "--http", "8080"), 2, "--http")
    (tmp_path / "b").mkdir(mode=0o700)
    (tmp_path / "b" / "bootstrap.key").write_bytes(b"junk")
    (tmp_path / "b" / "bootstrap.key").chmod(0o600)
    assert_one_line(bootstrap_start(tmp_path / "b"), 2, "bootstrap.key")


# --- what a running node says about itself (issue 15, "small untruths") -------------------------------


def test_node_info_is_lines_for_people_not_python_reprs(running):
    out = cli("node", "info", "--data-dir", str(running["node_dir"]), timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for python_repr in ("['", "{'", "[]", "{}", "True", "False"):
        assert python_repr not in text, (python_repr, text)
    labels = [line[:14].strip() for line in text.splitlines() if line[:1] != " "]
    assert labels[:3] == ["peer id", "running", "addresses"], text
    assert {"reputation", "credits", "peers", "api", "metrics", "rejected", "disk"} <= set(labels), text
    values = [line[14:] for line in text.splitlines()]
    assert len({line.index(value) for line, value in zip(text.splitlines(), values) if value}) == 1  # one column
    assert running["api"] in text and "free" in text


def test_a_data_dir_too_long_for_its_control_socket(tmp_path):
    data = tmp_path / ("d" * 120)
    assert_one_line(node_start(data), 1, "control.sock", "shorter --data-dir")


@pytest.mark.parametrize("listen", ["/ip4/127.0.0.1/udp/0/quic", "/dns4/localhost/tcp/0"])
def test_a_listen_address_it_cannot_listen_on(tmp_path, listen):
    """libp2p here listens on TCP only, and did not resolve a DNS name (it listened everywhere)."""
    assert_one_line(node_start(tmp_path / "n", "--listen", listen), 2, "--listen", listen)
    assert_one_line(bootstrap_start(tmp_path / "b", "--listen", listen), 2, "--listen", listen)
