"""`distributeai key encrypt|decrypt|show`, and the passphrase every command that opens the key takes.

A passphrase comes from, in this order: `--passphrase-file F` (the file's bytes, one trailing newline
dropped), the environment variable `DISTRIBUTEAI_PASSPHRASE`, or a prompt on the terminal (only when
stdin is one; never echoed). With none of them a command that needs one fails with one line, exit 2;
so does a wrong passphrase. The passphrase is never printed, logged or put in the config.

The key file's format and why: p2p/keyfile.py. Every write is an atomic replace with mode 0600.
`key show` needs no passphrase: an encrypted file keeps its public key in clear. `--key-file` names
another key file than DATA_DIR/node.key (a bootstrap's `bootstrap.key`; `bootstrap start` takes
`--passphrase-file` too).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .common import DataDirOption, JsonOption, fail, node_dir

PASSPHRASE_ENV = "DISTRIBUTEAI_PASSPHRASE"
PassphraseFileOption = typer.Option(
    None, "--passphrase-file", help=f"A file holding the key's passphrase (else ${PASSPHRASE_ENV}, else a prompt "
                                    "on the terminal).")

KeyFileOption = typer.Option(None, "--key-file", help="The key file itself, instead of DATA_DIR/node.key "
                                                    "(e.g. a bootstrap's bootstrap.key).")
key_app = typer.Typer(no_args_is_help=True, help="The node's key file: encrypt it with a passphrase, decrypt it, "
                                                 "show its peer id.")


def given_passphrase(passphrase_file: Optional[Path]) -> bytes | None:
    """The passphrase from --passphrase-file or the environment; None if neither gives one."""
    if passphrase_file is not None:
        try:
            data = passphrase_file.read_bytes()
        except OSError as exc:
            fail(f"--passphrase-file: cannot read {passphrase_file}: {exc.strerror}")
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
        if not data:
            fail(f"--passphrase-file {passphrase_file} is empty")
        return data
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def passphrase(passphrase_file: Optional[Path], why: str, *, confirm: bool = False) -> bytes:
    """The passphrase from the file, the environment or a prompt; one line and exit 2 if none."""
    given = given_passphrase(passphrase_file)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        fail(f"{why}: give --passphrase-file FILE or set {PASSPHRASE_ENV} (no terminal to ask on)")
    first = getpass.getpass("passphrase: ").encode()
    if not first:
        fail("the passphrase is empty")
    if confirm and getpass.getpass("passphrase again: ").encode() != first:
        fail("the passphrases differ")
    return first


def read_blob(key: Path) -> bytes:
    """The key file's bytes (checked: regular, 0600); one line and exit 2 if missing or unusable."""
    from distributeai.p2p.identity import KeyFileError, read_key_file

    try:
        return read_key_file(key)
    except FileNotFoundError:
        fail(f"no node key at {key}: start a node there first with `distributeai node start --data-dir {key.parent}`")
    except (KeyFileError, OSError) as exc:
        fail(str(exc))


def unlock(key: Path, passphrase_file: Optional[Path], *, create: bool = False) -> bytes:
    """The seed of the key file at `key`, asking for the passphrase only if the file is encrypted.
    With `create`, an absent file is created (encrypted if a passphrase was given by file or
    environment). Wrong passphrase, or any unusable file: one line, exit 2."""
    from distributeai.p2p.identity import KeyFileError, load_or_create_key
    from distributeai.p2p.keyfile import is_encrypted

    if key.exists() or not create:
        blob = read_blob(key)
        secret = passphrase(passphrase_file, f"key file {key} is encrypted") if is_encrypted(blob) else None
    else:
        secret = given_passphrase(passphrase_file)
    try:
        return load_or_create_key(key, secret)
    except (KeyFileError, OSError, ValueError) as exc:
        fail(str(exc))


def key_encrypt(data_dir: Optional[Path] = DataDirOption, passphrase_file: Optional[Path] = PassphraseFileOption,
                key_file: Optional[Path] = KeyFileOption) -> None:
    """Encrypt the node's key file with a passphrase (scrypt + ChaCha20-Poly1305), in place, mode 0600.
    A running node keeps working; its next start needs the passphrase.

    Example: distributeai key encrypt --data-dir ./node1 --passphrase-file ~/.dai-pass
    """
    from distributeai.p2p.keyfile import encrypt_seed, is_encrypted, replace

    key = _key(data_dir, key_file)
    blob = read_blob(key)
    if is_encrypted(blob):
        fail(f"key file {key} is already encrypted (to change the passphrase: `key decrypt`, then `key encrypt`)")
    secret = passphrase(passphrase_file, "a passphrase is needed to encrypt the key", confirm=True)
    replace(key, encrypt_seed(blob, secret))
    typer.echo(f"encrypted {key}", err=True)


def key_decrypt(data_dir: Optional[Path] = DataDirOption, passphrase_file: Optional[Path] = PassphraseFileOption,
                key_file: Optional[Path] = KeyFileOption) -> None:
    """Store the node's key file unencrypted again (mode 0600), after checking the passphrase.

    Example: distributeai key decrypt --data-dir ./node1 --passphrase-file ~/.dai-pass
    """
    from distributeai.p2p.keyfile import is_encrypted, replace

    key = _key(data_dir, key_file)
    if not is_encrypted(read_blob(key)):
        fail(f"key file {key} is not encrypted")
    replace(key, unlock(key, passphrase_file))
    typer.echo(f"decrypted {key}", err=True)


def key_show(data_dir: Optional[Path] = DataDirOption, as_json: bool = JsonOption,
             key_file: Optional[Path] = KeyFileOption) -> None:
    """Print the node's peer id (never the key), and whether the key file is encrypted. Needs no passphrase.

    Example: distributeai key show --data-dir ./node1 --json
    """
    from distributeai.p2p.identity import KeyFileError, peer_id_from_public_key
    from distributeai.p2p.keyfile import is_encrypted, public_key_of_file

    key = _key(data_dir, key_file)
    blob = read_blob(key)
    try:
        peer_id = peer_id_from_public_key(public_key_of_file(blob, f"key file {key}"))
    except KeyFileError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps({"peer_id": peer_id, "encrypted": is_encrypted(blob)}))
    else:
        typer.echo(peer_id)


def _key(data_dir: Optional[Path], key_file: Optional[Path]) -> Path:
    from distributeai.node.paths import key_path

    return key_file if key_file is not None else key_path(node_dir(data_dir))


def register(app: typer.Typer) -> None:
    key_app.command("encrypt")(key_encrypt)
    key_app.command("decrypt")(key_decrypt)
    key_app.command("show")(key_show)
    app.add_typer(key_app, name="key")
