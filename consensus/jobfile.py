"""Turning a user's job description into JobSpec fields.

Accepts the seed's job files, `{"name", "docker_image", "command": [...], "required_cpu",
"required_memory"}`, and this project's names (`image`, `cpu`, `memory_mb`, `timeout`, `replicas`,
`quorum`, `price`, `env`) and BOINC's policy names: `target_nresults` (= replicas, n), `min_quorum`
(= quorum, k), `max_error_results`, `max_total_results`, `result_deadline` (seconds from award to
commit; default: timeout + 30). `required_cpu` / `cpu` are cores (a number); `required_memory` /
`memory_mb` are MiB as an integer, or a string with a unit (`"512m"`, `"1g"`, `"256Mi"`).
Every problem raises `JobFileError` naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import JobFileError
from .messages import MAX_REPLICAS, MAX_TOTAL_RESULTS

DEFAULTS = {"replicas": 3, "quorum": 2, "timeout": 60, "price": 1, "cpu": 1.0, "memory_mb": 256,
            "max_error_results": 3}
RESULT_GRACE_S = 30  # default result deadline beyond the job's timeout: sandbox start, image, upload
ALIASES = {"target_nresults": "replicas", "min_quorum": "quorum"}  # BOINC's names
KNOWN = {
    "name", "docker_image", "image", "command", "required_cpu", "cpu", "required_memory",
    "memory_mb", "timeout", "replicas", "quorum", "price", "env", "max_error_results",
    "max_total_results", "result_deadline", *ALIASES,
}


def _memory_mb(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise JobFileError(field, "must be MiB as an integer or a string like '512m'")
    if isinstance(value, int):
        mb = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]i?[bB]?)?\s*", value)
        if not m:
            raise JobFileError(field, f"cannot read {value!r} as a memory size (try '512m')")
        n, unit = int(m.group(1)), (m.group(2) or "m")[0].lower()
        mb = {"k": max(1, n // 1024), "m": n, "g": n * 1024}[unit]
    else:
        raise JobFileError(field, "must be MiB as an integer or a string like '512m'")
    if not 6 <= mb <= 1 << 20:
        raise JobFileError(field, "must be between 6 MiB (Docker's minimum) and 1 TiB")
    return mb


def parse_job(doc: Any) -> dict:
    """Validate a job document and return keyword arguments for JobSpec (minus the signing fields:
    submitter, nonce, created_ms)."""
    if not isinstance(doc, dict):
        raise JobFileError("job", "must be a JSON object")
    unknown = sorted(set(doc) - KNOWN)
    if unknown:
        raise JobFileError(unknown[0], "is not a known job field")
    doc = dict(doc)
    for alias, name in ALIASES.items():
        if alias in doc:
            if name in doc and doc[name] != doc[alias]:
                raise JobFileError(alias, f"contradicts {name}")
            doc[name] = doc.pop(alias)
    image_field = "docker_image" if "docker_image" in doc else "image"
    image = doc.get(image_field)
    if not isinstance(image, str) or not image.strip() or len(image) > 512:
        raise JobFileError(image_field, "is required: a non-empty image name")
    command = doc.get("command")
    if isinstance(command, str):
        raise JobFileError("command", "must be a list of strings (argv), e.g. [\"sh\", \"-c\", \"...\"]")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise JobFileError("command", "is required: a non-empty list of strings")
    name = doc.get("name", "")
    if not isinstance(name, str) or len(name) > 256:
        raise JobFileError("name", "must be a string of at most 256 characters")
    cpu_field = "required_cpu" if "required_cpu" in doc else "cpu"
    cpu = doc.get(cpu_field, DEFAULTS["cpu"])
    if isinstance(cpu, bool) or not isinstance(cpu, (int, float)) or not 0.001 <= cpu <= 256:
        raise JobFileError(cpu_field, "must be a number of cores between 0.001 and 256")
    mem_field = "required_memory" if "required_memory" in doc else "memory_mb"
    memory_mb = _memory_mb(doc.get(mem_field, DEFAULTS["memory_mb"]), mem_field)
    ints = {}

    def integer(key: str, lo: int, hi: int, default: int) -> int:
        v = doc.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise JobFileError(key, f"must be an integer between {lo} and {hi}")
        return v

    for key, lo, hi in (("timeout", 1, 7 * 24 * 3600), ("replicas", 1, MAX_REPLICAS),
                        ("quorum", 1, MAX_REPLICAS), ("price", 0, 2**53), ("max_error_results", 0, 4 * MAX_REPLICAS)):
        ints[key] = integer(key, lo, hi, DEFAULTS[key])
    if ints["quorum"] > ints["replicas"]:
        raise JobFileError("quorum", "must not exceed replicas")
    ints["max_total_results"] = integer("max_total_results", ints["replicas"], MAX_TOTAL_RESULTS,
                                        min(MAX_TOTAL_RESULTS, 2 * ints["replicas"]))
    ints["result_deadline"] = integer("result_deadline", 1, 30 * 24 * 3600, ints["timeout"] + RESULT_GRACE_S)
    env = doc.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in env.items()):
        raise JobFileError("env", "must be an object of string names to string values")
    return {
        "name": name,
        "image": image.strip(),
        "command": tuple(command),
        "env": tuple(sorted(env.items())),
        "cpu_millis": max(1, round(cpu * 1000)),
        "memory_mb": memory_mb,
        "timeout_s": ints["timeout"],
        "replicas": ints["replicas"],
        "quorum": ints["quorum"],
        "price": ints["price"],
        "max_error_results": ints["max_error_results"],
        "max_total_results": ints["max_total_results"],
        "result_deadline_s": ints["result_deadline"],
    }
