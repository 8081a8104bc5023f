"""The network simulator (tools/simulation.py) on small networks: what the protocol guarantees holds,
churn has real effects, sampled bidding keeps the bids per job near c*n and strangers behind
established peers outside the sample, ledgers converge once every node has reconciled, and the
same seed gives the same report."""

from __future__ import annotations

import json
import subprocess
import sys

import random

import pytest

from distributeai.consensus.adaptive import NO_PLATFORM, runtime_class
from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.ledger import Ledger, effect_of
from distributeai.consensus.messages import JobSpec, job_id_of, verify
from distributeai.consensus.sampling import eligible
from distributeai.consensus.submitter import Timing
from distributeai.consensus.submitter_rules import strangers_ahead
from distributeai.tools import simulation, simworld
from distributeai.tools.simulation import SimConfig, Simulation
from distributeai.tools.simworld import CertificateSets, Mesh, reconcile_cost


def run(**kw) -> tuple[Simulation, dict]:
    sim = Simulation(SimConfig(**kw))
    return sim, sim.run()


def test_no_liars_every_job_verified_with_the_honest_result():
    sim, r = run(nodes=50, jobs=20, liars=0.0, seed=1, sample_factor=0)
    assert r["jobs"]["verified_correct"] == 20 and r["jobs"]["unfinished"] == 0
    assert r["share_correct"] == 1.0
    assert r["bids_per_job"]["received_min"] >= 40  # unsampled, every node that fits bids (node/bidding.py)
    assert r["messages_per_job"]["gossip"] > 50 * 2  # announcement and certificate reach every node


def test_sampled_bidding_takes_bids_only_from_eligible_nodes_about_c_times_n():
    sim, r = run(nodes=600, jobs=20, liars=0.1, seed=2)
    assert r["parameters"]["sample_factor"] == 4 and r["jobs"]["unfinished"] == 0
    assert "not_eligible" not in r["rejected"]  # nodes honour the sample the submitter checks
    for job in sim.jobs:  # every bid the certificate carries is from a node eligible for the job
        for raw in verify_certificate(job.certificate).certificate.awards:
            award = verify(raw, simulation.Award).msg
            assert eligible(job.job_id, award.executor, job.share)
    assert r["bids_per_job"]["received_mean"] <= 4 * 3 * 1.5  # about c * n, never the whole network
    assert r["share_correct"] >= 0.9


def test_a_bid_window_too_short_for_the_gossip_widens_and_every_job_still_ends():
    sim, r = run(nodes=400, jobs=10, liars=0.0, seed=3, timing=Timing(sampled_bid_window_ms=50))
    assert r["sampling"]["jobs_widened"] > 0 and r["messages_per_job"]["gossip_by_kind"]["widen"] > 0
    assert r["jobs"]["verified_correct"] == 10
    widened = [j for j in sim.jobs if j.widenings]
    assert all(j.share > j.start_share for j in widened)
    assert all(any(h[1] == "bids_widened" for h in j.history) for j in widened)


class Watched(Simulation):
    """Records, at each bid or tick of a sampled job still in bidding, its share, the ranks of the
    bids in hand, the `outside_best` the simulator computed and whether it had widened before;
    `blind` withholds that meta from the submitter (as the simulator did before it modelled `strangers_ahead`)."""

    blind = False

    def __init__(self, cfg: SimConfig) -> None:
        super().__init__(cfg)
        self.last: dict[int, tuple] = {}

    def _outside(self, job, view) -> dict:
        meta = super()._outside(job, view)
        m = job.machine
        if m is not None and m.state == "bidding":
            self.last[job.index] = (m.share, list(m.rank.values()), meta.get("outside_best"), m.widened_ms is not None)
        return {} if self.blind else meta


class Blind(Watched):
    blind = True


def test_a_sampled_job_widens_rather_than_settle_on_strangers_while_an_established_peer_is_outside():
    """As jobs verify, their executors earn reputation; a later sampled job whose n-th best bid is a
    stranger's while the submitter or one of its connected peers outside the sample has earned some
    widens (submitter_rules.strangers_ahead, fed the node's `outside_best`) instead of settling.
    Bidding closes only at a tick (the simulator passes no `unbid_best`), so the last record of a
    job is what it closed on: never with strangers ahead while the rule holds (from the job's first
    sample only). Blind to `outside_best`, jobs do."""
    kw = dict(nodes=300, jobs=60, liars=0.1, seed=2)

    def settled_on_strangers(sim: Watched) -> list[int]:
        return [i for i, (share, ranks, best, widened) in sim.last.items()
                if strangers_ahead(ranks, 3, share, best, widened)]

    sim = Watched(SimConfig(**kw))
    r = sim.run()
    assert r["jobs"]["unfinished"] == 0 and r["jobs"]["verified_wrong"] == 0
    assert r["sampling"]["strangers_ahead_widenings"] > 0
    widened_with_bids = sum(1 for j in sim.jobs for h in j.history
                            if h[1] == "bids_widened" and int(h[3].split(", ")[1].split()[0]) >= 3)
    assert widened_with_bids == r["sampling"]["strangers_ahead_widenings"]
    assert settled_on_strangers(sim) == []
    blind = Blind(SimConfig(**kw))
    b = blind.run()
    assert b["sampling"]["strangers_ahead_widenings"] == 0
    assert settled_on_strangers(blind)  # the scenario is one where outside_best decides


def test_certificates_are_real_and_check_out_as_every_node_checks_them():
    sim, r = run(nodes=40, jobs=10, liars=0.2, seed=4)
    for job in sim.jobs:
        checked = verify_certificate(job.certificate)
        assert checked.certificate.status == job.status
        assert checked.certificate.job_id == job.job_id == job_id_of(checked.certificate.signed_spec)
        assert verify(checked.certificate.signed_spec, JobSpec).signer == sim.pks[job.submitter]
        assert checked.tally.outcome != "verified" or checked.tally.result_hash == job.honest_hash
        # Every node that got the certificate holds it: the submitter was online.
        bit = next(i for i, c in enumerate(sim.views.certificates) if c.certificate.job_id == job.job_id)
        assert sim.views.set_of(job.submitter) >> bit & 1


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
    def report(**kw) -> dict:
        r = run(nodes=40, jobs=15, liars=0.2, churn_per_min=1.0, **kw)[1]
        assert r.pop("submitter_cpu_ms_per_job")["mean"] > 0  # measured CPU: the one figure that varies
        return r

    a = report(seed=7)
    assert a == report(seed=7)
    assert a != report(seed=8)
    signed = report(seed=7, sign_bids=True)
    for r in (a, signed):
        del r["crypto"], r["parameters"]["sign_bids"]
        # A signed bid rides in the certificate (up to CERT_BIDS_MAX): reconciliation moves more bytes.
        del r["ledgers"]["reconciliation"]["bytes"], r["ledgers"]["after_everyone_reconciled"]["bytes"]
    assert signed == a


def test_bid_probability_cuts_bids_but_is_not_the_default():
    assert SimConfig().bid_probability == 1.0
    r = run(nodes=200, jobs=5, liars=0.0, bid_probability=0.1, seed=3, sample_factor=0)[1]
    assert r["bids_per_job"]["received_mean"] < 50
    assert r["share_correct"] == 1.0


def test_certificate_sets_give_one_view_per_set_and_reconciliation_gives_the_union():
    sim, _ = run(nodes=10, jobs=3, liars=0.0, seed=5)
    checked = [verify_certificate(j.certificate) for j in sim.jobs]
    online = bytearray(b"\1") * 4
    sets = CertificateSets(4, 100, online)
    sets.publish(checked[0], 1000)
    sets.leave(3)
    online[3] = 0
    sets.publish(checked[1], 2000)  # node 3 is offline: it misses this one
    sets.publish(checked[2], 3000)
    assert [sets.set_of(v) for v in range(4)] == [0b111, 0b111, 0b111, 0b001]
    assert sets.of(0) is sets.of(1)  # same certificates, one view
    fresh = Ledger(genesis=100)
    for c in checked:
        fresh.apply_certificate(c, c.certificate.created_ms)
    assert sets.of(0).reputation == fresh.reputation and sets.of(0).spent == fresh.spent
    online[3] = 1
    sets.rejoin(3)
    assert sets.reconcile(3, 0) == (2, 0) and sets.bytes_of(0b110) == 5000
    assert sets.distinct(range(4)) == (1, 1)
    sets.apply_offence(0, b"x" * 32)  # seen by node 0 alone: its own view
    assert sets.of(0).reputation_of(b"x" * 32) == -10 and sets.of(1).reputation_of(b"x" * 32) == 0
    assert sets.distinct(range(4)) == (1, 2)


def test_reconciliation_costs_grow_with_the_difference_not_the_history():
    assert reconcile_cost(0, 10) == reconcile_cost(0, 100_000)
    assert reconcile_cost(1, 1000)[1] < reconcile_cost(10, 1000)[1] < reconcile_cost(100, 1000)[1]
    assert reconcile_cost(1, 1000)[0] <= 8


def test_ledgers_converge_once_every_node_has_reconciled_and_diverge_without():
    kw = dict(nodes=120, jobs=30, liars=0.1, churn_per_min=1.0, downtime_s=20, seed=6)
    r = run(**kw)[1]
    led = r["ledgers"]
    assert led["reconciliation"]["on_return"] > 0 and led["reconciliation"]["certificates_pulled"] > 0
    assert led["after_everyone_reconciled"]["distinct_sets"] == 1
    assert led["after_everyone_reconciled"]["distinct_view_digests"] in (None, 1)
    apart = run(**kw, reconcile=False)[1]["ledgers"]
    assert apart["distinct_sets_at_end"] > 1 and apart["after_everyone_reconciled"] == {}


def test_arrivals_for_a_few_targets_match_a_flood_of_the_whole_mesh():
    rng = random.Random(4)
    mesh = Mesh(300, rng, lambda: rng.uniform(5, 80), 6.0)
    order, _ = mesh.spread(7, 100.0)
    flood = {v: t for t, v in order}
    targets = rng.sample(range(300), 12)
    got = mesh.arrivals(7, targets, 100.0)
    assert set(got) == set(targets)
    assert all(abs(got[v] - flood[v]) < 1e-6 for v in targets)


def test_copied_constants_still_match_the_node():
    from distributeai.node import agent, submitting
    from distributeai.p2p import workarounds_pubsub as workarounds

    assert (simworld.MESH_DEGREE, simworld.MESH_DEGREE_LOW, simworld.MESH_DEGREE_HIGH) == (
        workarounds.GOSSIP_DEGREE, workarounds.GOSSIP_DEGREE_LOW, workarounds.GOSSIP_DEGREE_HIGH)
    assert simulation.reannounce_after_ms is submitting.reannounce_after_ms  # one schedule for both
    assert simulation.bidder_trust is submitting.bidder_trust  # one count of a bidder's CV for both
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


# --- adaptive verification (issue 18) ------------------------------------------------------------

ADAPTIVE = dict(nodes=60, jobs=40, warmup=40, liars=0.0, sample_factor=0, trust_threshold=3, seed=11)


def _cls():
    return runtime_class(JobSpec(submitter=b"\0" * 32, nonce=b"\0" * 16, created_ms=0, name="x",
                                 image=simulation.IMAGE, command=("true",)), NO_PLATFORM)


def test_adaptive_runs_fewer_executors_per_job_than_replicate_and_pays_for_what_ran():
    """After a warm-up of replicate jobs makes executors trusted (at a threshold the spec signs),
    adaptive jobs mostly run once: fewer runs and credits per job than 2-of-3, no wrong verdict.
    A single run pays one price, a spot-checked job two (the ledger pays each agreeing executor)."""
    sim, a = run(**ADAPTIVE, verification="adaptive")
    _, r = run(**ADAPTIVE, verification="replicate")
    assert a["jobs"]["unfinished"] == r["jobs"]["unfinished"] == 0
    assert a["jobs"]["verified_wrong"] == r["jobs"]["verified_wrong"] == 0
    v = a["verification"]
    assert v["share_single"] > 0.5 and r["verification"]["share_replicated"] == 1.0
    assert a["runs_per_job"] < r["runs_per_job"] - 1
    assert v["credits_per_verified_job"] < r["verification"]["credits_per_verified_job"]
    for job in sim.jobs[ADAPTIVE["warmup"]:]:
        checked = verify_certificate(job.certificate)  # every node re-derives the mode and the draw
        assert checked.mode == job.checked.mode
        paid = sum(t.amount for t in effect_of(checked, 0).transfers)
        self_run = checked.spec.submitter in checked.reveals
        if checked.mode == "single":
            assert len(checked.reveals) == 1 and job.runs == 1 and paid == (0 if self_run else 1)
        elif checked.mode == "spot_checked":
            assert len(checked.reveals) == 2 and paid == (1 if self_run else 2)
    # The bids carried the CV of the submitter's view: every trusted executor was at the threshold.
    trusted = [verify_certificate(j.certificate) for j in sim.jobs if j.checked.trusted is not None]
    assert trusted and all(c.certificate.evidence.cv >= 3 for c in trusted)


def test_a_strategic_cheater_is_caught_by_the_first_spot_check_with_floor_one():
    """Floor 1.0: every single run is checked, so a cheater's wrong result meets an honest one,
    the job escalates to 2-of-3, it dissents and its CV resets to 0; no wrong verdict is certified."""
    sim, r = run(**(ADAPTIVE | dict(strategic=0.2, cheat_prob=1.0, spot_check_floor=1.0, jobs=60)),
                 verification="adaptive")
    st = r["strategic"]
    assert r["jobs"]["verified_wrong"] == 0 and st["wrong_verdicts"] == 0
    assert st["cheated"] > 0 and st["caught"] > 0 and st["wrong_verdicts_before_caught"] == {0: st["catches"]}
    assert r["verification"]["share_single"] == 0 and r["verification"]["escalated"] > 0
    everything = sim.views.ledger_of((1 << sim.views.count) - 1)
    for job in sim.jobs:
        if job.alone is not None and sim.liar[job.alone] == simulation.STRATEGIC and job.checked.mode == "replicated":
            cheater = sim.pks[job.alone]
            assert cheater in job.checked.tally.dissenting
            after = (job.checked.certificate.created_ms, job.job_id + b"\0")
            assert everything.trust(cheater, _cls(), before=after) == 0  # caught: its CV reset


def test_strategic_cheaters_get_wrong_verdicts_through_a_low_floor():
    sim, r = run(**(ADAPTIVE | dict(strategic=0.2, cheat_prob=1.0, spot_check_floor=0.05, jobs=60)),
                 verification="adaptive")
    st = r["strategic"]
    assert st["wrong_verdicts"] > 0 and r["jobs"]["verified_wrong"] == st["wrong_verdicts"]
    assert st["expected_wrong_before_caught"] == round((1 - 1 / 3) / (1 / 3), 3)  # p = max(1/CV, floor)


def test_expected_wrong_verdicts_before_a_cheater_is_caught():
    assert simulation.expected_wrong_before_caught(10, 50_000, 1.0) == pytest.approx(9)
    assert simulation.expected_wrong_before_caught(10, 200_000, 1.0) == pytest.approx(4)
    assert simulation.expected_wrong_before_caught(10, 1_000_000, 0.5) == 0
    # Cheating half the time: honest runs that get checked raise its CV, so checks get rarer.
    assert simulation.expected_wrong_before_caught(10, 50_000, 0.5) > 9
    assert simulation.expected_wrong_before_caught(10, 200_000, 0.5) == pytest.approx(4)


def test_the_report_has_the_verification_fields():
    r = run(nodes=30, jobs=5, liars=0.0, verification="adaptive", strategic=0.1, seed=2)[1]
    assert r["parameters"]["verification"] == "adaptive" and r["runs_per_job"] >= 1
    assert {"verified_wrong", "verified_correct"} <= set(r["jobs"])
    assert {"share_single", "share_spot_checked", "share_replicated", "escalated", "wrong_verdict_rate",
            "credits_per_verified_job", "by_mode"} <= set(r["verification"])
    assert {"cheaters", "caught", "wrong_verdicts", "wrong_verdicts_before_caught_mean",
            "expected_wrong_before_caught"} <= set(r["strategic"])
    assert run(nodes=30, jobs=3, liars=0.0, seed=2)[1]["strategic"] is None


def test_cli_takes_the_verification_flags_and_refuses_bad_ones():
    base = [sys.executable, "-m", "distributeai.cli.main", "simulate", "--nodes", "30", "--jobs", "4", "--churn", "0"]
    out = subprocess.run(base + ["--verification", "adaptive", "--strategic", "0.1", "--warmup", "3",
                                 "--trust-threshold", "2", "--spot-check-floor", "0.2", "--cheat-prob", "1", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["parameters"].items() >= {"verification": "adaptive", "strategic": 0.1, "warmup": 3, "trust_threshold": 2,
                                       "spot_check_floor": 0.2, "cheat_prob": 1.0}.items()
    assert r["jobs"]["submitted"] == 4 and "runs_per_job" in r and r["strategic"]["cheaters"] == 3
    for bad in (["--verification", "sometimes"], ["--strategic", "0.95"], ["--spot-check-floor", "2"],
                ["--trust-threshold", "0"], ["--warmup", "-1"]):
        out = subprocess.run(base + bad, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "Traceback" not in out.stderr and out.stderr.strip(), bad
