"""Where the job's command ends on `submit`'s line: the rule `submit --help` and README.md state.

After `--cmd PROGRAM` the words are the job's arguments, except for submit's own long options
at the end of the line (`... --json`, `... --replicas 5 --json`), which are submit's. A `--`
followed only by submit's long options (or by nothing) ends the command too, so a job whose
arguments end in such a word keeps it: `--cmd jq --json -- --replicas 5` runs `jq --json`.
Short options (`-f`) are never taken from after the command: `tail -f x` stays the job's.

`split_command` is pure; `SubmitCommand` applies it before click parses the rest, so click never
sees the job's words (its own options anywhere in them would otherwise be taken).
"""

from __future__ import annotations

from typing import Any

import typer.core

CMD = "--cmd"
JOB_ARGV = "distributeai.job_argv"  # ctx.meta key: the job's arguments after PROGRAM


def option_arity(params: list[Any]) -> dict[str, int]:
    """Every option name of `params` (click parameters) -> how many values it takes."""
    arity: dict[str, int] = {}
    for p in params:
        if getattr(p, "param_type_name", "") != "option":
            continue
        takes = 0 if (p.is_flag or p.count) else p.nargs
        for name in [*p.opts, *p.secondary_opts]:
            arity[name] = takes
    return arity


def only_options(words: list[str], arity: dict[str, int]) -> bool:
    """Whether `words` are all submit's own long options (`--cmd` aside), each with its value."""
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, _ = word.partition("=")
        if not name.startswith("--") or name == CMD or name not in arity:
            return False
        if eq:  # --name=value: only for an option that takes one value
            if arity[name] != 1:
                return False
            i += 1
        else:
            i += 1 + arity[name]
    return i == len(words)


def split_command(args: list[str], arity: dict[str, int]) -> tuple[list[str], list[str] | None]:
    """(submit's own arguments, the job's command: [PROGRAM, arg, ...]) of a command line, or
    (args, None) when it has no `--cmd VALUE` (then click reports what is wrong, if anything)."""
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            break
        if word == CMD or word.startswith(CMD + "="):
            words = [word[len(CMD) + 1:], *args[i + 1:]] if "=" in word else args[i + 1:]
            if not words:
                break
            for k in range(1, len(words) + 1):  # the longest tail of options wins
                tail = words[k:]
                if only_options(tail, arity):
                    return args[:i] + tail, words[:k]
                if tail[0] == "--" and only_options(tail[1:], arity):
                    return args[:i] + tail[1:], words[:k]
        takes = arity.get(word, 0) if "=" not in word else 0
        i += 1 + takes
    return args, None


class SubmitCommand(typer.core.TyperCommand):
    """`submit`: takes the job's command off the line by `split_command`; click parses the rest,
    with `--cmd=PROGRAM`, and the job's arguments are in ctx.meta[JOB_ARGV]."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        own, command = split_command(list(args), option_arity(self.get_params(ctx)))
        if command is not None:
            ctx.meta[JOB_ARGV] = command[1:]
            own = [*own, f"{CMD}={command[0]}"]
        return super().parse_args(ctx, own)
