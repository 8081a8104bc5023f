"""A floating-point workload on a real network (issue 18, comparators): three node processes run a
numpy matrix product in Docker (distributeai/python-numpy:1, built by scripts/build-python-image.sh
--numpy if the daemon lacks it), summed blockwise over a block count and order drawn from
os.urandom, standing in for a thread count or BLAS kernel that differs between executors, so the
last bits of the results differ between runs. Compared `numeric` (3 of 3 within 1e-9), every
executor's result agrees, the certificate names the lowest hash of the three, and it is checked
by every node; the same job compared `exact` ends `nondeterministic`.

The results of two runs differ unless both drew the same block count and order (at least 16
blocks in a random order: odds below 1e-13) and, besides, rounding left every one of the 260
printed numbers bit-identical; so the exact job's verdict is as certain as a test's can be.
"""

from __future__ import annotations

import os
import time

import pytest

from distributeai.consensus.codec import Identity
from distributeai.consensus.compare import Compare
from distributeai.consensus.messages import JobSpec, sign
from distributeai.node.paths import key_path
from distributeai.p2p.identity import load_or_create_key
from distributeai.tools.devnet import Devnet

from .test_ai_example import IMAGE, numpy_image  # noqa: F401  (a fixture: the image, built if missing)

JOB_S = 60
SCRIPT = """
import json, os
import numpy as np
rng = np.random.default_rng(7)
n = 256
a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
draw = os.urandom(64)
k = 16 + draw[0] % 48  # blocks: a thread count that differs between executors
edges = np.linspace(0, n, k + 1).astype(int)
order = sorted(range(k), key=lambda i: draw[1 + i % 63] * 64 + i)[::1 if draw[63] % 2 else -1]
c = np.zeros((n, n))
for i in order:
    c += a[:, edges[i]:edges[i + 1]] @ b[edges[i]:edges[i + 1], :]
print(json.dumps({"trace": float(np.trace(c)), "sum": float(c.sum()), "row0": c[0, :2].tolist()}))
with open("/out/out.json", "w") as f:
    json.dump({"diag": np.diag(c).tolist()}, f)
"""
NUMERIC = Compare("numeric", "1e-9", "1e-9", ("out.json",))


def job(submitter: Identity, compare: Compare) -> bytes:
    return sign(submitter, JobSpec(submitter=submitter.public_key, nonce=os.urandom(16),
                                   created_ms=int(time.time() * 1000), name="float", image=IMAGE,
                                   command=("python3", "-c", SCRIPT), replicas=3, quorum=3, max_total_results=3,
                                   timeout_s=JOB_S, compare=compare))


@pytest.mark.docker
@pytest.mark.timeout(300)
def test_a_float_workload_verifies_numeric_and_is_nondeterministic_exact(docker_host, numpy_image, tmp_path):
    with Devnet(tmp_path / "net", nodes=3, sandbox="docker", docker_host=docker_host) as net:
        net.start()
        net.wait_connected()
        me = Identity.from_seed(load_or_create_key(key_path(net.node_dirs[0])))
        ids = {net.call(0, {"op": "submit", "signed_spec": job(me, c).hex()})["job_id"]: c.kind
               for c in (NUMERIC, Compare())}
        views = {kind: net.call(0, {"op": "wait", "job_id": j, "timeout": 2 * JOB_S}, timeout=2 * JOB_S + 30)
                 for j, kind in ids.items()}

        numeric = views["numeric"]
        assert numeric["status"] == "verified", numeric
        hashes = {e["result_hash"] for e in numeric["executors"]}
        assert len(hashes) == 3 and all(e["agreed"] for e in numeric["executors"])  # three results, one verdict
        assert numeric["result_hash"] == min(hashes)
        assert numeric["stdout"].startswith('{"trace": ') and [f["path"] for f in numeric["files"]] == ["out.json"]

        exact = views["exact"]
        assert exact.get("status") == "nondeterministic", exact
        assert len({e["result_hash"] for e in exact["executors"]}) == 3
        assert "stdout_sha256" in exact["differences"]["differing"]
        assert [m["path"] for m in exact["differences"]["manifest"]] == ["out.json"]

        # Every node checked the certificates and holds the same verdicts.
        for i in (1, 2):
            for j, kind in ids.items():
                seen = net.call(i, {"op": "wait", "job_id": j, "timeout": JOB_S}, timeout=JOB_S + 30)
                assert seen["status"] == views[kind]["status"] and seen["result_hash"] == views[kind]["result_hash"]
