"""The node's one Ed25519 identity: the key file, the public key and the libp2p peer id.

The peer id is computed here without importing libp2p (so a CLI can print "who am I" without
paying for the libp2p import), in exactly the form libp2p 0.8.1 uses for Ed25519 keys
(`peer/id.py` `ID.from_pubkey`): an identity multihash of the protobuf-encoded public key,
base58btc-encoded ("12D3KooW..."). `tests/test_p2p.py` checks it against a running host.

The seed is a secret: nothing in this module logs it or puts it in an exception message.
"""

from __future__ import annotations

import os
import pathlib
import stat

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32

# libp2p crypto.pb PublicKey{Type: Ed25519 (1), Data: <32 bytes>} serialised: field 1 varint,
# field 2 length-delimited of 32 bytes. Then the identity multihash header: code 0x00,
# length 0x24 (36).
_ED25519_PUBKEY_PROTO_PREFIX = b"\x08\x01\x12\x20"
_IDENTITY_MULTIHASH_PREFIX = b"\x00\x24"
_PEER_ID_PREFIX = _IDENTITY_MULTIHASH_PREFIX + _ED25519_PUBKEY_PROTO_PREFIX
_PEER_ID_BYTES = len(_PEER_ID_PREFIX) + PUBLIC_KEY_BYTES

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


class KeyFileError(Exception):
    """The key file exists but cannot be used (mode too open, wrong size, not a regular file)."""


def load_or_create_key(path: pathlib.Path) -> bytes:
    """Return the 32-byte Ed25519 seed stored raw at `path`, creating it (mode 0600) if absent.

    Creation uses O_CREAT|O_EXCL so two processes racing to create it cannot both win; the
    loser reads the winner's key. An existing file whose mode grants any group/other bit is
    refused (KeyFileError naming the path): a key other users could read is not a secret.
    Symlinks are not followed.
    """
    path = pathlib.Path(path)
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(SEED_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return _read_key(path)
    try:
        os.fchmod(fd, 0o600)  # umask can only remove bits; be explicit anyway
        view = memoryview(seed)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return seed


def _read_key(path: pathlib.Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # FileNotFoundError propagates
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; it must not be "
                f"readable or writable by group or others (chmod 600 {path})"
            )
        data = os.read(fd, SEED_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != SEED_BYTES:
        raise KeyFileError(f"key file {path} does not hold a {SEED_BYTES}-byte Ed25519 seed")
    return data


def public_key_bytes(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of `seed`."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes")
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def peer_id_from_public_key(pub: bytes) -> str:
    """The base58 libp2p peer id of a raw Ed25519 public key (the key is inlined)."""
    if len(pub) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes")
    return _b58encode(_PEER_ID_PREFIX + pub)


def public_key_from_peer_id(peer_id: str) -> bytes | None:
    """The raw Ed25519 public key inlined in `peer_id`, or None if it is not such a peer id."""
    try:
        raw = _b58decode(peer_id)
    except ValueError:
        return None
    if len(raw) != _PEER_ID_BYTES or not raw.startswith(_PEER_ID_PREFIX):
        return None
    return raw[len(_PEER_ID_PREFIX) :]


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    if not isinstance(text, str) or not text or len(text) > 128:
        raise ValueError("not a base58 string")
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise ValueError("not a base58 string") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * pad + body
