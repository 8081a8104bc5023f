"""Job sandboxes: run one argv under limits, get exit code and capped output back.

Backends: "docker" (the real one) and "process" (isolates nothing; development only). The node
opens one by name from its config with `open_sandbox` and calls the blocking `run` from
`trio.to_thread.run_sync`. This package imports nothing from the rest of distributeai.
"""

from .base import KINDS, RunRequest, RunResult, Sandbox, SandboxError, open_sandbox

__all__ = ["KINDS", "RunRequest", "RunResult", "Sandbox", "SandboxError", "open_sandbox"]
