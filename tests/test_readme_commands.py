"""Every `distributeai` command line in README.md's ```sh blocks, and every command's `--help`
example, run as written (through bash, from a directory laid out as the README assumes) against a
real network: the README's own `bootstrap start` and `node start` lines make the bootstrap and n1,
and two more nodes like n1 (n2, n3) join it, all with the Docker sandbox the lines name. A line
that exits non-zero fails the test, so a line added to the README, or an example added to a
command's help, that does not work fails it too.

What is changed in a line before it runs, and why (SUBSTITUTIONS, `placeholders`):

| written | becomes | because |
|---|---|---|
| `/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...` | the bootstrap's multiaddr | a placeholder |
| `tcp/4001`, `127.0.0.1:8080`, `127.0.0.1:8081` | free ports | other tests may hold these |
| `bafy...` | the CID n1 listed last (`blob ls`) | a placeholder |
| `python3 examples/ai/make_data.py .run/ai` | the same with Debian's python3 (it has numpy; the venv's does not) and `--rows 2000` (8 MB of data instead of 205 MB) | minutes by design; the image comes from scripts/test.sh, which builds it (`scripts/build-python-image.sh` is not run here) |
| `JOB_ID`, `3f2a9c01` (an 8-digit prefix) | the newest job n1 submitted (its full id, or its first 8 digits); for `job result`, the newest verified one; for `job cancel`, a `sleep 300` job submitted for it with `--no-wait` | placeholders |
| `DOCKER_HOST=unix:///tmp/dai-docker/docker.sock` | the test daemon's URL | the daemon of `scripts/dockerd.sh` |
| the tools' sizes (TOOL_SCALE) | a few units of each | minutes by design (simulate's 10,000 nodes: 4.5 min, fuzz's 100,000 inputs: 70 s, bench's 100 jobs on 5 nodes on 2 shared cores); every flag is kept |

The directory the lines run in (the "environment", not a change to any line): `.venv/bin/distributeai`
is this interpreter's entry point (also `distributeai` on PATH); `sandbox/` is the repository's;
`job.json` is the README's own seed job file (the sentence "A job file in the seed's format");
HOME is the directory itself, holding the README's TOML config (its placeholders as above) and
`~/.dai-pass`; `~/distributeai/node` (the config's data_dir) and `node1` (the help examples'
data dir) are n1. `tasks.txt` is written by the README's own `printf` line.

Lines that start services are the network's processes (the first `bootstrap start` and `node
start`); every other `node start` line is checked to start (its ready line) and to stop on
SIGINT (exit 0), once n1 is stopped, since they use n1's data dir; so are the key lines around
them, in the README's order. Not `distributeai` lines, and not run here: `scripts/demo.sh` (it
runs setup.sh; its network is `devnet --demo`, a help example run here), `scripts/test.sh` (the
suite itself), and the REST API block's `curl` lines (tests/test_api.py runs those).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main

from distributeai.node.control import call
from distributeai.sandbox.outdir import remove_stale_stages

from .netfixtures import wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
ENTRY = Path(sys.executable).parent / "distributeai"
LINE_TIMEOUT_S = 240  # a safety net: a submit waits for its verdict; a loaded CI machine is slow
TOOL_SCALE = {
    "bench": [("--nodes 5", "--nodes 3"), ("--jobs 100", "--jobs 2")],
    "simulate": [("--nodes 10000", "--nodes 200"), ("--jobs 200", "--jobs 10")],
    "fuzz": [("--inputs 100000", "--inputs 200")],
    "sandbox-time": [("--runs 10", "--runs 2")],
}
NOT_RUN = ("scripts/demo.sh", "scripts/test.sh", "scripts/build-python-image.sh")  # see the module docstring
EXAMPLE_DATA = ("python3 examples/ai/make_data.py .run/ai", "/usr/bin/python3 examples/ai/make_data.py .run/ai --rows 2000")


def sh_blocks(text: str) -> list[list[str]]:
    """The command lines of each ```sh block, a line continued while a quote is open."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, re.S):
        lines: list[str] = []
        pending = ""
        for raw in body.splitlines():
            pending = f"{pending}\n{raw}" if pending else raw
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on on the next line
                continue
            if shlex.split(pending, comments=True):  # a comment alone is no command
                lines.append(pending)
            pending = ""
        assert not pending, f"unterminated line in README.md: {pending!r}"
        blocks.append(lines)
    return blocks


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def subcommand(line: str) -> list[str]:
    """The distributeai words of a line (`node start ...`), or [] for another program."""
    w = [x for x in words(line) if not re.match(r"^[A-Z_]+=", x)]
    return w[1:] if w and (w[0] == "distributeai" or w[0].endswith("/distributeai")) else []


def help_examples() -> list[str]:
    """The `Example: distributeai ...` line that ends every command's help."""
    examples = []

    def walk(command) -> None:
        for sub in getattr(command, "commands", {}).values():
            walk(sub)
        if not getattr(command, "commands", None):
            found = re.findall(r"Example: (.+)", command.help or "")
            assert found, f"{command.name}: its help has no example"
            examples.append(found[-1].strip())

    from distributeai.cli.main import app

    walk(typer.main.get_command(app))
    return examples


def readme_job_file(text: str) -> str:
    doc = re.search(r"A job file in the seed's format: `(\{.*?\})`", text, re.S).group(1)
    json.loads(doc)
    return doc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Place:
    """The directory the lines run in, and the network they run against."""

    def __init__(self, root: Path, docker_host: str) -> None:
        self.root, self.docker_host = root, docker_host
        self.ports = {"tcp/4001": f"tcp/{free_port()}", "127.0.0.1:8080": f"127.0.0.1:{free_port()}",
                      "127.0.0.1:8081": f"127.0.0.1:{free_port()}"}
        self.multiaddr = ""
        self.services: dict[str, subprocess.Popen] = {}
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / ".venv" / "bin" / "distributeai").symlink_to(ENTRY)
        (root / "sandbox").symlink_to(REPO / "sandbox")
        (root / "examples").symlink_to(REPO / "examples")
        (root / "n1").mkdir()
        (root / "node1").symlink_to(root / "n1")
        (root / "distributeai").mkdir()
        (root / "distributeai" / "node").symlink_to(root / "n1")
        (root / ".dai-pass").write_text("a passphrase for the README's key lines\n")
        (root / ".dai-pass").chmod(0o600)
        text = (REPO / "README.md").read_text()
        (root / "job.json").write_text(readme_job_file(text))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTEAI_")
                    and k != "XDG_CONFIG_HOME"}
        self.env.update(HOME=str(root), DOCKER_HOST=docker_host, PYTHONUNBUFFERED="1",
                        PATH=f"{ENTRY.parent}{os.pathsep}{os.environ.get('PATH', '')}")

    def write_config(self) -> None:
        text = (REPO / "README.md").read_text()
        toml = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
        config = self.root / ".config" / "distributeai" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(self.ports_in(toml.replace("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...", self.multiaddr)))

    def ports_in(self, line: str) -> str:
        for written, free in self.ports.items():
            line = line.replace(written, free)
        return line

    def prepare(self, line: str) -> str:
        """The line with the substitutions of the module docstring."""
        line = line.replace("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...", self.multiaddr)
        line = self.ports_in(line)
        line = line.replace("unix:///tmp/dai-docker/docker.sock", self.docker_host)
        line = line.replace(*EXAMPLE_DATA)
        sub = subcommand(line)
        for written, small in TOOL_SCALE.get(sub[0] if sub else "", []):
            line = line.replace(written, small)
        if "bafy..." in line:
            blobs = self.call({"op": "blob_ls"})["blobs"]
            assert blobs, "a line names bafy... before any blob was added"
            line = line.replace("bafy...", blobs[0]["cid"])
        if "JOB_ID" in line or "3f2a9c01" in line:
            job = (self.cancellable_job() if sub[:2] == ["job", "cancel"]
                   else self.newest_job(verified=sub[:2] == ["job", "result"]))
            line = line.replace("JOB_ID", job).replace("3f2a9c01", job[:8])
        return line

    def call(self, request: dict) -> dict:
        return call(self.root / "n1" / "control.sock", request, timeout=30)

    def newest_job(self, verified: bool) -> str:
        jobs = [j for j in self.call({"op": "list", "limit": 20})["jobs"] if j and j["role"] == "submitter"
                and (j["status"] == "verified" or not verified)]
        assert jobs, "a line names JOB_ID before any job was submitted"
        return jobs[0]["job_id"]

    def cancellable_job(self) -> str:
        out = self.run(".venv/bin/distributeai submit --data-dir ./n1 --image alpine:latest --no-wait "
                       "--cmd sleep 300")  # stopped by the cancel line, however slow the machine
        return out.stdout.strip()

    def run(self, line: str, timeout: float = LINE_TIMEOUT_S) -> subprocess.CompletedProcess:
        started = time.monotonic()
        out = subprocess.run(["bash", "-c", line], cwd=self.root, env=self.env, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        print(f"{time.monotonic() - started:6.2f} s  exit {out.returncode}  {line}")
        assert out.returncode == 0, f"{line}\nexit {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
        return out

    def start(self, line: str, name: str) -> str:
        """Start a service line; return its first stdout line once it has printed it."""
        print(f"start  {line}")
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(["bash", "-c", line], cwd=self.root, env=self.env, stdout=subprocess.PIPE,
                                stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.services[name] = proc
        from distributeai.tools.devnet import LineReader

        return LineReader(proc, f"{name}: {line}", self.root / f"{name}.log").readline(120)

    def stop(self, name: str) -> int:
        """SIGINT a service (as Ctrl-C would) and its exit code."""
        proc = self.services.pop(name)
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=30)
        finally:
            proc.stdout.close()

    def stop_all(self) -> None:
        for name in list(self.services):
            proc = self.services[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            del self.services[name]
        # A node stopped while a run of its was ending may leave that run's /out tmpfs mounted.
        for d in ("n1", "n2", "n3"):
            remove_stale_stages(self.root / d / "outputs", print)


def all_lines() -> tuple[list[str], list[str]]:
    """(the README's lines to run, in order; the help examples not already among them)."""
    text = (REPO / "README.md").read_text()
    readme = []
    for block in sh_blocks(text):
        if any(line.startswith("curl -s -X POST") for line in block):
            continue  # the REST API block: tests/test_api.py runs its curl lines; its node start below
        readme += [line for line in block if not line.startswith(NOT_RUN)]
    rest = [line for block in sh_blocks(text) for line in block if "--api 127.0.0.1:8081" in line]
    readme += rest
    seen = {" ".join(words(line)).replace(".venv/bin/", "") for line in readme}
    examples = [e for e in help_examples() if " ".join(words(e)) not in seen]
    return readme, examples


def is_node_start(line: str) -> bool:
    return subcommand(line)[:2] == ["node", "start"]


def test_lines_are_found():
    readme, examples = all_lines()
    assert sum(1 for line in readme if subcommand(line)) >= 20
    assert any("sh -c \"echo 'Hello' | sha256sum\" --json" in line for line in readme)
    assert any(line.startswith("printf") for line in readme)
    assert any(line.startswith(EXAMPLE_DATA[0]) for line in readme)
    assert all(subcommand(line) or line.startswith(("printf", "curl", EXAMPLE_DATA[0])) for line in readme), readme
    assert len(examples) >= 10 and all(subcommand(e) for e in examples)


@pytest.mark.timeout(900)
def test_every_readme_line_and_help_example_works_as_written(tmp_path, docker_host):
    readme, examples = all_lines()
    place = Place(tmp_path / "r", docker_host)
    boot = next(line for line in readme if subcommand(line)[:2] == ["bootstrap", "start"])
    n1 = next(line for line in readme if is_node_start(line))
    # After n1 stops: every other node start line, and the key lines around them (which change
    # or need n1's key file), in order.
    later = [line for line in [*readme, *examples]
             if (is_node_start(line) and line != n1) or subcommand(line)[:2] in (["key", "encrypt"],
                                                                                ["key", "decrypt"])]
    try:
        place.multiaddr = place.start(place.prepare(boot), "boot")
        assert place.multiaddr == (place.root / "boot" / "multiaddr").read_text().strip()
        place.write_config()
        ids = {json.loads(place.start(place.prepare(n1), "n1"))["peer_id"]}
        for i in (2, 3):
            (place.root / f"n{i}").mkdir()
            ids.add(json.loads(place.start(f'distributeai node start --bootstrap "$(cat boot/multiaddr)" '
                                           f"--data-dir ./n{i} --sandbox docker", f"n{i}"))["peer_id"])

        def connected() -> bool:  # as Devnet.wait_connected: each node sees the others, with a gossip mesh
            infos = [call(place.root / f"n{i}" / "control.sock", {"op": "info"}, timeout=10) for i in (1, 2, 3)]
            return all(ids - {n["peer_id"]} <= set(n["peers"]) and len(n["mesh_peers"]) >= 3 for n in infos)

        wait_for(connected, 120, "the three nodes to find each other")

        for line in [*readme, *examples]:
            if line in later or line in (boot, n1):
                continue
            place.run(place.prepare(line))

        assert place.stop("n1") == 0
        for line in later:
            if is_node_start(line):
                ready = json.loads(place.start(place.prepare(line), "check"))
                assert ready["peer_id"], ready
                assert place.stop("check") == 0, line
            else:
                place.run(place.prepare(line))
    finally:
        place.stop_all()
