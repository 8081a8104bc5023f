"""Job sandboxes: run one job under limits, get exit code and capped output back.

Backends (`KINDS`): "docker" (containers on a Docker daemon), "bwrap" (bubblewrap + cgroup v1
limits on the host's /usr), "wasm" (a WASI module in-process under wasmtime, fuel-metered) and
"process" (isolates nothing; development only). The node opens one by name from its config with
`open_sandbox` and calls the blocking `has_image`, `pull` and `run` from trio worker threads, and
`cancel` (from another worker thread) when the node stops during a run.
This package imports nothing from the rest of distributeai.
"""

from .base import KINDS, REASONS, OutEntry, RunRequest, RunResult, Sandbox, SandboxError, open_sandbox

__all__ = [
    "KINDS", "OutEntry", "REASONS", "RunRequest", "RunResult", "Sandbox", "SandboxError", "open_sandbox",
]
