"""The network simulator (tools/simulation.py) on small networks: what the protocol guarantees holds,
churn has real effects, and the same seed gives the same report."""

from __future__ import annotations

import json
import subprocess
import sys

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.messages import JobSpec, job_id_of, verify
from distributeai.tools import simulation, simworld
from distributeai.tools.simulation import SimConfig, Simulation
from distributeai.tools.simworld import LedgerViews


def run(**kw) -> tuple[Simulation, dict]:
    sim = Simulation(SimConfig(**kw))
    return sim, sim.run()


def test_no_liars_every_job_verified_with_the_honest_result():
    sim, r = run(nodes=50, jobs=20, liars=0.0, seed=1)
    assert r["jobs"]["verified_correct"] == 20 and r["jobs"]["unfinished"] == 0
    assert r["share_correct"] == 1.0
    assert r["bids_per_job"]["received_min"] >= 40  # every node that fits bids (node/bidding.py)
    assert r["messages_per_job"]["gossip"] > 50 * 2  # announcement and certificate reach every node


def test_certificates_are_real_and_check_out_as_every_node_checks_them():
    sim, r = run(nodes=40, jobs=10, liars=0.2, seed=4)
    for job in sim.jobs:
        checked = verify_certificate(job.certificate)
        assert checked.certificate.status == job.status
        assert checked.certificate.job_id == job.job_id == job_id_of(checked.certificate.signed_spec)
        assert verify(checked.certificate.signed_spec, JobSpec).signer == sim.pks[job.submitter]
        assert checked.tally.outcome != "verified" or checked.tally.result_hash == job.honest_hash
        # Every node that got the certificate folded it into its own ledger.
        assert job.job_id in sim.views.of(job.submitter).applied


def test_independent_liars_never_get_a_wrong_result_certified():
    for seed in (1, 2):
        sim, r = run(nodes=60, jobs=40, liars=0.3, seed=seed)
        j = r["jobs"]
        assert j["verified_wrong"] == 0  # two different lies never make a 2-of-3 quorum
        assert j["verified_correct"] + j["failed"] + j["nondeterministic"] == 40
        assert r["share_correct"] >= 0.8
        assert r["executors"]["share_of_awards_to_liars"] > 0


def test_a_wrong_verdict_needs_a_quorum_of_colluding_liars():
    sim, r = run(nodes=60, jobs=40, liars=0.3, collude=True, seed=2)
    assert r["jobs"]["verified_wrong"] > 0  # the known limit of k-of-n
    for job in sim.jobs:
        checked = verify_certificate(job.certificate)
        if checked.tally.outcome == "verified" and checked.tally.result_hash != job.honest_hash:
            agreeing = [sim.index[e] for e in checked.tally.agreeing]
            assert len(agreeing) >= 2 and all(sim.liar[v] for v in agreeing)


def test_churn_makes_the_submitter_replace_executors():
    sim, r = run(nodes=50, jobs=30, liars=0.0, churn_per_min=2.0, downtime_s=300, quorum=3, seed=1)
    errors = r["replacements"]["slot_errors"]
    # Awards to nodes gone offline (award_undelivered), executors that never commit (tick at the
    # deadline), committed executors gone before their reveal (tick at the reveal window).
    assert errors.get("unreachable") and errors.get("timed_out") and errors.get("no_reveal")
    replaced = [j for j in sim.jobs if any(h[1] == "replacement" for h in j.history)]
    assert len(replaced) == r["replacements"]["jobs_with_replacement"] > 0
    assert r["jobs"]["verified_wrong"] == 0 and r["jobs"]["unfinished"] == 0
    assert r["churn"]["left"] > 0 and r["churn"]["runs_recovered"] > 0


def test_same_seed_same_report_and_signing_bids_changes_no_outcome():
    a = run(nodes=40, jobs=15, liars=0.2, churn_per_min=1.0, seed=7)[1]
    assert a == run(nodes=40, jobs=15, liars=0.2, churn_per_min=1.0, seed=7)[1]
    assert a != run(nodes=40, jobs=15, liars=0.2, churn_per_min=1.0, seed=8)[1]
    signed = run(nodes=40, jobs=15, liars=0.2, churn_per_min=1.0, seed=7, sign_bids=True)[1]
    for r in (a, signed):
        del r["crypto"], r["parameters"]["sign_bids"]
    assert signed == a


def test_bid_probability_cuts_bids_but_is_not_the_default():
    assert SimConfig().bid_probability == 1.0
    r = run(nodes=200, jobs=5, liars=0.0, bid_probability=0.1, seed=3)[1]
    assert r["bids_per_job"]["received_mean"] < 50
    assert r["share_correct"] == 1.0


def test_ledger_views_split_only_when_nodes_see_different_certificates():
    sim, _ = run(nodes=10, jobs=2, liars=0.0, seed=5)
    checked = [verify_certificate(j.certificate) for j in sim.jobs]
    views = LedgerViews(4, 100)
    views.apply_certificate(checked[0], bytearray([1, 1, 1, 1]), 0)
    assert views.copies == 0 and len(views.ledgers) == 1
    views.apply_certificate(checked[1], bytearray([1, 1, 0, 0]), 0)
    assert views.copies == 1
    assert checked[1].certificate.job_id in views.of(0).applied
    assert checked[1].certificate.job_id not in views.of(3).applied
    assert checked[0].certificate.job_id in views.of(3).applied
    views.apply_offence(0, b"x" * 32)  # seen by node 0 alone
    assert views.of(0).reputation_of(b"x" * 32) == -10 and views.of(1).reputation_of(b"x" * 32) == 0


def test_copied_constants_still_match_the_node():
    from distributeai.node import agent, submitting
    from distributeai.p2p import workarounds_pubsub as workarounds

    assert (simworld.MESH_DEGREE, simworld.MESH_DEGREE_LOW, simworld.MESH_DEGREE_HIGH) == (
        workarounds.GOSSIP_DEGREE, workarounds.GOSSIP_DEGREE_LOW, workarounds.GOSSIP_DEGREE_HIGH)
    assert simulation.REANNOUNCE_MS == submitting.REANNOUNCE_INTERVAL_S * 1000
    assert simulation.OFFENCES == submitting.OFFENCES
    settings = agent.NodeSettings(sandbox_name="docker")
    assert simulation.PRICE == settings.price
    assert simulation.REQUEST_TIMEOUT_MS == settings.request_timeout_s * 1000


def test_simulator_imports_only_consensus_and_pure_node_modules():
    code = ("import sys; import distributeai.tools.simulation; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('trio', 'libp2p', 'docker', 'socket')"
            " or m.startswith(('distributeai.p2p', 'distributeai.sandbox', 'distributeai.cli'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_prints_one_json_object():
    out = subprocess.run([sys.executable, "-m", "distributeai.cli.main", "simulate", "--nodes", "30", "--jobs", "5",
                          "--churn", "0", "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["jobs"]["submitted"] == 5 and r["parameters"]["nodes"] == 30
    assert {"gossip", "direct"} <= set(r["messages_per_job"])
    assert {"p50", "p95", "p99"} <= set(r["time_to_verdict_ms"])
    assert r["wall"]["wall_time_s"] >= 0 and r["wall"]["measured_us"]["bid_verify_us"] > 0
