"""`distributeai simulate`: run tools/simulation.py and add what the simulation itself must not
read: the wall time and peak memory of the simulation, and the measured cost of the signature
checks it counted but did once (with the submitter's CPU per job, the bids it did not verify
priced in)."""

from __future__ import annotations

import resource
import time

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.codec import Identity
from distributeai.consensus.messages import Announce, Bid, JobSpec, sign, verify
from distributeai.consensus.validate import check_announce
from .simulation import EPOCH_MS, SimConfig, Simulation


def _mean_us(fn, reps: int) -> float:
    started = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - started) / reps * 1e6


def measure_checks(certificate: bytes | None, reps: int = 200) -> dict:
    """Microseconds per check, on this machine, with the consensus functions the nodes call."""
    me = Identity.from_seed(b"\x07" * 32)
    spec = sign(me, JobSpec(submitter=me.public_key, nonce=b"\0" * 16, created_ms=EPOCH_MS, name="x",
                            image="alpine:latest", command=("true",)))
    announce = sign(me, Announce(spec, ("/sim/0",)))
    bid = Bid(b"\1" * 32, me.public_key, 1, 2000, 2048, ("docker",), EPOCH_MS)
    out = {"bid_sign_us": _mean_us(lambda: sign(me, bid), reps)}
    raw_bid = sign(me, bid)
    out["bid_verify_us"] = _mean_us(lambda: verify(raw_bid, Bid), reps)
    out["announce_check_us"] = _mean_us(lambda: check_announce(announce, EPOCH_MS), reps)
    if certificate is not None:
        out["certificate_check_us"] = _mean_us(lambda: verify_certificate(certificate), max(10, reps // 4))
    return {k: round(v, 1) for k, v in out.items()}


def run_simulation(cfg: SimConfig) -> dict:
    started = time.perf_counter()
    sim = Simulation(cfg)
    report = sim.run()
    wall = time.perf_counter() - started
    cert = next((j.certificate for j in sim.jobs if j.certificate is not None), None)
    us = measure_checks(cert)
    jobs = max(1, report["jobs"]["submitted"])
    crypto = report["crypto"]
    bids = report["bids_per_job"]["received_mean"] or 0
    # What the shortcuts skipped, priced at the measured cost of one check.
    cost = {
        "submitter_bid_verify_s_per_job": round(bids * us["bid_verify_us"] / 1e6, 3),
        "network_bid_sign_s_per_job": round(bids * us["bid_sign_us"] / 1e6, 3),
        "network_announce_checks_s_per_job": round(
            crypto.get("announce_checks_by_nodes", 0) / jobs * us["announce_check_us"] / 1e6, 3),
    }
    if "certificate_check_us" in us:
        cost["network_certificate_checks_s_per_job"] = round(
            crypto.get("certificate_checks_by_nodes", 0) / jobs * us["certificate_check_us"] / 1e6, 3)
    if "certificate_check_us" in us:
        cost["network_certificate_checks_by_reconciliation_s"] = round(
            crypto.get("certificate_checks_by_reconciliation", 0) * us["certificate_check_us"] / 1e6, 3)
    cpu = report["submitter_cpu_ms_per_job"]
    if cpu["mean"] is not None and not cfg.sign_bids:  # the bids it took unsigned, at one verify each
        cpu["with_bid_verification_mean"] = round(cpu["mean"] + bids * us["bid_verify_us"] / 1000, 3)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    report["wall"] = {"wall_time_s": round(wall, 2), "peak_rss_mb": round(peak_mb, 1), "measured_us": us,
                      "cpu_of_counted_checks": cost}
    return report


def describe(r: dict) -> list[str]:
    """The report as a few lines for a terminal."""
    p, j, m, t, b = r["parameters"], r["jobs"], r["messages_per_job"], r["time_to_verdict_ms"], r["bids_per_job"]
    sm, cpu, led = r["sampling"], r["submitter_cpu_ms_per_job"], r["ledgers"]
    after = led["after_everyone_reconciled"]
    v, st = r["verification"], r["strategic"]
    warm = f" after {p['warmup']} warm-up" if p["warmup"] else ""
    sampled = (f"sampled bidding c={p['sample_factor']} (N estimated {sm['estimated_nodes_mean']}): "
               f"{sm['eligible_at_announce_mean']} eligible at the announcement, {sm['jobs_widened']} jobs widened "
               f"({sm['strangers_ahead_widenings']} widenings for strangers ahead)"
               if p["sample_factor"] else "every node bids (--sample-factor 0)")
    return [
        f"{p['nodes']} nodes, {j['submitted']} jobs{warm} ({p['replicas']} executors, {p['quorum']} must agree), "
        f"liars {p['liars']:.0%}{' colluding' if p['collude'] else ''}, churn {p['churn_per_min']}/min, "
        f"latency {p['latency_ms']} ms, seed {p['seed']}",
        f"share correct {r['share_correct']:.4f}: verified {j['verified_correct']} right, {j['verified_wrong']} wrong; "
        f"failed {j['failed']}, nondeterministic {j['nondeterministic']}, unfinished {j['unfinished']}",
        f"time to verdict p50 {t['p50']} ms, p95 {t['p95']} ms, p99 {t['p99']} ms (virtual)",
        f"messages per job: gossip {m['gossip']}, direct {m['direct']} (bids {m['direct_by_kind'].get('bid', 0)})",
        f"bids per job {b['received_mean']} (in the bid window {b['in_bid_window_mean']}); "
        f"replacements {r['replacements']['total']}",
        sampled,
        f"submitter CPU per job {cpu['mean']} ms measured"
        + (f", {cpu['with_bid_verification_mean']} ms with its bids verified" if "with_bid_verification_mean" in cpu
           else ""),
        f"ledgers: {led['distinct_sets_at_end']} distinct certificate sets at the end "
        f"({led['distinct_sets_online_at_end']} among online nodes); "
        + (f"after every node reconciled ({after['rounds']} more rounds): {after['distinct_sets']}" if after
           else "no reconciliation"),
        f"verification {p['verification']}: {r['runs_per_job']} runs per job; single {v['share_single']:.1%}, "
        f"spot-checked {v['share_spot_checked']:.1%}, replicated {v['share_replicated']:.1%} ({v['escalated']} escalated); "
        f"{v['credits_per_verified_job']} credits per verified job"
        + (f"; {v['trusted_executors_at_end']} executors trusted at the end" if "trusted_executors_at_end" in v else ""),
        *([f"strategic cheaters {st['cheaters']} ({st['ran_alone']} ran alone, {st['cheated']} cheated): "
           f"{st['wrong_verdicts']} wrong verdicts, {st['caught']} caught after {st['wrong_verdicts_before_caught_mean']} "
           f"wrong verdicts each on average (expected {st['expected_wrong_before_caught']}); {st['not_caught_yet']} not "
           f"caught yet"] if st else []),
        f"{r['virtual_time_s']} s simulated in {r['wall']['wall_time_s']} s, peak RSS {r['wall']['peak_rss_mb']} MB",
    ]
