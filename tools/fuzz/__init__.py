"""Fuzzing every decoder a peer or a user can reach (issue 7, item 1): `distributeai fuzz`.

- `corpus.py`: the seed corpus, valid inputs built with the real consensus code (one function
  builds every protocol message);
- `mutate.py`: the seeded mutation engine (bytes and MessagePack/JSON structure, re-signing);
- `targets.py`: the decoders, each the real code, and what accepted/rejected means for each;
- `runner.py`: N inputs per decoder, outcomes, timing, findings, the rejection counts checked
  against a real NodeMetrics registry;
- here: `run` (the reports of the decoders chosen) and `fuzz_report` (the JSON report the
  command prints).

Deterministic: the same seed gives the same inputs and the same report.
"""

from __future__ import annotations

import time
from pathlib import Path

from .corpus import FIXED_NOW_MS, seed_messages
from .runner import Report, fuzz, inputs_for, outcome_of
from .targets import build


def run(count: int, seed: int = 0, names: list[str] | None = None, findings_dir: Path | None = None) -> list[Report]:
    """Fuzz the decoders named (all if None) with `count` inputs each; ValueError for an unknown
    name."""
    corpus = seed_messages(now_ms=FIXED_NOW_MS)
    decoders = build(corpus)
    unknown = [n for n in names or [] if n not in decoders]
    if unknown:
        raise ValueError(f"unknown decoder {unknown[0]!r} (decoders: {', '.join(decoders)})")
    chosen = {n: d for n, d in decoders.items() if not names or n in names}
    return fuzz(chosen, corpus.signers, count, seed, findings_dir)


def decoder_names() -> list[str]:
    return list(build(seed_messages()))


def fuzz_report(inputs: int, decoders: list[str], seed: int, findings_dir: Path | None) -> dict:
    """The JSON report of `distributeai fuzz`: {"seed", "inputs_per_decoder", "decoders": [per-decoder
    report], "findings", "seconds"}; each decoder's report has inputs, accepted, rejected,
    rejected_by_reason, metric_rejected_total (what a real NodeMetrics registry counted), findings
    (and up to 20 finding_details with the input), max_cpu_ms, max_wall_ms, seconds, inputs_per_s."""
    started = time.perf_counter()
    reports = run(inputs, seed, decoders or None, findings_dir)
    return {"seed": seed, "inputs_per_decoder": inputs, "decoders": [r.to_json() for r in reports],
            "findings": sum(len(r.findings) for r in reports), "seconds": round(time.perf_counter() - started, 3)}
