"""The node's REST API (issue 8), against real nodes on 127.0.0.1 with a real HTTP client
(urllib): the seed's two job files verified through it in a 3-node Docker network (and a file
uploaded to one node's blobs and streamed from another's by CID), its errors
(4xx naming the field, 413, 405, 404; nothing reaches the network), the bearer token, and a
schemathesis run over /openapi.json that must find no 5xx (nor any response the document does not
describe)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from distributeai.consensus.cid import cid_text
from distributeai.consensus.unixfs import FileBuilder
from distributeai.tools.devnet import Devnet

from .netfixtures import DEMO_STDOUT, cli, wait_for

pytestmark = pytest.mark.slow
WORKLOADS = Path(__file__).resolve().parent.parent / "sandbox" / "workloads"
TERMINAL = ("verified", "failed", "nondeterministic")


def http(method: str, url: str, body: bytes | None = None, token: str | None = None,
         content_type: str = "application/json") -> tuple[int, Message, bytes]:
    """(status, headers, body) of one request; 4xx and 5xx are answers, not exceptions."""
    headers = {"Content-Type": content_type} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers, r.read()  # a case-insensitive mapping
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url: str, token: str | None = None) -> tuple[int, dict]:
    status, _, body = http("GET", url, token=token)
    return status, json.loads(body)


def poll_until_done(api: str, job_id: str, timeout_s: float) -> dict:
    def done() -> dict | None:
        status, job = get_json(f"{api}/api/v1/jobs/{job_id}")
        assert status == 200, job
        return job if job["status"] in TERMINAL else None

    return wait_for(done, timeout_s, f"job {job_id} to reach a verdict")


def readme_curl_lines_work(api: str, verified_job: str) -> None:
    """Run the README's REST API lines as written (curl, from the repository's root), with this
    network's address for 127.0.0.1:8081 and JOB_ID the job the README's own POST made."""
    root = WORKLOADS.parent.parent
    text = (root / "README.md").read_text()
    block = text.split("## The seed's REST API", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("curl ")]
    assert len(lines) >= 7 and lines[0].startswith("curl -s -X POST"), lines
    job_id = None
    for line in lines:
        command = line.replace("http://127.0.0.1:8081", api)
        if "JOB_ID" in command:
            command = command.replace("JOB_ID", job_id)
        out = subprocess.run(command, shell=True, cwd=root, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (line, out.stderr)
        answer = json.loads(out.stdout)
        assert "error" not in answer, (line, answer)
        if job_id is None:
            job_id = answer["id"]
            poll_until_done(api, job_id, 180)
    assert job_id != verified_job  # a new job: every POST is a fresh nonce


@pytest.mark.timeout(900)  # a safety net over pyproject's 300 s: three Docker jobs, one of them Python
def test_the_seeds_job_files_verify_through_the_rest_api(tmp_path, docker_host):
    with Devnet(tmp_path / "net", nodes=3, sandbox="docker", docker_host=docker_host, api=True) as net:
        net.start()
        net.wait_connected()
        api = net.node_info[0]["api_url"]
        assert api.startswith("http://127.0.0.1:")
        ids = {}
        for name in ("hash-verify", "python-workload"):
            started = time.monotonic()
            status, headers, body = http("POST", f"{api}/api/v1/jobs", (WORKLOADS / f"{name}.json").read_bytes())
            assert status == 201, body
            assert headers["Content-Type"] == "application/json"
            job = json.loads(body)
            assert job["id"] == job["job_id"] and len(job["id"]) == 64 and job["status"] in ("bidding", "running")
            assert job["role"] == "submitter"
            done = poll_until_done(api, job["id"], 180)
            print(f"\n{name}: {done['status']} {time.monotonic() - started:.2f} s after POST")
            assert done["status"] == "verified", done
            ids[name] = job["id"]

        status, result = get_json(f"{api}/api/v1/jobs/{ids['hash-verify']}/result")
        assert status == 200 and result["stdout"] == DEMO_STDOUT and result["exit_code"] == 0
        status, result = get_json(f"{api}/api/v1/jobs/{ids['python-workload']}/result")
        assert status == 200 and result["stdout"].startswith("17984 primes below 200000; sha256 ")
        [entry] = result["files"]
        assert entry["path"] == "primes.txt"
        status, headers, data = http("GET", f"{api}/api/v1/jobs/{ids['python-workload']}/outputs/primes.txt")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        digest = hashlib.sha256(data).hexdigest()
        assert file_cid(data) == entry["cid"] and result["stdout"].strip().endswith(digest)
        assert data.startswith(b"2\n3\n5\n7\n") and data.count(b"\n") == 17984

        status, listed = get_json(f"{api}/api/v1/jobs?role=submitter&limit=1")
        assert status == 200 and listed["total"] == 2 and len(listed["jobs"]) == 1
        assert listed["jobs"][0]["id"] == ids["python-workload"]  # newest first
        status, page2 = get_json(f"{api}/api/v1/jobs?role=submitter&limit=1&offset=1")
        assert [j["id"] for j in page2["jobs"]] == [ids["hash-verify"]]
        # Another node knows the jobs too, from gossip: the certificate reaches every node, though
        # not necessarily yet (a node left out of the job shows it `announced` until it does).
        def known_elsewhere() -> bool:
            status, elsewhere = get_json(f"{net.node_info[1]['api_url']}/api/v1/jobs/{ids['hash-verify']}")
            assert status in (200, 404) and elsewhere.get("status", "announced") in ("announced", "verified")
            return elsewhere.get("status") == "verified"

        wait_for(known_elsewhere, 120, "node 1 to learn the certificate of the hash-verify job")

        readme_curl_lines_work(api, ids["hash-verify"])

        # Reputation in the submitter's view is a fold of its 3 certificates: +5 for each one a
        # peer agreed in. A verdict is published once k (2) reveals agree, so an executor can be
        # left out of any job and gain nothing from it; what is guaranteed is each peer's +5 per
        # agreement the certificates record, and at least one of the other two in every job (k = 2
        # distinct executors, at most one of them this node).
        status, mine = get_json(f"{api}/api/v1/jobs?role=submitter")
        assert status == 200 and mine["total"] == 3
        agreed: dict[str, int] = {}
        for listed_job in mine["jobs"]:
            status, view = get_json(f"{api}/api/v1/jobs/{listed_job['id']}")
            assert status == 200 and view["status"] == "verified", view
            for executor in view["executors"]:
                agreed[executor["peer_id"]] = agreed.get(executor["peer_id"], 0) + executor["agreed"]
        status, nodes = get_json(f"{api}/api/v1/nodes")
        others = {net.node_info[i]["peer_id"] for i in (1, 2)}
        by_peer = {n["peer_id"]: n for n in nodes["nodes"]}
        assert others <= set(by_peer)
        for p in others:
            assert by_peer[p]["connected"] and by_peer[p]["last_seen_ms"] > 0
            assert by_peer[p]["reputation"] == 5 * agreed.get(p, 0), (p, by_peer[p], agreed)
        assert sum(agreed.get(p, 0) for p in others) >= 3, agreed
        status, stats = get_json(f"{api}/stats")
        assert status == 200 and stats["completed_jobs"] == 3 and stats["total_jobs"] == 3  # the README made one more
        assert stats["active_nodes"] >= 3 and stats["pending_jobs"] == 0

        a_big_output_is_fetched_whole_and_streamed(net, api, tmp_path)
        a_blob_uploaded_to_one_node_is_streamed_from_another(net, tmp_path)


def file_cid(data: bytes) -> str:
    """The CID `ipfs add --cid-version 1` gives a file of these bytes (consensus/unixfs.py)."""
    builder = FileBuilder()
    builder.add(data)
    return cid_text(builder.finish()[0])


def a_big_output_is_fetched_whole_and_streamed(net: Devnet, api: str, tmp_path: Path) -> None:
    """Issue 16 item 4: a job writes 10.9 MB to /out (ten times the largest message; the same
    bytes on every executor: the numbers 1 to 1,500,000), is verified 2-of-2 by two of the three
    nodes, and the node that ran nothing fetches the file's blocks by its CID from the two
    executors: the REST API streams it whole (with its length), `job result --out` writes it."""
    expected = "".join(f"{i}\n" for i in range(1, 1_500_001)).encode()
    job_file = json.dumps({"name": "big-output", "docker_image": "alpine:latest", "replicas": 2, "quorum": 2,
                           "command": ["sh", "-c", "seq 1 1500000 > /out/big.bin"], "required_cpu": 1,
                           "required_memory": 128}).encode()
    status, _, body = http("POST", f"{api}/api/v1/jobs", job_file)
    assert status == 201, body
    job_id = json.loads(body)["id"]
    done = poll_until_done(api, job_id, 180)
    assert done["status"] == "verified", done
    assert done["files"] == [{"path": "big.bin", "size": len(expected), "cid": file_cid(expected)}]
    executors = {e["peer_id"] for e in done["executors"] if e["agreed"]}
    assert len(executors) == 2
    other = next(i for i, info in enumerate(net.node_info) if info["peer_id"] not in executors)
    elsewhere = net.node_info[other]["api_url"]
    wait_for(lambda: get_json(f"{elsewhere}/api/v1/jobs/{job_id}")[1].get("status") == "verified", 120,
             "the node that ran nothing to learn the certificate")
    status, headers, data = http("GET", f"{elsewhere}/api/v1/jobs/{job_id}/outputs/big.bin")
    assert status == 200 and headers["Content-Length"] == str(len(expected)) and data == expected
    out = tmp_path / "big-out"
    got = cli("job", "result", job_id, "--data-dir", str(net.node_dirs[other]), "--out", str(out))
    assert got.returncode == 0, got.stderr
    assert (out / "big.bin").read_bytes() == expected
    assert file_cid(expected) in got.stderr


def a_blob_uploaded_to_one_node_is_streamed_from_another(net: Devnet, tmp_path: Path) -> None:
    """Issue 16 item 5: POST /api/v1/blobs streams a file into node 0's block store (its CID is
    the one consensus.unixfs gives those bytes, as ipfs add --cid-version 1); GET
    /api/v1/blobs/{cid} on node 1 fetches its blocks over Bitswap and streams it whole, with its
    length; both list it. A directory's CID is refused (400, field cid)."""
    data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(3 * 32768 + 400))  # 3 MiB and a bit
    first, second = net.node_info[0]["api_url"], net.node_info[1]["api_url"]
    status, headers, body = http("POST", f"{first}/api/v1/blobs?name=data.bin", data,
                                 content_type="application/octet-stream")
    assert status == 201 and headers["Content-Type"] == "application/json", body
    added = json.loads(body)
    assert added["cid"] == file_cid(data) and added["size"] == len(data)
    status, headers, got = http("GET", f"{second}/api/v1/blobs/{added['cid']}")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Length"] == str(len(data)) and got == data
    for api, name in ((first, "data.bin"), (second, "")):
        status, listed = get_json(f"{api}/api/v1/blobs")
        assert status == 200 and {"cid": added["cid"], "size": len(data), "name": name} in [
            {k: row[k] for k in ("cid", "size", "name")} for row in listed["blobs"]], listed
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    done = cli("blob", "add", str(folder), "--json", "--data-dir", str(net.node_dirs[0]))
    assert done.returncode == 0, done.stderr
    status, error = get_json(f"{first}/api/v1/blobs/{json.loads(done.stdout)['cid']}")
    assert status == 400 and error["field"] == "cid" and "directory" in error["error"]


def blob_requests_are_checked(api: str) -> None:
    """On a node whose block store holds 4 MiB: an upload over that is refused (413) before it is
    read, one the pinned blocks leave no room for is 507, a malformed CID 400 naming the field; a
    refused upload leaves nothing listed."""
    # A client that announces 5 MiB is answered at once, before it sends them (as curl, which
    # waits for "100 Continue", sees it; urllib would still be sending when the node closes).
    host, port = api.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/blobs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (5 << 20))
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413" and "limit" in json.loads(body)["error"], answer
    status, _, answer = http("POST", f"{api}/api/v1/blobs?name=a%2Fb", b"x")
    assert status == 400 and json.loads(answer)["field"] == "name"
    status, listed = get_json(f"{api}/api/v1/blobs")
    assert (status, listed) == (200, {"blobs": []})
    first = os.urandom(3 << 20)
    status, _, answer = http("POST", f"{api}/api/v1/blobs", first, content_type="application/octet-stream")
    assert status == 201 and json.loads(answer)["cid"] == file_cid(first)
    status, _, answer = http("POST", f"{api}/api/v1/blobs", os.urandom(3 << 20), content_type="application/octet-stream")
    assert status == 507 and "full" in json.loads(answer)["error"]
    status, listed = get_json(f"{api}/api/v1/blobs")
    assert status == 200 and [row["cid"] for row in listed["blobs"]] == [file_cid(first)]
    for text in ("bafynotacid", "Qm" + "1" * 44, "x" * 300):
        status, error = get_json(f"{api}/api/v1/blobs/{text}")
        assert status == 400 and error["field"] == "cid", (text, error)


UNKNOWN_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # the raw block "hello world"


def test_bad_requests_get_a_4xx_naming_the_field_and_reach_nothing(tmp_path):
    with Devnet(tmp_path / "net", nodes=1, sandbox="process", api=True, extra_args=("--store-max", "4m")) as net:
        net.start()
        net.wait_connected()
        api = net.node_info[0]["api_url"]
        before = net.info(0)["counters"].get("gossip_out", 0)
        seed = json.loads((WORKLOADS / "hash-verify.json").read_text())
        bad = [
            (b"{not json", 400, "job"),
            (b"[1, 2]", 400, "job"),
            (json.dumps({**seed, "command": "echo hi"}).encode(), 400, "command"),
            (json.dumps({k: v for k, v in seed.items() if k != "docker_image"}).encode(), 400, "image"),
            (json.dumps({**seed, "required_memory": "lots"}).encode(), 400, "required_memory"),
            (json.dumps({**seed, "replicas": 2, "quorum": 3}).encode(), 400, "quorum"),
            (json.dumps({**seed, "colour": "blue"}).encode(), 400, "colour"),
            (json.dumps({**seed, "sandbox": "vm"}).encode(), 400, "sandbox"),
            (json.dumps({**seed, "sandbox": "wasm"}).encode(), 400, "wasm_module"),
            (json.dumps({**seed, "wasm_module": "not base64!"}).encode(), 400, "wasm_module"),
            (json.dumps({**seed, "verification": "sometimes"}).encode(), 400, "verification"),
            (json.dumps({**seed, "trust_threshold": 0}).encode(), 400, "trust_threshold"),
            (json.dumps({**seed, "spot_check_floor": 2}).encode(), 400, "spot_check_floor"),
            (json.dumps({**seed, "compare": {"kind": "fuzzy"}}).encode(), 400, "compare"),
            (json.dumps({**seed, "compare": {"kind": "numeric", "rel": -1}}).encode(), 400, "compare"),
            (json.dumps({**seed, "homogeneous": ["os"]}).encode(), 400, "homogeneous"),
            (json.dumps({**seed, "price": 10_000}).encode(), 409, "price"),  # more than this node can pay
            (json.dumps({**seed, "inputs": [{"cid": "bafyNOT", "path": "x"}]}).encode(), 400, "inputs"),
            (json.dumps({**seed, "inputs": [{"cid": UNKNOWN_CID, "path": "../x"}]}).encode(), 400, "inputs"),
            (json.dumps({**seed, "inputs": [{"cid": UNKNOWN_CID, "path": "x"}]}).encode(), 409, "inputs"),  # nobody has it
        ]
        for body, want, field in bad:
            status, headers, answer = http("POST", f"{api}/api/v1/jobs", body)
            error = json.loads(answer)
            assert (status, error.get("field")) == (want, field), (body[:80], status, error)
            assert error["error"] and headers["Content-Type"] == "application/json"
        # Over the documented limit (1 MiB): 413 before anything is parsed.
        status, _, answer = http("POST", f"{api}/api/v1/jobs", b"{" + b" " * (1 << 20) + b"}")
        assert status == 413 and json.loads(answer)["limit"] == 1 << 20
        for method, path, want, field in [
            ("GET", "/api/v1/jobs/" + "0" * 64, 404, "id"),
            ("GET", "/api/v1/jobs/xyz", 400, "id"),
            ("GET", "/api/v1/jobs/" + "0" * 64 + "/result", 404, "id"),
            ("GET", "/api/v1/jobs?limit=0", 400, "limit"),
            ("GET", "/api/v1/jobs?status=happy", 400, "status"),
            ("DELETE", "/api/v1/jobs", 405, None),
            ("PUT", "/stats", 405, None),
            ("GET", "/api/v2/jobs", 404, None),
        ]:
            status, headers, answer = http(method, api + path)
            assert status == want and json.loads(answer).get("field") == field, (method, path, status, answer)
            if status == 405:
                assert "GET" in headers["Allow"]
        # Nothing was announced, nothing stored.
        assert net.info(0)["counters"].get("gossip_out", 0) == before
        status, listed = get_json(f"{api}/api/v1/jobs")
        assert status == 200 and listed["total"] == 0 and listed["jobs"] == []
        # A good request still works, and a job that is not verified has no result yet.
        status, _, body = http("POST", f"{api}/api/v1/jobs", json.dumps({**seed, "replicas": 1, "quorum": 1,
                                                                        "command": ["sleep", "30"]}).encode())
        assert status == 201, body
        job_id = json.loads(body)["id"]
        status, error = get_json(f"{api}/api/v1/jobs/{job_id}/result")
        assert status == 409 and error["field"] == "id"
        blob_requests_are_checked(api)
        # Inputs by CID: data the node holds (`blob add`) is sized and shown to the job at /in.
        (tmp_path / "in.txt").write_text("by cid\n")
        added = net.call(0, {"op": "blob_add", "path": str(tmp_path / "in.txt")})
        status, _, body = http("POST", f"{api}/api/v1/jobs", json.dumps({
            **seed, "replicas": 1, "quorum": 1, "command": ["sh", "-c", "cat \"$IN_DIR/data/in.txt\""],
            "inputs": [{"cid": added["cid"], "path": "data/in.txt"}]}).encode())
        assert status == 201, body
        assert {"verification", "executors_run"} <= set(json.loads(body))  # null until the certificate
        done = poll_until_done(api, json.loads(body)["id"], 120)
        assert done["status"] == "verified" and done["stdout"] == "by cid\n", done
        # How it was verified: k-of-n (replicate, the default) by its one executor.
        assert (done["verification"], done["executors_run"], done["rejected"]) == ("replicated", 1, None), done
        # An adaptive job with no trusted executor yet is replicated as the spec's k-of-n; its view
        # keeps the policy the user asked for.
        status, _, body = http("POST", f"{api}/api/v1/jobs", json.dumps({
            **seed, "replicas": 1, "quorum": 1, "verification": "adaptive", "trust_threshold": 5,
            "spot_check_floor": 0.25, "compare": {"kind": "numeric", "rel": 1e-6, "abs": "1e-9"}}).encode())
        assert status == 201, body
        done = poll_until_done(api, json.loads(body)["id"], 120)
        assert done["status"] == "verified" and done["verification"] == "replicated", done
        assert (done["verification_policy"], done["trust_threshold"], done["spot_check_floor"]) == ("adaptive", 5, 0.25)
        assert done["compare"] == {"kind": "numeric", "rel": "1e-06", "abs": "1e-9", "files": []}
        # A wasm module too large for the spec (over 4 KiB): sent base64, named in the signed spec by
        # its CID, and read by the executor from the block store.
        module = (WORKLOADS / "hashverify.wasm").read_bytes()
        status, _, body = http("POST", f"{api}/api/v1/jobs", json.dumps({
            "sandbox": "wasm", "wasm_module": base64.b64encode(module).decode(), "command": ["hashverify"],
            "stdin": "Hello\n", "replicas": 1, "quorum": 1}).encode())
        assert status == 201, body
        done = poll_until_done(api, json.loads(body)["id"], 120)
        assert done["status"] == "verified" and done["stdout"] == DEMO_STDOUT, done
        assert done["wasm_cid"] == file_cid(module), done


def test_off_loopback_rules_a_token_is_required(tmp_path):
    """No address but 127.0.0.1 may be bound here: `--http-auth token` forces the rule a
    non-loopback listener gets (p2p/httpauth.py decides; tests/test_local_access.py checks it)."""
    with Devnet(tmp_path / "net", nodes=1, sandbox="process", api=True, extra_args=("--http-auth", "token")) as net:
        net.start()
        api = net.node_info[0]["api_url"]
        token_file = net.node_dirs[0] / "http.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        seed = (WORKLOADS / "hash-verify.json").read_bytes()
        for method, path, body in [("GET", "/stats", None), ("GET", "/api/v1/jobs", None),
                                   ("POST", "/api/v1/jobs", seed), ("GET", "/openapi.json", None),
                                   ("POST", "/api/v1/blobs", seed), ("GET", "/api/v1/blobs", None)]:
            for wrong in (None, "not-the-token"):
                status, headers, answer = http(method, api + path, body, token=wrong)
                assert status == 401 and "Bearer" in headers["WWW-Authenticate"], (method, path)
        assert get_json(f"{api}/api/v1/jobs", token=token) == (200, {"jobs": [], "total": 0, "limit": 50, "offset": 0})
        status, _, body = http("POST", f"{api}/api/v1/blobs", seed, token=token, content_type="application/octet-stream")
        assert status == 201 and json.loads(body)["cid"] == file_cid(seed)
        # One node: a job of quorum 1 is one it can take (a larger quorum is refused as too_few_nodes).
        alone = json.dumps({**json.loads(seed), "replicas": 1, "quorum": 1}).encode()
        status, _, body = http("POST", f"{api}/api/v1/jobs", alone, token=token)
        assert status == 201, body


@pytest.mark.timeout(900)  # a safety net over pyproject's 300 s: its own run may take up to 600 s
def test_schemathesis_finds_no_server_error(tmp_path, bwrap_ready):
    """Property-based requests from the OpenAPI document: every check schemathesis has but
    "schema-valid data is accepted" (a job file's rules span fields: an image or a module, quorum
    at most replicas, ...). Jobs it manages to submit run in bubblewrap, never on the host."""
    with Devnet(tmp_path / "net", nodes=1, sandbox="bwrap", api=True) as net:
        net.start()
        api = net.node_info[0]["api_url"]
        st = Path(sys.executable).with_name("st")
        out = subprocess.run([str(st), "run", f"{api}/openapi.json", "--checks", "all",
                              "--exclude-checks", "positive_data_acceptance", "--max-examples", "60",
                              "--generation-deterministic", "--request-timeout", "30"],
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"})
        summary = [line for line in out.stdout.splitlines() if "generated" in line or "passed" in line]
        print("\nschemathesis:", *summary[-2:])
        assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
        assert net.node_procs[0].poll() is None
        status, stats = get_json(f"{api}/stats")
        assert status == 200
