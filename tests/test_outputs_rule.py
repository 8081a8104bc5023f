"""The one rule for what a job left in /out (consensus/outputs.py), and the reveal that carries it:
hostile names, special files, quota ends and cut manifests give one result, signed and checked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from distributeai.consensus.cid import raw_cid
from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.executor import make_reveal
from distributeai.consensus.messages import MANIFEST_MAX_ENTRIES, OUT_NOTES_MAX, Reveal, sign, verify
from distributeai.consensus.outputs import (
    BAD_OUTPUT_NAME, OUT_QUOTA_EXCEEDED, Outputs, describe_outputs, escape_name, manifest_truncated, name_problem,
)

JOB = b"j" * 32
HOSTILE = [b"bad\xffname", b"esc\x1b[31mred", b"x" * 300, b"tab\tname", b"c1\xc2\x9bname", b"dir/..", b"nl\nname"]


def digest(data: bytes) -> bytes:
    """The file's CID as ipfs add --cid-version 1 gives it (one chunk: its raw block)."""
    return raw_cid(data)


def file(name: bytes, data: bytes = b"x") -> tuple[bytes, str, int, bytes]:
    return (name, "file", len(data), digest(data))


@pytest.mark.parametrize("name", HOSTILE)
def test_each_hostile_name_is_skipped_with_its_reason_and_the_rest_is_listed(name):
    manifest, out = describe_outputs([file(name), file(b"good.txt", b"ok")], 1 << 20, 100)
    assert manifest == (("good.txt", 2, digest(b"ok")),)
    assert out.files == 1 and out.skipped == 1 and out.status == ""
    (shown, reason), = out.notes
    assert reason == BAD_OUTPUT_NAME
    assert shown.isascii() and shown.isprintable()
    assert name_problem(name) is not None


def test_escape_name_is_printable_ascii_and_tells_names_apart():
    names = [b"a\\x1b", b"a\x1b", b"a\xff", "a\u00e9".encode(), b"a\\xff"]
    shown = [escape_name(n) for n in names]
    assert len(set(shown)) == len(names)
    assert all(s.isascii() and s.isprintable() for s in shown)
    assert escape_name(b"esc\x1b[31mred") == "esc\\x1b[31mred"
    assert len(escape_name(b"y" * 1000)) == 120


def test_special_files_are_noted_by_kind_and_directories_are_not():
    entries = [(b"d", "dir", 0, None), (b"d/f", "file", 1, digest(b"1")), (b"fifo", "fifo", 0, None),
               (b"link", "symlink", 0, None), (b"sock", "socket", 0, None), (b"null", "device", 0, None)]
    manifest, out = describe_outputs(entries, 100, 100)
    assert [m[0] for m in manifest] == ["d/f"]
    assert out.notes == (("fifo", "fifo"), ("link", "symlink"), ("null", "device"), ("sock", "socket"))
    assert out.skipped == 4


@pytest.mark.parametrize("entries,why", [
    ([file(b"a", b"x" * 11)], "bytes"),
    ([(b"big", "file", 2 << 30, None)], "a sparse file counts at its size"),
    ([file(b"f%d" % i) for i in range(6)], "files"),
    ([(b"d%d" % i, "dir", 0, None) for i in range(6)], "directories count as entries"),
])
def test_past_either_quota_the_result_is_only_that(entries, why):
    manifest, out = describe_outputs(entries, 10, 5)
    assert (manifest, out) == ((), Outputs(status=OUT_QUOTA_EXCEEDED)), why


def test_at_the_quota_exactly_is_within_it():
    manifest, out = describe_outputs([file(b"a", b"x" * 10)] + [(b"d%d" % i, "dir", 0, None) for i in range(4)], 10, 5)
    assert out.status == "" and out.files == 1


def test_order_of_entries_does_not_matter_and_the_manifest_is_cut_visibly():
    entries = [file(b"f%03d" % i) for i in range(100)] + [(b"p%02d" % i, "fifo", 0, None) for i in range(20)]
    a = describe_outputs(entries, 1 << 20, 1000)
    b = describe_outputs(list(reversed(entries)), 1 << 20, 1000)
    assert a == b
    manifest, out = a
    assert len(manifest) == MANIFEST_MAX_ENTRIES and out.files == 100 and manifest_truncated(manifest, out)
    assert len(out.notes) == OUT_NOTES_MAX and out.skipped == 20


def test_the_reveal_carries_the_outputs_in_its_hash_and_checks_them():
    me = Identity.from_seed(b"e" * 32)
    manifest, out = describe_outputs([file(b"f%03d" % i) for i in range(70)] + [file(b"bad\xff")], 1 << 20, 1000)
    r = verify(make_reveal(me, JOB, 0, False, b"hi", manifest=manifest, outputs=out), Reveal).msg
    assert r.outputs == out and r.result_hash == r.expected_hash()
    other = verify(make_reveal(me, JOB, 0, False, b"hi", manifest=manifest, outputs=Outputs(files=70)), Reveal).msg
    assert other.result_hash != r.result_hash  # a skipped file is part of what is agreed on


def test_a_result_over_quota_is_the_same_whatever_the_run_printed_or_exited_with():
    me = Identity.from_seed(b"e" * 32)
    exceeded = Outputs(status=OUT_QUOTA_EXCEEDED)
    a = verify(make_reveal(me, JOB, 1, False, b"No space left", outputs=exceeded), Reveal).msg
    b = verify(make_reveal(me, JOB, 0, True, b"", manifest=(("f", 1, digest(b"x")),), outputs=exceeded), Reveal).msg
    assert a.result_hash == b.result_hash and (a.exit_code, a.stdout, a.manifest) == (-1, b"", ())


def _tampered(mutate) -> bytes:
    me = Identity.from_seed(b"e" * 32)
    manifest, out = describe_outputs([file(b"a"), (b"p", "fifo", 0, None)], 100, 100)
    r = verify(make_reveal(me, JOB, 0, False, b"", manifest=manifest, outputs=out), Reveal).msg
    r = mutate(r)
    return sign(me, replace(r, result_hash=r.expected_hash()))


@pytest.mark.parametrize("mutate", [
    lambda r: replace(r, manifest=(("esc\x1b", 1, digest(b"x")),)),
    lambda r: replace(r, manifest=(("a", 1, bytes(32)),)),  # a SHA-256, not a CID
    lambda r: replace(r, manifest=(("a", 1, b"\x01\x71" + digest(b"x")[2:]),)),  # a codec not accepted
    lambda r: replace(r, outputs=Outputs("", 1, (("\x1b[2J", "fifo"),), 1)),
    lambda r: replace(r, outputs=Outputs("", 1, (("p", "made_up"),), 1)),
    lambda r: replace(r, outputs=Outputs("", 0, (), 0)),  # fewer files than listed
    lambda r: replace(r, outputs=Outputs("", 5, (), 0)),  # more, with a short list
    lambda r: replace(r, outputs=Outputs("", 1, (), 3)),  # skipped but not named
    lambda r: replace(r, outputs=Outputs(OUT_QUOTA_EXCEEDED)),  # over quota, with files
    lambda r: replace(r, outputs=Outputs("nope", 1, (), 0)),
])
def test_a_reveal_with_bad_outputs_is_refused(mutate):
    data = _tampered(mutate)
    with pytest.raises(RemoteProtocolError):
        verify(data, Reveal)


def test_an_old_style_body_without_outputs_is_refused():
    me = Identity.from_seed(b"e" * 32)
    r = verify(make_reveal(me, JOB, 0, False, b""), Reveal).msg
    with pytest.raises(RemoteProtocolError):
        Reveal.from_body(r.to_body()[:12])
    assert Reveal.from_body(r.to_body()) == r


def test_the_result_hash_covers_each_file_by_its_unixfs_cid():
    """The manifest names a file by the CID `ipfs add --cid-version 1` gives it (several chunks:
    a dag-pb root over raw leaves), and a reveal naming another CID for it is another result."""
    from distributeai.consensus.cid import DAG_PB, codec_of
    from distributeai.consensus.results import result_hash
    from distributeai.consensus.unixfs import CHUNK_SIZE, FileBuilder

    data = bytes(range(256)) * (CHUNK_SIZE // 128 + 3)  # three chunks
    builder = FileBuilder()
    builder.add(data)
    root, size, _ = builder.finish()
    assert (size, codec_of(root)) == (len(data), DAG_PB)
    me = Identity.from_seed(b"e" * 32)
    manifest, out = describe_outputs([(b"big.bin", "file", len(data), root), file(b"small")], 1 << 30, 10)
    r = verify(make_reveal(me, JOB, 0, False, b"", manifest=manifest, outputs=out), Reveal).msg
    assert r.manifest == (("big.bin", len(data), root), ("small", 1, raw_cid(b"x")))
    other = result_hash(0, False, b"", False, (("big.bin", len(data), raw_cid(data[:10])), r.manifest[1]),
                        outputs=out, stdout_size=0)
    assert r.result_hash == result_hash(0, False, b"", False, r.manifest, outputs=out, stdout_size=0) != other
