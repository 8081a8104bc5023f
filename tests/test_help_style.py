"""Issue 15, "small untruths" in the CLI's own words: every `--help` shows a flag without a value
placeholder, a repeatable option with what one value is, and defaults written one way
("Default X." in the text); `config show` keeps its columns; `devnet` defaults to the sandbox
`node start` defaults to."""

from __future__ import annotations

import re

import pytest

from .test_cli import COMMANDS, run_cli


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_tags_no_flag_as_bool_and_no_list_as_a_python_type(command):
    out = run_cli(*command, "--help", env={"COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "<bool>" not in out.stdout and "list[" not in out.stdout, out.stdout
    assert "[default:" not in out.stdout and "(the default" not in out.stdout, out.stdout
    assert not re.search(r"\bdefault: ", out.stdout), out.stdout  # "Default X.", one way


def test_repeatable_options_name_one_value():
    out = run_cli("node", "start", "--help", env={"COLUMNS": "200"})
    assert re.search(r"--bootstrap\s+ADDR\s", out.stdout), out.stdout
    assert re.search(r"--gpu\s+--no-gpu\s+This node", out.stdout), out.stdout


def test_devnet_defaults_to_the_sandbox_node_start_defaults_to():
    for command in (["devnet"], ["node", "start"]):
        text = " ".join(run_cli(*command, "--help", env={"COLUMNS": "200"}).stdout.split())
        assert "Default auto." in text, text


def test_config_show_keeps_its_columns(tmp_path):
    out = run_cli("config", "show", "--data-dir", str(tmp_path), "--bootstrap", "/ip4/127.0.0.1/tcp/4001/p2p/x",
                  home=tmp_path)
    lines = [line for line in out.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) > 20
    value_at = {re.match(r"\S+\s+", line).end() for line in lines}
    source_at = {line.index("  # ") for line in lines}
    assert len(value_at) == 1 and len(source_at) == 1, out.stdout
    assert any(line.split()[0] == "log_format" and line.split()[1] == "text" for line in lines)
