"""Where the job's command ends on `submit`'s line (cli/cmdline.py), as pure logic over submit's
real options; and prefixes of job ids (node/control_request.py) as the control API resolves them."""

from __future__ import annotations

import pytest
import typer.main

from distributeai.cli.cmdline import option_arity, split_command
from distributeai.cli.main import app
from distributeai.node.control_request import job_id_problem, resolve_job_id


def submit_arity() -> dict[str, int]:
    group = typer.main.get_command(app)
    submit = group.commands["submit"]
    ctx = submit.make_context("submit", ["--help"], resilient_parsing=True)
    return option_arity(submit.get_params(ctx))


ARITY = submit_arity()
HELLO = ["sh", "-c", "echo 'Hello' | sha256sum"]


@pytest.mark.parametrize("tail,own,command", [
    # the README's line: a trailing --json is submit's, whatever the command's words
    ([*HELLO, "--json"], ["--json"], HELLO),
    (["echo", "hello", "--json"], ["--json"], ["echo", "hello"]),
    (["echo", "--json"], ["--json"], ["echo"]),
    # any of submit's long options, with values, in either form
    ([*HELLO, "--replicas", "5", "--timeout=9", "--json"], ["--replicas", "5", "--timeout=9", "--json"], HELLO),
    (["echo", "hi", "--image", "alpine:latest"], ["--image", "alpine:latest"], ["echo", "hi"]),
    # a word of submit's inside the command, followed by the command's own words, is the command's
    (["grep", "--json", "file"], [], ["grep", "--json", "file"]),
    (["echo", "--replicas"], [], ["echo", "--replicas"]),  # no value: not submit's option
    # short options are never taken from after the command
    (["tail", "-f", "x"], [], ["tail", "-f", "x"]),
    # `--` ends the command when only submit's options (or nothing) follow it
    (["jq", "--json", "--"], [], ["jq", "--json"]),
    (["jq", "--json", "--", "--replicas", "5"], ["--replicas", "5"], ["jq", "--json"]),
    (["git", "log", "--", "file"], [], ["git", "log", "--", "file"]),
    (["echo", "--", "--json", "--"], [], ["echo", "--", "--json"]),
    # a second --cmd is the command's word
    (["echo", "--cmd", "x"], [], ["echo", "--cmd", "x"]),
    (["echo", "a", "--cmd"], [], ["echo", "a", "--cmd"]),
    # the program itself may look like an option
    (["--json"], [], ["--json"]),
])
def test_the_job_command_ends_where_submits_own_options_start(tail, own, command):
    before = ["--data-dir", "./n1", "--image", "alpine:latest"]
    assert split_command([*before, "--cmd", *tail], ARITY) == ([*before, *own], command)
    assert split_command([*before, f"--cmd={tail[0]}", *tail[1:]], ARITY) == ([*before, *own], command)


def test_a_line_without_cmd_is_left_to_click():
    for args in (["-f", "job.json", "--json"], ["--image", "x", "--cmd"], ["--stdin", "--cmd", "--json"],
                 ["--", "--cmd", "x"]):
        assert split_command(args, ARITY) == (args, None)


def test_a_value_that_reads_cmd_is_a_value():
    args = ["--stdin", "--cmd", "--image", "alpine", "--cmd", "cat", "--json"]
    assert split_command(args, ARITY) == (["--stdin", "--cmd", "--image", "alpine", "--json"], ["cat"])


A = "3f2a9c01" + "0" * 56
B = "3f2a9c01" + "f" * 56


def test_a_job_id_or_a_prefix_of_eight_hex_digits_can_name_a_job():
    assert job_id_problem(A) is None and job_id_problem(A[:8]) is None
    assert job_id_problem(A[:7])["code"] == "bad_job_id"
    assert job_id_problem("xyz" * 3)["code"] == "unknown_job"
    assert job_id_problem(A + "0")["code"] == "unknown_job"


def test_a_prefix_resolves_to_its_one_match_else_says_why_in_one_line():
    assert resolve_job_id(A[:10], [A]) == (A, None)
    job, problem = resolve_job_id(A[:8], [])
    assert job is None and problem["code"] == "unknown_job"
    job, problem = resolve_job_id(A[:8], [A, B])
    assert job is None and problem["code"] == "ambiguous_job" and problem["candidates"] == [A, B]
    assert "\n" not in problem["error"] and A[:16] in problem["error"] and B[:16] in problem["error"]
    job, problem = resolve_job_id(A[:8], [A] * 6)
    assert problem["error"].endswith("and more") and len(problem["candidates"]) == 5
