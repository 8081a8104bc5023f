"""What a node checks about its data directory's identity before it starts (no heavy imports, so
`node start` can check before it creates a key).

A raw key file is 32 bytes whatever they are: a file with flipped bytes is a valid key of another
identity. So the store records the peer id it belongs to at the first start (`Store.check_identity`),
and a start whose key gives another peer id, or a data dir whose key file is gone while its store
remains, is refused with `IdentityMismatch`: one line naming both peer ids and the two ways out
(restore the original node.key, or move the data dir aside to start a new identity). Nothing in the
data dir is written before the check (no key, no proof-of-work, no node.json).
"""

from __future__ import annotations

from pathlib import Path

from .paths import key_path

DOCS = 'docs/architecture.md, "Identity faults and recovery"'


class IdentityMismatch(RuntimeError):
    """The data dir's key file does not give the identity its store belongs to."""


def store_path(data_dir: Path) -> Path:
    return Path(data_dir) / "node.db"


def check_key_present(data_dir: Path) -> None:
    """IdentityMismatch if node.key is missing while node.db (an identity's history) is there."""
    key, db = key_path(data_dir), store_path(data_dir)
    if not key.exists() and db.exists():
        raise IdentityMismatch(
            f"{key} is missing but {db} holds the history of an identity: restore the original node.key "
            f"from a backup (mode 0600), or move {data_dir} aside to start a new identity; refusing to "
            f"create a new key here ({DOCS})")


def mismatch(data_dir: Path, recorded: str, actual: str) -> IdentityMismatch:
    """The refusal for a key file that gives peer id `actual` where the store belongs to `recorded`."""
    return IdentityMismatch(
        f"{key_path(data_dir)} gives peer id {actual}, but {store_path(data_dir)} belongs to {recorded}: the "
        f"key file was replaced or damaged. Restore the original node.key from a backup (check it with "
        f"`distributeai key show --data-dir {data_dir}`), or move {data_dir} aside to start a new identity "
        f"({DOCS})")
