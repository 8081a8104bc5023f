"""`distributeai sandbox-time`: time a trivial job (the demo hash) run directly in each sandbox,
without the network: start->exit (the sandbox's own measure) and the whole run() call.

`time_backends` returns {backend: figures}; figures are start_exit_ms_median, start_exit_ms_min,
run_ms_median and runs, or {"error": why} for a backend that is unavailable or failed."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .devnet import DEMO_COMMAND

BACKENDS = ["docker", "bwrap", "wasm", "process"]


def hashverify_module() -> bytes:
    """The demo hash as a WASI module, from the sandbox package's workloads (checkout or wheel)."""
    import distributeai.sandbox as sandbox_pkg

    return (Path(sandbox_pkg.__file__).parent / "workloads" / "hashverify.wasm").read_bytes()


def time_backends(backends: list[str] | None, runs: int) -> dict[str, dict]:
    """Run the demo job once to warm up, then `runs` timed runs, in each backend (default: all)."""
    from distributeai.sandbox import RunRequest, SandboxError, open_sandbox

    figures: dict[str, dict] = {}
    for kind in backends or BACKENDS:
        try:
            sandbox = open_sandbox(kind, log=lambda _: None)
            sandbox.check()
        except (ValueError, SandboxError, ImportError) as exc:
            figures[kind] = {"error": str(exc)}
            continue
        if kind == "wasm":
            req = RunRequest(image="wasm", command=["hashverify"], stdin=b"Hello\n", wasm_module=hashverify_module())
        else:
            req = RunRequest(image="alpine:latest", command=list(DEMO_COMMAND))
        try:
            sandbox.run(req)
            inner, outer = [], []
            for _ in range(runs):
                started = time.perf_counter()
                result = sandbox.run(req)
                outer.append((time.perf_counter() - started) * 1000)
                inner.append(result.duration_s * 1000)
        except SandboxError as exc:
            figures[kind] = {"error": str(exc)}
            continue
        finally:
            sandbox.close()
        figures[kind] = {"start_exit_ms_median": round(statistics.median(inner), 3),
                         "start_exit_ms_min": round(min(inner), 3),
                         "run_ms_median": round(statistics.median(outer), 3), "runs": runs}
    return figures
