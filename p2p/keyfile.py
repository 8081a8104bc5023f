"""The key file's two formats and how they are written: a raw seed, or a seed sealed with a passphrase.

Raw (the default): exactly the 32 bytes of the Ed25519 seed.

Encrypted: scrypt stretches the passphrase into a key for ChaCha20-Poly1305, which seals the seed.
Every field before the ciphertext is authenticated as associated data, so a changed parameter,
salt or public key fails like a wrong passphrase does. Layout (120 bytes):

    magic      9 bytes  b"DAIKEY\\x00\\x01\\n"   (format 1; never 32 bytes long, unlike a raw seed)
    log2_n     1 byte   scrypt cost N = 2**log2_n (written: 17, i.e. 128 MiB and ~0.4 s here)
    r, p       1 byte each (written: 8, 1)
    salt       16 bytes
    nonce      12 bytes
    public key 32 bytes  (in clear: `key show` and `node info` name the peer id without the passphrase)
    sealed     48 bytes  seed (32) + Poly1305 tag (16)

Why this and not PKCS#8 with `BestAvailableEncryption`: that writes PBES2 with PBKDF2 at OpenSSL's
default 2,048 iterations (not settable through `cryptography`) and AES-CBC, whose only check of
the passphrase is the padding; scrypt is memory-hard and the AEAD tag tells a wrong passphrase
apart from a damaged file with certainty. Both primitives come from the `cryptography` package
already used for signatures.

Writes: every key file is born 0600 through O_CREAT|O_EXCL|O_NOFOLLOW, fsynced, and (when it
replaces one) renamed over the old file, then the directory is fsynced: a crash leaves the old key
or the new one, never half of either, and the file is never readable by others for an instant.
Nothing here logs the seed, the passphrase or puts either in an exception message.
"""

from __future__ import annotations

import os
import pathlib
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SEED_BYTES = 32
MAGIC = b"DAIKEY\x00\x01\n"
# OWASP's scrypt floor for interactive logins (N=2^17, r=8, p=1): 128 MiB, ~0.4 s on the test VM.
LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
# Bounds accepted when reading, so a crafted file cannot ask for more than 1 GiB or minutes of work.
MIN_LOG2_N, MAX_LOG2_N, MAX_R, MAX_P = 14, 20, 16, 4
_SALT, _NONCE, _PUB, _SEALED = 16, 12, 32, SEED_BYTES + 16
_HEADER = len(MAGIC) + 3 + _SALT + _NONCE + _PUB
ENCRYPTED_BYTES = _HEADER + _SEALED


class KeyFileError(Exception):
    """The key file exists but cannot be used (mode too open, wrong size, not a regular file)."""


class PassphraseRequired(KeyFileError):
    """The key file is encrypted and no passphrase was given."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not open the key file (or the file was altered)."""


def is_encrypted(blob: bytes) -> bool:
    return blob.startswith(MAGIC)


def _public_key(seed: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def _kdf(passphrase: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase)


def encrypt_seed(seed: bytes, passphrase: bytes, *, log2_n: int = LOG2_N) -> bytes:
    """The encrypted key file's bytes for `seed`. ValueError for an empty passphrase."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes")
    if not passphrase:
        raise ValueError("the passphrase is empty")
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
        raise ValueError(f"scrypt log2(N) must be in [{MIN_LOG2_N}, {MAX_LOG2_N}]")
    salt, nonce = secrets.token_bytes(_SALT), secrets.token_bytes(_NONCE)
    header = MAGIC + bytes([log2_n, SCRYPT_R, SCRYPT_P]) + salt + nonce + _public_key(seed)
    sealed = ChaCha20Poly1305(_kdf(passphrase, salt, log2_n, SCRYPT_R, SCRYPT_P)).encrypt(nonce, seed, header)
    return header + sealed


def _fields(blob: bytes, where: str) -> tuple[int, int, int, bytes, bytes, bytes, bytes]:
    if len(blob) != ENCRYPTED_BYTES or not is_encrypted(blob):
        raise KeyFileError(f"{where} is not an encrypted key file of format 1")
    at = len(MAGIC)
    log2_n, r, p = blob[at], blob[at + 1], blob[at + 2]
    if not (MIN_LOG2_N <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise KeyFileError(f"{where} has scrypt parameters out of bounds")
    at += 3
    salt, nonce, pub = blob[at : at + _SALT], blob[at + _SALT : at + _SALT + _NONCE], blob[at + _SALT + _NONCE : _HEADER]
    return log2_n, r, p, salt, nonce, pub, blob[_HEADER:]


def decrypt_seed(blob: bytes, passphrase: bytes, where: str = "the key file") -> bytes:
    """The seed sealed in `blob`. WrongPassphrase if the passphrase (or the file) is wrong."""
    log2_n, r, p, salt, nonce, pub, sealed = _fields(blob, where)
    try:
        seed = ChaCha20Poly1305(_kdf(passphrase, salt, log2_n, r, p)).decrypt(nonce, sealed, blob[:_HEADER])
    except InvalidTag:
        raise WrongPassphrase(f"wrong passphrase for {where}") from None
    if _public_key(seed) != pub:  # authenticated already; a seal made by other code would differ
        raise KeyFileError(f"{where} holds a public key that does not match its seed")
    return seed


def public_key_of_file(blob: bytes, where: str = "the key file") -> bytes:
    """The public key of a key file's bytes, raw or encrypted, without any passphrase."""
    if is_encrypted(blob):
        return _fields(blob, where)[5]
    if len(blob) != SEED_BYTES:
        raise KeyFileError(f"{where} does not hold a {SEED_BYTES}-byte Ed25519 seed")
    return _public_key(blob)


def write_new(path: pathlib.Path, data: bytes) -> None:
    """Create `path` (FileExistsError if it exists) with mode 0600 and `data`, fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask can only remove bits; be explicit anyway
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(path: pathlib.Path, data: bytes) -> None:
    """Atomically replace `path` with `data` (mode 0600): a new file beside it, renamed over it."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    write_new(tmp, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
