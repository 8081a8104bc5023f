"""How two results of one job are compared: the spec's `compare` field.

- `exact` (the default): two results agree when their result hashes are equal.
- `numeric`: two results agree when they differ only in numbers, each pair within tolerance
  (|a - b| <= abs + rel * max(|a|, |b|)), over stdout and over the output files the spec names
  (`files`); see `agree`. Tolerances travel as decimal strings ("1e-6"): the wire has no floats,
  and every node parses a string to the same double.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .fields import _fail, _list, _str
from .outputs import relative_path_problem

COMPARE_KINDS = ("exact", "numeric")
COMPARE_FILES_MAX = 8
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
