"""The node's own proof-of-work nonce (consensus/pow.py), solved once and kept in the data directory.

`DATA_DIR/node.pow` holds `{"difficulty": N, "nonce": HEX}`. A start reuses the stored nonce when it
still proves the difficulty asked for (one solved for more bits proves fewer too), and solves anew,
then replaces the file, only when it does not: a new identity, or a raised difficulty. The key, its
reputation and its credits stay the same either way. A missing, unreadable or foreign file is
simply solved again: the nonce is public and costs only time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import trio

from distributeai.consensus.pow import pow_ok, solve

log = logging.getLogger("distributeai.node")


def _stored_nonce(path: Path) -> bytes | None:
    try:
        doc = json.loads(path.read_text())
        return bytes.fromhex(doc["nonce"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(path: Path, difficulty: int, nonce: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"difficulty": difficulty, "nonce": nonce.hex()}))
    os.replace(tmp, path)


async def load_or_solve(path: Path, public_key: bytes, difficulty: int) -> bytes:
    """A nonce proving `difficulty` bits on `public_key`: the stored one if it does, else a new
    one solved in a worker thread (2**difficulty hashes on average) and stored."""
    nonce = _stored_nonce(path)
    if nonce is not None and pow_ok(public_key, nonce, difficulty):
        return nonce
    started = time.monotonic()
    nonce = await trio.to_thread.run_sync(solve, public_key, difficulty, abandon_on_cancel=True)
    log.info("proof-of-work of %d bits solved in %.2f s", difficulty, time.monotonic() - started)
    _write(path, difficulty, nonce)
    return nonce
