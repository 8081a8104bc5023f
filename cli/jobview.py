"""A job's view in words, for people: what `submit`, `job status` and `job result` print, and the
exit code `submit --exit-code` ends with.

Everything here reads the view of node/views.py (a certified result's fields: exit_code,
timed_out and timeout_s, oom_killed and memory_mb, stdout with stdout_truncated and stdout_size,
stderr with stderr_part, outputs) and states what the job did: a verified result is the
executors' agreement, not the job's success, so a job that failed says how. The job's stdout
is printed as it is (it is the user's data); its stderr, a report, has control characters other
than newlines and tabs shown as \\xNN. Colours appear only on a terminal (click drops them
elsewhere).
"""

from __future__ import annotations

import signal
from typing import Optional

import typer

from distributeai.consensus.fields import STDERR_CAP, STDOUT_CAP, STDOUT_SEEN_MAX
from distributeai.consensus.units import human_bytes

from .common import safe

# `submit --exit-code`: the codes for a verified job that ended without an exit code of its own.
EXIT_TIMED_OUT = 124   # as coreutils `timeout` exits
EXIT_OOM_KILLED = 137  # 128 + SIGKILL, as a shell reports a process the kernel killed
EXIT_NO_CODE = 1       # over its output quota; an exit code outside 0..255
EXIT_NOT_VERIFIED = 1  # failed or nondeterministic: no result to take a code from


def shown(text: str) -> str:
    """A job's text as a report shows it: control characters as \\xNN, but lines and tabs kept."""
    return "\n".join("\t".join(safe(part) for part in line.split("\t")) for line in text.split("\n"))


def signal_name(code: int) -> str:
    """' (killed by SIGKILL)' for an exit code of 128 + a signal, else ''."""
    try:
        return f" (killed by {signal.Signals(code - 128).name})" if 128 < code < 128 + 65 else ""
    except ValueError:
        return f" (killed by signal {code - 128})"


def over_quota(view: dict) -> bool:
    return (view.get("outputs") or {}).get("status") == "out_quota_exceeded"


def job_failure(view: dict) -> Optional[str]:
    """How a job with a verified result failed, in a few words, or None if it exited 0."""
    if over_quota(view):
        return "it left more than its output quota in /out"
    if view.get("timed_out"):
        return f"timed out after {view.get('timeout_s')} s"
    if view.get("oom_killed"):
        return "killed: out of memory"
    code = view.get("exit_code")
    return f"exit code {code}" if code not in (None, 0) else None


def job_exit_code(view: dict) -> int:
    """The exit code of `submit --exit-code`: a verified job's own exit code (124 when it timed
    out, 137 when it ran out of memory, 1 when it has none in 0..255); 1 for a job not verified."""
    if view.get("status") != "verified":
        return EXIT_NOT_VERIFIED
    if over_quota(view):
        return EXIT_NO_CODE
    if view.get("timed_out"):
        return EXIT_TIMED_OUT
    if view.get("oom_killed"):
        return EXIT_OOM_KILLED
    code = view.get("exit_code")
    return code if isinstance(code, int) and 0 <= code <= 255 else EXIT_NO_CODE


def status_line(view: dict) -> str:
    """`status   ...`: the verdict, the reason, and for a verified result of a failed job, how it failed."""
    line = f"status   {view['status']}{' (' + safe(view['reason']) + ')' if view.get('reason') else ''}"
    failure = job_failure(view) if view.get("status") == "verified" else None
    if failure is None:
        return line
    return typer.style(f"{line}: the executors agree that the job failed ({failure})", fg="yellow")


def verification_line(view: dict) -> str:
    """`verdict  ...`: how the verdict was reached (consensus/verdict_words.py), e.g. a single
    run by a trusted executor, or a single-run claim this node's ledger rejects."""
    note = view.get("verification_note") or ""
    colour = "red" if view.get("rejected") else "yellow" if view.get("verification") == "single" else None
    return typer.style(f"verdict  {safe(note)}", fg=colour) if colour else f"verdict  {safe(note)}"


def limit_lines(view: dict) -> list[str]:
    """The limits the job ran into and its exit code, one line each (timeout, memory, exit code)."""
    code = view.get("exit_code")
    lines = []
    if over_quota(view):
        return lines
    if view.get("timed_out"):
        lines.append(typer.style(f"timeout  the job ran past its timeout of {view.get('timeout_s')} s and was "
                                 f"killed (exit code {code})", fg="red"))
    if view.get("oom_killed"):
        lines.append(typer.style(f"memory   the job ran out of memory (its limit: {view.get('memory_mb')} MiB) and "
                                 f"was killed (exit code {code})", fg="red"))
    if code not in (None, 0) and not lines:
        lines.append(typer.style(f"exit code {code}{signal_name(code)}", fg="red" if code and code > 128 else "yellow"))
    return lines


def stdout_line(view: dict) -> Optional[str]:
    """When stdout was cut: how much of how much is certified, and how to get all of it."""
    if not view.get("stdout_truncated"):
        return None
    size = view.get("stdout_size")
    if size is None:
        of = " (the job was stopped at its timeout: how much it wrote is not certified)"
    elif size > STDOUT_SEEN_MAX:
        of = f" of more than {human_bytes(STDOUT_SEEN_MAX)}"
    else:
        of = f" of {human_bytes(size)}"
    kept = min(size, STDOUT_CAP) if size is not None else STDOUT_CAP
    if view.get("sandbox") == "wasm":
        how = "a WebAssembly job has no /out: print less, or run it in a container and write it to /out"
    else:
        how = (f"to get all of it, write it to /out (`cmd > /out/stdout.txt`) and fetch it with "
               f"`distributeai job result {view.get('job_id', 'JOB')} --out DIR`")
    return typer.style(f"stdout   the first {human_bytes(kept)}{of} are certified; {how}", fg="yellow")


def stderr_block(view: dict) -> list[str]:
    """The certified stderr under a header saying which part of it this is, "[...]" where it was
    cut (nothing if it is empty)."""
    text = view.get("stderr") or ""
    if not text:
        return []
    part = view.get("stderr_part") or "all"
    header = {"all": "stderr:", "last": f"stderr (its last {human_bytes(STDERR_CAP)}; the rest was cut):",
              "first": f"stderr (its first {human_bytes(STDERR_CAP)}; the rest was cut):"}[part]
    body = ("[...]" if part == "last" else "") + shown(text) + ("[...]" if part == "first" else "")
    return [header, body if body.endswith("\n") else body + "\n"]


def task_note(t: dict) -> str:
    """' (timed out)', ' (stdout cut)', both or '': what a batch task's exit code and stdout do not say."""
    notes = [what for what, hit in (("timed out", t.get("timed_out")), ("stdout cut", t.get("stdout_truncated"))) if hit]
    return f" ({', '.join(notes)})" if notes else ""


def outputs_lines(outputs: dict, files: list[dict]) -> list[str]:
    """What the certified result says about the job's output files, in words."""
    if not outputs:
        return []
    if outputs.get("status") == "out_quota_exceeded":
        q = outputs["quota"]
        return [f"outputs  the job left more than its quota in /out ({q['bytes']} bytes or {q['files']} entries): "
                "its files, exit code and stdout were discarded on every executor"]
    lines = []
    if outputs.get("files"):
        size = sum(f["size"] for f in files)
        lines.append(f"files    {outputs['files']}" + (f" (the certified result lists the first {outputs['listed']}, "
                                                        f"{size} bytes)" if outputs.get("manifest_truncated")
                                                        else f" ({size} bytes)"))
    if outputs.get("skipped"):
        named = ", ".join(f"{e['name']} ({e['reason']})" for e in outputs.get("skipped_entries", []))
        more = outputs["skipped"] - len(outputs.get("skipped_entries", []))
        lines.append(f"skipped  {outputs['skipped']} entr{'y' if outputs['skipped'] == 1 else 'ies'} of /out are not "
                     f"output files: {safe(named)}" + (f" and {more} more" if more > 0 else ""))
    return lines


def result_report(view: dict) -> list[str]:
    """Everything a verified result says besides stdout, in words: limits, exit code, stdout's
    cut, output files, stderr (last, as a block)."""
    lines = limit_lines(view)
    cut = stdout_line(view)
    if cut is not None:
        lines.append(cut)
    lines += outputs_lines(view.get("outputs") or {}, view.get("files") or [])
    return lines + stderr_block(view)


def share_words(share: float) -> str:
    """The fraction of the network that may bid on a job (consensus/sampling.py), in words."""
    if share >= 1:
        return "every node"
    inverse = 1 / share
    if abs(inverse - round(inverse)) < 1e-6:
        return f"1/{round(inverse)} of the network"
    return f"{100 * share:.2g}% of the network"


def bidding_line(view: dict) -> str:
    """`bidding  ...`: who may bid on the job (sampled bidding), and how often it was widened."""
    n = view.get("widenings") or 0
    widened = f" (widened {n} time{'' if n == 1 else 's'}: too few bids)" if n else ""
    return f"bidding  open to {share_words(view['share'])}{widened}"


def print_job(view: dict, as_json: bool) -> None:
    """A job's view: JSON, or for people its status, executors and result, stdout last."""
    import json

    if as_json:
        typer.echo(json.dumps(view))
        return
    typer.echo(f"job      {view['job_id']}")
    typer.echo(status_line(view))
    if view.get("verification_note"):
        typer.echo(verification_line(view))
    typer.echo(f"elapsed  {view.get('elapsed_s')} s")
    if view.get("share") is not None:
        typer.echo(bidding_line(view))
    # Why an executor gave no result, as the submitter recorded it ("withdrawn <its reason>", "timeout ...").
    why = {h["peer_id"]: h["detail"] for h in view.get("history") or [] if h.get("event") == "error" and h.get("detail")}
    for e in view.get("executors", []):
        mark = "agrees" if e["agreed"] else ("dissents" if e.get("dissented") else "no verdict" if e["result_hash"] else
                                             f"no result ({safe(why.get(e['peer_id']) or e.get('state') or 'unknown')})")
        typer.echo(f"executor {safe(e['peer_id'])}  {mark}  {(e['result_hash'] or '')[:16]}")
    if view.get("status") != "verified":  # why the nodes that did not bid would not
        for d in view.get("declines") or []:
            typer.echo(f"declined {safe(d['peer_id'])}  {safe(d['detail'] or d['code'])}")
    if view.get("result_hash"):
        if over_quota(view):
            typer.echo(f"result   {view['result_hash']}  out_quota_exceeded")
        else:
            typer.echo(f"result   {view['result_hash']}  exit code {view['exit_code']}")
        for line in result_report(view):
            typer.echo(line, nl=not line.endswith("\n"))
        typer.echo("stdout:")
        typer.echo(view.get("stdout") or "", nl=False)
