"""The node's one Ed25519 identity: the key file, the public key and the libp2p peer id.

The peer id is computed here without importing libp2p (so a CLI can print "who am I" without
paying for the libp2p import), in exactly the form libp2p 0.8.1 uses for Ed25519 keys
(`peer/id.py` `ID.from_pubkey`): an identity multihash of the protobuf-encoded public key,
base58btc-encoded ("12D3KooW..."). `tests/test_p2p.py` checks it against a running host.

The seed is a secret: nothing in this module logs it or puts it in an exception message.
The key file's formats (raw, or sealed with a passphrase) and atomic writes are in keyfile.py.
"""

from __future__ import annotations

import os
import pathlib
import stat

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .keyfile import (
    ENCRYPTED_BYTES,
    KeyFileError,
    PassphraseRequired,
    WrongPassphrase,
    decrypt_seed,
    encrypt_seed,
    is_encrypted,
    public_key_of_file,
    write_new,
)

__all__ = ["KeyFileError", "PassphraseRequired", "WrongPassphrase", "load_or_create_key", "read_key_file",
           "key_file_public_key", "public_key_bytes", "peer_id_from_public_key", "public_key_from_peer_id"]

SEED_BYTES = 32  # == keyfile.SEED_BYTES
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


def load_or_create_key(path: pathlib.Path, passphrase: bytes | None = None) -> bytes:
    """Return the 32-byte Ed25519 seed stored at `path`, creating the file (mode 0600) if absent.

    The file is a raw seed or one sealed with a passphrase (formats: keyfile.py). An encrypted
    file needs `passphrase` (PassphraseRequired without it, WrongPassphrase if it does not open
    the file); a raw file ignores it. A file created here is encrypted when `passphrase` is given.

    Creation uses O_CREAT|O_EXCL so two processes racing to create it cannot both win; the
    loser reads the winner's key. An existing file whose mode grants any group/other bit is
    refused (KeyFileError naming the path): a key other users could read is not a secret.
    Symlinks are not followed.
    """
    path = pathlib.Path(path)
    try:
        return _open(path, read_key_file(path), passphrase)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(SEED_BYTES)
    try:
        write_new(path, encrypt_seed(seed, passphrase) if passphrase else seed)
    except FileExistsError:
        return _open(path, read_key_file(path), passphrase)
    return seed


def _open(path: pathlib.Path, blob: bytes, passphrase: bytes | None) -> bytes:
    if not is_encrypted(blob):
        public_key_of_file(blob, f"key file {path}")  # checks the size
        return blob
    if not passphrase:
        raise PassphraseRequired(f"key file {path} is encrypted and no passphrase was given")
    return decrypt_seed(blob, passphrase, f"key file {path}")


def read_key_file(path: pathlib.Path) -> bytes:
    """The key file's bytes (raw seed or encrypted), after checking that it is a regular file
    that neither group nor others may read or write. FileNotFoundError if absent."""
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
        data = os.read(fd, ENCRYPTED_BYTES + 1)
    finally:
        os.close(fd)
    return data


def key_file_public_key(path: pathlib.Path) -> bytes:
    """The public key of the key file at `path`, raw or encrypted, without a passphrase."""
    return public_key_of_file(read_key_file(path), f"key file {path}")


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
