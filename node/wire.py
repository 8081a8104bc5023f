"""The answer frame of every request/response protocol: `[ok, reason, payload]`, canonical msgpack.

The request itself is always one signed envelope. The answer needs no signature of its own: the
stream is authenticated by Noise, and anything in it that must convince a third party (a reveal)
is a signed envelope inside `payload`.
"""

from __future__ import annotations

from distributeai.consensus.codec import decode_canonical, encode
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import MAX_ENVELOPE


def ok(payload: bytes = b"") -> bytes:
    return encode([True, "", payload])


def refuse(reason: str) -> bytes:
    return encode([False, reason, b""])


def parse_answer(data: bytes) -> bytes:
    """The payload of a positive answer; RemoteProtocolError(reason) for a refusal or garbage."""
    value = decode_canonical(data, MAX_ENVELOPE + 64)
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], bool)
            and isinstance(value[1], str) and isinstance(value[2], bytes)):
        raise RemoteProtocolError("malformed", "answer frame")
    if not value[0]:
        raise RemoteProtocolError("refused", value[1][:64])
    return value[2]
