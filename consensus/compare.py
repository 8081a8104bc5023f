"""How two results of one job are compared: the spec's `compare` field.

- `exact` (the default): two results agree when their result hashes are equal.
- `numeric`: two results agree when they differ only in numbers, each pair within tolerance
  (|a - b| <= abs + rel * max(|a|, |b|)), over stdout and over the output files the spec names
  (`files`); see `agree`. Tolerances travel as decimal strings ("1e-6"): the wire has no floats,
  and every node parses a string to the same double.

Numeric agreement, in full (`agree`): results equal by hash always agree. Otherwise both have the
same exit code, timeout flag and outputs summary (`Reveal.outputs`); the same manifest entries
(path, size, CID) for every output file the spec does not name (the certificate certifies the
leader's files: one nobody compared must be equal); stdout with the same tokens but numbers; and
for each named file: absent from both manifests, or equal CIDs, or both reveals carry its bytes
(`Reveal.compared`) and those have the same tokens but numbers. A named file a reveal does not
carry (over `file_cap`, or not kept by its executor) is compared exactly, by CID. Stderr, fuel,
stdout's size and whether it was cut are not compared (a cut stdout is compared as far as it goes).

Tokens (`tokens`): the JSON punctuation characters []{},:" each one token, the runs of other
non-whitespace bytes the others; whitespace only separates (column padding may differ). A token
is a number when it fully matches `NUMBER` (JSON's and Python's float literals: 1, -0.5, .5, 1.,
1e-3, 2E+05, nan, inf, Infinity, any case, a sign allowed); two numbers agree (`close`) when
equal (-0.0 equals 0.0; an infinity only the same-signed one), both NaN, or both finite and
within tolerance. Everything else must be byte-equal. A literal beyond a double's range reads as
an infinity. Cost: linear in the bytes compared (stdout at most STDOUT_CAP, files at most
COMPARED_CAP in all): `parse` is a few regex passes over the text (each number grammar is
unambiguous, so a long token cannot make the regex backtrack quadratically), and two parsed texts
are compared in C (equal skeletons, equal numbers) but for the numbers that differ. `groups`
parses each distinct text once and compares distinct results pairwise (at most MAX_TOTAL_RESULTS
of them): measured here, about 0.3 s for 12 distinct results of 16 KiB of numbers and a 16 KiB
file each, about 0.9 s for 16 distinct results of 16,000 numbers all within tolerance of each
other (the worst case: every number compared in Python), a few ms for three honest results.
"""

from __future__ import annotations

import math
import re
from functools import partial
from itertools import compress
from operator import ne, not_
from dataclasses import dataclass

from collections.abc import Mapping
from typing import Any, Callable, Iterable

from .fields import COMPARE_FILES_MAX, COMPARED_CAP, _fail, _list, _str
from .outputs import relative_path_problem
from .unixfs import file_cid

COMPARE_KINDS = ("exact", "numeric")
TOLERANCE_MAX_CHARS = 32
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Compare:
    """`kind` "exact" carries no tolerances and no files; "numeric" carries `rel` and `abs` (decimal
    strings of finite, non-negative numbers) and up to COMPARE_FILES_MAX output paths."""

    kind: str = "exact"
    rel: str = ""
    abs: str = ""
    files: tuple[str, ...] = ()

    @property
    def rel_value(self) -> float:
        return float(self.rel) if self.rel else 0.0

    @property
    def abs_value(self) -> float:
        return float(self.abs) if self.abs else 0.0

    def to_body(self) -> list:
        return [self.kind, self.rel, self.abs, list(self.files)]

    @classmethod
    def from_body(cls, body) -> "Compare":
        body = _list(body, "compare", 4)
        if len(body) != 4:
            raise _fail("compare", "must be [kind, rel, abs, files]")
        kind = _str(body[0], "compare kind", 16)
        rel, abs_ = _str(body[1], "compare rel", TOLERANCE_MAX_CHARS), _str(body[2], "compare abs", TOLERANCE_MAX_CHARS)
        files = tuple(_str(f, "compare files[]", 255) for f in _list(body[3], "compare files", COMPARE_FILES_MAX))
        if kind not in COMPARE_KINDS:
            raise _fail("compare kind", f"must be one of {', '.join(COMPARE_KINDS)}")
        if kind == "exact" and (rel or abs_ or files):
            raise _fail("compare", "exact comparison carries no tolerances and no files")
        for name, text in (("compare rel", rel), ("compare abs", abs_)):
            if kind == "numeric" and not tolerance_ok(text):
                raise _fail(name, "must be a finite non-negative decimal number")
        for f in files:
            problem = relative_path_problem(f, 255)
            if problem:
                raise _fail("compare files[]", problem)
        if list(files) != sorted(set(files)):
            raise _fail("compare files", "must be sorted without duplicates")
        return cls(kind, rel, abs_, files)


EXACT = Compare()


def tolerance_ok(text: str) -> bool:
    """A tolerance as the wire carries it: a plain decimal ("0.001", "1e-6"), finite, >= 0."""
    return bool(_DECIMAL.fullmatch(text)) and math.isfinite(float(text))


# --- numeric agreement ---------------------------------------------------------------------------

_SEPARATORS = rb'\s\[\]{},:"'
_TOKEN = re.compile(rb'[\[\]{},:"]|[^' + _SEPARATORS + rb']+')
# Unambiguous (each digit can be matched one way only), so a failed match costs linear time.
_NUMBER = rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:infinity|inf|nan)"
NUMBER = re.compile(_NUMBER, re.IGNORECASE)
# A number that is a whole token: preceded and followed by a separator or an end of the text.
_NUMBER_TOKEN = re.compile(rb"(?<![^" + _SEPARATORS + rb"])(" + _NUMBER + rb")(?![^" + _SEPARATORS + rb"])",
                           re.IGNORECASE)
_AROUND_PUNCTUATION = re.compile(rb'\s*([\[\]{},:"])\s*')
_SPACES = re.compile(rb"\s+")
_HOLE = b"\x00"  # a number's place in a skeleton; a text's own NUL bytes are escaped first


@dataclass(frozen=True)
class Parsed:
    """A text as numeric comparison sees it: its skeleton (its tokens with each number replaced by
    a hole, written canonically: one space between two word tokens, none beside punctuation),
    compared exactly, and its numbers in order. Equal skeletons are equal token lists."""

    skeleton: bytes
    numbers: tuple[float, ...]


def tokens(text: bytes) -> list[bytes]:
    """The tokens of `text`: each JSON punctuation character, and each run of other non-whitespace."""
    return _TOKEN.findall(text)


def parse(text: bytes) -> Parsed:
    """`text`'s skeleton and numbers, by whole-text regex passes (no Python loop per token). NUL
    is escaped first (NUL -> NUL SOH, which is reversible), so a hole is never part of a token of
    the text."""
    parts = _NUMBER_TOKEN.split(text.replace(b"\x00", b"\x00\x01"))  # text, number, text, ..., text
    holed = _HOLE.join(parts[0::2])
    skeleton = _SPACES.sub(b" ", _AROUND_PUNCTUATION.sub(rb"\1", holed)).strip(b" \t\n\r\x0b\x0c")
    return Parsed(skeleton, tuple(map(float, parts[1::2])))


def close(a: float, b: float, rel: float, abs_: float) -> bool:
    """Two numbers within tolerance: equal, both NaN, or both finite and |a - b| <= abs + rel *
    max(|a|, |b|)."""
    if a == b:
        return True
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return False
    return abs(a - b) <= abs_ + rel * max(abs(a), abs(b))


def parsed_agree(a: Parsed, b: Parsed, rel: float, abs_: float) -> bool:
    """Same tokens but numbers, and every pair of numbers `close`."""
    if a is b:
        return True
    x, y = a.numbers, b.numbers
    if a.skeleton != b.skeleton or len(x) != len(y):
        return False
    # In C first: the unequal pairs (NaN's too), then math.isclose, which admits within
    # max(rel * M, abs) <= abs + rel * M and never a NaN or an infinity unequal to the other
    # number; `close` decides only the pairs it does not admit.
    unequal = list(map(ne, x, y))
    dx, dy = list(compress(x, unequal)), list(compress(y, unequal))
    sloppy = partial(math.isclose, rel_tol=rel, abs_tol=abs_)
    return all(close(dx[i], dy[i], rel, abs_) for i in compress(range(len(dx)), map(not_, map(sloppy, dx, dy))))


def text_agree(compare: Compare, a: bytes, b: bytes) -> bool:
    """Two texts (stdout, or a named file's bytes) agree under a numeric `compare`."""
    return a == b or parsed_agree(parse(a), parse(b), compare.rel_value, compare.abs_value)


def file_cap(compare: Compare) -> int:
    """The largest named file a reveal carries: COMPARED_CAP shared equally among the files named,
    so whether one is carried depends on its own size alone (the same choice at every honest
    executor that wrote it the same size)."""
    return COMPARED_CAP // max(1, len(compare.files))


def carried_files(compare: Compare, manifest: Iterable[tuple[str, int, bytes]],
                  contents: Mapping[str, bytes]) -> tuple[tuple[str, bytes], ...]:
    """What a reveal carries (`Reveal.compared`, sorted by path): each file the spec names whose
    bytes the executor read (`contents`: path -> bytes, from its run's /out) that is in the
    manifest, at most `file_cap`, and whose UnixFS CID is the manifest's (so a file read after it
    changed is left out, never misreported). Nothing for an exact comparison."""
    if compare.kind != "numeric":
        return ()
    cap = file_cap(compare)
    listed = {path: cid for path, _, cid in manifest}
    out = []
    for path in compare.files:
        data = contents.get(path)
        if data is not None and path in listed and len(data) <= cap and file_cid(data) == listed[path]:
            out.append((path, data))
    return tuple(out)


def carried_problem(compare: Compare, manifest: Iterable[tuple[str, int, bytes]],
                    compared: Iterable[tuple[str, bytes]]) -> str | None:
    """Why a reveal's carried files are not what `carried_files` allows (None: they are): each
    named by the spec, at most `file_cap`, and the UnixFS file of its manifest entry's CID."""
    listed = {path: cid for path, _, cid in manifest}
    cap = file_cap(compare)
    for path, data in compared:
        if compare.kind != "numeric" or path not in compare.files:
            return f"carries {path!r}, a file the spec's comparison does not name"
        if len(data) > cap:
            return f"carries {path!r} over the {cap}-byte cap"
        if path not in listed or file_cid(data) != listed[path]:
            return f"carries {path!r}, which is not the file its manifest names"
    return None


@dataclass(frozen=True)
class Shape:
    """One result as numeric comparison sees it (`shape`)."""

    head: tuple  # exit code, timed out, outputs summary, the unnamed files' manifest entries
    stdout: Parsed
    files: tuple[tuple[bytes | None, Parsed | None], ...]  # per named file: (its CID or None, carried)


def shape(compare: Compare, r: Any, read: Callable[[bytes], Parsed] = parse) -> Shape:
    """A reveal (`consensus.messages.Reveal`) parsed once for `shapes_agree` (`read`: `parse`, or
    a cached one)."""
    named = set(compare.files)
    cids = {path: cid for path, _, cid in r.manifest}
    carried = dict(r.compared)
    head = (r.exit_code, r.timed_out, r.outputs, tuple(m for m in r.manifest if m[0] not in named))
    files = tuple((cids.get(p), read(carried[p]) if p in carried and p in cids else None) for p in compare.files)
    return Shape(head, read(r.stdout), files)


def shapes_agree(compare: Compare, a: Shape, b: Shape) -> bool:
    rel, abs_ = compare.rel_value, compare.abs_value
    if a.head != b.head or not parsed_agree(a.stdout, b.stdout, rel, abs_):
        return False
    for (cid_a, text_a), (cid_b, text_b) in zip(a.files, b.files):
        if cid_a == cid_b:
            continue  # both absent, or the same file
        if cid_a is None or cid_b is None or text_a is None or text_b is None:
            return False  # present in one only, or not carried: compared exactly
        if not parsed_agree(text_a, text_b, rel, abs_):
            return False
    return True


def agree(compare: Compare, a: Any, b: Any) -> bool:
    """Whether two reveals agree under `compare` (equal result hashes always do)."""
    if a.result_hash == b.result_hash:
        return True
    if compare.kind != "numeric":
        return False
    return shapes_agree(compare, shape(compare, a), shape(compare, b))


def groups(compare: Compare, reveals: Mapping[bytes, Any]) -> dict[bytes, tuple[bytes, ...]]:
    """Per executor, the executors whose results agree with its result (itself included), sorted.
    Agreement within tolerance is not transitive, so two groups may overlap. Each distinct
    result is parsed once; distinct results are compared pairwise."""
    by_hash: dict[bytes, list[bytes]] = {}
    for e in sorted(reveals):
        by_hash.setdefault(reveals[e].result_hash, []).append(e)
    hashes = sorted(by_hash)
    numeric = compare.kind == "numeric" and len(hashes) > 1
    texts: dict[bytes, Parsed] = {}  # results that differ may share a stdout or a file

    def read(text: bytes) -> Parsed:
        if text not in texts:
            texts[text] = parse(text)
        return texts[text]

    shapes = {h: shape(compare, reveals[by_hash[h][0]], read) for h in hashes} if numeric else {}
    friends: dict[bytes, list[bytes]] = {h: [h] for h in hashes}
    if numeric:
        for i, h in enumerate(hashes):
            for g in hashes[i + 1:]:
                if shapes_agree(compare, shapes[h], shapes[g]):
                    friends[h].append(g)
                    friends[g].append(h)
    return {e: tuple(sorted(x for f in friends[reveals[e].result_hash] for x in by_hash[f])) for e in reveals}
