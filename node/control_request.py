"""Parsing and validating one control-API request line, as pure code (no socket, no agent).

Contract: `parse_line(line)` (= `check_request(decode_line(line))`) and `check_request(obj)` return a request dict whose every argument
has the type and range its op needs (defaults filled in), or raise `BadRequest`, a ValueError
whose `reason` is "bad_request" and whose message says what is wrong. Nothing else escapes, for
any input: the fuzz harness (tools/fuzz) holds them to that. The control API (control.py) answers
a BadRequest with `{"error": ..., "code": "bad_request"}` and counts it as a rejection with
reason REJECT_REASON; a well-formed request that names an unknown job is an answer, not a
rejection.
"""

from __future__ import annotations

import json
import math
from typing import Any

REJECT_REASON = "control_bad_request"  # the label in distributeai_messages_rejected_total
MAX_REQUEST = 4 << 20  # bytes of a request line: a submit may carry a wasm module (hex) too large for the spec
MAX_WAIT_S = 3600.0
DEFAULT_WAIT_S = 60.0
MAX_JOB_ID_CHARS = 128       # a job id is 64 hex digits; anything much longer is not one
MIN_JOB_PREFIX = 8           # hex digits of a job id that may stand for it, as git takes a commit's
CANDIDATES_SHOWN = 5         # ids an ambiguous prefix's answer lists
MAX_LIST = 10_000            # jobs in one `list` answer
MAX_TASKS_PAGE = 10_000      # tasks in one `tasks` answer
MAX_INDEX = 2**31            # a task index (a batch has at most consensus.messages.MAX_TASKS)
FIND_PEERS_MAX = 1000
MAX_PEER_ID_CHARS = 128
MAX_PATH_CHARS = 4096
OPS = ("info", "submit", "status", "wait", "list", "credits", "reputation", "peers", "cancel",
       "result", "tasks", "stored_peers", "find_peers", "blob_add", "blob_get", "blob_ls", "transfers")
MAX_CID_CHARS = 128


class BadRequest(ValueError):
    """A control request that is not JSON, not an object, names no known op, or carries an
    argument of the wrong type or range."""

    reason = "bad_request"


def parse_line(line: bytes) -> dict:
    """One request line (without its newline) to a checked request."""
    return check_request(decode_line(line))


def decode_line(line: bytes) -> Any:
    """The JSON value of a request line; BadRequest if it is not JSON or over MAX_REQUEST bytes
    (parsing 100 MB of JSON takes seconds: the fuzzer found a request that did)."""
    if len(line) > MAX_REQUEST:
        raise BadRequest(f"request of {len(line)} bytes, at most {MAX_REQUEST}")
    try:
        obj = json.loads(line)
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise BadRequest("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers over 4300 digits
        raise BadRequest(f"not JSON: {exc}") from None
    return obj


def check_request(obj: Any) -> dict:
    """A decoded request object to a checked request (see the module docstring)."""
    if not isinstance(obj, dict):
        raise BadRequest("request must be a JSON object")
    op = obj.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise BadRequest(f"unknown op {_short(op)}")
    req: dict[str, Any] = {"op": op}
    if op == "submit":
        if obj.get("spec") is not None:  # an unsigned spec, for the node to sign (its own specs only)
            req["spec"] = _hex(obj["spec"], "spec")
        else:
            req["signed_spec"] = _hex(obj.get("signed_spec", ""), "signed_spec")
        req["module"] = _hex(obj.get("module", ""), "module") or None
    elif op in ("status", "wait", "cancel", "result", "tasks"):
        req["job_id"] = _job_id(obj.get("job_id", ""))
    if op == "wait":
        timeout = obj.get("timeout", DEFAULT_WAIT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise BadRequest("timeout must be a number of seconds")
        if isinstance(timeout, float) and not math.isfinite(timeout) or timeout < 0:
            raise BadRequest("timeout must be a finite, non-negative number of seconds")
        req["timeout"] = float(min(timeout, MAX_WAIT_S))
    elif op == "result":
        out = obj.get("out")
        if out is not None and out != "":
            if not isinstance(out, str) or "\x00" in out or len(out) > MAX_PATH_CHARS:
                raise BadRequest("out must be a directory path")
            req["out"] = out
    elif op == "tasks":
        req["start"] = _int(obj.get("start", 0), "start", 0, MAX_INDEX)
        req["limit"] = min(_int(obj.get("limit", 100), "limit", 0, MAX_INDEX), MAX_TASKS_PAGE)
    elif op == "list":
        req["limit"] = min(_int(obj.get("limit", 50), "limit", 0, MAX_INDEX), MAX_LIST)
    elif op == "blob_add":
        req["path"] = _path(obj.get("path"), "path")
    elif op == "blob_get":
        cid = obj.get("cid")
        if not isinstance(cid, str) or not 0 < len(cid) <= MAX_CID_CHARS:
            raise BadRequest("cid must be a CID's text (bafy..., bafk... or Qm...)")
        req["cid"], req["out"] = cid, _path(obj.get("out"), "out")
        providers = obj.get("providers", [])
        if (not isinstance(providers, list) or len(providers) > FIND_PEERS_MAX
                or not all(isinstance(p, str) and 0 < len(p) <= MAX_PEER_ID_CHARS for p in providers)):
            raise BadRequest(f"providers must be a list of at most {FIND_PEERS_MAX} peer ids")
        req["providers"] = list(dict.fromkeys(providers))
    elif op == "find_peers":
        ids = obj.get("peer_ids")
        if (not isinstance(ids, list) or len(ids) > FIND_PEERS_MAX
                or not all(isinstance(p, str) and len(p) <= MAX_PEER_ID_CHARS for p in ids)):
            raise BadRequest(f"peer_ids must be a list of at most {FIND_PEERS_MAX} peer ids")
        lookup = obj.get("lookup", False)
        if not isinstance(lookup, bool):
            raise BadRequest("lookup must be true or false")
        req["peer_ids"], req["lookup"] = list(dict.fromkeys(ids)), lookup
    return req


def _path(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > MAX_PATH_CHARS:
        raise BadRequest(f"{name} must be a path")
    return value


def _short(value: Any) -> str:
    return repr(value)[:64]


def _hex(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise BadRequest(f"{name} is not hex") from None


def _job_id(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_JOB_ID_CHARS:
        raise BadRequest("job_id must be a job id (hex)")
    return value.lower()


def _int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be an integer in [{lo}, {hi}]")
    return value


def job_id_problem(given: str) -> dict | None:
    """Why `given` (lowercased) cannot name a job, as a control-API error, or None if it can: a
    job id is 64 hex digits, and any unique prefix of at least MIN_JOB_PREFIX of them stands for
    it. Not hex: unknown_job (an answer, as for any id nobody knows); too short: bad_job_id."""
    if len(given) > 64 or any(ch not in "0123456789abcdef" for ch in given):
        return {"error": f"no job {_short(given)} known to this node", "code": "unknown_job"}
    if len(given) < MIN_JOB_PREFIX:
        return {"error": f"job id {given!r} is too short: give at least {MIN_JOB_PREFIX} of its hex digits",
                "code": "bad_job_id"}
    return None


def resolve_job_id(given: str, matches: list[str]) -> tuple[str | None, dict | None]:
    """(the job id `given` stands for, None) or (None, error), from the known ids that start
    with it (`matches`, at most CANDIDATES_SHOWN + 1 of them, sorted). An ambiguous prefix's
    error lists the candidates on one line."""
    if len(matches) == 1:
        return matches[0], None
    if not matches:
        return None, {"error": f"no job {given} known to this node", "code": "unknown_job"}
    shown = ", ".join(m[:16] for m in matches[:CANDIDATES_SHOWN])
    more = " and more" if len(matches) > CANDIDATES_SHOWN else ""
    return None, {"error": f"job id prefix {given} is ambiguous: it matches {shown}{more}", "code": "ambiguous_job",
                  "candidates": matches[:CANDIDATES_SHOWN]}
