"""Byte counts for people: the one formatter every message, table and progress bar uses.

Contract: `human_bytes(n)` is `n` in binary units (B, KiB, MiB, GiB, TiB: powers of 1024), one
decimal that is dropped when it is 0 ("12 B", "1.5 KiB", "1 MiB", "286.1 MiB"); `human_rate(n)`
is a rate of `n` bytes a second, the same units with "/s". Binary units everywhere, rates too:
the sizes people type (`--out-max 10m`, `--max-memory 512m`) are read as powers of 1024, files
and block stores are sized so by the tools people compare with (`du -h`, `ls -lh`), and a rate
in the same units as the size beside it can be divided by eye (4 MiB at 1 MiB/s: 4 s). Pure.
"""

from __future__ import annotations

_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def human_bytes(n: int | float) -> str:
    """`n` bytes as "12 B", "1.5 KiB", "1 MiB", "300.4 GiB" (negative counts keep their sign)."""
    sign, n = ("-", -n) if n < 0 else ("", n)
    if n >= 1024:
        for unit, scale in _UNITS:
            value = round(n / scale, 1)
            if value >= 1:  # 1023.96 KiB rounds to 1024.0: said as 1 MiB
                return f"{sign}{value:g} {unit}" if value < 1e5 else f"{sign}{value:.0f} {unit}"
    return f"{sign}{int(n)} B"


def human_rate(bytes_per_s: int | float) -> str:
    """A transfer rate: "1.5 MiB/s"."""
    return f"{human_bytes(bytes_per_s)}/s"


__all__ = ["human_bytes", "human_rate"]
