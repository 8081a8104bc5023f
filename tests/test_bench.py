"""`distributeai bench` runs its own network and reports the figures issue 6 asks for. This checks
that it measures (keys, plausible values), not how fast anything is: speed is the benchmark's job."""

from __future__ import annotations

import json

import pytest

from .netfixtures import cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("sandbox", ["process", "wasm"])
def test_bench_reports_every_figure(sandbox):
    out = cli("bench", "--nodes", "3", "--jobs", "4", "--concurrency", "2", "--sandbox", sandbox, "--json", timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["outcomes"] == {"verified": 4}
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]
    assert r["jobs_per_s"] > 0 and r["cpu_s_per_job"] > 0 and r["messages_per_job"] > 0
    assert r["bytes_per_job"] > 0 and r["peak_rss_mb"] > 10 and r["baseline_ms"] > 0
    assert r["latency_ratio"] == pytest.approx(r["latency_ms"]["p50"] / r["baseline_ms"], rel=0.01)


def test_bench_rejects_a_network_too_small_for_2_of_3():
    out = cli("bench", "--nodes", "2")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_data_bench_moves_the_file_and_reports_its_figures():
    size = 8 << 20
    out = cli("bench", "--data", "8m", "--through-jobs", "--json", timeout=900)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["size"] == size and r["cid"].startswith("bafybei") and r["import_mb_per_s"] > 0
    for key, providers in (("one_provider", 1), ("two_providers", 2)):
        fetch = r[key]
        assert fetch["written"] == size and fetch["providers"] == providers and fetch["mb_per_s"] > 0
        assert fetch["cpu_s_per_gib_fetcher"] > 0 and len(fetch["cpu_s_per_gib_providers"]) == providers
    # Whether the kill lands before a small fetch ends is up to the machine; when it does, the get completes.
    killed = r["provider_killed"]
    assert killed["kill_ok"] or (killed.get("killed_mid_way") is False and "error" not in killed), killed

    # Through jobs: an input fetched by 3 executors, each timed by its own node; the job verified.
    a = r["jobs"]["input_to_three"]
    assert a["status"] == "verified" and a["submit_to_verified_s"] > 0, a
    assert len(a["executors"]) == 3, a
    for e in a["executors"]:
        assert e["fetched_bytes"] >= size and e["fetch_s"] > 0 and e["fetch_mb_per_s"] > 0, e
    assert len(a["nodes"]) == 5 and all(x["cpu_s_per_gib"] > 0 for x in a["nodes"]), a["nodes"]
    # An output fetched by `job result --out` from its 2 executors, and by CID from 1.
    b = r["jobs"]["output_from_two"]
    assert b["status"] == "verified" and "error" not in b, b
    assert b["one_provider"]["written"] == size and b["one_provider"]["providers"] == 1 and b["one_provider"]["cids_match"]
    assert b["two_providers"]["written"] == size and b["two_providers"]["not_fetched"] == []
    assert b["one_provider"]["mb_per_s"] > 0 and b["two_providers"]["mb_per_s"] > 0 and b["ratio_two_to_one"] > 0
    k = b["provider_killed"]
    assert k["kill_ok"] or (k.get("killed_mid_way") is False and "error" not in k and k["cids_match"]), k
    assert k["written"] == size, k


def test_data_bench_rejects_a_bad_size():
    out = cli("bench", "--data", "lots")
    assert out.returncode == 2 and "--data" in out.stderr
