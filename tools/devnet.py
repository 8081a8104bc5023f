"""A local network of real processes on 127.0.0.1: one bootstrap and N nodes.

(Or, given `hosts` from tools/netns.py, each process in its own network namespace on its own
address, the sites connected through a delaying relay: docs/wan.md.)

Used by `distributeai devnet` (which the README's first command, scripts/demo.sh, runs) and by the
end-to-end tests, so both exercise exactly the same start-up path as a volunteer: `distributeai
bootstrap start` and `distributeai node start` as separate OS processes, each with its own data
directory.

Readiness is read from the processes themselves: the bootstrap prints its multiaddr as its first
stdout line, a node prints one JSON line when it listens; `wait_connected` then asks each node's
control API until every node sees every other one (with a deadline, never a fixed sleep).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distributeai.node.control import call
from distributeai.sandbox.outdir import remove_stale_stages


DEVNET_POW_DIFFICULTY = 16
# The README's demo job (`devnet --demo`), also what `sandbox-time` runs in each sandbox.
DEMO_COMMAND = ["sh", "-c", "echo 'Hello' | sha256sum"]


class DevnetError(RuntimeError):
    pass


class LineReader:
    """Reads a child's stdout line by line with a deadline, keeping what it read past a line."""

    def __init__(self, proc: subprocess.Popen, what: str, log: Path) -> None:
        assert proc.stdout is not None
        self.proc, self.what, self.log = proc, what, log
        self.buf = b""

    def readline(self, timeout: float) -> str:
        """The next stdout line, or DevnetError (with the tail of the log) at the deadline."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
                    raise DevnetError(f"{self.what} did not become ready (exit code {self.proc.poll()}):\n{tail}")
                if sel.select(min(left, 0.5)):
                    self.buf += os.read(self.proc.stdout.fileno(), 4096)
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


@dataclass
class Devnet:
    root: Path
    nodes: int = 3
    sandbox: str = "process"
    docker_host: str | None = None
    log_level: str = "info"
    metrics: bool = False  # nodes serve /metrics on a free loopback port: `info(i)["metrics_url"]`
    api: bool = False  # nodes serve the REST API on a free loopback port: `node_info[i]["api_url"]`
    extra_args: tuple[str, ...] = ()  # more `node start` options for every node
    node_args: dict[int, tuple[str, ...]] = field(default_factory=dict)  # node index -> more options for it
    # Each node's --pow-difficulty. A devnet makes fresh identities on every run: 16 bits (0.03 s
    # of CPU each) keeps the proof real but the start quick; the node's default, 20 (0.5 s of CPU on
    # average, up to 2 s), added a median of 1.7 s to a 3-node start on the shared 2 cores, and would
    # add about 70 CPU-s to the test suite's 130 node starts. None: the node's own default. The
    # bootstrap is given the same, so it counts what the nodes accept.
    pow_difficulty: int | None = DEVNET_POW_DIFFICULTY
    procs: list[subprocess.Popen] = field(default_factory=list)
    bootstrap_addr: str = ""
    http_url: str = ""
    node_dirs: list[Path] = field(default_factory=list)
    node_info: list[dict] = field(default_factory=list)
    node_procs: list[subprocess.Popen] = field(default_factory=list)
    # Node index -> the program to run instead of `python -m distributeai.cli.main` (the failure
    # tests run a byzantine node this way); its arguments are the CLI's.
    programs: dict[int, list[str]] = field(default_factory=dict)
    # A WAN on one machine (tools/netns.py): `hosts[0]` runs the bootstrap, `hosts[1 + i]` node i,
    # each process inside its host's network namespace, listening on its host's address (libp2p;
    # the bootstrap's page, --metrics and --api stay on 127.0.0.1 inside the namespace, out of the
    # caller's reach; the control socket is a file, so `call` and `info` work as on loopback).
    # None (the default): everything on 127.0.0.1 in this process's namespace.
    hosts: list | None = None

    def _listen(self, index: int) -> list[str]:
        """`--listen` for hosts[index] (0: the bootstrap), nothing on loopback (the default)."""
        return [] if self.hosts is None else ["--listen", f"/ip4/{self.hosts[index].ip}/tcp/0"]

    def _spawn(self, args: list[str], log: Path, program: list[str] | None = None,
               host=None) -> subprocess.Popen:
        env = dict(os.environ)
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        env.setdefault("PYTHONUNBUFFERED", "1")
        argv = [*(program or [sys.executable, "-m", "distributeai.cli.main"]), *args]
        with open(log, "ab") as err:
            proc = subprocess.Popen(argv if host is None else host.command(argv),
                                    stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 120.0) -> "Devnet":
        """Start the bootstrap, then all nodes at once; return when every node is ready.
        `timeout` bounds the whole start (DevnetError naming the first node not ready)."""
        deadline = time.monotonic() + timeout
        self.root.mkdir(parents=True, exist_ok=True)
        boot_dir = self.root / "bootstrap"
        boot_dir.mkdir(exist_ok=True)
        if self.hosts is not None and len(self.hosts) < self.nodes + 1:
            raise DevnetError(f"{self.nodes} nodes and a bootstrap need {self.nodes + 1} hosts, not {len(self.hosts)}")
        listen = self._listen(0) or ["--listen", "/ip4/127.0.0.1/tcp/0"]
        proc = self._spawn(["bootstrap", "start", *listen, "--http", "127.0.0.1:0",
                            "--data-dir", str(boot_dir), "--log-level", self.log_level,
                            *([] if self.pow_difficulty is None else ["--pow-difficulty", str(self.pow_difficulty)])],
                           boot_dir / "log", host=None if self.hosts is None else self.hosts[0])
        reader = LineReader(proc, "bootstrap", boot_dir / "log")
        self.bootstrap_addr = reader.readline(deadline - time.monotonic())
        http_line = reader.readline(deadline - time.monotonic())
        self.http_url = http_line.split()[-1].rstrip("/")  # "page: http://HOST:PORT/"
        self.add_nodes(self.nodes, timeout=deadline - time.monotonic())
        return self

    def add_nodes(self, count: int, timeout: float = 120.0, program: list[str] | None = None) -> list[int]:
        """Start `count` more nodes at once (fresh identities joining the running network through
        the bootstrap; `program` as in `programs`); return their indices once every one is ready.
        `timeout` bounds the whole start (DevnetError naming the first node not ready)."""
        deadline = time.monotonic() + timeout
        added = list(range(len(self.node_dirs), len(self.node_dirs) + count))
        if self.hosts is not None and added and len(self.hosts) < added[-1] + 2:
            raise DevnetError(f"node {added[-1]} has no host: {len(self.hosts)} hosts for the bootstrap and nodes")
        for i in added:
            d = self.root / f"node{i + 1}"
            d.mkdir(exist_ok=True)
            self.node_dirs.append(d)
            if program is not None:
                self.programs[i] = program
            self.node_procs.append(self._spawn_node(i))
        for i in added:
            d, p = self.node_dirs[i], self.node_procs[i]
            line = LineReader(p, f"node {d.name}", d / "log").readline(deadline - time.monotonic())
            self.node_info.append(json.loads(line))
        return added

    def _spawn_node(self, i: int) -> subprocess.Popen:
        d = self.node_dirs[i]
        return self._spawn(["node", "start", "--bootstrap", self.bootstrap_addr, "--data-dir", str(d),
                            "--sandbox", self.sandbox, "--log-level", self.log_level, *self._listen(i + 1),
                            *(["--metrics", "127.0.0.1:0"] if self.metrics else []),
                            *(["--api", "127.0.0.1:0"] if self.api else []), *self.extra_args,
                            *self.node_args.get(i, ()),
                            *([] if self.pow_difficulty is None else ["--pow-difficulty", str(self.pow_difficulty)])],
                           d / "log",
                           self.programs.get(i), host=None if self.hosts is None else self.hosts[i + 1])

    def kill_node(self, i: int) -> None:
        """SIGKILL node i: no clean shutdown, as when a volunteer's machine loses power."""
        p = self.node_procs[i]
        p.kill()
        p.wait()

    def restart_node(self, i: int, timeout: float = 120.0) -> dict:
        """Start node i again on its data directory; returns its new ready line."""
        d = self.node_dirs[i]
        p = self._spawn_node(i)
        self.node_procs[i] = p
        self.node_info[i] = json.loads(LineReader(p, f"node {d.name}", d / "log").readline(timeout))
        return self.node_info[i]

    def info(self, i: int) -> dict:
        return call(self.node_dirs[i] / "control.sock", {"op": "info"}, timeout=10)

    def wait_connected(self, timeout: float = 120.0) -> None:
        """Until every node is connected to every other node (found through the DHT) and has a
        gossip mesh on the jobs topic (so that an announcement reaches someone)."""
        ids = {n["peer_id"] for n in self.node_info}
        # The other nodes and the bootstrap (while it lives), up to gossip's low degree.
        want_mesh = min(len(ids) - 1 + (self.procs[0].poll() is None), 4)
        deadline = time.monotonic() + timeout
        while True:
            missing = {}
            for i, n in enumerate(self.node_info):
                info = self.info(i)
                lacking = ids - {n["peer_id"]} - set(info["peers"])
                if lacking:
                    missing[n["peer_id"]] = sorted(lacking)
                elif len(info["mesh_peers"]) < want_mesh:
                    missing[n["peer_id"]] = f"gossip mesh {info['mesh_peers']}"
            if not missing:
                return
            if time.monotonic() > deadline:
                raise DevnetError(f"nodes did not find each other within {timeout} s: {missing}")
            time.sleep(0.1)  # polling the nodes' own view; each round is a fresh observation

    def kill_bootstrap(self) -> None:
        """SIGKILL the bootstrap; the nodes must carry on without it."""
        self.procs[0].kill()
        self.procs[0].wait()

    def call(self, i: int, request: dict, timeout: float = 30) -> dict:
        return call(self.node_dirs[i] / "control.sock", request, timeout=timeout)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs.clear()
        # A node killed mid-run (kill_node) leaves its job's /out tmpfs mounted; none runs now.
        for d in self.node_dirs:
            remove_stale_stages(d / "outputs", print)

    def __enter__(self) -> "Devnet":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def reset(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
