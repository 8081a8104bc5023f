"""Bearer tokens for a node's HTTP endpoints: nothing is reachable from another host without one.

The rule (`token_required`): an HTTP listener on a loopback address is open (only this machine can
reach it, as the Prometheus scraper beside the node); on any other address, or when the operator
forces it, every request must carry `Authorization: Bearer <token>`, else 401. The token is
32 random bytes, URL-safe base64, kept in a file of mode 0600: `DATA_DIR/http.token` (created the
first time it is needed) or a file the operator names. `node start` uses this for `/metrics` and
for the REST API (`--api`), in two calls each:

    token = http_token(host, data_dir, force=..., token_file=...)   # None: no token needed
    await nursery.start(partial(serve_http, token=token), host, port, routes)  # http.py checks it

(the REST API passes the token to `serve_app` the same way).

The token is never logged; comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import pathlib
import secrets
import stat

TOKEN_FILE = "http.token"
TOKEN_BYTES = 32
MAX_TOKEN_FILE = 4096


class TokenFileError(Exception):
    """The token file cannot be used (mode too open, empty, not a regular file)."""


def is_loopback(host: str) -> bool:
    """Whether `host` (as given to bind) names a loopback address: 127.0.0.0/8, ::1 or
    "localhost". Anything else, the wildcard ("", 0.0.0.0, ::) and other names included, is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_required(host: str, force: bool = False) -> bool:
    """Whether an HTTP listener bound to `host` must ask for the bearer token."""
    return force or not is_loopback(host)


def load_or_create_token(data_dir: pathlib.Path, token_file: pathlib.Path | None = None) -> str:
    """The token in `token_file` (which must exist), else in DATA_DIR/http.token, created with
    mode 0600 if absent. A file granting any group/other bit, or empty, is refused."""
    path = pathlib.Path(token_file) if token_file is not None else pathlib.Path(data_dir) / TOKEN_FILE
    if token_file is None:
        token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, token + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"token file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise TokenFileError(f"token file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                                 f"it must not be readable by group or others (chmod 600 {path})")
        text = os.read(fd, MAX_TOKEN_FILE).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    if not text or any(c.isspace() for c in text):
        raise TokenFileError(f"token file {path} must hold one token (no spaces)")
    return text


def http_token(host: str, data_dir: pathlib.Path, *, force: bool = False,
               token_file: pathlib.Path | None = None) -> str | None:
    """The token a listener on `host` must ask for, or None when it may stay open."""
    return load_or_create_token(data_dir, token_file) if token_required(host, force) else None


def authorized(authorization: bytes | None, token: str) -> bool:
    """Whether an Authorization header value carries `token` as a Bearer credential."""
    if not authorization:
        return False
    scheme, _, credential = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(credential.strip(), token.encode("ascii", "replace"))
