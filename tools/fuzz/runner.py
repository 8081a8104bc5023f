"""Running the fuzzer: N mutated inputs per decoder, each outcome classified, timed and counted.

Contract of `fuzz_decoder(decoder, inputs, seed)`:
- inputs are `Mutator(random.Random(f"{seed}/{decoder}"))` mutations of the decoder's seeds, so a
  (seed, decoder, count) triple always gives the same inputs and the same report;
- each input is accepted, or rejected with reasons (see targets.py); every rejection is counted
  through a real `NodeMetrics` (its own Prometheus registry) with the label the node uses, and at
  the end the registry's `distributeai_messages_rejected_total` must equal the rejections counted
  per reason, or that is a finding too;
- a finding is an input that raised anything but the decoder's documented errors, broke an
  invariant, or took more than MAX_CPU_S of CPU (a hang is cut off at HANG_S of wall time by
  SIGALRM in the main thread, or by a trio deadline for async decoders). Findings keep their input.
The report per decoder: inputs, accepted, rejected, rejected_by_reason, findings, max_cpu_ms,
max_wall_ms, seconds, inputs_per_s, cpu_seconds (mutation included), inputs_per_cpu_s (the
figure that does not depend on how loaded the machine is).
"""

from __future__ import annotations

import hashlib
import random
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import trio

from distributeai.consensus.codec import Identity

from distributeai.node.metrics import NodeMetrics
from .mutate import Mutator
from .targets import Decoder

MAX_CPU_S = 1.0  # an input that costs more CPU than this is a finding (a quadratic blow-up, a near-hang)
HANG_S = 30.0    # wall time after which an input is cut off as a hang (generous: the machine is shared)
FINDING_INPUT_HEX_MAX = 4096


class Hang(BaseException):
    """Raised by the SIGALRM watchdog in the middle of a decoder that runs too long. A
    BaseException, so that no `except Exception` in the code under test can swallow it."""


@dataclass
class Finding:
    decoder: str
    index: int
    error: str
    input: bytes
    where: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "index": self.index, "error": self.error, "where": self.where,
                "input_len": len(self.input), "input_sha256": hashlib.sha256(self.input).hexdigest(),
                "input_hex": self.input[:FINDING_INPUT_HEX_MAX // 2].hex()}


@dataclass
class Report:
    decoder: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    metric_rejected_total: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    max_cpu_ms: float = 0.0
    max_wall_ms: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "inputs": self.inputs, "accepted": self.accepted,
                "rejected": self.rejected, "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
                "metric_rejected_total": self.metric_rejected_total, "findings": len(self.findings),
                "max_cpu_ms": round(self.max_cpu_ms, 3), "max_wall_ms": round(self.max_wall_ms, 3),
                "seconds": round(self.seconds, 3), "inputs_per_s": round(self.inputs_per_s, 1),
                "cpu_seconds": round(self.cpu_seconds, 3),
                "inputs_per_cpu_s": round(self.inputs / self.cpu_seconds, 1) if self.cpu_seconds else 0.0,
                "finding_details": [f.to_json() for f in self.findings[:20]]}


def inputs_for(decoder: Decoder, count: int, seed: int, signers: dict[bytes, Identity]) -> Iterator[bytes]:
    """The `count` inputs of one run, reproducible from (seed, decoder name), made one at a
    time (a run holds one input at a time: some are a megabyte)."""
    mutator = Mutator(random.Random(f"{seed}/{decoder.name}"), signers, decoder.fmt, decoder.max_size)
    for _ in range(count):
        yield mutator.mutate(mutator.rng.choice(decoder.seeds), decoder.seeds)


def _zero_gauges() -> dict[str, float]:
    return {"distributeai_peers": 0, "distributeai_reputation": 0, "distributeai_credits": 0}


class _Tally:
    def __init__(self, decoder: Decoder) -> None:
        self.report = Report(decoder.name)
        self.metrics = NodeMetrics(_zero_gauges)

    def rejected(self, reasons: list[str]) -> None:
        r = self.report
        r.rejected += 1
        for reason in reasons:
            r.rejected_by_reason[reason] = r.rejected_by_reason.get(reason, 0) + 1
            self.metrics.reject(reason)

    def timed(self, wall: float, cpu: float, index: int, data: bytes, decoder: Decoder) -> None:
        r = self.report
        r.inputs += 1
        r.max_wall_ms = max(r.max_wall_ms, wall * 1000)
        r.max_cpu_ms = max(r.max_cpu_ms, cpu * 1000)
        if cpu > MAX_CPU_S:
            r.findings.append(Finding(decoder.name, index, f"slow: {cpu:.3f} s of CPU", data))

    def finish(self, seconds: float, cpu_seconds: float) -> Report:
        r = self.report
        r.seconds, r.cpu_seconds = seconds, cpu_seconds
        total = 0.0
        for metric in self.metrics.registry.collect():
            if metric.name == "distributeai_messages_rejected":
                for sample in metric.samples:
                    if sample.name.endswith("_total"):
                        total += sample.value
                        if sample.value != r.rejected_by_reason.get(sample.labels["reason"], 0):
                            r.findings.append(Finding(r.decoder, -1, f"metric for {sample.labels['reason']} is "
                                                      f"{sample.value}, counted {r.rejected_by_reason}", b""))
        r.metric_rejected_total = total
        if total != sum(r.rejected_by_reason.values()):
            r.findings.append(Finding(r.decoder, -1, f"metric total {total} != rejections counted", b""))
        return r


def _finding(decoder: Decoder, index: int, data: bytes, exc: BaseException) -> Finding:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return Finding(decoder.name, index, f"{type(exc).__name__}: {str(exc)[:300]}", data, where)


def _outcome(tally: _Tally, result: Any) -> None:
    """A check that returned: a list of reasons is a rejection (a session's refusals), else accepted."""
    if isinstance(result, list) and result:
        tally.rejected(result)
    else:
        tally.report.accepted += 1


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang(f"no outcome after {HANG_S} s")


def fuzz_decoder(decoder: Decoder, count: int, seed: int, signers: dict[bytes, Identity]) -> Report:
    inputs = inputs_for(decoder, count, seed, signers)
    tally = _Tally(decoder)
    started, cpu_started = time.perf_counter(), time.process_time()
    if decoder.is_async:
        trio.run(_run_async, decoder, inputs, tally)
    else:
        watchdog = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGALRM, _on_alarm) if watchdog else None
        try:
            for i, data in enumerate(inputs):
                _run_one(decoder, tally, i, data, watchdog)
        finally:
            if watchdog:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
    return tally.finish(time.perf_counter() - started, time.process_time() - cpu_started)


def _run_one(decoder: Decoder, tally: _Tally, i: int, data: bytes, watchdog: bool) -> None:
    wall, cpu = time.perf_counter(), time.thread_time()
    try:
        if watchdog:
            signal.setitimer(signal.ITIMER_REAL, HANG_S)
        try:
            result = decoder.check(data)
        finally:
            if watchdog:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except decoder.errors as exc:
        tally.rejected([decoder.reason(exc)])
    except Exception as exc:  # the point of fuzzing: record it and go on
        tally.report.findings.append(_finding(decoder, i, data, exc))
    except Hang as exc:
        tally.report.findings.append(_finding(decoder, i, data, exc))
    else:
        _outcome(tally, result)
    tally.timed(time.perf_counter() - wall, time.thread_time() - cpu, i, data, decoder)


async def _run_async(decoder: Decoder, inputs: Iterator[bytes], tally: _Tally) -> None:
    for i, data in enumerate(inputs):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            result = await decoder.check(data)
        except decoder.errors as exc:
            tally.rejected([decoder.reason(exc)])
        except trio.TooSlowError:
            tally.report.findings.append(Finding(decoder.name, i, "hang: no outcome within the deadline", data))
        except Exception as exc:
            tally.report.findings.append(_finding(decoder, i, data, exc))
        else:
            _outcome(tally, result)
        tally.timed(time.perf_counter() - wall, time.thread_time() - cpu, i, data, decoder)


def fuzz(decoders: dict[str, Decoder], signers: dict[bytes, Identity], count: int, seed: int,
         findings_dir: Path | None = None) -> list[Report]:
    """Fuzz each decoder in turn; write each finding's input to `findings_dir` if given."""
    reports = []
    for decoder in decoders.values():
        report = fuzz_decoder(decoder, count, seed, signers)
        if findings_dir is not None and report.findings:
            findings_dir.mkdir(parents=True, exist_ok=True)
            for f in report.findings:
                if f.input:
                    (findings_dir / f"{f.decoder}-{hashlib.sha256(f.input).hexdigest()[:16]}.bin").write_bytes(f.input)
        reports.append(report)
    return reports


def outcome_of(decoder: Decoder, data: bytes) -> list[str]:
    """The reasons `decoder` rejects `data` with, [] if it accepts it; anything a run would
    record as a finding is raised. For tests, and to know what a node must count."""
    try:
        result = trio.run(decoder.check, data) if decoder.is_async else decoder.check(data)
    except decoder.errors as exc:
        return [decoder.reason(exc)]
    return list(result) if isinstance(result, list) else []
