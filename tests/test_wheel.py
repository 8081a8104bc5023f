"""The wheel works on its own (issue 13, item 4): built from a copy of the sources, installed into a
fresh venv outside the checkout, and run from a directory that holds no source.

Honest about what is imported: the fresh venv gets the wheel and nothing else of this project. Its
dependencies (trio, libp2p, ...) come from this interpreter's site-packages through a .pth line
naming that directory: a plain path on sys.path, so the .pth files inside it (among them the
editable install's finder, which would map distributeai to the checkout) are never processed. The
test checks that `distributeai` and its tools resolve inside the fresh venv before running anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# What a build of the checkout must not see: environments, VCS data, earlier build output (a stale
# build/lib would put modules into the wheel that the sources no longer have), run data, caches.
NOT_SOURCES = shutil.ignore_patterns(".venv", ".git", ".run", "build", "dist", "*.egg-info", "__pycache__",
                                     ".schemathesis", ".hypothesis", ".pytest_cache", "test-artifacts")


def run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from the sources; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp / "dist"), str(src)], tmp, 300)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp / "dist").glob("distributeai-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for expected in ("distributeai/tools/fuzz/targets.py", "distributeai/tools/devnet.py", "distributeai/cli/main.py",
                     "distributeai/node/agent.py", "distributeai/sandbox/workloads/hashverify.wasm"):
        assert expected in names, f"{expected} is not in the wheel"
    assert not [n for n in names if n.startswith(("tests/", "distributeai/tests/")) or n.endswith("setup.py")]
    assert "distributeai/__init__.py" not in names  # distributeai stays a namespace package

    venv = tmp / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, 120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    put = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
              tmp, 300)
    assert put.returncode == 0, put.stdout + put.stderr
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, 60)
                .stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty = tmp / "empty"
    empty.mkdir()
    probe = run([str(python), "-c", "import json, distributeai, distributeai.tools.fuzz as f, distributeai.cli.main as m;"
                 "print(json.dumps([list(distributeai.__path__), f.__file__, m.__file__]))"], empty, 60)
    assert probe.returncode == 0, probe.stderr
    paths, fuzz_file, main_file = json.loads(probe.stdout)
    assert paths == [str(site / "distributeai")], paths
    assert fuzz_file.startswith(str(site)) and main_file.startswith(str(site))
    return venv / "bin"


def test_fuzz_runs_from_the_installed_wheel(installed, tmp_path):
    out = run([str(installed / "distributeai"), "fuzz", "--inputs", "1000", "--json"], tmp_path, 300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["findings"] == 0 and report["inputs_per_decoder"] == 1000
    assert all(d["inputs"] == 1000 for d in report["decoders"]) and len(report["decoders"]) > 1


def test_a_devnet_demo_verifies_from_the_installed_wheel(installed, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = run([str(installed / "distributeai"), "devnet", "--nodes", "3", "--sandbox", "process", "--demo",
               "--data-dir", str(tmp_path / "net")], cwd, 300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "status   verified" in out.stdout
    # sha256 of "Hello\n": the demo's result, as the README shows it
    assert "66a045b452102c59d840ec097d59d9467e13a3f34f6494e539ffd32c1bb35f18  -" in out.stdout
    assert list(cwd.iterdir()) == []
