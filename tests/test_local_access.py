"""Issue 7 item 6, local access: a node whose key is encrypted runs and signs its user's jobs; its key
appears in nothing it writes or serves; it listens only where it was told; its control socket is
0600; its HTTP endpoints ask for a bearer token off loopback (or when forced).

The decision (`token_required`) is tested pure; the token check through real listeners on
127.0.0.1 (tests may bind no other address), in-process and in a node process."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from distributeai.tools.devnet import Devnet, LineReader
from distributeai.p2p import httpauth, identity, keyfile
from distributeai.p2p.http import serve_http

from .netfixtures import DEMO_ARGS, DEMO_STDOUT, cli

PASS = "local access test passphrase"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
NOBODY = 65534


def get(url: str, token: str | None = None, scheme: str = "Bearer") -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"{scheme} {token}"} if token else {})
    try:
        with OPENER.open(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


# --- the token, pure and through a real listener ------------------------------------------------------


@pytest.mark.parametrize("host, required", [
    ("127.0.0.1", False), ("127.1.2.3", False), ("::1", False), ("[::1]", False), ("localhost", False),
    ("0.0.0.0", True), ("", True), ("::", True), ("192.168.1.5", True), ("10.0.0.1", True), ("example.org", True),
    ("::ffff:127.0.0.1", True),  # not what an IPv6 socket treats as loopback: ask for the token
])
def test_a_token_is_required_exactly_off_loopback(host, required):
    assert httpauth.token_required(host) is required
    assert httpauth.token_required(host, force=True) is True


def test_authorization_header_check():
    assert httpauth.authorized(b"Bearer abc", "abc") and httpauth.authorized(b"bearer  abc ", "abc")
    for header in (None, b"", b"Bearer", b"Bearer abd", b"Bearer abcd", b"Basic abc", b"abc", b"Bearer ab c"):
        assert not httpauth.authorized(header, "abc"), header


def test_token_file_is_made_0600_once_and_refused_when_looser(tmp_path):
    token = httpauth.load_or_create_token(tmp_path)
    path = tmp_path / httpauth.TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) == 43
    assert httpauth.load_or_create_token(tmp_path) == token
    assert httpauth.http_token("127.0.0.1", tmp_path) is None
    assert httpauth.http_token("0.0.0.0", tmp_path) == token
    named = tmp_path / "mine"
    named.write_text("s3cret\n")
    named.chmod(0o600)
    assert httpauth.http_token("127.0.0.1", tmp_path, force=True, token_file=named) == "s3cret"
    named.chmod(0o644)
    with pytest.raises(httpauth.TokenFileError, match="chmod 600"):
        httpauth.load_or_create_token(tmp_path, named)
    with pytest.raises(FileNotFoundError):
        httpauth.load_or_create_token(tmp_path, tmp_path / "absent")


def test_a_real_listener_with_the_token_forced_on_answers_401_without_it():
    async def route():
        return 200, "text/plain", b"secret-ish\n"

    results = {}

    async def main():
        async with trio.open_nursery() as nursery:
            for name, token in (("open", None), ("locked", "t0ken")):
                host, port = await nursery.start(partial(serve_http, token=token), "127.0.0.1", 0, {"/x": route})
                url = f"http://{host}:{port}/x"
                for case, kw in (("none", {}), ("wrong", {"token": "t0ke"}), ("basic", {"token": "t0ken", "scheme": "Basic"}),
                                 ("right", {"token": "t0ken"})):
                    results[name, case] = await trio.to_thread.run_sync(lambda: get(url, **kw))
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert all(results["open", case] == (200, b"secret-ish\n") for case in ("none", "wrong", "basic", "right"))
    for case in ("none", "wrong", "basic"):
        assert results["locked", case][0] == 401 and b"secret" not in results["locked", case][1], case
    assert results["locked", "right"] == (200, b"secret-ish\n")


@pytest.mark.slow
def test_a_node_forced_to_ask_for_the_token_serves_metrics_only_with_it(tmp_path):
    d = tmp_path / "node"
    token_file = tmp_path / "metrics.token"
    token_file.write_text("my-metrics-token\n")
    token_file.chmod(0o644)
    args = ["node", "start", "--data-dir", str(d), "--sandbox", "process", "--metrics", "127.0.0.1:0",
            "--http-auth", "token", "--http-token-file", str(token_file)]
    out = cli(*args)
    assert out.returncode == 2 and "chmod 600" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    token_file.chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "distributeai.cli.main", *args], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "log", "wb"), stdin=subprocess.DEVNULL)
    try:
        LineReader(proc, "node", tmp_path / "log").readline(60)
        url = json.loads(cli("node", "info", "--data-dir", str(d), "--json").stdout)["metrics_url"]
        assert url.startswith("http://127.0.0.1:")
        assert get(url)[0] == 401
        assert get(url, "wrong")[0] == 401
        status, body = get(url, "my-metrics-token")
        assert status == 200 and b"distributeai_peers" in body
        assert not (d / httpauth.TOKEN_FILE).exists()  # the named file was used
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stdout.close()


# --- a network whose keys are encrypted, logging at debug ----------------------------------------------


@pytest.fixture(scope="module")
def net():
    # A root others may traverse, so that only the control socket's own mode keeps another uid out.
    root = Path(tempfile.mkdtemp(prefix="dai-local-", dir="/tmp"))
    root.chmod(0o755)
    saved = os.environ.get("DISTRIBUTEAI_PASSPHRASE")
    os.environ["DISTRIBUTEAI_PASSPHRASE"] = PASS  # the nodes create encrypted keys and unlock them
    n = Devnet(root / "net", nodes=3, sandbox="process", log_level="debug", metrics=True)
    try:
        with n:
            try:
                n.start()
            finally:
                if saved is None:
                    del os.environ["DISTRIBUTEAI_PASSPHRASE"]
                else:
                    os.environ["DISTRIBUTEAI_PASSPHRASE"] = saved
            n.wait_connected()
            yield n
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def submitted(net):
    """The demo job submitted from node 1 with no passphrase anywhere in the CLI's environment."""
    env = {k: v for k, v in os.environ.items() if k != "DISTRIBUTEAI_PASSPHRASE"}
    out = subprocess.run([sys.executable, "-m", "distributeai.cli.main", "submit", "--data-dir", str(net.node_dirs[0]),
                          "--json", *DEMO_ARGS], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL, env=env)
    return out


@pytest.mark.slow
def test_encrypted_keys_run_and_the_node_signs_its_users_job(net, submitted):
    for d, info in zip(net.node_dirs, net.node_info):
        blob = (d / "node.key").read_bytes()
        assert keyfile.is_encrypted(blob) and stat.S_IMODE((d / "node.key").stat().st_mode) == 0o600
        seed = keyfile.decrypt_seed(blob, PASS.encode())
        assert identity.peer_id_from_public_key(identity.public_key_bytes(seed)) == info["peer_id"]
    boot_key = net.root / "bootstrap" / "bootstrap.key"  # `bootstrap start` took the passphrase too
    shown = cli("key", "show", "--key-file", str(boot_key), "--json")
    assert json.loads(shown.stdout)["encrypted"] is True and net.bootstrap_addr.endswith(json.loads(shown.stdout)["peer_id"])
    assert submitted.returncode == 0, submitted.stderr
    view = json.loads(submitted.stdout)
    assert view["status"] == "verified" and view["stdout"] == DEMO_STDOUT
    # A spec naming another submitter is refused by the node: the socket signs only for itself.
    import time

    from distributeai.consensus.jobfile import parse_job
    from distributeai.consensus.messages import JobSpec, encode_body

    other = identity.public_key_bytes(os.urandom(32))
    spec = JobSpec(submitter=other, nonce=os.urandom(16), created_ms=int(time.time() * 1000),
                   **parse_job({"image": "alpine:latest", "command": ["true"]}))
    answer = net.call(0, {"op": "submit", "spec": encode_body(spec).hex()})
    assert answer.get("code") == "wrong_signer", answer


def listening_inet(pid: int) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """(TCP sockets in LISTEN, bound UDP sockets) that process `pid` holds, as (address, port)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    tcp, udp = set(), set()
    for table, out in (("tcp", tcp), ("tcp6", tcp), ("udp", udp), ("udp6", udp)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (table.startswith("tcp") and state != "0A"):
                continue
            addr_hex, port_hex = local.split(":")
            raw = bytes.fromhex(addr_hex)
            if len(raw) == 4:
                addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:  # four little-endian 32-bit words
                addr = socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))
            out.add((addr, int(port_hex, 16)))
    return tcp, udp


def listening_unix(pid: int) -> set[str]:
    inodes = {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
              if os.readlink(fd).startswith("socket:[")}
    paths = set()
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[6] in inodes and int(fields[3], 16) & 0x10000:  # __SO_ACCEPTCON: listening
            paths.add(fields[7] if len(fields) > 7 else "(unnamed)")
    return paths


@pytest.mark.slow
def test_each_node_listens_only_where_it_was_told(net):
    for i, d in enumerate(net.node_dirs):
        info = net.info(i)
        expected = set()
        for addr in net.node_info[i]["multiaddrs"]:  # what --listen (the default 127.0.0.1:0) bound
            parts = addr.split("/")
            expected.add((parts[2], int(parts[4])))
        metrics = info["metrics_url"].removeprefix("http://").removesuffix("/metrics")
        expected.add((metrics.rsplit(":", 1)[0], int(metrics.rsplit(":", 1)[1])))
        tcp, udp = listening_inet(info["pid"])
        print(f"\nnode {i + 1} (pid {info['pid']}): listening tcp {sorted(tcp)}, udp {sorted(udp)}, "
              f"unix {sorted(listening_unix(info['pid']))}")
        assert tcp == expected and all(a == "127.0.0.1" for a, _ in tcp), (tcp, expected)
        assert udp == set(), udp
        assert listening_unix(info["pid"]) == {str(d / "control.sock")}


NOBODY_CONNECT = """
import errno, os, socket, sys
os.setgroups([]); os.setgid(%d); os.setuid(%d)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
else:
    print("connected")
""" % (NOBODY, NOBODY)


def connect_as_nobody(path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", NOBODY_CONNECT, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_the_control_socket_is_0600_and_another_uid_gets_eacces(net):
    if os.getuid() != 0:
        pytest.skip("switching to uid 65534 needs root")
    sock = net.node_dirs[0] / "control.sock"
    st = sock.lstat()
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    # Every directory above it may be traversed by others here: only the socket's mode stops them.
    assert all(p.stat().st_mode & 0o001 for p in sock.parents if p != Path("/"))
    assert connect_as_nobody(sock) == "EACCES"
    sock.chmod(0o666)  # the control of this test: the same client connects once the mode allows it
    try:
        assert connect_as_nobody(sock) == "connected"
    finally:
        sock.chmod(0o600)
    assert connect_as_nobody(sock) == "EACCES"
    assert net.info(0)["peer_id"] == net.node_info[0]["peer_id"]  # the owner still gets answers


# Last: it stops the network to read the processes' stdout to the end.
def encodings(seed: bytes) -> dict[str, bytes]:
    """Every form in which a seed could leak into text or bytes."""
    pub = identity.public_key_bytes(seed)
    proto = b"\x08\x01\x12\x40" + seed + pub  # libp2p's marshalled Ed25519 private key
    b58 = identity._b58encode
    forms = {
        "raw": seed,
        "hex": seed.hex().encode(),
        "repr": repr(seed)[2:-1].encode(),
        "base58": b58(seed).encode(),
        "base58 seed+pub": b58(seed + pub).encode(),
        "base58 protobuf": b58(proto).encode(),
        "base64 protobuf": base64.b64encode(proto).rstrip(b"="),
    }
    for name, enc in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        forms[name] = enc(seed)[:40]  # the first 30 bytes: also a prefix of seed+pub's encoding
    return forms


def find_leaks(blob: bytes, seeds: dict[str, bytes]) -> list[str]:
    lowered = blob.lower()
    found = []
    for who, seed in seeds.items():
        for form, needle in encodings(seed).items():
            hay = lowered if form == "hex" else blob
            if needle in hay:
                found.append(f"{who} as {form}")
    return found


@pytest.mark.slow
def test_no_key_appears_in_anything_the_network_wrote_or_served(net, submitted):
    assert submitted.returncode == 0, submitted.stderr
    seeds = {f"node{i + 1}": keyfile.decrypt_seed((d / "node.key").read_bytes(), PASS.encode())
             for i, d in enumerate(net.node_dirs)}
    seeds["bootstrap"] = keyfile.decrypt_seed((net.root / "bootstrap" / "bootstrap.key").read_bytes(), PASS.encode())
    # The control of this scan: a key in a file is found in each of its forms.
    for form, needle in encodings(seeds["node1"]).items():
        assert find_leaks(b"..." + needle + b"...", seeds) , form
    served = {"submit's output": (submitted.stdout + submitted.stderr).encode()}
    for i in range(len(net.node_dirs)):
        info = cli("node", "info", "--data-dir", str(net.node_dirs[i]), "--json")
        served[f"node info {i + 1}"] = (info.stdout + info.stderr).encode()
        served[f"/metrics of node {i + 1}"] = get(net.info(i)["metrics_url"])[1]
    for path in ("/", "/api/stats", "/metrics"):
        served[f"bootstrap {path}"] = get(net.http_url + path)[1]
    for key, value in served.items():
        assert value, f"{key} is empty: the scan would prove nothing"
    # Stop the processes, then read what they printed on stdout to the end.
    for p in net.procs:
        p.send_signal(signal.SIGTERM)
    for i, p in enumerate(net.procs):
        p.wait(timeout=30)
        served[f"stdout of process {i}"] = p.stdout.read()
    written = {}
    for path in sorted(net.root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.suffix != ".key":
            written[str(path.relative_to(net.root))] = path.read_bytes()
    logs = [name for name in written if name.endswith("log")]
    assert len(logs) == 4 and all(b" DEBUG " in written[name] for name in logs), logs
    assert any(name.endswith("node.db") for name in written)
    leaks = {name: find_leaks(blob, seeds) for name, blob in {**served, **written}.items()}
    leaks = {name: found for name, found in leaks.items() if found}
    total = sum(len(b) for b in [*served.values(), *written.values()])
    print(f"\nscanned {len(served)} outputs and {len(written)} files ({total / 1e6:.1f} MB, "
          f"{sum(len(written[n]) for n in logs) / 1e6:.1f} MB of debug logs) for 4 seeds in "
          f"{len(encodings(b'x' * 32))} forms each: {leaks or 'nothing found'}")
    assert leaks == {}
