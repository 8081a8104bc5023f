"""Unit tests of what a reveal certifies beyond stdout (issue 15, item 2): the part of stderr it
carries, the stdout size it states, both in the result hash, the checks on them, the caps they
must keep; and the words and exit codes cli/jobview.py makes of a job's view."""

from __future__ import annotations

from dataclasses import replace

import pytest

from distributeai.cli.jobview import (
    EXIT_NO_CODE, EXIT_NOT_VERIFIED, EXIT_OOM_KILLED, EXIT_TIMED_OUT, job_exit_code, status_line,
    stderr_block, stdout_line, task_note,
)
from distributeai.consensus.cid import raw_cid
from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.executor import certified_stderr, make_batch_reveal, make_reveal, stdout_size
from distributeai.consensus.messages import (
    CERTIFICATE_CAP, MANIFEST_MAX_ENTRIES, MANIFEST_PATH_MAX, MAX_SIZE, MAX_TOTAL_RESULTS, OUT_NOTE_NAME_MAX,
    OUT_NOTES_MAX, STDERR_CAP, STDOUT_CAP, STDOUT_SEEN_MAX, Reveal, sign, verify,
)
from distributeai.consensus.fields import CERTIFICATE_RESERVE
from distributeai.consensus.outputs import OUT_QUOTA_EXCEEDED, Outputs
from distributeai.consensus.results import result_hash

JOB = b"j" * 32
ME = Identity.from_seed(b"e" * 32)
OTHER = Identity.from_seed(b"f" * 32)


def reveal(identity: Identity = ME, **kw) -> Reveal:
    args = dict(exit_code=0, timed_out=False, stdout=b"out\n")
    args.update(kw)
    return verify(make_reveal(identity, JOB, **args), Reveal).msg


# --- which part of stderr, and the stdout size -------------------------------------------------

def test_stderr_that_fits_is_carried_whole():
    assert certified_stderr(b"warn\n", False, False) == (b"warn\n", "all")
    assert certified_stderr(b"x" * STDERR_CAP, False, True) == (b"x" * STDERR_CAP, "all")


def test_long_stderr_keeps_its_end_unless_the_end_is_unknown_or_unshared():
    long = b"a" * 5000 + b"error: the reason\n"
    assert certified_stderr(long, False, False) == (long[-STDERR_CAP:], "last")
    assert certified_stderr(long, False, True) == (long[:STDERR_CAP], "first")  # timed out: the kill lands anywhere
    assert certified_stderr(long, True, False) == (long[:STDERR_CAP], "first")  # the sandbox kept only the start
    assert certified_stderr(b"short", True, False) == (b"short", "first")


def test_stdout_size_is_exact_up_to_what_the_sandbox_keeps_and_unstated_after_a_timeout():
    assert stdout_size(b"x" * 40_000, False, False) == 40_000
    assert stdout_size(b"x" * STDOUT_SEEN_MAX, False, False) == STDOUT_SEEN_MAX
    assert stdout_size(b"x" * STDOUT_SEEN_MAX, True, False) == STDOUT_SEEN_MAX + 1
    assert stdout_size(b"x" * (10 << 20), False, False) == STDOUT_SEEN_MAX + 1
    assert stdout_size(b"x" * 10, False, True) == -1


def test_the_sandbox_keeps_what_the_stdout_size_counts():
    from distributeai.sandbox.base import RunRequest

    assert RunRequest(image="x", command=["true"]).output_cap == STDOUT_SEEN_MAX


# --- the reveal and its hash --------------------------------------------------------------------

def test_a_reveal_carries_stderr_and_the_stdout_size_under_its_hash():
    r = reveal(stdout=b"x" * 40_000, stderr=b"e" * 3000 + b"boom\n")
    assert (len(r.stdout), r.stdout_truncated, r.stdout_size) == (STDOUT_CAP, True, 40_000)
    assert r.stderr.endswith(b"boom\n") and len(r.stderr) == STDERR_CAP and r.stderr_part == "last"
    assert r.result_hash == r.expected_hash()
    # every part is in the hash: change one and the hash changes
    for other in (replace(r, stderr=b"f" + r.stderr[1:]), replace(r, stderr_part="first"),
                  replace(r, stdout_size=40_001)):
        assert other.expected_hash() != r.result_hash


def test_honest_executors_of_one_run_sign_one_result():
    kw = dict(exit_code=3, timed_out=False, stdout=b"x" * 50_000, stderr=b"w\n" * 2000)
    assert reveal(ME, **kw).result_hash == reveal(OTHER, **kw).result_hash
    # after a timeout only what every executor saw is certified: the first bytes, no size
    a = reveal(ME, exit_code=137, timed_out=True, stdout=b"y" * 40_000, stderr=b"p" * 2000)
    b = reveal(OTHER, exit_code=137, timed_out=True, stdout=b"y" * 90_000, stderr=b"p" * 9000)
    assert a.result_hash == b.result_hash and a.stdout_size == -1 and a.stderr_part == "first"


def test_the_domain_tag_is_v4():
    """v4: manifest entries name files by CID (v3 named them by SHA-256)."""
    import hashlib

    from distributeai.consensus.codec import encode
    from distributeai.consensus.outputs import NONE

    body = encode([0, False, b"", False, [], -1, NONE.to_body(), b"", "all", -1])
    assert result_hash(0, False, b"", False) == hashlib.sha256(b"distributeai/result/v4\x00" + body).digest()


def test_a_result_over_the_output_quota_carries_no_stderr():
    r = reveal(exit_code=1, stderr=b"No space left\n", outputs=Outputs(OUT_QUOTA_EXCEEDED))
    assert (r.stderr, r.stderr_part, r.stdout_size, r.exit_code) == (b"", "all", -1, -1)


def _resigned(r: Reveal) -> bytes:
    return sign(ME, replace(r, result_hash=r.expected_hash()))


@pytest.mark.parametrize("mutate", [
    lambda r: replace(r, stderr=b"e" * (STDERR_CAP + 1), stderr_part="last"),  # over the cap
    lambda r: replace(r, stderr_part="middle"),
    lambda r: replace(r, stderr=b"short", stderr_part="last"),  # a cut stderr fills the cap
    lambda r: replace(r, stdout_size=3),  # not the size of the stdout carried
    lambda r: replace(r, stdout_size=STDOUT_CAP + 5),  # larger, but stdout not marked truncated
    lambda r: replace(r, stdout_size=STDOUT_SEEN_MAX + 2),
    lambda r: replace(r, outputs=Outputs(OUT_QUOTA_EXCEEDED), exit_code=-1, stdout=b"", stdout_size=-1),
])
def test_a_reveal_with_a_bad_stderr_or_stdout_size_is_refused(mutate):
    r = reveal(stdout=b"out\n", stderr=b"warn\n")
    assert verify(_resigned(r), Reveal).msg == r
    with pytest.raises(RemoteProtocolError) as e:
        verify(_resigned(mutate(r)), Reveal)
    assert e.value.reason == "malformed"


def test_a_batch_reveal_carries_no_stderr():
    raw = make_batch_reveal(ME, JOB, 2, [(0, False, b"a", False, None), (1, False, b"b", False, None)])
    r = verify(raw, Reveal).msg
    assert (r.stderr, r.stdout_size) == (b"", -1)
    with pytest.raises(RemoteProtocolError):
        verify(_resigned(replace(r, stderr=b"oops")), Reveal)


def test_the_largest_reveals_fit_their_cap_and_sixteen_fit_a_certificate_with_room_to_spare():
    manifest = tuple(sorted((f"{i:03d}" + "p" * (MANIFEST_PATH_MAX - 3), 2**63 - 1, raw_cid(b"%d" % i))
                            for i in range(MANIFEST_MAX_ENTRIES)))
    notes = tuple(sorted((f"{i}" + "n" * (OUT_NOTE_NAME_MAX - 1), "bad_output_name") for i in range(OUT_NOTES_MAX)))
    raw = make_reveal(ME, JOB, -(2**31), False, b"\xff" * STDOUT_SEEN_MAX, True, manifest, 2**62, True, "process",
                      Outputs("", 10**6, notes, 10**6), stderr=b"\xff" * 10_000)
    assert len(raw) <= MAX_SIZE["reveal"]
    assert MAX_SIZE["spec"] + MAX_TOTAL_RESULTS * (len(raw) + MAX_SIZE["award"]) + 1024 + CERTIFICATE_RESERVE \
        <= CERTIFICATE_CAP


# --- cli/jobview.py: words and exit codes -------------------------------------------------------

def view(**kw) -> dict:
    v = dict(job_id="ab" * 32, status="verified", reason="", exit_code=0, timed_out=False, oom_killed=False,
             timeout_s=60, memory_mb=256, stdout_truncated=False, stdout_size=3, stderr="", stderr_part="all",
             sandbox="container", outputs={"status": "ok"})
    v.update(kw)
    return v


def test_submit_exit_code_is_the_jobs_own_or_says_what_ended_it():
    assert job_exit_code(view()) == 0
    assert job_exit_code(view(exit_code=3)) == 3
    assert job_exit_code(view(exit_code=137, timed_out=True)) == EXIT_TIMED_OUT == 124
    assert job_exit_code(view(exit_code=137, oom_killed=True)) == EXIT_OOM_KILLED == 137
    assert job_exit_code(view(exit_code=-1, outputs={"status": "out_quota_exceeded"})) == EXIT_NO_CODE
    assert job_exit_code(view(exit_code=4096)) == EXIT_NO_CODE
    assert job_exit_code(view(status="failed", exit_code=None)) == EXIT_NOT_VERIFIED


def test_a_verified_failure_does_not_read_as_success():
    assert status_line(view()) == "status   verified"
    assert "the job failed (exit code 3)" in status_line(view(exit_code=3))
    assert "(timed out after 60 s)" in status_line(view(exit_code=137, timed_out=True))
    assert status_line(view(status="failed", reason="no bids", exit_code=None)) == "status   failed (no bids)"


def test_a_cut_stdout_states_the_sizes_it_knows():
    assert stdout_line(view()) is None
    assert "the first 32 KiB of 39.1 KiB are certified" in stdout_line(view(stdout_truncated=True, stdout_size=40_000))
    assert "of more than 1 MiB" in stdout_line(view(stdout_truncated=True, stdout_size=STDOUT_SEEN_MAX + 1))
    assert "how much it wrote is not certified" in stdout_line(view(stdout_truncated=True, stdout_size=None))
    assert "--out DIR" in stdout_line(view(stdout_truncated=True, stdout_size=40_000))
    assert "no /out" in stdout_line(view(stdout_truncated=True, stdout_size=40_000, sandbox="wasm"))


def test_stderr_is_shown_with_where_it_was_cut_and_no_terminal_controls():
    assert stderr_block(view()) == []
    assert stderr_block(view(stderr="a\tb\n")) == ["stderr:", "a\tb\n"]
    header, body = stderr_block(view(stderr="...end\x1b[2J", stderr_part="last"))
    assert "last 1.5 KiB" in header and body == "[...]...end\\x1b[2J\n"


def test_a_batch_task_says_when_it_timed_out_or_its_stdout_was_cut():
    assert task_note({"timed_out": False, "stdout_truncated": False}) == ""
    assert task_note({"timed_out": True, "stdout_truncated": True}) == " (timed out, stdout cut)"
