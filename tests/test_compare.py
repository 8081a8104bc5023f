"""Comparators (consensus/compare.py): numeric agreement of stdout and named output files, the
files a reveal carries for it, and the verdict every node derives from them (consensus/verdict.py,
certificate.py, submitter_rules.check_reveal). Pure: no network, fixed identities and time."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distributeai.consensus.certificate import verify_certificate
from distributeai.consensus.compare import (
    EXACT, NUMBER, Compare, agree, carried_files, close, file_cap, groups, parse, text_agree, tokens,
)
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.executor import make_commit, make_reveal
from distributeai.consensus.fields import COMPARED_CAP, COMPARED_MAX_TOTAL_RESULTS
from distributeai.consensus.messages import Certificate, Commit, JobSpec, Reveal, encode_body, sign, verify
from distributeai.consensus.submitter import Penalize
from distributeai.consensus.unixfs import file_cid
from distributeai.consensus.verdict import job_tally, nondeterministic, top_agreement

from .protocol_fixtures import EXECUTORS, NOW, SUBMITTER, close_bidding, ident, make_spec, new_job

JOB = b"\x11" * 32
NUMERIC = Compare("numeric", "1e-6", "1e-9", ("out.json",))
LOOSE = Compare("numeric", "0", "1", ())  # |a - b| <= 1: agreement that is not transitive
VOTERS = [ident(i) for i in range(20, 32)]


def raw_reveal(ex, job_id: bytes, stdout: bytes, files: dict[str, bytes] | None = None, compare: Compare = NUMERIC,
               exit_code: int = 0, carry: bool = True) -> bytes:
    files = files or {}
    manifest = [(p, len(d), file_cid(d)) for p, d in sorted(files.items())]
    return make_reveal(ex, job_id, exit_code, False, stdout, manifest=manifest, compare=compare,
                       contents=files if carry else {})


def rev(stdout: bytes, files=None, compare: Compare = NUMERIC, who: int = 0, **kw) -> Reveal:
    return verify(raw_reveal(VOTERS[who], JOB, stdout, files, compare, **kw), Reveal).msg


def spec_of(compare: Compare, **kw) -> JobSpec:
    return make_spec(compare=compare, **kw)


# --- tokens and numbers ---------------------------------------------------------------------------

def test_tokens_split_on_whitespace_and_json_punctuation():
    assert tokens(b'{"loss": [1, 2.5e-3]}\n  ok\tdone') == [
        b"{", b'"', b"loss", b'"', b":", b"[", b"1", b",", b"2.5e-3", b"]", b"}", b"ok", b"done"]
    assert tokens(b"") == [] and tokens(b" \n\t") == []


@pytest.mark.parametrize("text", [b"1", b"-0.5", b"+3", b".5", b"1.", b"1e-3", b"2E+05", b"0.0", b"-0.0", b"1e308",
                                  b"1e999", b"nan", b"NaN", b"-nan", b"inf", b"-Infinity", b"INF"])
def test_numbers_are_json_and_python_float_literals(text):
    assert NUMBER.fullmatch(text)
    float(text)  # and Python reads every one of them


@pytest.mark.parametrize("text", [b"1e", b"e5", b"0x10", b"1_000", b"1.2.3", b"-", b".", b"+-1", b"1e5.0", b"nanx",
                                  b"infinit", b"v1", b"1,0"])
def test_other_tokens_are_not_numbers(text):
    assert not NUMBER.fullmatch(text)


def test_close_handles_nan_infinities_signed_zero_and_the_edges_of_doubles():
    assert close(math.nan, math.nan, 0, 0)
    assert not close(math.nan, 1.0, 1, 1) and not close(1.0, math.nan, 1, 1)
    assert close(math.inf, math.inf, 0, 0) and close(-math.inf, -math.inf, 0, 0)
    assert not close(math.inf, -math.inf, 1e6, 1e6)
    assert not close(math.inf, 1e308, 10, 1e308)  # an infinity equals only itself
    assert close(-0.0, 0.0, 0, 0)
    assert close(1e308, 1e308 * (1 + 1e-7), 1e-6, 0)
    assert not close(1e308, -1e308, 1e-6, 0)
    assert close(1e-300, 2e-300, 0, 1e-9) and not close(1e-300, 2e-300, 1e-6, 0)
    assert close(1.0, 1.0 + 5e-10, 0, 1e-9) and not close(1.0, 1.0 + 1e-8, 1e-9, 1e-9)


def test_text_agreement_differs_only_in_numbers_within_tolerance():
    c = Compare("numeric", "1e-6", "0", ())
    assert text_agree(c, b"loss 0.30000000000000004\n", b"loss 0.3\n")
    assert text_agree(c, b"x 1e3 y", b"x 1000.0000001 y") and text_agree(c, b"1E+03", b"1000")
    assert not text_agree(c, b"loss 0.3", b"loss 0.31")
    assert not text_agree(c, b"loss 0.3", b"lost 0.3")  # a word differs
    assert not text_agree(c, b"0.3 0.4", b"0.3")  # a number more
    assert not text_agree(c, b"[1, 2]", b"[1 2]")  # punctuation is compared
    assert not text_agree(c, b"v1.2.3", b"v1.2.4")  # not a number: compared exactly
    assert text_agree(c, b"[ 0.1        0.2 ]", b"[0.10000000001 0.2]")  # column padding is not
    assert text_agree(c, b"nan -inf -0.0", b"NaN -Infinity 0")
    assert not text_agree(c, b"nan", b"0") and not text_agree(c, b"inf", b"-inf")
    assert text_agree(c, b"1e999", b"inf")  # beyond a double: an infinity


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=20))
def test_a_text_agrees_with_its_numbers_written_another_way(values):
    c = Compare("numeric", "0", "0", ())
    assert text_agree(c, " ".join(repr(v) for v in values).encode(), "\n  ".join(f"{v:.17g}" for v in values).encode())


@given(st.binary(max_size=60) | st.lists(st.sampled_from(
    [b"1", b"-2.5e3", b".5", b"1.", b"nan", b"-Inf", b"e5", b"1e", b"x", b" ", b"\n", b",", b"[", b'"', b":", b"\x00",
     b"\x01", b"+", b"."]), max_size=20).map(b"".join))
def test_parse_is_the_tokens_with_each_whole_number_token_taken_out(text):
    escaped = text.replace(b"\x00", b"\x00\x01")  # so that no token of the text is a hole
    got = parse(text)
    assert tokens(got.skeleton) == [b"\x00" if NUMBER.fullmatch(t) else t for t in tokens(escaped)]
    assert repr(list(got.numbers)) == repr([float(t) for t in tokens(escaped) if NUMBER.fullmatch(t)])  # nan too
    assert repr(parse(b"\n ".join(tokens(text)))) == repr(got)  # whitespace only separates


def test_a_long_token_costs_linear_time():
    for text in (b"1" * 32768 + b"x", b"1" * 32768 + b".5e", b"x" + b"1." * 16384):
        parse(text)  # quadratic backtracking would take minutes here; the suite's timeout catches it
    assert parse(b"1" * 400 + b"x").numbers == ()


# --- results and the files they carry -------------------------------------------------------------

def test_a_reveal_carries_the_named_files_that_fit_and_match_the_manifest():
    r = rev(b"ok", {"out.json": b"[1.5]", "log.txt": b"x"})
    assert r.compared == (("out.json", b"[1.5]"),)
    assert rev(b"ok", {"out.json": b"[1.5]"}, compare=EXACT).compared == ()
    big = b"1 " * (COMPARED_CAP // 2 + 1)
    assert rev(b"ok", {"out.json": big}).compared == ()  # over the cap: compared by CID alone
    two = Compare("numeric", "0", "0", ("a", "b"))
    assert file_cap(two) == COMPARED_CAP // 2
    manifest = [("a", 3, file_cid(b"1 2")), ("b", 3, file_cid(b"3 4"))]
    assert carried_files(two, manifest, {"a": b"1 2", "b": b"changed"}) == (("a", b"1 2"),)


def test_results_agree_within_tolerance_over_stdout_and_named_files():
    a = rev(b"sum 1.0000000001\n", {"out.json": b'{"w": [0.1, 0.2]}'})
    b = rev(b"sum 1.0\n", {"out.json": b'{"w": [0.10000000000000002, 0.2]}'}, who=1)
    assert a.result_hash != b.result_hash and agree(NUMERIC, a, b) and not agree(EXACT, a, b)
    far = rev(b"sum 1.0\n", {"out.json": b'{"w": [0.2, 0.2]}'}, who=2)
    assert not agree(NUMERIC, a, far)
    assert not agree(NUMERIC, a, rev(b"sum 1.0\n", {"out.json": b'{"w": [0.1, 0.2]}'}, exit_code=1, who=3))
    assert agree(NUMERIC, a, a) and agree(EXACT, a, a)


def test_named_files_absent_uncarried_or_unnamed_are_compared_exactly():
    base = rev(b"1.0", {"out.json": b"[1.0]"})
    assert not agree(NUMERIC, base, rev(b"1.0", {}))  # present in one only
    assert agree(NUMERIC, rev(b"1.0", {}), rev(b"1.0000000001", {}, who=1))  # absent from both
    uncarried = rev(b"1.0", {"out.json": b"[1.0000000001]"}, carry=False)
    assert uncarried.compared == () and not agree(NUMERIC, base, uncarried)
    same_file = rev(b"1.0000000001", {"out.json": b"[1.0]"}, carry=False)
    assert agree(NUMERIC, base, same_file)  # equal CIDs need no bytes
    # A file the comparison does not name must be the same file.
    assert not agree(NUMERIC, rev(b"1.0", {"out.json": b"[1.0]", "t.txt": b"0.1"}),
                     rev(b"1.0", {"out.json": b"[1.0]", "t.txt": b"0.1000000001"}))


# --- the verdict ----------------------------------------------------------------------------------

def reveals_of(outputs: list[bytes], compare: Compare) -> dict[bytes, Reveal]:
    return {VOTERS[i].public_key: rev(out, compare=compare, who=i) for i, out in enumerate(outputs)}


def test_the_largest_group_leads_and_the_lowest_hash_is_certified():
    spec = spec_of(LOOSE)
    reveals = reveals_of([b"0", b"0.9", b"1.8"], LOOSE)  # 0 ~ 0.9 ~ 1.8, but 0 !~ 1.8
    t = job_tally(spec, reveals)
    middle = VOTERS[1].public_key
    assert t.outcome == "verified" and t.result_hash == reveals[middle].result_hash
    assert t.agreeing == tuple(sorted(reveals)) and t.dissenting == ()
    assert top_agreement(spec, reveals) == 3 and not nondeterministic(spec, reveals)
    close_three = reveals_of([b"0.5", b"0.6", b"0.7"], LOOSE)
    t = job_tally(spec, close_three)
    assert t.result_hash == min(r.result_hash for r in close_three.values())


def test_numeric_tally_keeps_the_tally_rules():
    spec = spec_of(LOOSE)
    two_groups = reveals_of([b"0", b"0.5", b"5", b"5.5"], LOOSE)
    assert job_tally(spec, two_groups).outcome == "no_quorum"  # a tie between disjoint groups
    one = reveals_of([b"0", b"0.5", b"5"], LOOSE)
    t = job_tally(spec, one)
    assert t.outcome == "verified" and t.dissenting == (VOTERS[2].public_key,)
    assert job_tally(spec, one, outstanding=1).outcome == "pending"  # 2 > 1 + 1 fails
    assert job_tally(spec, one, quorum=3).outcome == "no_quorum"
    assert job_tally(spec, {}).outcome == "no_quorum" and job_tally(spec, {}, outstanding=2).outcome == "pending"
    apart = reveals_of([b"0", b"5", b"10"], LOOSE)
    assert nondeterministic(spec, apart) and top_agreement(spec, apart) == 1
    assert not nondeterministic(spec, reveals_of([b"0"], LOOSE))
    # The same results under exact comparison: no two alike.
    exact = reveals_of([b"0", b"0.9", b"1.8"], EXACT)
    assert job_tally(spec_of(EXACT), exact).outcome == "no_quorum" and nondeterministic(spec_of(EXACT), exact)


@given(st.lists(st.sampled_from([b"0", b"0.5", b"0.9", b"1.8", b"2", b"7", b"nan", b"x"]), min_size=1, max_size=6),
       st.integers(0, 2))
def test_the_verdict_does_not_depend_on_the_order_of_the_reveals(outputs, outstanding):
    spec = spec_of(LOOSE)
    reveals = reveals_of(outputs, LOOSE)
    first = (job_tally(spec, reveals, outstanding), nondeterministic(spec, reveals), top_agreement(spec, reveals))
    for order in itertools.islice(itertools.permutations(reveals), 24):
        again = {e: reveals[e] for e in order}
        assert (job_tally(spec, again, outstanding), nondeterministic(spec, again), top_agreement(spec, again)) == first
    group = groups(LOOSE, reveals)
    assert all(e in group[e] and all(e in group[f] for f in group[e]) for e in reveals)  # symmetric, reflexive


# --- certificates and the submitter ---------------------------------------------------------------

def run_job(outputs: list[tuple[bytes, dict]], compare: Compare = NUMERIC, forge: int | None = None, quorum: int = 2,
            **spec_fields):
    """A job run by EXECUTORS[:n], each revealing (stdout, files); with `forge`, that executor's
    reveal carries a file whose bytes are not its manifest's."""
    n = len(outputs)
    job = new_job(replicas=n, quorum=quorum, compare=compare, **spec_fields)
    close_bidding(job, EXECUTORS[:n])
    raws = []
    for i, (ex, (stdout, files)) in enumerate(zip(EXECUTORS, outputs)):
        raw = raw_reveal(ex, job.job_id, stdout, files, compare)
        if i == forge:
            raw = sign(ex, forged(verify(raw, Reveal).msg))
        raws.append(raw)
        job.receive_commit(verify(make_commit(ex, job.job_id, verify(raw, Reveal).msg.result_hash), Commit), NOW + 1)
    actions = []
    for raw in raws:
        if not job.done:
            actions += job.receive_reveal(verify(raw, Reveal), NOW + 2)
    return job, actions


def forged(r: Reveal) -> Reveal:
    """The reveal with its carried file's numbers changed: the hash and seal still hold, the CID not."""
    (path, data), = r.compared
    return dataclasses.replace(r, compared=((path, data.replace(b"1", b"9")),))


def resigned(raw: bytes, **changes) -> bytes:
    cert = dataclasses.replace(verify(raw, Certificate).msg, **changes)
    return sign(SUBMITTER, cert)


FLOATS = [(b"total 3.0000000000000004\n", {"out.json": b"[0.1, 0.2, 0.30000000000000004]"}),
          (b"total 3.0\n", {"out.json": b"[0.1, 0.2, 0.3]"}),
          (b"total 2.9999999999999996\n", {"out.json": b"[0.1, 0.19999999999999998, 0.3]"})]


def test_a_numeric_job_verifies_and_every_node_agrees_while_exact_is_nondeterministic():
    job, _ = run_job(FLOATS, quorum=3, max_total_results=3)
    checked = verify_certificate(job.certificate)
    hashes = {r.result_hash for r in checked.reveals.values()}
    assert checked.certificate.status == "verified" and len(hashes) == 3
    assert checked.certificate.result_hash == min(hashes) and len(checked.tally.agreeing) == 3
    from distributeai.bootstrap.jobview import certificate_view

    summary, detail = certificate_view(checked)  # the bootstrap's page: three agree, none dissents
    assert summary["agreeing"] == 3 and summary["dissenting"] == 0
    assert {e["verdict"] for e in detail["executors"]} == {"agreed"}
    exact, _ = run_job(FLOATS, compare=EXACT, max_total_results=3)
    assert verify_certificate(exact.certificate).certificate.status == "nondeterministic"


def test_a_certificate_claiming_agreement_out_of_tolerance_is_rejected():
    far = [(b"total 3.0\n", {"out.json": b"[0.1]"}), (b"total 3.1\n", {"out.json": b"[0.1]"}),
           (b"total 3.0\n", {"out.json": b"[0.2]"})]
    job, _ = run_job(far, max_total_results=3)
    checked = verify_certificate(job.certificate)
    assert checked.certificate.status == "nondeterministic"
    lowest = min(r.result_hash for r in checked.reveals.values())
    lie = resigned(job.certificate, status="verified", reason="", result_hash=lowest)
    with pytest.raises(RemoteProtocolError) as err:
        verify_certificate(lie)
    assert err.value.reason == "bad_verdict"


def test_a_carried_file_that_is_not_the_manifests_is_rejected_by_the_submitter_and_every_node():
    job, actions = run_job(FLOATS, forge=0)
    assert Penalize(EXECUTORS[0].public_key, "bad_reveal") in actions
    assert job.slot[EXECUTORS[0].public_key] == "bad_reveal"
    honest, _ = run_job(FLOATS, max_total_results=3)
    cert = verify(honest.certificate, Certificate).msg
    raws = list(cert.reveals)
    first = verify(raws[0], Reveal)
    ex = next(e for e in EXECUTORS if e.public_key == first.signer)
    raws[0] = sign(ex, forged(first.msg))
    with pytest.raises(RemoteProtocolError) as err:
        verify_certificate(resigned(honest.certificate, reveals=tuple(raws)))
    assert err.value.reason == "bad_reveal"
    # An exact job's reveal carries nothing.
    exact, _ = run_job(FLOATS, compare=EXACT, max_total_results=3)
    cert = verify(exact.certificate, Certificate).msg
    raws = list(cert.reveals)
    first = verify(raws[0], Reveal)
    ex = next(e for e in EXECUTORS if e.public_key == first.signer)
    files = FLOATS[EXECUTORS.index(ex)][1]
    raws[0] = sign(ex, dataclasses.replace(first.msg, compared=tuple(files.items())))
    with pytest.raises(RemoteProtocolError) as err:
        verify_certificate(resigned(exact.certificate, reveals=tuple(raws)))
    assert err.value.reason == "bad_reveal"


def test_a_reveals_carried_files_are_checked_as_it_is_parsed():
    r = rev(b"1", {"out.json": b"[1]"})
    body = r.to_body()
    for bad in ([["zzz", b"1"]],                              # not in the manifest
                [["out.json", b"[1]"], ["out.json", b"[1]"]],  # twice
                [["out.json", b"x" * (COMPARED_CAP + 1)]],     # over the cap
                [["out.json"]], "x"):
        with pytest.raises(RemoteProtocolError) as err:
            Reveal.from_body([*body[:16], bad])
        assert err.value.reason == "malformed"
    assert Reveal.from_body(body) == r
    assert encode_body(r)  # the field is canonical MessagePack


def test_a_job_comparing_files_allows_few_enough_awards_for_its_certificate():
    def parsed(**kw):
        return JobSpec.from_body(make_spec(**kw).to_body())

    assert parsed(compare=NUMERIC, max_total_results=COMPARED_MAX_TOTAL_RESULTS).compare == NUMERIC
    with pytest.raises(RemoteProtocolError, match="max_total_results"):
        parsed(compare=NUMERIC, replicas=3, max_total_results=COMPARED_MAX_TOTAL_RESULTS + 1)
    assert parsed(compare=LOOSE, max_total_results=16).compare == LOOSE  # no files: nothing carried


def test_a_nondeterministic_jobs_differences_are_shown():
    from distributeai.node.views import differences

    reveals = {VOTERS[i].public_key: rev(out, {"out.json": out}, who=i) for i, out in enumerate([b"1", b"2"])}
    shown = differences(reveals, lambda e: e.hex()[:8])
    assert set(shown["differing"]) == {"stdout_sha256"}  # the outputs summaries (lists) are equal
    assert "outputs" not in shown["differing"] and [m["path"] for m in shown["manifest"]] == ["out.json"]
