"""How every `--help` shows an option's value and default, applied once to the whole command tree
(`tidy(command)`, called by cli/common.py `run`):

- a flag (`--json`, `--gpu/--no-gpu`, `--help`) shows no value placeholder (typer would write `<bool>`);
- a repeatable option shows what one value is (`--bootstrap ADDR`, not `<list[str]>`), and an
  argument taking several values only its name (`backends...`);
- a default is written one way, in the help text as "Default X." (typer's `[default: X]` is
  turned off; an option whose text does not name its default gets it appended).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# What one value of a repeatable option is; the rest show their option name in capitals.
REPEATED_METAVARS = {"bootstrap": "ADDR", "env": "NAME=VALUE", "decoder": "NAME"}


def tidy(command: Any) -> Any:
    """Apply the rules above to `command` (a click command or group) and all its subcommands."""
    for param in getattr(command, "params", ()):
        if getattr(param, "param_type_name", "") == "argument" and param.nargs != 1:
            param.display_type_rich = lambda ctx: None  # its name already says "backends..."
        if getattr(param, "param_type_name", "") != "option":
            continue
        if param.is_flag:
            param.metavar = ""
        elif param.multiple and param.metavar is None:
            param.metavar = REPEATED_METAVARS.get(param.name, param.name.upper())
        if param.show_default is not False:
            shown = _shown(param.default)
            if shown is not None and not param.is_flag and "default" not in (param.help or "").lower():
                param.help = f"{(param.help or '').rstrip()} Default {shown}.".lstrip()
            param.show_default = False
    get_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:  # click makes --help per context, outside `params`
        option = get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command


def _shown(default: Any) -> str | None:
    """A default as the help text writes it; None when there is nothing worth showing."""
    if default is None or default == () or default == [] or isinstance(default, bool) or callable(default):
        return None
    if type(default).__name__ == "DefaultPlaceholder":
        return None
    if isinstance(default, Path):
        return str(default)
    return str(default)
