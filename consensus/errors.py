"""Error types of the protocol core.

Following h11, faults are split by who committed them: a `RemoteProtocolError` is something a peer
sent that breaks the protocol (it feeds rejection counters and, later, reputation); a
`LocalProtocolError` is this node asking the core for something illegal (a bug or a user mistake).
Every `RemoteProtocolError` carries a short `reason` code that is safe to use as a metric label.
"""


class ProtocolError(Exception):
    """Base class. `reason` is a short snake_case code, stable across versions."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class RemoteProtocolError(ProtocolError):
    """A peer's message is malformed, forged, stale, oversized or illegal in the job's state."""


class LocalProtocolError(ProtocolError):
    """This node asked the core for something illegal."""


class JobFileError(ValueError):
    """A user's job description is invalid; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
