"""`distributeai fuzz`: runs tools/fuzz over every decoder (or some) and reports per decoder.

The JSON report: {"seed", "inputs_per_decoder", "decoders": [per-decoder report], "findings",
"seconds"}; each decoder's report has inputs, accepted, rejected, rejected_by_reason,
metric_rejected_total (what a real NodeMetrics registry counted), findings (and up to 20
finding_details with the input), max_cpu_ms, max_wall_ms, seconds, inputs_per_s.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer


def run_fuzz(inputs: int, decoders: list[str], seed: int, findings_dir: Path | None) -> dict:
    from distributeai.tools import fuzz

    started = time.perf_counter()
    reports = fuzz.run(inputs, seed, decoders or None, findings_dir)
    return {"seed": seed, "inputs_per_decoder": inputs, "decoders": [r.to_json() for r in reports],
            "findings": sum(len(r.findings) for r in reports), "seconds": round(time.perf_counter() - started, 3)}


def print_report(result: dict) -> None:
    typer.echo(f"{'decoder':15} {'inputs':>8} {'accepted':>8} {'rejected':>8} {'max cpu ms':>10} "
               f"{'inputs/s':>9}  rejected by reason")
    for d in result["decoders"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(d["rejected_by_reason"].items(), key=lambda kv: -kv[1]))
        typer.echo(f"{d['decoder']:15} {d['inputs']:8} {d['accepted']:8} {d['rejected']:8} {d['max_cpu_ms']:10.2f} "
                   f"{d['inputs_per_s']:9.0f}  {reasons}")
        for f in d["finding_details"]:
            typer.echo(f"  FINDING #{f['index']}: {f['error']} at {f['where']} (input sha256 {f['input_sha256'][:16]}, "
                       f"{f['input_len']} bytes)")
    typer.echo(f"{result['findings']} findings; {result['seconds']} s")
