"""DistributeAI's overlay over py-libp2p: identity, host, DHT discovery, gossip, request/response.

Generic: it knows nothing of jobs or consensus. See README.md for the contract.
`identity` is importable without loading libp2p; importing `overlay` loads libp2p (~0.5 s), only
what runs of it: `workarounds_import.install()` runs here, before anything of the project imports
libp2p (docs/libp2p.md items 17-21).
"""

from . import workarounds_import

workarounds_import.install()

from .identity import (
    KeyFileError,
    load_or_create_key,
    peer_id_from_public_key,
    public_key_bytes,
    public_key_from_peer_id,
)

_OVERLAY_NAMES = frozenset({"GossipMessage", "Overlay", "RemoteError", "open_overlay", "quiet_libp2p_logs"})


def __getattr__(name: str) -> object:
    # The overlay names load libp2p on first use, so that `identity` alone stays cheap.
    if name in _OVERLAY_NAMES:
        from . import overlay

        return getattr(overlay, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "GossipMessage",
    "KeyFileError",
    "Overlay",
    "RemoteError",
    "load_or_create_key",
    "open_overlay",
    "peer_id_from_public_key",
    "public_key_bytes",
    "public_key_from_peer_id",
    "quiet_libp2p_logs",
]
