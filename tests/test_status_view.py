"""`distributeai status` in a real terminal (tmux) and as one snapshot, `submit`'s progress on a
terminal, and the commands that ask a running node: `job list|result|cancel`, `node peers`,
`reputation`, `credits`, `config show`. One network of 3 nodes (process sandbox) serves them all."""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distributeai.tools.devnet import Devnet

from .netfixtures import DEMO_ARGS, DEMO_STDOUT, cli, missing, submit_json, wait_for

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "distributeai.cli.main"]
SCREEN_TIMEOUT_S = 30  # the view shows a fresh snapshot twice a second; this is only the give-up point


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with Devnet(tmp_path_factory.mktemp("status") / "net", nodes=3, sandbox="process") as n:
        n.start()
        n.wait_connected()
        yield n


@pytest.fixture(scope="module")
def demo(net) -> dict:
    """The demo job, verified, submitted from node 1."""
    view, _ = submit_json(net.node_dirs[0], *DEMO_ARGS)
    assert view["status"] == "verified", view
    return view


def node1(net: Devnet) -> str:
    return str(net.node_dirs[0])


def awarded_other(net: Devnet, view: dict) -> int:
    """The index of node 2 or 3, whichever was awarded the job (at least one was)."""
    awarded = {e["peer_id"] for e in view["executors"]}
    return next(i for i in (1, 2) if net.node_info[i]["peer_id"] in awarded)


def json_of(out: subprocess.CompletedProcess):
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --- status --once and --json ----------------------------------------------------------------------

def test_status_once_shows_node_peers_jobs_and_network(net, demo):
    def totals_counted():
        out = cli("status", "--once", "--data-dir", node1(net), "--bootstrap-http", net.http_url)
        assert out.returncode == 0, out.stderr
        return out.stdout if "1 verified" in out.stdout else None

    text = wait_for(totals_counted, 60, "the bootstrap to count the demo job")
    print("\n" + text)
    assert net.node_info[0]["peer_id"] in text
    for other in net.node_info[1:]:
        assert other["peer_id"] in text  # connected peers, by full peer id
    assert demo["job_id"][:16] in text and "verified" in text
    assert "nodes online" in text and "jobs announced" in text


def test_status_json_has_every_part(net, demo):
    snap = json_of(cli("status", "--json", "--data-dir", node1(net), "--bootstrap-http", net.http_url))
    assert snap["node"]["peer_id"] == net.node_info[0]["peer_id"]
    assert {"reputation", "credits"} <= set(snap["node"])
    assert {p["peer_id"] for p in snap["peers"] if p["connected"]} >= {n["peer_id"] for n in net.node_info[1:]}
    assert any(j["job_id"] == demo["job_id"] and j["status"] == "verified" for j in snap["submitted"])
    assert {"nodes_online", "jobs_announced", "jobs_verified", "jobs_failed"} <= set(snap["network"])
    # A node awarded the demo job shows it among the jobs it runs. (Node 2 or 3: 2 or 3 awards
    # among 3 nodes, since a bid that misses the window is not waited for.)
    other = json_of(cli("status", "--json", "--data-dir", str(net.node_dirs[awarded_other(net, demo)])))
    assert any(j["job_id"] == demo["job_id"] and j["execution"] for j in other["running"])
    assert "error" in other["network"]  # no bootstrap URL given or configured: said, not fatal


def test_status_with_an_unreachable_bootstrap_says_so_in_one_line(net):
    out = cli("status", "--once", "--data-dir", node1(net), "--bootstrap-http", "http://127.0.0.1:9")
    assert out.returncode == 0, out.stderr
    said = [line for line in out.stdout.splitlines() if "cannot reach the bootstrap" in line]
    assert len(said) == 1 and "http://127.0.0.1:9/api/stats" in said[0]


# --- status live, in tmux ------------------------------------------------------------------------------

def tmux_or_skip() -> str:
    path = shutil.which("tmux")
    if path is None:
        missing("tmux is not installed (scripts/setup.sh installs it)")
    return path


class Tmux:
    """A private tmux server (its own socket) running one command in a 120x40 window."""

    def __init__(self, tmux: str, sock: Path) -> None:
        self.tmux, self.sock = tmux, sock

    def __call__(self, *args: str) -> str:
        # os.environ, not the process's C environment: something in the test process (curses)
        # puts COLUMNS=80 and LINES=24 there, which the view would take over the window's size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.run([self.tmux, "-S", str(self.sock), *args], capture_output=True, text=True,
                              check=True, timeout=10, env=env).stdout

    def start(self, command: list[str], rc_file: Path) -> None:
        shell = f"{shlex.join(command)}; echo $? > {shlex.quote(str(rc_file))}"
        self("new-session", "-d", "-s", "dai", "-x", "120", "-y", "40", shell)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "dai")

    def kill(self) -> None:
        subprocess.run([self.tmux, "-S", str(self.sock), "kill-server"], capture_output=True, timeout=10,
                       env=dict(os.environ))


@pytest.mark.parametrize("key", ["q", "C-c"])
def test_status_live_in_a_real_terminal(net, demo, tmp_path, key):
    tmux = Tmux(tmux_or_skip(), tmp_path / "tmux.sock")
    rc_file = tmp_path / "rc"
    tmux.start([*CLI, "status", "--data-dir", node1(net), "--bootstrap-http", net.http_url], rc_file)
    try:
        me = net.node_info[0]["peer_id"]

        def shows_everything():
            screen = tmux.screen()
            return screen if me in screen and "verified" in screen and "nodes online" in screen else None

        screen = wait_for(shows_everything, SCREEN_TIMEOUT_S, "the status view on the tmux screen")
        print("\n" + screen)
        stamp = next(line for line in screen.splitlines() if "updated" in line)

        def redrawn():  # the clock in the view moves: it is refreshed, not drawn once
            now = next((line for line in tmux.screen().splitlines() if "updated" in line), stamp)
            return now != stamp

        wait_for(redrawn, 30, "the view to be redrawn")
        tmux("send-keys", "-t", "dai", key)
        wait_for(rc_file.exists, 30, f"status to exit on {key}")
        wait_for(lambda: rc_file.read_text().strip(), 30, "the exit code")
        assert rc_file.read_text().strip() == "0"
    finally:
        tmux.kill()


# --- submit's progress on a terminal -------------------------------------------------------------------

def test_submit_shows_progress_on_a_terminal_and_prints_the_same_result(net):
    """stderr is a pseudo-terminal, so the live progress is drawn there; stdout is a pipe and gets
    exactly what it gets without a terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*CLI, "submit", "--data-dir", node1(net), *DEMO_ARGS], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    drawn = bytearray()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        stdout = proc.communicate(timeout=30)[0].decode()
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    shown = drawn.decode(errors="replace")
    assert proc.returncode == 0, shown
    # 2 or 3 bids and awards: a bid that misses the window is not waited for when nobody outranks
    # the bids in hand, and 2 agreeing results end the job.
    assert "bids 2" in shown or "bids 3" in shown, shown[-2000:]
    assert "awarded 2/3" in shown or "awarded 3/3" in shown, shown[-2000:]
    for word in ("commits", "reveals", "verdict verified", "elapsed"):
        assert word in shown, (word, shown[-2000:])
    assert stdout.startswith("job      ") and "status   verified" in stdout
    assert stdout.endswith("stdout:\n" + DEMO_STDOUT)
    assert "\x1b" not in stdout  # no drawing on stdout


# --- the commands that ask the node ------------------------------------------------------------------

def test_job_list_shows_roles_and_filters(net, demo):
    jobs = json_of(cli("job", "list", "--data-dir", node1(net), "--json"))["jobs"]
    assert any(j["job_id"] == demo["job_id"] and j["role"] == "submitter" for j in jobs)
    ran = json_of(cli("job", "list", "--data-dir", str(net.node_dirs[awarded_other(net, demo)]), "--role", "executor",
                      "--json"))["jobs"]
    assert all(j["role"] == "executor" for j in ran)
    assert any(j["job_id"] == demo["job_id"] and j["execution"]["status"] for j in ran)
    text = cli("job", "list", "--data-dir", node1(net)).stdout
    assert demo["job_id"] in text and "verified" in text


def test_job_result_prints_the_verified_stdout(net, demo):
    out = cli("job", "result", demo["job_id"], "--data-dir", node1(net))
    assert out.returncode == 0 and out.stdout == DEMO_STDOUT, out.stderr
    # Node 3 has the certificate once gossip brought it (the submitter's verdict does not wait).
    answer = json_of(wait_for(lambda: (o := cli("job", "result", demo["job_id"], "--data-dir", str(net.node_dirs[2]),
                                                  "--json")).returncode == 0 and o, 60, "node 3's copy of the result"))
    assert answer["stdout"] == DEMO_STDOUT and answer["result_hash"] == demo["result_hash"]


def test_job_result_out_writes_the_output_files_and_reports_them(net, tmp_path, monkeypatch):
    script = 'mkdir -p "$OUT_DIR/sub" && echo forty-two > "$OUT_DIR/answer.txt" && echo x > "$OUT_DIR/sub/b"'
    view, _ = submit_json(net.node_dirs[0], "--image", "alpine:latest", "--cmd", "sh", "-c", script)
    assert view["status"] == "verified", view
    monkeypatch.chdir(tmp_path)  # a relative --out is ours, not the node's working directory
    out = cli("job", "result", view["job_id"], "--data-dir", node1(net), "--out", "results")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "results" / "answer.txt").read_text() == "forty-two\n"
    assert (tmp_path / "results" / "sub" / "b").read_text() == "x\n"
    wrote = [line for line in out.stderr.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == 2 and str(tmp_path / "results" / "answer.txt") in out.stderr
    answer = json_of(cli("job", "result", view["job_id"], "--data-dir", node1(net), "--out", str(tmp_path / "j"),
                         "--json"))
    assert sorted(f["path"] for f in answer["written"]) == ["answer.txt", "sub/b"]


def test_job_result_of_an_unknown_or_unfinished_job_is_one_line(net):
    out = cli("job", "result", "ab" * 32, "--data-dir", node1(net))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "no job" in out.stderr


def test_job_cancel(net):
    job = json_of(cli("submit", "--data-dir", node1(net), "--no-wait", "--json", "--image", "alpine:latest",
                      "--timeout", "30", "--cmd", "sleep", "20"))
    out = cli("job", "cancel", job["job_id"], "--data-dir", node1(net))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"job {job['job_id']} failed (cancelled)"
    again = cli("job", "cancel", job["job_id"], "--data-dir", node1(net))
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert json_of(cli("job", "status", job["job_id"], "--data-dir", node1(net), "--json"))["reason"] == "cancelled"


def test_node_peers(net):
    peers = json_of(cli("node", "peers", "--data-dir", node1(net), "--json"))["peers"]
    assert {n["peer_id"] for n in net.node_info[1:]} <= {p["peer_id"] for p in peers if p["connected"]}
    text = cli("node", "peers", "--data-dir", node1(net)).stdout
    assert all(n["peer_id"] in text for n in net.node_info[1:])


def test_reputation_and_credits_after_the_demo(net, demo):
    rep = json_of(cli("reputation", "--data-dir", node1(net), "--json"))
    assert rep["peer_id"] == net.node_info[0]["peer_id"]
    agreeing = [e["peer_id"] for e in demo["executors"] if e["agreed"]]
    assert all(rep["reputation"][p] > 0 for p in agreeing)  # +5 per agreeing result
    assert rep["own"] == rep["reputation"].get(rep["peer_id"], 0)
    text = cli("reputation", "--data-dir", node1(net)).stdout
    assert text.splitlines()[0].startswith(rep["peer_id"]) and "(this node)" in text
    credits = json_of(cli("credits", "--data-dir", node1(net), "--json"))
    assert isinstance(credits["balance"], int) and credits["genesis"] == 100


def test_config_supplies_the_data_dir_and_bootstrap_url(net, demo, tmp_path):
    """The config file names the node and the bootstrap's stats URL; the environment overrides the
    file and a flag overrides the environment, as `config show` reports."""
    conf = tmp_path / "dai.toml"
    conf.write_text(f'data_dir = "{net.node_dirs[1]}"\nbootstrap_http = "{net.http_url}"\n')
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DISTRIBUTEAI_")},
           "DISTRIBUTEAI_CONFIG": str(conf), "DISTRIBUTEAI_DATA_DIR": str(net.node_dirs[0])}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env=env,
                              stdin=subprocess.DEVNULL)

    shown = json_of(run("config", "show", "--json"))
    assert shown["settings"]["data_dir"] == str(net.node_dirs[0])  # env over file
    assert shown["sources"]["bootstrap_http"] == f"file {conf}"
    snap = json_of(run("status", "--json"))
    assert snap["node"]["peer_id"] == net.node_info[0]["peer_id"] and "nodes_online" in snap["network"]
    flagged = json_of(run("status", "--json", "--data-dir", str(net.node_dirs[2])))  # flag over env
    assert flagged["node"]["peer_id"] == net.node_info[2]["peer_id"]
