"""Pure logic of sandbox/: request validation, capped reads, run tracking (the /out walk and keep:
tests/test_sandbox_outdir.py)."""

from __future__ import annotations

import pytest

from distributeai.sandbox import KINDS, RunRequest, SandboxError, open_sandbox
from distributeai.sandbox.docker_backend import _exec_failure_code, _read_capped
from distributeai.sandbox.runs import EARLY_CANCELS, RunRegistry

from .sandbox_helpers import IMAGE


# ---- pure logic -------------------------------------------------------------------------------


def test_unknown_kind_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        open_sandbox("vm")
    assert all(kind in str(err.value) for kind in KINDS)


@pytest.mark.parametrize(
    "bad",
    [
        {"command": []},
        {"command": "echo hi"},
        {"command": ["a\0b"]},
        {"env": {"A=B": "x"}},
        {"env": {"A": 1}},
        {"cpu": 0},
        {"memory_mb": 1},
        {"timeout_s": 0},
        {"pids_limit": 0},
        {"output_cap": -1},
        {"out_max_bytes": -1},
        {"out_max_files": -1},
        {"out_keep_free": -1},
        {"out_max_bytes": 1.5},
        {"out_max_files": True},
    ],
)
def test_run_request_rejects_nonsense(bad):
    fields = {"image": IMAGE, "command": ["true"], **bad}
    with pytest.raises(ValueError):
        RunRequest(**fields)


def test_run_request_defaults():
    req = RunRequest(image=IMAGE, command=["true"])
    assert (req.env, req.cpu, req.memory_mb, req.timeout_s, req.pids_limit, req.output_cap) == (
        {}, 1.0, 256, 60.0, 64, 1 << 20,
    )
    assert (req.out_dir, req.out_max_bytes, req.out_max_files, req.out_keep_free) == (None, 1 << 30, 10_000, 0)


class FakeStream:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.read = 0
        self.closed = False

    def __iter__(self):
        for chunk in self.chunks:
            self.read += 1
            yield chunk

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "chunks, cap, kept, truncated",
    [
        ([b"abc", b"def"], 6, b"abcdef", False),
        ([b"abc", b"def"], 5, b"abcde", True),
        ([b"abc", b"", b"def"], 3, b"abc", True),
        ([b"", b""], 0, b"", False),
        ([b"x"], 0, b"", True),
    ],
)
def test_read_capped(chunks, cap, kept, truncated):
    stream = FakeStream(chunks)
    assert _read_capped(stream, cap) == (kept, truncated)
    assert stream.closed


def test_read_capped_stops_reading_past_cap():
    stream = FakeStream([b"ab", b"cd", b"ef", b"gh"])
    assert _read_capped(stream, 3) == (b"abc", True)
    assert stream.read == 2


@pytest.mark.parametrize(
    "explanation, code",
    [
        ('exec: "nosuch": executable file not found in $PATH: unknown', 127),
        ('exec: "/etc/x": stat /etc/x: no such file or directory: unknown', 127),
        ('exec: "/etc/passwd": permission denied: unknown', 126),
        ("cgroup mountpoint does not exist", None),
    ],
)
def test_exec_failure_codes(explanation, code):
    assert _exec_failure_code(explanation) == code


@pytest.mark.docker
def test_pull_without_a_registry_says_image_missing(docker_host):
    from distributeai.sandbox.docker_backend import DockerSandbox

    sandbox = DockerSandbox(docker_host=docker_host, log=lambda _: None)
    try:
        with pytest.raises(SandboxError) as e:
            sandbox.pull("127.0.0.1:1/distributeai-test/nowhere:1")
        assert e.value.reason == "image_missing"
    finally:
        sandbox.close()


# ---- pure logic: run tracking (runs.py) ---------------------------------------------------------


def test_registry_calls_the_stopper_of_a_running_run_once_per_cancel():
    runs, stopped = RunRegistry(), []
    with runs.track("a") as handle:
        handle.attach(lambda: stopped.append("a"))
        runs.cancel("a")
        assert stopped == ["a"] and handle.cancelled.is_set()
        with pytest.raises(SandboxError) as err:
            handle.raise_if_cancelled()
        assert err.value.reason == "cancelled"
    runs.cancel("a")  # ended: no stopper, no error... but remembered as an early cancel
    assert stopped == ["a"]


def test_registry_stops_a_job_attached_after_its_cancel():
    runs, stopped = RunRegistry(), []
    with runs.track("b") as handle:
        runs.cancel("b")  # before the job runs
        handle.attach(lambda: stopped.append("b"))
        assert stopped == ["b"]


def test_registry_never_calls_a_detached_stopper():
    runs, stopped = RunRegistry(), []
    with runs.track("c") as handle:
        handle.attach(lambda: stopped.append("c"))
        handle.detach()  # the job ended; its pid may be reused from now on
        runs.cancel("c")
    assert stopped == []


def test_registry_remembers_early_cancels_up_to_a_bound():
    runs = RunRegistry()
    runs.cancel("early")
    with runs.track("early") as handle:
        assert handle.cancelled.is_set()
    with runs.track("early") as handle:  # used up by the first run
        assert not handle.cancelled.is_set()
    for i in range(EARLY_CANCELS + 1):
        runs.cancel(f"id-{i}")
    with runs.track("id-0") as handle:  # the oldest was dropped
        assert not handle.cancelled.is_set()
    with runs.track(f"id-{EARLY_CANCELS}") as handle:
        assert handle.cancelled.is_set()


def test_registry_refuses_a_run_id_in_use_and_ignores_none():
    runs = RunRegistry()
    with runs.track("d"):
        with pytest.raises(SandboxError) as err:
            with runs.track("d"):
                pass
        assert err.value.reason == "invalid_request"
        with runs.track(None) as a, runs.track(None) as b:  # untracked runs never clash
            assert a is not b
    with runs.track("d"):  # free again
        pass


def test_registry_a_failing_stopper_is_not_the_cancellers_error():
    runs = RunRegistry()

    def gone() -> None:
        raise ProcessLookupError("already exited")

    with runs.track("e") as handle:
        handle.attach(gone)
        runs.cancel("e")  # does not raise
        assert handle.cancelled.is_set()


def test_wait_running_times_out_for_an_unknown_run():
    assert RunRegistry().wait_running("nobody", 0.01) is False


@pytest.mark.parametrize("bad", ["", "x" * 201, "a\0b", 5])
def test_run_request_rejects_bad_run_ids(bad):
    with pytest.raises(ValueError):
        RunRequest(image=IMAGE, command=["true"], run_id=bad)


def test_sandbox_error_reasons_are_a_closed_set():
    assert SandboxError("cancelled").reason == "cancelled"
    with pytest.raises(ValueError):
        SandboxError("image is not there")  # a sentence is not a code
