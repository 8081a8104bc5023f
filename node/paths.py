"""Where things live in a node's data directory. Kept free of heavy imports: the CLI's quick
commands (submit, job status, node info) need these paths without loading libp2p."""

from __future__ import annotations

from pathlib import Path


def key_path(data_dir: Path) -> Path:
    """The Ed25519 seed, mode 0600: signs protocol messages and is the libp2p identity."""
    return data_dir / "node.key"


def control_path(data_dir: Path) -> Path:
    """The control API's Unix socket, mode 0600."""
    return data_dir / "control.sock"


def last_start_path(data_dir: Path) -> Path:
    """JSON with the peer id, multiaddrs and pid of the node's last start."""
    return data_dir / "node.json"


def pow_path(data_dir: Path) -> Path:
    """JSON with the identity's proof-of-work nonce and the difficulty it was solved for."""
    return data_dir / "node.pow"
