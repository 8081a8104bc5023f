"""The CLI's handling of a user's mistakes: one line on stderr naming the problem, exit code 2;
an unreachable node: one line naming what was tried, exit code 1. No network needed."""

from __future__ import annotations

import json

import pytest

from .netfixtures import cli


def write(tmp_path, doc) -> str:
    path = tmp_path / "job.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("doc,field", [
    ({"name": "x", "command": ["echo"]}, "image"),
    ({"docker_image": "alpine:latest", "command": "echo hi"}, "command"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "required_memory": "lots"}, "required_memory"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "required_cpu": -1}, "required_cpu"),
    ({"docker_image": "alpine:latest", "command": ["echo"], "replicas": 2, "quorum": 3}, "quorum"),
])
def test_invalid_job_file_is_one_line_naming_the_field_and_exit_2(tmp_path, doc, field):
    out = cli("submit", "--data-dir", str(tmp_path / "node"), "-f", write(tmp_path, doc))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert field in lines[0]
    assert out.stdout == ""


def test_job_file_that_is_not_json(tmp_path):
    out = cli("submit", "--data-dir", str(tmp_path), "-f", write(tmp_path, "{not json"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "not valid JSON" in out.stderr


def test_submit_without_a_running_node_says_so(tmp_path):
    out = cli("submit", "--data-dir", str(tmp_path / "nowhere"), "--image", "alpine:latest", "--cmd", "true")
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1
    assert "nowhere" in out.stderr


def test_node_start_rejects_an_unknown_sandbox(tmp_path):
    out = cli("node", "start", "--data-dir", str(tmp_path), "--sandbox", "vm")
    assert out.returncode == 2 and "--sandbox" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_job_status_rejects_a_malformed_id(tmp_path):
    out = cli("job", "status", "xyz", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "64 hex" in out.stderr


def test_a_mistyped_option_before_cmd_is_not_smuggled_into_the_command(tmp_path):
    out = cli("submit", "--data-dir", str(tmp_path), "--image", "alpine:latest", "--memroy", "64",
              "--cmd", "sh", "-c", "true")
    assert out.returncode == 2 and "--memroy" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_sandbox_time_reports_each_backend():
    out = cli("sandbox-time", "wasm", "process", "--runs", "3", "--json")
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout)
    for kind in ("wasm", "process"):
        assert figures[kind]["runs"] == 3
        assert 0 < figures[kind]["start_exit_ms_median"] <= figures[kind]["run_ms_median"]
