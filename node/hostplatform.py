"""The platform this node advertises in its bids (`Bid.platform`, consensus/adaptive.py): its CPU
architecture, CPU vendor and GPU model, "" where unknown. A job may require that its executors
share some of these (`homogeneous`), and trust is counted per platform (a runtime class).

Detected once, when the node starts (`detect_platform`): the architecture is `platform.machine()`,
the vendor the first `vendor_id` of /proc/cpuinfo, the GPU the first line of `nvidia-smi
--query-gpu=name --format=csv,noheader` when that program is on PATH. `DISTRIBUTEAI_PLATFORM`
("arch,cpu,gpu", e.g. "x86_64,GenuineIntel,") overrides it all, for tests and for a volunteer
whose detection is wrong. Each value is cut to what a bid may carry (printable ASCII,
PLATFORM_VALUE_MAX characters), so a strange machine never makes a bid every peer refuses.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from distributeai.consensus.fields import PLATFORM_CLASSES, PLATFORM_VALUE_MAX

PLATFORM_ENV = "DISTRIBUTEAI_PLATFORM"
NVIDIA_SMI_TIMEOUT_S = 5.0


def clean(value: str) -> str:
    """A value as a bid carries it: printable ASCII, stripped, at most PLATFORM_VALUE_MAX characters."""
    return "".join(c for c in value if c.isascii() and c.isprintable()).strip()[:PLATFORM_VALUE_MAX]


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first `vendor_id` in /proc/cpuinfo ("GenuineIntel", "AuthenticAMD"), "" when absent
    (ARM kernels list none)."""
    try:
        with cpuinfo.open(errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "vendor_id":
                    return clean(value)
    except OSError:
        pass
    return ""


def gpu_model() -> str:
    """The first GPU's name as nvidia-smi gives it, "" without nvidia-smi or when it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ""
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return clean(lines[0]) if lines else ""


def parse_override(text: str) -> tuple[str, ...]:
    """`DISTRIBUTEAI_PLATFORM`'s value: up to three comma-separated values, the missing ones ""."""
    values = [clean(v) for v in text.split(",")][:len(PLATFORM_CLASSES)]
    return tuple(values + [""] * (len(PLATFORM_CLASSES) - len(values)))


def detect_platform(env: dict | None = None) -> tuple[str, ...]:
    """(arch, cpu vendor, gpu model) of this machine, or as `DISTRIBUTEAI_PLATFORM` states them."""
    env = os.environ if env is None else env
    if env.get(PLATFORM_ENV) is not None:
        return parse_override(env[PLATFORM_ENV])
    return (clean(platform.machine()), cpu_vendor(), gpu_model())
