"""The commands that ask a running node (or the config) and report: `node peers`, `job result`,
`job list`, `job cancel`, `reputation`, `config show`, `status`. `register` adds them to the
typer apps that `main.py` builds; each has `--json` and an example in its help."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .common import (DataDirOption, JsonOption, check_job_id, control, data_dir_of, fail, node_dir, print_json,
                     settings)

config_app = typer.Typer(no_args_is_help=True, help="Show the merged configuration (file < environment < flags).")


def node_peers(data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """List the peers this node knows: peer id, whether connected, reputation, addresses.

    Example: distributeai node peers --data-dir ./node1 --json
    """
    answer = control(node_dir(data_dir), {"op": "peers"}, timeout=10)
    if as_json:
        print_json(answer)
        return
    peers = sorted(answer["peers"], key=lambda p: (not p["connected"], p["peer_id"]))
    if not peers:
        typer.echo("no peers known")
    for p in peers:
        typer.echo(f"{p['peer_id']}  {'connected' if p['connected'] else 'known    '}  "
                   f"reputation {p['reputation']}  {' '.join(p['addrs'][:1])}")


def job_result(
    job_id: str = typer.Argument(..., help="The job id (hex) printed by submit."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the job's verified output files into this directory."),
    task: Optional[int] = typer.Option(None, "--task", min=0, help="A batch: print only this task's stdout (0-based)."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Print a verified job's stdout; with --out, fetch its output files from agreeing executors
    (each checked against its SHA-256 in the certificate) and write them there. For a batch,
    print each task's verdict and stdout (each task is verified on its own), or one with --task.

    Example: distributeai job result 3f2a... --data-dir ./node1 --out ./results
    """
    job_id = check_job_id(job_id)
    probe = control(node_dir(data_dir), {"op": "tasks", "job_id": job_id, "limit": 0}, timeout=30)
    if "error" in probe:
        fail(probe["error"], 1)
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
    answer = control(node_dir(data_dir), request, timeout=300)
    if "error" in answer:
        fail(answer["error"], 1)
    if as_json:
        print_json(answer)
        return
    sys.stdout.write(answer.get("stdout") or "")
    sys.stdout.flush()
    for f in answer.get("written") or []:
        typer.echo(f"wrote {f['written_to']}  ({f['size']} bytes, sha256 {f['sha256']})", err=True)
    if out is None and answer.get("files"):
        typer.echo(f"{len(answer['files'])} output file(s); `--out DIR` writes them: "
                   + ", ".join(f["path"] for f in answer["files"]), err=True)
    elif out is not None and not answer.get("written"):
        typer.echo("the job left no output files", err=True)


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
    else:
        for t in tasks:
            line = (t["stdout"] or "").rstrip("\n").replace("\n", "\\n")
            typer.echo(f"{t['task']:5d}  {t['status']:9}  exit {t['exit_code'] if t['exit_code'] is not None else '-':>3}  {line}")
    verified = sum(1 for t in tasks if t["status"] == "verified")
    if task is None:
        typer.echo(f"{verified} of {len(tasks)} tasks verified", err=True)
    if verified < len(tasks):
        raise typer.Exit(1)


ROLES = ("submitter", "executor", "observer")


def job_list(
    data_dir: Optional[Path] = DataDirOption,
    role: Optional[str] = typer.Option(None, "--role", help="Only jobs in this role here: submitter, executor or observer."),
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="The newest this many jobs."),
    as_json: bool = JsonOption,
) -> None:
    """List the jobs this node knows, newest first: its own, those it ran, those it saw.

    Example: distributeai job list --data-dir ./node1 --role submitter
    """
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
    for j in jobs:
        agreeing = sum(1 for e in j.get("executors") or [] if e.get("agreed"))
        execution = f"  ran here: {j['execution']['status']}" if j.get("execution") else ""
        typer.echo(f"{j['job_id']}  {j['role']:9}  {j['status']:16}  {agreeing}/{len(j.get('executors') or [])} agree  "
                   f"{j['elapsed_s']:>8} s  {label(j)}{execution}")


def job_cancel(
    job_id: str = typer.Argument(..., help="The job id (hex) printed by submit."),
    data_dir: Optional[Path] = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Cancel a job this node submitted: it ends failed (cancelled) and its executors are told.

    Example: distributeai job cancel 3f2a... --data-dir ./node1
    """
    job_id = check_job_id(job_id)
    view = control(node_dir(data_dir), {"op": "cancel", "job_id": job_id})
    if "error" in view:
        fail(f"cannot cancel {job_id}: {view['error']}", 1)
    if as_json:
        print_json(view)
        return
    typer.echo(f"job {view['job_id']} {view['status']}{' (' + view['reason'] + ')' if view.get('reason') else ''}")


def reputation(data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption) -> None:
    """Show every identity's reputation in this node's view (folded from verified certificates),
    this node's own first. An identity not listed has the starting reputation, 0.

    Example: distributeai reputation --data-dir ./node1 --json
    """
    d = node_dir(data_dir)
    info = control(d, {"op": "info"}, timeout=10)
    answer = control(d, {"op": "reputation"}, timeout=10)
    if as_json:
        print_json({"peer_id": info["peer_id"], "own": info["reputation"], "reputation": answer["reputation"]})
        return
    typer.echo(f"{info['peer_id']}  {info['reputation']:+5d}  (this node)")
    for peer, value in sorted(answer["reputation"].items(), key=lambda kv: (-kv[1], kv[0])):
        if peer != info["peer_id"]:
            typer.echo(f"{peer}  {value:+5d}")


def config_show(
    data_dir: Optional[Path] = DataDirOption,
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Bootstrap multiaddr; repeatable."),
    listen: Optional[str] = typer.Option(None, help="libp2p listen multiaddr."),
    sandbox: Optional[str] = typer.Option(None, help="auto, docker, bwrap or process."),
    docker_host: Optional[str] = typer.Option(None, help="Docker daemon address."),
    metrics: Optional[str] = typer.Option(None, help="HOST:PORT of /metrics."),
    cpu: Optional[float] = typer.Option(None, help="Cores offered to jobs."),
    memory_mb: Optional[int] = typer.Option(None, help="MiB offered to jobs."),
    max_jobs: Optional[int] = typer.Option(None, help="Jobs run at once."),
    genesis_credits: Optional[int] = typer.Option(None, help="Every identity's starting credits."),
    gpu: Optional[bool] = typer.Option(None, "--gpu/--no-gpu", help="This node offers a GPU."),
    pow_difficulty: Optional[int] = typer.Option(None, help="Proof-of-work bits demanded and solved."),
    log_level: Optional[str] = typer.Option(None, help="debug, info, warning or error."),
    bootstrap_http: Optional[str] = typer.Option(None, help="The bootstrap's stats URL (for `status`)."),
    as_json: bool = JsonOption,
) -> None:
    """Show the configuration as the commands see it, each value with where it came from:
    default < config file ($DISTRIBUTEAI_CONFIG, else ~/.config/distributeai/config.toml) <
    DISTRIBUTEAI_<KEY> environment variables < the flags given here.

    Example: DISTRIBUTEAI_SANDBOX=docker distributeai config show --cpu 4 --json
    """
    cfg = settings(data_dir=data_dir, bootstrap=bootstrap, listen=listen, sandbox=sandbox, docker_host=docker_host,
                   metrics=metrics, cpu=cpu, memory_mb=memory_mb, max_jobs=max_jobs,
                   genesis_credits=genesis_credits, gpu=gpu, pow_difficulty=pow_difficulty, log_level=log_level,
                   bootstrap_http=bootstrap_http)
    if as_json:
        print_json({"config_file": str(cfg.path), "config_file_exists": cfg.path_exists,
                    "settings": cfg.values(), "sources": dict(cfg.sources)})
        return
    typer.echo(f"# config file: {cfg.path}{'' if cfg.path_exists else ' (not found)'}")
    for key, value in cfg.values().items():
        shown = "(none)" if value is None or value == [] else ", ".join(value) if isinstance(value, list) else value
        typer.echo(f"{key:16} {str(shown):40}  # {cfg.sources[key]}")


def status(
    data_dir: Optional[Path] = DataDirOption,
    bootstrap_http: Optional[str] = typer.Option(None, "--bootstrap-http", help="The bootstrap's base URL for network "
                                                 "totals (its /api/stats); default: bootstrap_http from the config."),
    once: bool = typer.Option(False, "--once", help="Print one snapshot and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print one snapshot as JSON and exit."),
) -> None:
    """A live view of the local node: peers, own reputation and credits, the jobs it submitted and
    the jobs it runs with their states, and the network's totals from the bootstrap. Redrawn every
    half second; q or Ctrl-C quits. Prints one snapshot when stdout is not a terminal.

    Example: distributeai status --data-dir ./node1 --bootstrap-http http://127.0.0.1:8080
    """
    from . import status as view

    cfg = settings(data_dir=data_dir, bootstrap_http=bootstrap_http)
    d = data_dir_of(cfg)
    try:
        snap = view.gather(d, cfg.bootstrap_http)
    except view.NodeUnreachable as exc:
        fail(f"{exc} (start one with `distributeai node start --data-dir {d}`)", 1)
    if once or as_json or not sys.stdout.isatty():
        view.print_once(snap, as_json)
        return
    view.run_live(d, cfg.bootstrap_http, snap)


def register(app: typer.Typer, node_app: typer.Typer, job_app: typer.Typer) -> None:
    node_app.command("peers")(node_peers)
    job_app.command("result")(job_result)
    job_app.command("list")(job_list)
    job_app.command("cancel")(job_cancel)
    app.command("reputation")(reputation)
    app.command("status")(status)
    config_app.command("show")(config_show)
    app.add_typer(config_app, name="config")
