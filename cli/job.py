"""Jobs: `submit`, and `job status|result|list|cancel` on the jobs a node knows."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from .cmdline import JOB_ARGV, SubmitCommand  # noqa: F401 (SubmitCommand: for main.py)
from .common import (
    DataDirOption, JsonOption, check_job_id, control, fail, job_error_code, node_dir, print_json, safe,
)
from .jobview import job_exit_code, print_job, result_report, task_note, verification_line  # noqa: F401  (print_job: cli/tools.py uses it)
from .transfer_bar import run_with_bar

job_app = typer.Typer(no_args_is_help=True, help="Look at jobs.")

# `submit` is a SubmitCommand (cmdline.py): the job's command is taken off the line before click
# parses the rest.
SUBMIT_CONTEXT: dict = {}


def load_job_file(path: Path) -> Any:
    from distributeai.consensus.errors import JobFileError
    from distributeai.consensus.jobfile import load_job_document

    try:
        return load_job_document(path.read_bytes())
    except FileNotFoundError:
        fail(f"job file {path} does not exist")
    except OSError as exc:
        fail(f"job file {path}: cannot read it: {exc.strerror}")
    except JobFileError as exc:
        fail(f"job file {path} {exc.message}")


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{what}: cannot read {path}: {exc.strerror}")


def local_input(item: str) -> tuple[str, str]:
    """`--input PATH[:NAME]` as (absolute path, name under /in). A path that exists as given
    (colon and all) is taken whole; else the part after the last colon is the name."""
    from distributeai.consensus.spec import input_path_problem

    path, name = item, ""
    if not os.path.lexists(item) and ":" in item:
        path, name = item.rsplit(":", 1)
    if not os.path.exists(path):
        fail(f"--input {item}: {path} does not exist")
    path = os.path.abspath(path)
    name = name or os.path.basename(path.rstrip("/")) or "input"
    problem = input_path_problem(name)
    if problem:
        fail(f"--input {item}: the name {name!r} {problem}")
    return path, name


def read_tasks(path: Path) -> list[list[str]]:
    """A tasks file (consensus.jobfile.parse_tasks): one task per line, shell-quoted."""
    from distributeai.consensus.errors import JobFileError
    from distributeai.consensus.jobfile import parse_tasks

    try:
        return parse_tasks(read_bytes(path, "--tasks"))
    except JobFileError as exc:
        fail(f"--tasks {path}: {exc.message}")


def submit(
    ctx: typer.Context,
    data_dir: Optional[Path] = DataDirOption,
    file: Optional[Path] = typer.Option(None, "-f", "--file", help="Job file (JSON), e.g. the seed's job files."),
    image: Optional[str] = typer.Option(None, help="Container image, e.g. alpine:latest."),
    cmd: Optional[str] = typer.Option(None, "--cmd", help="The program to run; the words after it are its "
                                      "arguments (the rule above)."),
    replicas: Optional[int] = typer.Option(None, help="Executors to run the job (n). Default 3."),
    quorum: Optional[int] = typer.Option(None, help="Executors that must agree (k). Default 2."),
    timeout: Optional[int] = typer.Option(None, help="Seconds a job may run. Default 60."),
    price: Optional[int] = typer.Option(None, help="Credits paid to each agreeing executor. Default 1."),
    max_error_results: Optional[int] = typer.Option(None, help="Executors that may fail before the job does. Default 3."),
    max_total_results: Optional[int] = typer.Option(None, help="Awards in all, replacements included. Default 2n."),
    result_deadline: Optional[int] = typer.Option(None, help="Seconds from award to commit per executor. Default timeout + 30."),
    wasm: Optional[Path] = typer.Option(None, "--wasm", help="A WebAssembly (WASI) module to run instead of an image."),
    stdin: Optional[str] = typer.Option(None, "--stdin", help="Text fed to the job's standard input."),
    stdin_file: Optional[Path] = typer.Option(None, "--stdin-file", help="A file fed to the job's standard input."),
    fuel: Optional[int] = typer.Option(None, "--fuel", help="WASM: the fuel limit."),
    price_per_mfuel: Optional[int] = typer.Option(None, "--price-per-mfuel", help="WASM: credits per million fuel."),
    gpu: bool = typer.Option(False, "--gpu", help="The job needs a GPU."),
    out_max: Optional[str] = typer.Option(None, "--out-max", help="Output quota: bytes the job may leave in "
                                          "/out, e.g. 100m. Default 1g."),
    out_max_files: Optional[int] = typer.Option(None, "--out-max-files", help="Output quota: entries in /out. "
                                                "Default 10000."),
    tasks_file: Optional[Path] = typer.Option(None, "--tasks", help="A batch: one task's arguments per line "
                                              "(shell-quoted), each appended to the command and verified on its own."),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE for the job's environment; repeatable."),
    inputs: list[str] = typer.Option([], "--input", metavar="PATH[:NAME]", help="A file or directory the job reads at "
                                     "/in/NAME (read-only; NAME defaults to the path's last part); repeatable."),
    verification: Optional[str] = typer.Option(None, "--verification", help="replicate (k-of-n on every job, the "
                                               "default) or adaptive (a trusted executor runs it alone, spot-checked)."),
    trust_threshold: Optional[int] = typer.Option(None, "--trust-threshold", help="Adaptive: the consecutive valid "
                                                  "results an executor needs to run a job alone. Default 10."),
    spot_check_floor: Optional[float] = typer.Option(None, "--spot-check-floor", help="Adaptive: the least chance "
                                                     "(0..1) that a single run is checked. Default 0.05."),
    cpu: Optional[float] = typer.Option(None, "--cpu", help="Cores the job needs. Default 1."),
    memory: Optional[int] = typer.Option(None, "--memory", help="MiB the job may use. Default 256."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the job id and return at once."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object."),
    exit_code: bool = typer.Option(False, "--exit-code", help="Once verified, exit with the job's own exit code "
                                   "(124: it timed out; 137: out of memory; 1: none in 0..255, or over its "
                                   "output quota). A job not verified exits 1 either way."),
) -> None:
    """Have the running node sign a job with its key and announce it; wait until it is verified or fails.
    Without --exit-code, exit 0 when the executors agree on a result (whatever the job's own exit code), else 1.

    After --cmd PROGRAM come the job's arguments, but submit's own long
    options at the end of the line are submit's (a trailing --json is).
    To give the job such a word, end its command with --: the line
    `--cmd jq --json -- --replicas 5` runs `jq --json` on 5 executors.
    Ctrl-C while waiting leaves the job running and says how to follow it.

    Example: distributeai submit --data-dir ./node1 --image alpine:latest --cmd sh -c "echo 'Hello' | sha256sum" --json
    """
    from distributeai.consensus.errors import JobFileError
    from distributeai.consensus.jobfile import check_input_paths, parse_job
    from distributeai.consensus.messages import JobSpec, encode_body
    from distributeai.node.paths import key_path

    extra = list(ctx.meta.get(JOB_ARGV, []))
    if file is not None and (image or cmd or wasm):
        fail("give either -f FILE or --image/--wasm with --cmd, not both")
    if image and wasm:
        fail("give either --image or --wasm, not both")
    if file is not None:
        doc = load_job_file(file)
        if isinstance(doc, dict) and "wasm_file" in doc:
            doc["wasm_module"] = read_bytes((file.parent / str(doc.pop("wasm_file"))), "wasm_file")
    elif image or cmd or wasm:
        if not (image or wasm):
            fail("--image or --wasm is required with --cmd")
        if cmd is None:
            fail("--cmd is required (for --wasm: the program name, then its arguments)")
        doc = {"image": image, "command": [cmd, *extra]} if image else \
              {"wasm_module": read_bytes(wasm, "--wasm"), "command": [cmd, *extra]}
    else:
        fail("nothing to submit: give -f FILE, or --image IMAGE (or --wasm FILE) --cmd ARG ...")
    if stdin is not None and stdin_file is not None:
        fail("give either --stdin or --stdin-file, not both")
    if isinstance(doc, dict):
        for key, value in (("replicas", replicas), ("quorum", quorum), ("timeout", timeout), ("price", price),
                           ("max_error_results", max_error_results), ("max_total_results", max_total_results),
                           ("result_deadline", result_deadline), ("fuel", fuel), ("price_per_mfuel", price_per_mfuel),
                           ("stdin", stdin if stdin_file is None else read_bytes(stdin_file, "--stdin-file")),
                           ("gpu", gpu or None), ("cpu", cpu), ("memory_mb", memory),
                           ("out_max_bytes", out_max), ("out_max_files", out_max_files),
                           ("verification", verification), ("trust_threshold", trust_threshold),
                           ("spot_check_floor", spot_check_floor)):
            if value is not None:
                doc[key] = value
    if tasks_file is not None and isinstance(doc, dict):
        doc["tasks"] = read_tasks(tasks_file)
    if env and isinstance(doc, dict):
        pairs = dict(doc.get("env") or {}) if isinstance(doc.get("env"), dict) else {}
        for item in env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                fail(f"--env {item!r} must be NAME=VALUE")
            pairs[name] = value
        doc["env"] = pairs
    module = doc.get("wasm_module") if isinstance(doc, dict) else None
    try:
        fields = parse_job(doc)
    except JobFileError as exc:
        fail(f"invalid job: {exc}")
    local = [local_input(item) for item in inputs]
    try:
        check_input_paths([path for _, path, _ in fields["inputs"]] + [name for _, name in local])
    except JobFileError as exc:
        fail(f"invalid job: {exc}")
    data_dir = node_dir(data_dir)
    if not key_path(data_dir).exists():
        fail(f"no node key in {data_dir}: start a node there first with `distributeai node start --data-dir {data_dir}`", 1)
    from distributeai.p2p.identity import KeyFileError, key_file_public_key

    # The CLI never opens the seed: the running node signs the spec with its key (which may be
    # encrypted, and is then unlocked once, by `node start`). The spec names it as the submitter.
    try:
        submitter = key_file_public_key(key_path(data_dir))
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    spec = JobSpec(submitter=submitter, nonce=os.urandom(16), created_ms=int(time.time() * 1000), **fields)
    request = {"op": "submit", "spec": encode_body(spec).hex()}
    if spec.wasm_cid:  # the node imports it into its block store, where executors fetch it by CID
        request["module"] = module.hex()
    if local:
        request["inputs"] = [{"path": path, "name": name} for path, name in local]
    # Inputs are imported (or fetched, by CID) before the node answers: no time limit then.
    answer = run_with_bar(data_dir, request, as_json, timeout=None if (local or spec.inputs) else 30.0)
    if "error" in answer:
        fail(f"the node refused the job: {answer['error']}", 1)
    job_hex = answer["job_id"]
    if no_wait:
        typer.echo(json.dumps({"job_id": job_hex}) if as_json else job_hex)
        return
    if not as_json:
        what = f" ({len(spec.tasks)} tasks, each)" if spec.is_batch else ""
        alone = "; a trusted executor may run it alone" if spec.verification == "adaptive" else ""
        typer.echo(f"submitted {job_hex}; waiting for {spec.quorum} of {spec.replicas} executors to agree{what}{alone}",
                   err=True)
    deadline = time.monotonic() + spec.timeout_s + 120
    view = wait_for_verdict(data_dir, {"job_id": job_hex, "status": "announced"}, spec.quorum, spec.replicas,
                            deadline, show=not as_json)
    print_job(view, as_json)
    if exit_code:
        raise typer.Exit(job_exit_code(view))
    raise typer.Exit(0 if view.get("status") == "verified" else 1)


FINAL = ("verified", "failed", "nondeterministic")
WATCH_S = 24 * 3600  # `job status --watch` gives up after this; Ctrl-C ends it sooner


def wait_for_verdict(data_dir: Path, first: dict, quorum: int, replicas: int, deadline: float, show: bool) -> dict:
    """The job's view once it has a verdict (or as it stands at `deadline`, monotonic); with
    `show` and stderr a terminal, its live progress on stderr meanwhile. Ctrl-C stops the
    waiting, not the job: it prints the job's id and how to follow or cancel it, exit 130."""
    job_hex = first["job_id"]

    def poll(timeout: float) -> dict:
        return control(data_dir, {"op": "wait", "job_id": job_hex, "timeout": timeout}, timeout=timeout + 60)

    view = first
    try:
        if show and sys.stderr.isatty():
            from distributeai.cli.progress import wait_with_progress

            view = wait_with_progress(poll, first, quorum, replicas, deadline)
        while time.monotonic() < deadline and view.get("status") not in FINAL:
            view = poll(30)
    except KeyboardInterrupt:
        for line in interrupted_lines(job_hex, data_dir):
            typer.echo(line, err=True)
        raise typer.Exit(130) from None
    return view


def interrupted_lines(job_hex: str, data_dir: Path) -> list[str]:
    """What Ctrl-C while waiting prints: the job runs on; how to follow it or cancel it."""
    where = f"--data-dir {shlex.quote(str(data_dir))}"
    return [f"interrupted: job {job_hex} keeps running",
            f"  follow it: distributeai job status {job_hex[:12]} {where} --watch",
            f"  cancel it: distributeai job cancel {job_hex[:12]} {where}"]


@job_app.command("status")
def job_status(
    job_id: str = typer.Argument(..., help="The job id printed by submit, or a unique prefix of it (8 or more hex digits)."),
    data_dir: Optional[Path] = DataDirOption,
    watch: bool = typer.Option(False, "--watch", help="Follow the job until its verdict (live on a terminal), "
                               "then show it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a job this node knows: status, executors, result. A job id may be shortened to a
    unique prefix of 8 or more hex digits.

    Example: distributeai job status 3f2a9c01 --data-dir ./node1 --json
    """
    from .progress import elapsed_s

    job_id = check_job_id(job_id)
    view = control(node_dir(data_dir), {"op": "status", "job_id": job_id})
    if "error" in view:
        fail(view["error"], job_error_code(view))
    if watch and view.get("status") not in FINAL:
        view = wait_for_verdict(node_dir(data_dir), view, view["quorum"], view["replicas"],
                                time.monotonic() + WATCH_S, show=not as_json)
    if not as_json:  # a job without a verdict yet: its age now, not at the node's last change
        view = {**view, "elapsed_s": elapsed_s(view, int(time.time() * 1000))}
    print_job(view, as_json)


@job_app.command("result")
def job_result(
    job_id: str = typer.Argument(..., help="The job id printed by submit, or a unique prefix of it (8 or more hex digits)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the job's verified output files into this directory."),
    task: Optional[int] = typer.Option(None, "--task", min=0, help="A batch: print only this task's stdout (0-based)."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Print a verified job's stdout; with --out, fetch its output files from agreeing executors
    (each checked against its SHA-256 in the certificate) and write them there. For a batch,
    print each task's verdict and stdout (each task is verified on its own), or one with --task.

    Example: distributeai job result 3f2a9c01 --data-dir ./node1 --out ./results
    """
    job_id = check_job_id(job_id)
    probe = control(node_dir(data_dir), {"op": "tasks", "job_id": job_id, "limit": 0}, timeout=30)
    if "error" in probe:
        fail(probe["error"], job_error_code(probe))
    job_id = probe["job_id"]  # the full id of the job a prefix named
    if probe.get("total"):
        _batch_result(job_id, probe["total"], task, node_dir(data_dir), as_json)
        return
    if task is not None:
        fail(f"--task applies to batch jobs; job {job_id[:16]} is a single job")
    request = {"op": "result", "job_id": job_id}
    if out is not None:
        if out.exists() and not out.is_dir():
            fail(f"--out {out} exists and is not a directory")
        request["out"] = str(out.resolve())  # the node writes the files; its working directory is not ours
    answer = run_with_bar(node_dir(data_dir), request, as_json, timeout=300)
    if "error" in answer:
        fail(answer["error"], 1)
    if as_json:
        print_json(answer)
        return
    sys.stdout.write(answer.get("stdout") or "")
    sys.stdout.flush()
    if answer.get("rejected") or answer.get("verification") in ("single", "spot_checked"):
        typer.echo(verification_line(answer), err=True)  # a single run says it is one
    for line in result_report(answer):  # limits, exit code, a cut stdout, files, stderr
        typer.echo(line, err=True, nl=not line.endswith("\n"))
    for f in answer.get("written") or []:
        typer.echo(f"wrote {safe(f['written_to'])}  ({f['size']} bytes, cid {f['cid']})", err=True)
    for f in answer.get("not_fetched") or []:
        typer.echo(f"could not fetch {safe(f['path'])} ({f['size']} bytes): {safe(f['error'])}", err=True)
    if out is None and answer.get("files"):
        typer.echo(f"{len(answer['files'])} output file(s); `--out DIR` writes them: "
                   + ", ".join(safe(f["path"]) for f in answer["files"]), err=True)
    elif out is not None and not answer.get("written") and not answer.get("not_fetched"):
        typer.echo("the job left no output files", err=True)
    if answer.get("not_fetched"):
        raise typer.Exit(1)


def _batch_result(job_id: str, total: int, task: Optional[int], data_dir: Path, as_json: bool) -> None:
    if task is not None and task >= total:
        fail(f"--task {task}: the batch has tasks 0 to {total - 1}")
    start, limit = (task, 1) if task is not None else (0, total)
    tasks: list[dict] = []
    while len(tasks) < limit:
        page = control(data_dir, {"op": "tasks", "job_id": job_id, "start": start + len(tasks),
                                  "limit": min(1000, limit - len(tasks))}, timeout=60)
        if "error" in page:
            fail(page["error"], 1)
        if not page["tasks"]:
            break
        tasks += page["tasks"]
    if as_json:
        print_json({"job_id": job_id, "total": total, "tasks": tasks})
    elif task is not None:
        if tasks[0]["status"] != "verified":
            fail(f"task {task} is {tasks[0]['status']}, not verified", 1)
        sys.stdout.write(tasks[0]["stdout"] or "")
        if task_note(tasks[0]):
            typer.echo(f"task {task}:{task_note(tasks[0])}", err=True)
    else:
        for t in tasks:
            line = (t["stdout"] or "").rstrip("\n").replace("\n", "\\n")
            typer.echo(f"{t['task']:5d}  {t['status']:9}  exit {t['exit_code'] if t['exit_code'] is not None else '-':>3}"
                       f"{task_note(t)}  {line}")
    verified = sum(1 for t in tasks if t["status"] == "verified")
    if task is None:
        typer.echo(f"{verified} of {len(tasks)} tasks verified", err=True)
    if verified < len(tasks):
        raise typer.Exit(1)


ROLES = ("submitter", "executor", "observer")


@job_app.command("list")
def job_list(
    data_dir: Optional[Path] = DataDirOption,
    role: Optional[str] = typer.Option(None, "--role", help="Only jobs in this role here: submitter, executor or observer."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="The newest this many jobs."),
    as_json: bool = JsonOption,
) -> None:
    """List the jobs this node knows, newest first: its own, those it ran, those it saw.

    Example: distributeai job list --data-dir ./node1 --role submitter
    """
    from .progress import elapsed_s
    from .status import label

    if role is not None and role not in ROLES:
        fail(f"--role must be submitter, executor or observer, got {role!r}")
    answer = control(node_dir(data_dir), {"op": "list", "limit": limit})
    if "error" in answer:
        fail(answer["error"], 1)
    jobs = [j for j in answer["jobs"] if j and (role is None or j["role"] == role)]
    if as_json:
        print_json({"jobs": jobs})
        return
    if not jobs:
        typer.echo("no jobs")
        return
    now_ms = int(time.time() * 1000)
    typer.echo(f"{'JOB':64}  {'ROLE':9}  {'STATUS':16}  {'AGREE':11}  {'ELAPSED':>10}  NAME")
    for j in jobs:
        agreeing = sum(1 for e in j.get("executors") or [] if e.get("agreed"))
        execution = f"  ran here: {j['execution']['status']}" if j.get("execution") else ""
        agree = "rejected" if j.get("rejected") else {"single": "single run", "spot_checked": "2/2 checked"}.get(
            j.get("verification") or "") or f"{agreeing}/{len(j.get('executors') or [])} agree"
        typer.echo(f"{j['job_id']}  {j['role']:9}  {j['status']:16}  {agree:11}  "
                   f"{elapsed_s(j, now_ms):>8} s  {label(j)}{safe(execution)}")


@job_app.command("cancel")
def job_cancel(
    job_id: str = typer.Argument(..., help="The job id printed by submit, or a unique prefix of it (8 or more hex digits)."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Cancel a job this node submitted: it ends failed (cancelled) and its executors are told.

    Example: distributeai job cancel 3f2a9c01 --data-dir ./node1
    """
    job_id = check_job_id(job_id)
    view = control(node_dir(data_dir), {"op": "cancel", "job_id": job_id})
    if "error" in view:
        fail(f"cannot cancel {job_id}: {view['error']}", job_error_code(view))
    if as_json:
        print_json(view)
        return
    typer.echo(f"job {view['job_id']} {view['status']}{' (' + view['reason'] + ')' if view.get('reason') else ''}")
