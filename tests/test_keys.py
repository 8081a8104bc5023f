"""Issue 7 item 6, the key file: formats (raw, sealed with a passphrase), mode 0600 on every write,
and the `distributeai key encrypt|decrypt|show` commands with their passphrase sources.

The network tests (a node started with an encrypted key, `submit` signed by the node) are in
tests/test_local_access.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from distributeai.p2p import identity, keyfile

from .netfixtures import cli

PASS = b"correct horse battery staple"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_line_exit_2(out, *needles: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# --- the format ---------------------------------------------------------------------------------


def test_encrypted_key_round_trips_and_keeps_its_public_key_in_clear():
    seed = os.urandom(32)
    blob = keyfile.encrypt_seed(seed, PASS)
    assert len(blob) == keyfile.ENCRYPTED_BYTES and keyfile.is_encrypted(blob)
    assert seed not in blob
    assert keyfile.decrypt_seed(blob, PASS) == seed
    assert keyfile.public_key_of_file(blob) == identity.public_key_bytes(seed) == keyfile.public_key_of_file(seed)
    assert keyfile.encrypt_seed(seed, PASS) != blob  # a fresh salt and nonce each time


def test_wrong_passphrase_and_any_altered_byte_are_refused():
    seed = os.urandom(32)
    blob = keyfile.encrypt_seed(seed, PASS, log2_n=keyfile.MIN_LOG2_N)
    with pytest.raises(keyfile.WrongPassphrase):
        keyfile.decrypt_seed(blob, PASS + b"!")
    # The header (parameters, salt, nonce, public key) is authenticated, and so is the ciphertext.
    for at in (len(keyfile.MAGIC) + 1, len(keyfile.MAGIC) + 3, len(keyfile.MAGIC) + 20, len(blob) - 60, len(blob) - 1):
        altered = bytearray(blob)
        altered[at] ^= 1
        with pytest.raises(keyfile.KeyFileError):
            keyfile.decrypt_seed(bytes(altered), PASS)
    for bad in (blob[:-1], blob + b"x", b"DAIKEY\x00\x02\n" + blob[9:]):
        with pytest.raises(keyfile.KeyFileError):
            keyfile.decrypt_seed(bad, PASS)


def test_scrypt_parameters_beyond_the_bounds_are_refused_before_any_work():
    blob = bytearray(keyfile.encrypt_seed(os.urandom(32), PASS, log2_n=keyfile.MIN_LOG2_N))
    blob[len(keyfile.MAGIC)] = 40  # 2^40 * 1 KiB: would ask for a petabyte
    with pytest.raises(keyfile.KeyFileError, match="out of bounds"):
        keyfile.decrypt_seed(bytes(blob), PASS)
    with pytest.raises(ValueError, match="empty"):
        keyfile.encrypt_seed(os.urandom(32), b"")


def test_load_or_create_key_opens_both_formats_and_creates_an_encrypted_one(tmp_path):
    raw = tmp_path / "raw" / "node.key"
    seed = identity.load_or_create_key(raw)
    assert identity.load_or_create_key(raw, PASS) == seed  # a raw file ignores a passphrase
    enc = tmp_path / "enc" / "node.key"
    seed2 = identity.load_or_create_key(enc, PASS)
    assert mode(enc) == 0o600 and keyfile.is_encrypted(enc.read_bytes()) and seed2 not in enc.read_bytes()
    assert identity.load_or_create_key(enc, PASS) == seed2
    assert identity.key_file_public_key(enc) == identity.public_key_bytes(seed2)
    with pytest.raises(identity.PassphraseRequired, match=str(enc)):
        identity.load_or_create_key(enc)
    with pytest.raises(identity.WrongPassphrase, match=str(enc)) as err:
        identity.load_or_create_key(enc, b"nope")
    assert "nope" not in str(err.value)
    enc.chmod(0o644)
    with pytest.raises(identity.KeyFileError, match="chmod 600"):
        identity.key_file_public_key(enc)


def test_replace_is_atomic_and_0600_even_under_a_permissive_umask(tmp_path):
    path = tmp_path / "node.key"
    keyfile.write_new(path, b"a" * 32)
    old = os.umask(0)
    try:
        keyfile.replace(path, b"b" * 32)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"b" * 32 and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temporary file left behind


# --- the commands -------------------------------------------------------------------------------


def make_node_dir(tmp_path: Path) -> tuple[Path, bytes]:
    d = tmp_path / "node"
    return d, identity.load_or_create_key(d / "node.key")


def peer_id(seed: bytes) -> str:
    return identity.peer_id_from_public_key(identity.public_key_bytes(seed))


def test_key_encrypt_show_decrypt_with_a_passphrase_file(tmp_path):
    d, seed = make_node_dir(tmp_path)
    pw = tmp_path / "pw"
    pw.write_bytes(PASS + b"\n")  # one trailing newline is not part of the passphrase
    out = cli("key", "encrypt", "--data-dir", str(d), "--passphrase-file", str(pw))
    assert out.returncode == 0, out.stderr
    blob = (d / "node.key").read_bytes()
    assert keyfile.decrypt_seed(blob, PASS) == seed and mode(d / "node.key") == 0o600
    assert seed.hex() not in out.stdout + out.stderr
    show = cli("key", "show", "--data-dir", str(d), "--json")  # no passphrase needed
    assert show.returncode == 0 and show.stdout.strip() == f'{{"peer_id": "{peer_id(seed)}", "encrypted": true}}'
    assert cli("key", "show", "--data-dir", str(d)).stdout.strip() == peer_id(seed)
    info = cli("node", "info", "--data-dir", str(d), "--json")  # no node running: read from the key file
    assert info.returncode == 0 and f'"peer_id": "{peer_id(seed)}"' in info.stdout, info.stderr
    one_line_exit_2(cli("key", "encrypt", "--data-dir", str(d), "--passphrase-file", str(pw)), "already encrypted")
    out = cli("key", "decrypt", "--data-dir", str(d), "--passphrase-file", str(pw))
    assert out.returncode == 0, out.stderr
    assert (d / "node.key").read_bytes() == seed and mode(d / "node.key") == 0o600
    one_line_exit_2(cli("key", "decrypt", "--data-dir", str(d), "--passphrase-file", str(pw)), "not encrypted")


def run_env(*args: str, **env: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "distributeai.cli.main", *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **env})


def test_passphrase_from_the_environment_and_wrong_or_missing_ones(tmp_path):
    d, seed = make_node_dir(tmp_path)
    env = {"DISTRIBUTEAI_PASSPHRASE": PASS.decode()}
    assert run_env("key", "encrypt", "--data-dir", str(d), **env).returncode == 0
    blob = (d / "node.key").read_bytes()
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    one_line_exit_2(cli("key", "decrypt", "--data-dir", str(d), "--passphrase-file", str(wrong)), "wrong passphrase")
    one_line_exit_2(run_env("key", "decrypt", "--data-dir", str(d), DISTRIBUTEAI_PASSPHRASE="not it"),
                    "wrong passphrase")
    # No file, no environment, no terminal (stdin is /dev/null): one line saying how to give one.
    clean = {k: v for k, v in os.environ.items() if k != "DISTRIBUTEAI_PASSPHRASE"}
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "distributeai.cli.main", "key", "decrypt", "--data-dir", str(d)],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=clean)
    one_line_exit_2(out, "--passphrase-file", "DISTRIBUTEAI_PASSPHRASE")
    one_line_exit_2(cli("node", "start", "--data-dir", str(d), "--passphrase-file", str(wrong)), "wrong passphrase")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    one_line_exit_2(cli("node", "start", "--data-dir", str(d), "--passphrase-file", str(empty)), "empty")
    one_line_exit_2(cli("key", "show", "--data-dir", str(tmp_path / "none")), "no node key")
    assert (d / "node.key").read_bytes() == blob  # nothing above changed the file
    assert run_env("key", "decrypt", "--data-dir", str(d), **env).returncode == 0
    assert (d / "node.key").read_bytes() == seed


def test_key_commands_have_help_with_an_example():
    for command in (["key", "encrypt"], ["key", "decrypt"], ["key", "show"]):
        out = cli(*command, "--help")
        assert out.returncode == 0 and "Example:" in out.stdout, out.stderr
        assert "distributeai " + " ".join(command) in " ".join(out.stdout.split())
