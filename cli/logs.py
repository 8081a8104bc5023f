"""The log of a service (`node start`, `bootstrap start`): stderr, as text for people or as one JSON
object a line for log shippers (`--log-format json`, config key `log_format`,
`DISTRIBUTEAI_LOG_FORMAT`).

A JSON line holds `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message` (the
formatted text) and `fields`: the record's extra attributes (`log.info(..., extra={...})`), with
`exc` holding a traceback when there is one, so every line of the log parses on its own. Python
warnings go through the same log.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json.dumps({
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "fields": fields,
        }, default=str)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log at `level` to stderr in `fmt` ("text" or "json"), with libp2p's own loggers kept quiet."""
    # Import libp2p first: importing it clears the handlers of its loggers (docs/libp2p.md, "Install");
    # through distributeai.p2p, which first makes libp2p's unused modules lazy (items 17-22).
    import distributeai.p2p  # noqa: F401
    import libp2p  # noqa: F401

    from distributeai.p2p.overlay import quiet_libp2p_logs

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler], force=True)
    logging.captureWarnings(True)
    quiet_libp2p_logs()
