"""Fuzzing every decoder a peer or a user can reach (issue 7, item 1).

- a short seeded run of each decoder (the 100,000-input run is `scripts/fuzz.sh`): no finding,
  both outcomes reached, every rejection counted in a real NodeMetrics registry;
- the inputs behind each finding the fuzzer made, kept as regressions;
- hypothesis: arbitrary bodies, re-signed, against each message type;
- a real node and a real attacker peer process: hundreds of fuzzed gossip messages and requests
  on each protocol, and fuzzed control-API lines over the node's Unix socket; the node counts each
  one under the reason the decoder gives, stays up, changes no state, and verifies a job after.
"""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributeai.consensus.codec import encode
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import MESSAGE_TYPES, verify
from distributeai.consensus.gossip import check_gossip
from distributeai.p2p.identity import peer_id_from_public_key
from distributeai.tools import fuzz
from distributeai.tools.fuzz.corpus import FIXED_NOW_MS, identity, seed_messages
from distributeai.tools.fuzz.runner import MAX_CPU_S
from distributeai.tools.fuzz.targets import build

SHORT_RUN = 2000

DECODERS = fuzz.decoder_names()


@pytest.fixture(scope="module")
def decoders():
    return build(seed_messages())


@pytest.mark.parametrize("name", DECODERS)
def test_a_short_run_of_each_decoder_finds_nothing_and_counts_every_rejection(name):
    [report] = fuzz.run(SHORT_RUN, seed=7, names=[name])
    summary = report.to_json()
    assert report.findings == [], json.dumps(summary["finding_details"], indent=1)
    assert report.inputs == SHORT_RUN and report.accepted + report.rejected == SHORT_RUN
    # Both outcomes are reached: the seeds (and mutations that keep them valid, re-signed) pass,
    # and most mutations are refused.
    assert report.accepted > 0 and report.rejected > SHORT_RUN // 4, summary
    assert report.metric_rejected_total == sum(report.rejected_by_reason.values()) >= report.rejected
    assert report.max_cpu_ms < MAX_CPU_S * 1000


def test_a_run_is_reproducible_from_its_seed():
    first, again, other = (fuzz.run(500, seed=s, names=["gossip", "control"]) for s in (3, 3, 4))
    key = [(r.accepted, r.rejected_by_reason) for r in first]
    assert key == [(r.accepted, r.rejected_by_reason) for r in again]
    assert key != [(r.accepted, r.rejected_by_reason) for r in other]


def test_mutated_bodies_are_re_signed_so_they_reach_body_validation():
    [report] = fuzz.run(3000, seed=11, names=["gossip"])
    deep = {"stale", "future_dated", "wrong_signer", "bad_award", "bad_reveal", "bad_verdict", "wrong_kind"}
    assert len(deep & set(report.rejected_by_reason)) >= 3, report.rejected_by_reason


# --- regressions: each input that was a finding, now an ordinary rejection (or accepted) ----------

def _outcome(decoders, name: str, data: bytes) -> list[str]:
    started = time.thread_time()
    reasons = fuzz.outcome_of(decoders[name], data)
    assert time.thread_time() - started < MAX_CPU_S
    return reasons


REGRESSIONS = [
    # The control API: each of these raised past the connection's handler (RecursionError,
    # OverflowError), which ends trio.serve_listeners and with it the node.
    ("control", b"[" * 100_000, "control_bad_request"),
    ("control", b'{"op": "wait", "job_id": "", "timeout": 1' + b"0" * 400 + b"}", None),  # capped at an hour
    ("control", b'{"op": "tasks", "job_id": "", "start": 1e400}', "control_bad_request"),
    ("control", b'{"op": "list", "limit": 1' + b"0" * 30 + b"}", "control_bad_request"),
    ("control", b'{"op": "wait", "job_id": "", "timeout": NaN}', "control_bad_request"),
    ("control", b'{"op": "find_peers", "peer_ids": ["x"], "lookup": "yes"}', "control_bad_request"),
    # 110 MB of nested arrays (a 100k-input run's finding): 19 s of CPU in json.loads; the node
    # reads at most MAX_REQUEST bytes, and now so does the parser.
    ("control", b"[" * 700 + b"[0]," * (5 << 18) + b"]" * 700, "control_bad_request"),
    # Job files: a traceback instead of one line and exit code 2 ...
    ("job_file", b"[" * 100_000, "job_file_job"),
    ("job_file", b'{"image": "a", "command": ["x"], "price": 1' + b"0" * 5000 + b"}", "job_file_job"),
    ("job_file", json.dumps({"image": "a", "command": ["x"], "required_memory": "9" * 5000}).encode(),
     "job_file_required_memory"),
    ("job_file", b"\xff\xfe{}", "job_file_job"),
    ("job_file", b"[" * 700 + b"[0]," * (1 << 18) + b"]" * 700, "job_file_job"),
    # ... or accepted, and the spec then refused by every node.
    ("job_file", json.dumps({"image": "a", "command": ["x"] * 300}).encode(), "job_file_command"),
    ("job_file", json.dumps({"image": "a", "command": ["x" * 5000]}).encode(), "job_file_command"),
    ("job_file", json.dumps({"image": "a", "command": ["x" * 4000] * 20}).encode(), "job_file_job"),
    ("job_file", json.dumps({"image": "a", "command": ["x"], "env": {"N" * 300: "v"}}).encode(), "job_file_env"),
    ("job_file", json.dumps({"image": "a", "command": ["x"],
                             "env": {f"K{i}": "v" for i in range(129)}}).encode(), "job_file_env"),
    # A numeric comparator's tolerance as a JSON integer too large for a float.
    ("job_file", json.dumps({"image": "a", "command": ["x"], "compare": {"kind": "numeric",
                                                                        "abs": 10**400}}).encode(), "job_file_compare"),
    # A tasks file: shlex is quadratic in a token's length (1 MB on one line: 40 s of CPU).
    ("tasks_file", b"a" * 1_000_000, "job_file_tasks"),
    ("tasks_file", b"'" + b"b" * 9000 + b"'\n", "job_file_tasks"),
    ("tasks_file", b"x\n" * 2000, "job_file_tasks"),
]


@pytest.mark.parametrize("name,data,reason", REGRESSIONS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(REGRESSIONS)])
def test_each_finding_is_now_a_counted_rejection(decoders, name, data, reason):
    assert _outcome(decoders, name, data) == ([reason] if reason else [])


def test_a_job_file_parse_job_accepts_makes_a_spec_every_node_accepts(decoders):
    # The largest command that fits: accepted, and (the decoder checks it) its spec verifies.
    assert _outcome(decoders, "job_file", json.dumps({"image": "a", "command": ["x" * 4000] * 15}).encode()) == []


def test_the_seeds_carry_the_verification_fields_and_each_is_accepted(decoders):
    """Issue 18's fields join the fuzz: adaptive, numeric and homogeneous specs, a bid with its
    platform, certificates with evidence (a single run and a spot check), a job file with every
    new field; each seed is accepted by its decoder, so mutations start from valid ones."""
    from distributeai.consensus.adaptive import NO_PLATFORM
    from distributeai.consensus.certificate import verify_certificate
    from distributeai.consensus.messages import Bid, JobSpec
    from distributeai.tools.fuzz.corpus import job_file_seeds

    c = seed_messages()
    specs = [verify(raw, JobSpec).msg for raw in c.of("spec")]
    assert {s.verification for s in specs} == {"replicate", "adaptive"}
    assert any(s.compare.kind == "numeric" for s in specs) and any(s.homogeneous for s in specs)
    assert any(verify(raw, Bid).msg.platform != NO_PLATFORM for raw in c.of("bid"))
    modes = [verify_certificate(raw).mode for raw in c.of("certificate")]
    assert {"single", "spot_checked", "replicated"} <= set(modes)
    for raw in c.of("certificate"):
        assert _outcome(decoders, "gossip", raw) == []
    for raw in c.of("bid"):
        assert _outcome(decoders, "bid", raw) == []
    new = [seed for seed in job_file_seeds() if b"verification" in seed]
    assert new and all(_outcome(decoders, "job_file", seed) == [] for seed in new)
    bad = json.dumps({"image": "a", "command": ["x"], "spot_check_floor": 7}).encode()
    assert _outcome(decoders, "job_file", bad) == ["job_file_spot_check_floor"]


def test_session_framing_refusals_keep_or_reset_the_session(decoders):
    from distributeai.consensus.names import BID_PROTOCOL
    from distributeai.p2p.session import request_frame, response_frame

    good = request_frame(1, BID_PROTOCOL, b"x")
    assert _outcome(decoders, "session", good + request_frame(5, BID_PROTOCOL, b"y")) == []
    # An unknown protocol is refused and the session goes on to the next frame; a response sent
    # as a request ends the session (nothing after it is read).
    assert _outcome(decoders, "session", request_frame(2, "/nope/1", b"x") + good) == ["session_malformed"]
    assert _outcome(decoders, "session", response_frame(3, 0, b"") + request_frame(4, "/nope/1", b"")) == \
        ["session_malformed"]
    assert _outcome(decoders, "session_frame", good[:-1]) == ["session_malformed"]


# --- hypothesis: any body, signed by the right key, against each message type ----------------------

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=70) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6), max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(MESSAGE_TYPES)), body=st.lists(VALUES, max_size=26))
def test_any_signed_body_is_accepted_or_a_remote_protocol_error(kind, body):
    raw = identity("submitter").sign(kind, body)
    try:
        verify(raw, MESSAGE_TYPES[kind])
    except RemoteProtocolError as exc:
        assert re.fullmatch(r"[a-z_]+", exc.reason)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400) | VALUES.map(lambda v: encode(["announce", [v], bytes(32), bytes(64)])))
def test_any_gossip_bytes_are_accepted_or_a_remote_protocol_error(data):
    try:
        check_gossip(data, identity("submitter").public_key, FIXED_NOW_MS, 0)
    except RemoteProtocolError:
        pass


# --- a real node under fuzzed input -------------------------------------------------------------

GOSSIP_SENT = 200
REQUESTS_SENT = 50  # per protocol
CONTROL_SENT = 300
NETWORK_INPUT_MAX = 64 * 1024  # keep the network test quick: nothing near the 1 MiB caps


def _rejected_inputs(decoder, signers, count: int, seed: int) -> list[tuple[bytes, str]]:
    """`count` fuzzed inputs the decoder rejects, each with its one reason."""
    out = []
    for data in fuzz.inputs_for(decoder, count * 20, seed, signers):
        if len(data) > NETWORK_INPUT_MAX:
            continue
        reasons = fuzz.outcome_of(decoder, data)
        if len(reasons) == 1:
            out.append((data, reasons[0]))
            if len(out) == count:
                return out
    raise AssertionError(f"{decoder.name}: fewer than {count} rejected inputs")


def _metrics_rejected(url: str) -> Counter:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return Counter({m.group(1): int(float(m.group(2))) for m in
                    re.finditer(r'^distributeai_messages_rejected_total\{reason="([^"]+)"\} (\S+)', text, re.M)})


def _control_raw(path, line: bytes) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(line + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            assert chunk, f"the node closed the connection without answering {line[:80]!r}"
            buf += chunk
    return json.loads(buf)


@pytest.mark.slow
async def test_a_node_counts_every_fuzzed_message_stays_up_and_still_verifies_a_job(tmp_path, monkeypatch):
    from distributeai.tools.devnet import Devnet
    from distributeai.consensus.codec import Identity
    from distributeai.consensus.names import (
        AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, JOBS_TOPIC, REVEAL_PROTOCOL, WITHDRAW_PROTOCOL,
    )
    from distributeai.node.wire import parse_answer
    from distributeai.p2p.identity import load_or_create_key

    from .netfixtures import DEMO_ARGS, DEMO_STDOUT, submit_json, wait_for
    from .test_p2p import PeerProcess, _ready

    # Every fuzzed message must reach the decoders to be counted by its reason: the node runs
    # without per-peer rate limits here (tests/test_flood.py covers those).
    for limit in ("REQUEST_RATE_LIMIT", "GOSSIP_RATE_LIMIT", "NEWCOMER_GOSSIP_RATE_LIMIT"):
        monkeypatch.setenv(f"DISTRIBUTEAI_{limit}", "0")
    with Devnet(tmp_path / "net", nodes=1, sandbox="process", metrics=True) as net:
        net.start()
        net.wait_connected()
        node_peer = net.node_info[0]["peer_id"]
        attacker = PeerProcess("attacker", tmp_path / "attacker.key", tmp_path,
                               "--bootstrap", net.bootstrap_addr, "--topic", JOBS_TOPIC)
        try:
            attacker.wait_sync(_ready, 60)
            me = Identity.from_seed(load_or_create_key(tmp_path / "attacker.key"))
            victim = Identity.from_seed(load_or_create_key(net.node_dirs[0] / "node.key"))
            await attacker.call(cmd="connect", addr=net.node_info[0]["multiaddrs"][0])
            await attacker.wait(lambda ev: any(e["event"] == "mesh" and e["topic"] == JOBS_TOPIC
                                               and node_peer in e["peers"] for e in ev), 60)
            attacker_peer = _ready(attacker.events)["peer_id"]
            wait_for(lambda: attacker_peer in net.info(0)["mesh_peers"], 60,
                     "the node to take the attacker into its gossip mesh")
            now = int(time.time() * 1000)
            # Gossip, awards and reveal requests come from the attacker as a submitter to the
            # victim as executor; bids, commits and withdrawals from the attacker as executor.
            as_submitter = seed_messages(submitter=me, executor=victim, now_ms=now)
            as_executor = seed_messages(submitter=victim, executor=me, now_ms=now)
            signers = {**as_submitter.signers, **as_executor.signers}
            to_submitter, to_executor = build(as_submitter), build(as_executor)
            plan = {BID_PROTOCOL: to_executor["bid"], COMMIT_PROTOCOL: to_executor["commit"],
                    WITHDRAW_PROTOCOL: to_executor["withdraw"], AWARD_PROTOCOL: to_submitter["award"],
                    REVEAL_PROTOCOL: to_submitter["reveal_request"]}
            before = Counter(net.info(0)["rejected"])
            expected = Counter()

            def counted() -> bool:
                return Counter(net.info(0)["rejected"]) - before == expected

            gossip = _rejected_inputs(to_submitter["gossip"], signers, GOSSIP_SENT, seed=1)
            for start in range(0, len(gossip), 25):  # in batches: libp2p queues 32 messages per peer
                for data, reason in gossip[start:start + 25]:
                    reply = await attacker.call(cmd="publish", topic=JOBS_TOPIC, data=data.hex())
                    assert reply["ok"], reply
                    expected[reason] += 1
                wait_for(counted, 60, f"the node to count gossip {start}..{start + 25}: "
                                      f"{expected} vs {Counter(net.info(0)['rejected']) - before}")
            for protocol, decoder in plan.items():
                for data, reason in _rejected_inputs(decoder, signers, REQUESTS_SENT, seed=2):
                    reply = await attacker.call(cmd="request", peer=node_peer, protocol=protocol, data=data.hex())
                    assert reply["ok"], (protocol, reply)
                    with pytest.raises(RemoteProtocolError) as refusal:  # answered with the reason
                        parse_answer(bytes.fromhex(reply["result"]))
                    assert refusal.value.detail == reason
                    expected[reason] += 1
            wait_for(counted, 60, "the node to count every request")
            assert sum(expected.values()) == GOSSIP_SENT + REQUESTS_SENT * len(plan)
            assert len(expected) >= 5, expected

            # The control API over its socket: every line the parser rejects is answered
            # bad_request and counted; nothing is an internal error.
            sock = net.node_dirs[0] / "control.sock"
            control = to_submitter["control"]
            bad_answers = 0
            for i, data in enumerate(fuzz.inputs_for(control, CONTROL_SENT, 5, signers)):
                line = data.split(b"\n", 1)[0]
                answer = _control_raw(sock, line)
                assert answer.get("code") != "internal", (line[:200], answer)
                if fuzz.outcome_of(control, line):
                    assert answer.get("code") == "bad_request", (line[:200], answer)
                bad_answers += answer.get("code") == "bad_request"
            expected["control_bad_request"] += bad_answers
            assert bad_answers > CONTROL_SENT // 2
            wait_for(counted, 60, "the node to count every bad control request")
            metrics = _metrics_rejected(net.info(0)["metrics_url"])
            assert Counter({k: v for k, v in metrics.items() if v}) - before == expected
            print(f"\nthe node rejected and counted {sum(expected.values())} fuzzed inputs: {dict(expected)}")
            assert net.node_procs[0].poll() is None
            info = net.info(0)
            assert info["active_jobs"] == 0
        finally:
            attacker.stop()
        assert net.call(0, {"op": "list"})["jobs"] == []
        outcome, _ = submit_json(net.node_dirs[0], "--replicas", "1", "--quorum", "1", *DEMO_ARGS)
        assert outcome["status"] == "verified" and outcome["stdout"] == DEMO_STDOUT, json.dumps(outcome)
