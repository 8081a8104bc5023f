"""The AI example (examples/ai/): make_data.py's model and data, infer.py's predictions.

Without Docker: infer.py's predictions equal an exact integer re-computation of the same model in
plain Python (the claim that makes every executor agree: its float32 sums are exact), they do not
depend on the chunk size, bad inputs are refused with exit code 2 and nothing written, and
make_data.py is deterministic. These run infer.py under a Python that has numpy (this one, else
the host's Debian python3, which scripts/build-python-image.sh --numpy installs numpy into) and
read its files here with a small .npy reader, so the project's venv needs no numpy; with no such
Python they skip (fail under CI, whose scripts/test.sh installs it).

With Docker (marked `docker`): the job runs twice in the image distributeai/python-numpy:1 (built
once by the module's fixture if missing: ~6-10 s here, plus an apt-get install of python3-numpy
and libopenblas0-serial, ~45 s, on a host without them) as a node would run it (no network,
read-only root, uid 65534, /in read-only, a memory limit), and both runs and the host's run
write the same bytes.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from .netfixtures import missing

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ai"
IMAGE = "distributeai/python-numpy:1"
# A few MB, fast everywhere: 2 MiB of data, a 1 MiB model.
SMALL = ["--rows", "2048", "--features", "256", "--hidden", "1024", "--classes", "8"]
# Small enough for the plain-Python reference (about 0.3 M multiplications).
TINY = ["--rows", "64", "--features", "32", "--hidden", "64", "--classes", "5"]
RUN_TIMEOUT_S = 120  # a loaded CI machine; the small job takes about a second


def numpy_python() -> str | None:
    """A Python interpreter that imports numpy: this one, else the host's python3."""
    for exe in (sys.executable, shutil.which("python3.11"), "/usr/bin/python3"):
        if exe and subprocess.run([exe, "-c", "import numpy"], capture_output=True).returncode == 0:
            return exe
    return None


@pytest.fixture(scope="module")
def py() -> str:
    exe = numpy_python()
    if exe is None:  # CI has it: scripts/test.sh builds the image first, which installs it
        missing("no Python with numpy here (scripts/build-python-image.sh --numpy installs Debian's)",
                "DISTRIBUTEAI_REQUIRE_DOCKER")
    return exe


@pytest.fixture(scope="module")
def tiny(py, tmp_path_factory) -> Path:
    """TINY inputs, made once for the module; a test that changes them works on a copy."""
    return make_data(py, tmp_path_factory.mktemp("tiny") / "in", *TINY)


@pytest.fixture(scope="module")
def small(py, tmp_path_factory) -> Path:
    """SMALL inputs for the Docker test (read only)."""
    # A directory of make_data's (0755): pytest's own are 0700, closed to the job's uid 65534.
    return make_data(py, tmp_path_factory.mktemp("small") / "in", *SMALL)


def make_data(py: str, dest: Path, *args: str) -> Path:
    subprocess.run([py, str(EXAMPLE / "make_data.py"), str(dest), *args], check=True, capture_output=True,
                   timeout=RUN_TIMEOUT_S)
    return dest


def infer(py: str, in_dir: Path, out_dir: Path) -> subprocess.CompletedProcess:
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run([py, str(in_dir / "code" / "infer.py"), str(in_dir), str(out_dir)], capture_output=True,
                          timeout=RUN_TIMEOUT_S)


def read_npy(path: Path) -> tuple[tuple[int, ...], list]:
    """(shape, flat values) of a little-endian float32 or int32 C-order .npy file (version 1.0)."""
    raw = path.read_bytes()
    assert raw[:8] == b"\x93NUMPY\x01\x00"
    (length,) = struct.unpack("<H", raw[8:10])
    header = ast.literal_eval(raw[10:10 + length].decode("latin1"))
    assert not header["fortran_order"] and header["descr"] in ("<f4", "<i4")
    count = 1
    for n in header["shape"]:
        count *= n
    body = raw[10 + length:]
    assert len(body) == 4 * count
    return header["shape"], list(struct.unpack(f"<{count}{'f' if header['descr'] == '<f4' else 'i'}", body))


def reference_predictions(in_dir: Path) -> list[int]:
    """The model's predictions in exact integer arithmetic, without numpy."""
    config = json.loads((in_dir / "model" / "config.json").read_text())
    (features, hidden), w1 = read_npy(in_dir / "model" / "w1.npy")
    _, b1 = read_npy(in_dir / "model" / "b1.npy")
    (_, classes), w2 = read_npy(in_dir / "model" / "w2.npy")
    _, b2 = read_npy(in_dir / "model" / "b2.npy")
    (rows, _), x = read_npy(in_dir / "data" / "x.npy")
    w1, b1, w2, b2 = ([int(v) for v in a] for a in (w1, b1, w2, b2))
    scale, shift = config["input_scale"], config["shift"]
    predictions = []
    for r in range(rows):
        # x * scale in double is exact for the power-of-two scale; round() is round-half-even, as rint.
        xq = [max(-127, min(127, round(v * scale))) for v in x[r * features:(r + 1) * features]]
        h = [min(127, max(0, sum(xq[i] * w1[i * hidden + j] for i in range(features)) + b1[j]) >> shift)
             for j in range(hidden)]
        logits = [sum(h[j] * w2[j * classes + c] for j in range(hidden)) + b2[c] for c in range(classes)]
        predictions.append(logits.index(max(logits)))
    return predictions


def check_summary(out_dir: Path, stdout: bytes) -> list[int]:
    """The predictions, after checking summary.json and stdout agree with them."""
    (rows,), predictions = read_npy(out_dir / "predictions.npy")
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["rows"] == rows == len(predictions)
    assert summary["counts"] == [predictions.count(c) for c in range(summary["classes"])]
    assert summary["predictions_sha256"] == hashlib.sha256((out_dir / "predictions.npy").read_bytes()).hexdigest()
    assert json.loads(stdout) == summary
    return predictions


# ---- without docker ------------------------------------------------------------------------------


def test_predictions_are_the_exact_integer_computation(py, tiny, tmp_path):
    in_dir = tiny
    run = infer(py, in_dir, tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert run.stderr == b""
    predictions = check_summary(tmp_path / "out", run.stdout)
    assert predictions == reference_predictions(in_dir)
    assert len(set(predictions)) > 1  # a model that always says the same class would prove little


def test_predictions_do_not_depend_on_the_chunk_size(py, tiny):
    in_dir = tiny
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); import infer; from pathlib import Path\n"
            "runs = [infer.infer(Path(sys.argv[2]), n)[0] for n in (1024, 7, 1)]\n"
            "assert all(np.array_equal(runs[0], r) for r in runs), 'chunking changed the predictions'\n")
    subprocess.run([py, "-c", code, str(EXAMPLE), str(in_dir)], check=True, timeout=RUN_TIMEOUT_S)


def test_make_data_is_deterministic_and_rows_change_only_the_data(py, tiny, tmp_path):
    a, b, c = tiny, tmp_path / "b", tmp_path / "c"
    code = "import json, sys; sys.path.insert(0, sys.argv[1]); import make_data; [make_data.main(a) for a in json.loads(sys.argv[2])]"
    argvs = [[str(b), *TINY], [str(c), *TINY[2:], "--rows", "65"]]
    subprocess.run([py, "-c", code, str(EXAMPLE), json.dumps(argvs)], check=True, capture_output=True,
                   timeout=RUN_TIMEOUT_S)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["code/infer.py", "data/x.npy", "model/b1.npy", "model/b2.npy",
                                       "model/config.json", "model/w1.npy", "model/w2.npy"]
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
        if f.parts[0] != "data":
            assert (a / f).read_bytes() == (c / f).read_bytes(), f
    # The first 64 rows are the same stream: a longer dataset extends the shorter one.
    assert read_npy(c / "data" / "x.npy")[1][:64 * 32] == read_npy(a / "data" / "x.npy")[1]


def npy_offset(path: Path) -> int:
    """Where a .npy file's (version 1.0) data starts."""
    (length,) = struct.unpack("<H", path.read_bytes()[8:10])
    return 10 + length


def poke_float32(path: Path, index: int, value: float) -> None:
    """Set one element (flat index) of a float32 .npy file."""
    with open(path, "r+b") as f:
        f.seek(npy_offset(path) + 4 * index)
        f.write(struct.pack("<f", value))


def write_float32_npy(path: Path, shape: tuple[int, int], values: list[float]) -> None:
    """A C-order float32 .npy file (version 1.0), as np.save writes it."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                     + struct.pack(f"<{len(values)}f", *values))


def damage(in_dir: Path, how: str) -> None:
    model, data = in_dir / "model", in_dir / "data"
    if how == "weights":
        poke_float32(model / "w1.npy", 0, 2.0 ** 20)
    elif how == "fraction":
        poke_float32(model / "w2.npy", 3 * 5 + 1, 0.5)  # w2[3, 1] of 5 classes
    elif how == "nan":
        poke_float32(data / "x.npy", 5 * 32 + 7, float("nan"))  # x[5, 7] of 32 features
    elif how == "shape":
        (rows, features), x = read_npy(data / "x.npy")
        write_float32_npy(data / "x.npy", (rows, features - 1),
                          [v for r in range(rows) for v in x[r * features:(r + 1) * features - 1]])
    else:
        (model / "config.json").write_text("{}")


def test_write_float32_npy_writes_what_numpy_does(py, tmp_path):
    write_float32_npy(tmp_path / "a.npy", (2, 3), [1, 2, 3, 4, 5, 6.5])
    code = "import sys, numpy as np; np.save(sys.argv[1], np.array([[1, 2, 3], [4, 5, 6.5]], dtype='<f4'))"
    subprocess.run([py, "-c", code, str(tmp_path / "b.npy")], check=True, timeout=RUN_TIMEOUT_S)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


@pytest.mark.parametrize("how, message", [
    ("weights", b"model layer 1: sums reach"),
    ("fraction", b"model layer 2: weights are not all integers"),
    ("nan", b"data/x.npy: row 5 holds a value that is not finite"),
    ("shape", b"data/x.npy: float32 (64, 31), not float32 rows of 32"),
    ("config", b"model/config.json: format is not"),
])
def test_bad_inputs_are_refused_with_nothing_written(py, tiny, tmp_path, how, message):
    in_dir = tmp_path / "in"
    shutil.copytree(tiny, in_dir)
    damage(in_dir, how)
    run = infer(py, in_dir, tmp_path / "out")
    assert run.returncode == 2
    assert run.stderr.startswith(b"infer.py: " + message), run.stderr
    assert run.stdout == b""
    assert list((tmp_path / "out").iterdir()) == []


# ---- in the image, with docker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def numpy_image(docker_host) -> str:
    """The image, built by scripts/build-python-image.sh --numpy unless the daemon has it."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "build-python-image.sh"), "--numpy"],
                          env={**os.environ, "DOCKER_HOST": docker_host}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-python-image.sh --numpy failed:\n{proc.stdout}\n{proc.stderr}")
    return IMAGE


def run_in_image(docker_host: str, image: str, in_dir: Path, out_dir: Path) -> tuple[int, bytes]:
    """(exit code, stdout) of infer.py run as a node runs a job: no network, read-only root,
    uid 65534, no capabilities, a memory limit, /in read-only and /out writable."""
    import docker

    out_dir.mkdir(parents=True)
    out_dir.chmod(0o777)
    client = docker.DockerClient(base_url=docker_host, timeout=RUN_TIMEOUT_S)
    container = client.containers.create(
        image, ["python3", "/in/code/infer.py"], network_mode="none", read_only=True, user="65534:65534",
        cap_drop=["ALL"], security_opt=["no-new-privileges"], mem_limit="256m", memswap_limit="256m",
        tmpfs={"/tmp": "size=64m,mode=1777"}, labels={"distributeai.test": "ai-example"},
        volumes={str(in_dir): {"bind": "/in", "mode": "ro"}, str(out_dir): {"bind": "/out", "mode": "rw"}})
    try:
        container.start()
        code = container.wait(timeout=RUN_TIMEOUT_S)["StatusCode"]
        stdout = container.logs(stdout=True, stderr=False)
        assert container.logs(stdout=False, stderr=True) == b""
    finally:
        container.remove(force=True)
        client.close()
    return code, stdout


@pytest.mark.docker
def test_the_job_writes_the_same_bytes_on_every_run_and_host(docker_host, numpy_image, py, small, tmp_path):
    in_dir = small
    runs = [run_in_image(docker_host, numpy_image, in_dir, tmp_path / f"out{i}") for i in (1, 2)]
    assert [code for code, _ in runs] == [0, 0]
    assert runs[0][1] == runs[1][1]
    predictions = check_summary(tmp_path / "out1", runs[0][1])
    assert len(predictions) == 2048 and len(set(predictions)) > 1
    host = infer(py, in_dir, tmp_path / "host")
    assert host.returncode == 0 and host.stdout == runs[0][1]
    for name in ("predictions.npy", "summary.json"):
        outputs = {(tmp_path / d / name).read_bytes() for d in ("out1", "out2", "host")}
        assert len(outputs) == 1, name
