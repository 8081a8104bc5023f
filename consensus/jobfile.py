"""Turning a user's job description into JobSpec fields.

Accepts the seed's job files, `{"name", "docker_image", "command": [...], "required_cpu",
"required_memory"}`, and this project's names (`image`, `cpu`, `memory_mb`, `timeout`, `replicas`,
`quorum`, `price`, `env`) and BOINC's policy names: `target_nresults` (= replicas, n), `min_quorum`
(= quorum, k), `max_error_results`, `max_total_results`, `result_deadline` (seconds from award to
commit; default: timeout + 30). `required_cpu` / `cpu` are cores (a number); `required_memory` /
`memory_mb` are MiB as an integer, or a string with a unit (`"512m"`, `"1g"`, `"256Mi"`).
Also: `stdin` (text, or bytes from the CLI), `gpu` (bool), and for WebAssembly jobs `wasm_module`
(the module's bytes, read by the CLI from `--wasm FILE` or a job file's `wasm_file`), `fuel`
(fuel limit) and `price_per_mfuel`. The output quota: `out_max_bytes` (bytes as an integer, or a
string with a unit: `"10m"`, `"1g"`; default 1 GiB) and `out_max_files` (entries in /out, default
10,000); past either the job's result is `out_quota_exceeded` on every honest executor. A module larger than WASM_INLINE_PREFERRED travels by its
CID: the spec then carries `wasm_cid` (the CID `ipfs add --cid-version 1` gives the module's
bytes, computed here: no node needed), the submitting node imports the bytes into its block
store, and each executor fetches the blocks into its own, where they stay as cache (a module
inline in the spec would travel in every gossip copy of every announcement and certificate: about
1 MB per job for hashverify's 17 KB on five nodes, measured by `distributeai bench`). A module
is at most WASM_MODULE_MAX bytes, the most a node loads.
Verification (consensus/adaptive.py, consensus/compare.py): `verification` ("replicate", k-of-n,
the default, or "adaptive"), `trust_threshold`, `spot_check_floor` (0..1), `compare` and
`homogeneous`; `parse_verification`.
Inputs: `inputs`, a list of `{"cid": "bafy...", "path": "data"}` (a file or directory already on
the network, mounted read-only at /in/data; `parse_inputs`); a job file does not state sizes: the
fields carry 0 and the submitting node fills each input's size in before it signs the spec.
A batch (job array) adds `tasks`: a list of argument lists, one per task, each appended to
`command` and verified k-of-n on its own; a batch's `max_total_results` defaults to (and may not
exceed) BATCH_MAX_TOTAL_RESULTS, and `price` is paid per task.
Every problem raises `JobFileError` naming the field, and nothing else escapes: `load_job_document`
(a job file's bytes), `parse_tasks` (a `--tasks` file's bytes) and `parse_job` are fuzzed
(tools/fuzz) with that contract, and with one more: a document `parse_job` accepts always makes a
spec that every node accepts (the same limits as `JobSpec.from_body`, and the signed spec's size
cap), so a user's mistake is reported here, by field, not as a refusal by the node.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from .cid import BadCid, parse_cid_text
from .errors import JobFileError, RemoteProtocolError
from .codec import PUBKEY_LEN, SIG_LEN, encode
from .messages import (
    BATCH_MAX_TOTAL_RESULTS, MAX_REPLICAS, MAX_SIZE, MAX_TASK_ARGS, MAX_TASKS, MAX_TOTAL_RESULTS, OUT_MAX_BYTES,
    OUT_MAX_BYTES_LIMIT, OUT_MAX_FILES, OUT_MAX_FILES_LIMIT, STDIN_CAP, INPUTS_MAX_BYTES, MAX_INPUTS,
    WASM_MODULE_MAX, JobSpec,
)
from .compare import EXACT, Compare
from .fields import PPM, TRUST_THRESHOLD_MAX
from .spec import check_inputs, check_verification, input_path_problem
from .unixfs import file_cid

DEFAULTS = {"replicas": 3, "quorum": 2, "timeout": 60, "price": 1, "cpu": 1.0, "memory_mb": 256,
            "max_error_results": 3}
WASM_INLINE_PREFERRED = 4 * 1024  # at most WASM_INLINE_CAP; larger modules go by CID
RESULT_GRACE_S = 30  # default result deadline beyond the job's timeout: sandbox start, image, upload
ALIASES = {"target_nresults": "replicas", "min_quorum": "quorum"}  # BOINC's names
KNOWN = {
    "name", "docker_image", "image", "command", "required_cpu", "cpu", "required_memory",
    "memory_mb", "timeout", "replicas", "quorum", "price", "env", "max_error_results",
    "max_total_results", "result_deadline", "stdin", "gpu", "wasm_module", "fuel", "price_per_mfuel", "tasks",
    "out_max_bytes", "out_max_files", "inputs", *ALIASES,
    "verification", "trust_threshold", "spot_check_floor", "compare", "homogeneous",
}


# JobSpec.from_body's limits on what a user writes (a spec outside them is refused by every node).
MAX_COMMAND_ARGS, MAX_ARG_CHARS = 256, 4096
MAX_ENV, MAX_ENV_NAME, MAX_ENV_VALUE = 128, 256, 4096
MAX_DIGITS = 12  # a memory size in a string ("512m"): more digits than any valid size
MAX_TASKS_FILE = 16 << 20  # a tasks file's bytes, comments included
MAX_JOB_FILE = 1 << 20  # a spec is at most 64 KiB signed; JSON escapes take at most 6 bytes a byte
MAX_TASK_LINE = MAX_TASK_ARGS * (2 * 256 + 3)  # 16 arguments of 256 characters, each quoted and escaped


def load_job_document(data: bytes | str) -> Any:
    """The JSON value of a job file's contents; JobFileError("job") if it is not JSON or over
    MAX_JOB_FILE bytes (its spec could not be signed anyway, and JSON takes ~0.2 s a megabyte)."""
    if len(data) > MAX_JOB_FILE:
        raise JobFileError("job", f"has {len(data)} bytes; a job file is at most {MAX_JOB_FILE}")
    try:
        return json.loads(data)
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise JobFileError("job", "is nested too deeply to be a job file") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise JobFileError("job", f"is not valid JSON: {exc}") from None


def parse_tasks(data: bytes) -> list[list[str]]:
    """A tasks file: one task per line, its arguments shell-quoted; blank lines and # comments
    skipped. JobFileError("tasks") names the line of a quoting error or of a line too long to be
    a task, or says the file holds no tasks, more than MAX_TASKS, or more than one spec can carry.
    Bounded work: shlex is pure Python (about 3 us a character), so nothing is split that could
    not fit a spec anyway."""
    if len(data) > MAX_TASKS_FILE:
        raise JobFileError("tasks", f"the file has {len(data)} bytes, at most {MAX_TASKS_FILE} are read")
    tasks = []
    chars = 0
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if len(tasks) == MAX_TASKS:
            raise JobFileError("tasks", f"more than {MAX_TASKS} tasks (line {n})")
        if len(line) > MAX_TASK_LINE:
            raise JobFileError("tasks", f"line {n} is longer than {MAX_TASK_LINE} characters")
        chars += len(line)
        if chars > MAX_SIZE["spec"]:
            raise JobFileError("tasks", f"more tasks than one job's spec can carry (line {n})")
        try:
            tasks.append(shlex.split(line))
        except ValueError as exc:
            raise JobFileError("tasks", f"line {n}: {exc}") from None
    if not tasks:
        raise JobFileError("tasks", "no tasks in the file")
    return tasks


def _memory_mb(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise JobFileError(field, "must be MiB as an integer or a string like '512m'")
    if isinstance(value, int):
        mb = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{1,%d})\s*([kKmMgG]i?[bB]?)?\s*" % MAX_DIGITS, value, re.ASCII)
        if not m:
            raise JobFileError(field, f"cannot read {value[:32]!r} as a memory size (try '512m')")
        n, unit = int(m.group(1)), (m.group(2) or "m")[0].lower()
        mb = {"k": max(1, n // 1024), "m": n, "g": n * 1024}[unit]
    else:
        raise JobFileError(field, "must be MiB as an integer or a string like '512m'")
    if not 6 <= mb <= 1 << 20:
        raise JobFileError(field, "must be between 6 MiB (Docker's minimum) and 1 TiB")
    return mb


def _size_bytes(value: Any, field: str, most: int) -> int:
    """Bytes as an integer, or a string with a unit ("512k", "10m", "1g", "1GiB"; none: bytes)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise JobFileError(field, "must be bytes as an integer or a string like '100m'")
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*(\d{1,%d})\s*([kKmMgGtT]i?[bB]?|[bB])?\s*" % (MAX_DIGITS + 3), value, re.ASCII)
        if not m:
            raise JobFileError(field, f"cannot read {value[:32]!r} as a size (try '100m')")
        unit = (m.group(2) or "b")[0].lower()
        n = int(m.group(1)) << {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40}[unit]
    if not 0 <= n <= most:
        raise JobFileError(field, f"must be between 0 and {most} bytes")
    return n


def parse_job(doc: Any) -> dict:
    """Validate a job document and return keyword arguments for JobSpec (minus the signing fields:
    submitter, nonce, created_ms)."""
    if not isinstance(doc, dict):
        raise JobFileError("job", "must be a JSON object")
    unknown = sorted(set(doc) - KNOWN)
    if unknown:
        raise JobFileError(str(unknown[0])[:64], "is not a known job field")
    doc = dict(doc)
    for alias, name in ALIASES.items():
        if alias in doc:
            if name in doc and doc[name] != doc[alias]:
                raise JobFileError(alias, f"contradicts {name}")
            doc[name] = doc.pop(alias)
    module = doc.get("wasm_module")
    if module is not None and (not isinstance(module, bytes) or not module):
        raise JobFileError("wasm_module", "must be the bytes of a WebAssembly module")
    if module is not None and len(module) > WASM_MODULE_MAX:
        raise JobFileError("wasm_module", f"has {len(module)} bytes; a node loads modules of at most {WASM_MODULE_MAX}")
    image_field = "docker_image" if "docker_image" in doc else "image"
    image = doc.get(image_field, "" if module else None)
    if module is not None:
        if image:
            raise JobFileError(image_field, "a wasm job runs a module, not an image")
    elif not isinstance(image, str) or not image.strip() or len(image) > 512:
        raise JobFileError(image_field, "is required: a non-empty image name")
    command = doc.get("command")
    if isinstance(command, str):
        raise JobFileError("command", "must be a list of strings (argv), e.g. [\"sh\", \"-c\", \"...\"]")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
        raise JobFileError("command", "is required: a non-empty list of strings")
    if len(command) > MAX_COMMAND_ARGS or any(len(a) > MAX_ARG_CHARS for a in command):
        raise JobFileError("command", f"may have at most {MAX_COMMAND_ARGS} arguments "
                                      f"of at most {MAX_ARG_CHARS} characters")
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
    tasks = doc.get("tasks", [])
    if (not isinstance(tasks, list) or len(tasks) > MAX_TASKS
            or not all(isinstance(t, list) and len(t) <= MAX_TASK_ARGS
                       and all(isinstance(a, str) and len(a) <= 256 for a in t) for t in tasks)):
        raise JobFileError("tasks", f"must be a list of at most {MAX_TASKS} argument lists "
                                    f"(each at most {MAX_TASK_ARGS} strings of at most 256 characters)")
    most = BATCH_MAX_TOTAL_RESULTS if tasks else MAX_TOTAL_RESULTS
    if tasks and ints["replicas"] > most:
        raise JobFileError("replicas", f"a batch runs on at most {most} executors")
    ints["max_total_results"] = integer("max_total_results", ints["replicas"], most,
                                        min(most, 2 * ints["replicas"]))
    ints["result_deadline"] = integer("result_deadline", 1, 30 * 24 * 3600, ints["timeout"] + RESULT_GRACE_S)
    stdin = doc.get("stdin", b"")
    if isinstance(stdin, str):
        stdin = stdin.encode()
    if not isinstance(stdin, bytes) or len(stdin) > STDIN_CAP:
        raise JobFileError("stdin", f"must be text or bytes of at most {STDIN_CAP} bytes")
    gpu = doc.get("gpu", False)
    if not isinstance(gpu, bool):
        raise JobFileError("gpu", "must be true or false")
    fuel = integer("fuel", 0, 2**62, 0)
    price_per_mfuel = integer("price_per_mfuel", 0, 2**40, 0)
    if module is None and (fuel or price_per_mfuel):
        raise JobFileError("fuel", "fuel applies to wasm jobs only")
    out_max_bytes = _size_bytes(doc.get("out_max_bytes", OUT_MAX_BYTES), "out_max_bytes", OUT_MAX_BYTES_LIMIT)
    out_max_files = integer("out_max_files", 0, OUT_MAX_FILES_LIMIT, OUT_MAX_FILES)
    inputs = parse_inputs(doc.get("inputs", []))
    env = doc.get("env", {})
    if (not isinstance(env, dict) or len(env) > MAX_ENV
            or not all(isinstance(k, str) and 0 < len(k) <= MAX_ENV_NAME and isinstance(v, str)
                       and len(v) <= MAX_ENV_VALUE for k, v in env.items())):
        raise JobFileError("env", f"must be an object of at most {MAX_ENV} names (at most {MAX_ENV_NAME} "
                                  f"characters) to string values (at most {MAX_ENV_VALUE})")
    fields = {
        "name": name,
        "image": image.strip() if image else "",
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
        "sandbox": "wasm" if module else "container",
        "stdin": stdin,
        "wasm_module": module if module and len(module) <= WASM_INLINE_PREFERRED else b"",
        "wasm_cid": file_cid(module) if module and len(module) > WASM_INLINE_PREFERRED else b"",
        "gpu": gpu,
        "fuel_limit": fuel,
        "price_per_mfuel": price_per_mfuel,
        "tasks": tuple(tuple(t) for t in tasks),
        "out_max_bytes": out_max_bytes,
        "out_max_files": out_max_files,
        "inputs": tuple((cid, path, 0) for cid, path in inputs),
    }
    fields.update(parse_verification(doc))
    check_verification_fields(fields)
    size = signed_spec_size_bound(fields)
    if size > MAX_SIZE["spec"]:
        raise JobFileError("job", f"is too large: its signed spec would take up to {size} bytes, "
                                  f"at most {MAX_SIZE['spec']} are allowed")
    return fields


def parse_verification(doc: dict) -> dict:
    """A job document's verification fields as JobSpec carries them: `verification` (a string;
    "replicate" by default), `trust_threshold` (an integer, default 10), `spot_check_floor` (a
    number from 0 to 1, default 0.05, carried in millionths, rounded to the nearest), `compare`
    (`{"kind": "exact"}` or `{"kind": "numeric", "rel": 1e-6, "abs": 1e-9, "files": [...]}`; the
    tolerances as JSON numbers or decimal strings, the files in any order) and `homogeneous` (a
    list of platform class names, in any order). Which values are allowed is the spec's to say
    (`Compare.from_body`, `check_verification`): this only turns the user's forms into the wire's."""
    verification = doc.get("verification", "replicate")
    if not isinstance(verification, str):
        raise JobFileError("verification", "must be \"replicate\" or \"adaptive\"")
    threshold = doc.get("trust_threshold", 10)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= TRUST_THRESHOLD_MAX:
        raise JobFileError("trust_threshold", f"must be an integer between 1 and {TRUST_THRESHOLD_MAX}")
    floor = doc.get("spot_check_floor", 0.05)
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
        raise JobFileError("spot_check_floor", "must be a number between 0 and 1 (a probability)")
    homogeneous = doc.get("homogeneous", [])
    if not isinstance(homogeneous, list) or not all(isinstance(c, str) for c in homogeneous):
        raise JobFileError("homogeneous", "must be a list of platform class names (arch, cpu, gpu)")
    if len(set(homogeneous)) != len(homogeneous):
        raise JobFileError("homogeneous", "names a platform class twice")
    return {"verification": verification, "trust_threshold": threshold,
            "spot_check_floor_ppm": round(floor * PPM), "compare": parse_compare(doc.get("compare", {"kind": "exact"})),
            "homogeneous": tuple(sorted(homogeneous))}


def parse_compare(value: Any) -> Compare:
    """A job document's `compare` object as the spec's Compare; JobFileError("compare") with the
    spec's own reason when `Compare.from_body` refuses it."""
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str) or \
            not set(value) <= {"kind", "rel", "abs", "files"}:
        raise JobFileError("compare", "must be {\"kind\": \"exact\"} or {\"kind\": \"numeric\", \"rel\": 1e-6, "
                                      "\"abs\": 1e-9, \"files\": [\"out.json\"]}")
    if value == {"kind": "exact"}:
        return EXACT
    tolerances = []
    for key in ("rel", "abs"):
        v = value.get(key, "" if value["kind"] == "exact" else 0)
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise JobFileError("compare", f"{key} must be a number or a decimal string like \"1e-6\"")
        tolerances.append(v if isinstance(v, str) else str(v) if isinstance(v, int) else repr(v))  # 1e-06, 0
    files = value.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise JobFileError("compare", "files must be a list of output paths")
    try:
        return Compare.from_body([value["kind"], *tolerances, sorted(files)])
    except RemoteProtocolError as exc:
        raise JobFileError("compare", (exc.detail or exc.reason).removeprefix("compare").strip()) from None


def check_verification_fields(fields: dict) -> None:
    """JobFileError naming the field when the spec's `check_verification` refuses the fields
    together (a batch that is not replicated exactly, a homogeneous job with too many results)."""
    spec = JobSpec(submitter=bytes(PUBKEY_LEN), nonce=bytes(16), created_ms=0, **fields)
    try:
        check_verification(spec)
    except RemoteProtocolError as exc:
        detail = exc.detail or exc.reason
        field = detail.split(" ", 1)[0].removesuffix("[]")
        raise JobFileError(field, detail.removeprefix(field).strip()) from None


def parse_inputs(value: Any) -> list[tuple[bytes, str]]:
    """A job file's `inputs`: a list of at most MAX_INPUTS objects `{"cid": "bafy...", "path":
    "data"}` (a CID already on the network, in any text form `parse_cid_text` reads, and where it
    appears under /in). (cid, path) pairs; JobFileError("inputs") naming the entry otherwise.
    Sizes are not the file's to state: the submitting node finds them (JobSpec.inputs' sizes are
    0 in `parse_job`'s fields until it does)."""
    if not isinstance(value, list) or len(value) > MAX_INPUTS:
        raise JobFileError("inputs", f"must be a list of at most {MAX_INPUTS} objects {{\"cid\", \"path\"}}")
    pairs = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"cid", "path"}:
            raise JobFileError("inputs", f"entry {i} must be an object with exactly \"cid\" and \"path\"")
        cid, path = item["cid"], item["path"]
        if not isinstance(cid, str):
            raise JobFileError("inputs", f"entry {i}: cid must be a CID's text (bafy...)")
        try:
            cid = parse_cid_text(cid)
        except BadCid as exc:
            raise JobFileError("inputs", f"entry {i}: cid {cid[:64]!r} is not a CID: {exc}") from None
        problem = input_path_problem(path)
        if problem:
            raise JobFileError("inputs", f"entry {i}: path {str(path)[:64]!r} {problem}")
        pairs.append((cid, path))
    check_input_paths([path for _, path in pairs])
    return pairs


def check_input_paths(paths: list[str]) -> None:
    """JobFileError("inputs") if two inputs share a path or one lies inside another (the rule of
    JobSpec.inputs, for the paths a user gave: a job file's and `submit --input`'s together)."""
    try:
        check_inputs([[b"\x01\x55\x12\x20" + bytes(32), path, 0] for path in paths])
    except RemoteProtocolError as exc:
        raise JobFileError("inputs", (exc.detail or exc.reason).removeprefix("inputs ")) from None


def signed_spec_size_bound(fields: dict) -> int:
    """The most bytes a spec with these fields takes once signed: the largest submitter, nonce
    and creation time, in the envelope [kind, body, signer, signature]."""
    fields = {**fields, "inputs": tuple((cid, path, INPUTS_MAX_BYTES) for cid, path, _ in fields.get("inputs", ()))}
    body = JobSpec(submitter=b"\xff" * PUBKEY_LEN, nonce=b"\xff" * 16, created_ms=2**63 - 1, **fields).to_body()
    return len(encode([JobSpec.kind, body, b"\xff" * PUBKEY_LEN, b"\xff" * SIG_LEN]))
