"""Identity faults, with real node processes and real files (issue 14, item 5).

- A node.key with flipped bytes is another identity: `node start` refuses in one line naming both
  peer ids and the recovery, exit 2, and writes nothing (node.json and node.pow stay as they were).
- A node.key that is gone while node.db remains: refused the same way, and no key is created.
- A truncated node.db: one line saying it is damaged and how to move it aside; doing what the line
  says lets the node start again with its identity.
- Two data dirs with one key, running at once: the copy whose signed peer record is older (the
  one started first) warns once that another node runs with its key, naming the other's address,
  and counts it (`identity_conflicts`). Peers keep the newest record, so that is the copy the
  protocol guarantees to notice; the test accepts either.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import time
from pathlib import Path

from distributeai.p2p.identity import key_file_public_key, peer_id_from_public_key

from .netfixtures import cli, wait_for

POW = "8"  # proof-of-work bits: a few milliseconds
START_DEADLINE_S = 120  # a safety net for start-up on loaded cores
CONFLICT_DEADLINE_S = 120  # a check every 5-10 s; peers need the other copy's record first


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, "-m", "distributeai.cli.main", *args], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL)


def first_line(proc: subprocess.Popen, log: Path, timeout: float = START_DEADLINE_S) -> str:
    """The process's first stdout line (its readiness line), within `timeout`."""
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            assert left > 0 and proc.poll() is None, f"no readiness line; log:\n{log.read_text()[-3000:]}"
            if sel.select(timeout=min(left, 1.0)):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"stdout closed; log:\n{log.read_text()[-3000:]}"
                data += chunk
    return data.split(b"\n", 1)[0].decode()


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
    proc.stdout.close()


def start_node(data_dir: Path, *extra: str) -> tuple[subprocess.Popen, dict]:
    log = data_dir.parent / f"{data_dir.name}.log"
    proc = spawn(["node", "start", "--data-dir", str(data_dir), "--sandbox", "process", "--pow-difficulty", POW,
                  *extra], log)
    return proc, json.loads(first_line(proc, log))


def run_once(data_dir: Path) -> dict:
    """Start a node in `data_dir` until it is ready, then stop it: a data dir with a history."""
    proc, ready = start_node(data_dir)
    stop(proc)
    return ready


def assert_one_line_refusal(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and out.stdout == "", out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_a_key_file_with_flipped_bytes_is_refused_and_nothing_is_overwritten(tmp_path):
    data = tmp_path / "n"
    ready = run_once(data)
    key = data / "node.key"
    before = {name: (data / name).read_bytes() for name in ("node.json", "node.pow")}
    blob = bytearray(key.read_bytes())
    blob[3] ^= 0xFF
    blob[17] ^= 0x01
    key.write_bytes(bytes(blob))  # still 32 bytes, mode 0600: a valid key of another identity
    other = peer_id_from_public_key(key_file_public_key(key))

    line = assert_one_line_refusal(cli("node", "start", "--data-dir", str(data), "--sandbox", "process",
                                       "--pow-difficulty", POW, timeout=START_DEADLINE_S))
    assert ready["peer_id"] in line and other in line, line
    assert "restore the original node.key" in line.lower() and "move" in line, line
    assert {name: (data / name).read_bytes() for name in before} == before


def test_a_missing_key_file_beside_a_store_is_refused_and_no_key_is_made(tmp_path):
    data = tmp_path / "n"
    run_once(data)
    (data / "node.key").unlink()
    line = assert_one_line_refusal(cli("node", "start", "--data-dir", str(data), "--sandbox", "process",
                                       "--pow-difficulty", POW, timeout=START_DEADLINE_S))
    assert "node.key is missing" in line and "restore" in line, line
    assert not (data / "node.key").exists()


def test_a_truncated_store_is_one_line_and_its_recovery_step_works(tmp_path):
    data = tmp_path / "n"
    ready = run_once(data)
    db = data / "node.db"
    assert not (data / "node.db-wal").exists() or (data / "node.db-wal").stat().st_size == 0
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)

    line = assert_one_line_refusal(cli("node", "start", "--data-dir", str(data), "--sandbox", "process",
                                       "--pow-difficulty", POW, timeout=START_DEADLINE_S))
    assert "is damaged" in line and "mv " in line, line
    step = line.split("`")[1]  # the recovery command the line gives
    subprocess.run(["sh", "-c", step], check=True, timeout=30)
    assert not db.exists()
    assert run_once(data)["peer_id"] == ready["peer_id"]  # the identity in node.key is kept


def test_a_data_dir_in_use_is_one_line_not_a_traceback(tmp_path):
    """The same start-error path: another process holds the data dir's lock (exit 1, as before)."""
    import fcntl

    data = tmp_path / "n"
    data.mkdir(mode=0o700)
    fd = os.open(data / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        out = cli("node", "start", "--data-dir", str(data), "--sandbox", "process", "--pow-difficulty", POW,
                  timeout=START_DEADLINE_S)
    finally:
        os.close(fd)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [f"error: another process is using {data} (a node already runs there: "
                                               "stop it, or give another --data-dir)"]


def test_two_data_dirs_with_one_key_are_noticed(tmp_path):
    boot_log = tmp_path / "boot.log"
    boot = spawn(["bootstrap", "start", "--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0",
                  "--data-dir", str(tmp_path / "boot"), "--pow-difficulty", POW], boot_log)
    procs = [boot]
    try:
        boot_addr = first_line(boot, boot_log)
        first, ready = start_node(tmp_path / "a", "--bootstrap", boot_addr)
        procs.append(first)
        (tmp_path / "b").mkdir(mode=0o700)
        shutil.copy2(tmp_path / "a" / "node.key", tmp_path / "b" / "node.key")
        second, ready_b = start_node(tmp_path / "b", "--bootstrap", boot_addr)
        procs.append(second)
        assert ready_b["peer_id"] == ready["peer_id"]
        logs = {"a": tmp_path / "a.log", "b": tmp_path / "b.log"}
        others = {"a": ready_b["multiaddrs"], "b": ready["multiaddrs"]}

        def warned() -> str | None:
            for name, log in logs.items():
                if "another node is running with this node's key" in log.read_text():
                    return name
            return None

        name = wait_for(warned, CONFLICT_DEADLINE_S, "a warning that another node runs with this key")
        lines = [ln for ln in logs[name].read_text().splitlines() if "another node is running" in ln]
        assert len(lines) == 1 and ready["peer_id"] in lines[0]
        assert any(addr.split("/p2p/")[0] in lines[0] for addr in others[name]), (lines[0], others[name])
        info = json.loads(cli("node", "info", "--data-dir", str(tmp_path / name), "--json", timeout=60).stdout)
        assert info["overlay"]["identity_conflicts"] >= 1
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_only_a_newer_record_signed_by_our_own_key_counts_as_another_holder(caplog):
    """The rule the overlay applies to what a peer holds for it (p2p/selfcheck.py), on real records."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.envelope import seal_record
    from libp2p.peer.id import ID
    from libp2p.peer.peer_record import PeerRecord
    from multiaddr import Multiaddr

    from distributeai.p2p.selfcheck import SelfCheck, foreign_record

    ours, theirs = create_new_key_pair(b"\x01" * 32), create_new_key_pair(b"\x02" * 32)
    me, other = ID.from_pubkey(ours.public_key), ID.from_pubkey(theirs.public_key)
    there = [Multiaddr("/ip4/10.0.0.2/tcp/4001")]

    def record(peer: ID, seq: int, key) -> bytes:
        return seal_record(PeerRecord(peer, there, seq), key.private_key).marshal_envelope()

    assert foreign_record(me, 100, record(me, 101, ours)) == (101, ["/ip4/10.0.0.2/tcp/4001"])
    assert foreign_record(me, 100, record(me, 100, ours)) is None  # our own current record
    assert foreign_record(me, 100, record(me, 99, ours)) is None  # an earlier run's
    assert foreign_record(me, 100, record(other, 101, theirs)) is None  # another peer's
    assert foreign_record(me, 100, record(me, 101, theirs)) is None  # claims our id, not signed by our key
    forged = bytearray(record(me, 101, ours))
    forged[-1] ^= 1
    assert foreign_record(me, 100, bytes(forged)) is None
    assert foreign_record(me, 100, b"") is None and foreign_record(me, 100, b"\x00garbage") is None

    check = SelfCheck()
    caplog.set_level("WARNING", logger="distributeai.p2p.selfcheck")
    for blob in (record(me, 101, ours), record(me, 101, ours), record(me, 102, ours)):
        check.judge(me, 100, blob)
    assert check.conflicts == 2  # two records of another holder, one warning for their one address
    warnings = [r.getMessage() for r in caplog.records if r.name == "distributeai.p2p.selfcheck"]
    assert len(warnings) == 1 and me.to_base58() in warnings[0] and "/ip4/10.0.0.2/tcp/4001" in warnings[0]
