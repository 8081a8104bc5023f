"""The decoders under fuzz: each one the real code a peer's or a user's bytes go through.

A `Decoder` runs one input through `check(data)`. The input is *accepted* when `check` returns
None, *rejected* when it raises one of the decoder's documented error types (the reason is then
`reason(exc)`, the label the node counts it under in distributeai_messages_rejected_total), or
when it returns a list of rejection reasons (a session stream, which can refuse several frames).
Anything else raised is a finding, as is an `InvariantBroken` (an accepted input that breaks a
promise, such as a job file whose spec the network would refuse).

| decoder | the code | accepted means |
|---|---|---|
| gossip | `consensus.gossip.check_gossip` (decode_canonical, kind dispatch, check_announce, check_widen, verify_certificate, author) | a valid announcement, widening or certificate from its author |
| widen | `check_gossip` of a widening, then `validate.widened_share` against the job's submitter and a known share | a widening by the job's submitter that grows its share |
| bid, decline, commit, withdraw | `verify(data, T)` + `Submitting._check_sender`, as the submitter's handlers | valid, sent by its signer (the node then looks the job up) |
| award | `inbound.decode_award` (executor's handler) | valid, naming this executor |
| reveal_request | `verify(data, RevealRequest)` (executor's handler) | valid |
| reveal | `inbound.decode_reveal_answer` (the submitter reading an answer) | valid, by the executor asked |
| answer | `wire.parse_answer` (any requester) | a positive answer frame |
| session_frame | `session.parse_request_header` + `parse_request_body` | one well-formed request frame |
| session | `session.serve_session` over a trio memory stream pair, the input as the stream's bytes | no frame refused |
| job_file | `jobfile.load_job_document` + `parse_job`; invariant: the spec it makes passes `verify` | a valid job |
| tasks_file | `jobfile.parse_tasks` + `parse_job`; same invariant | a valid batch |
| control | `control_request.parse_line` (the control API's JSON line and every op's arguments) | a well-formed request |
| unixfs_block | `consensus.unixfs.decode_block` of a dag-pb block (what Bitswap hands the block store) | a UnixFS file or directory node |
| bitswap | `p2p.bitswap_wire.decode_message` (a Bitswap 1.2.0 message from any peer) | a message within the bounds |
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import trio
import trio.testing

from distributeai.consensus.cid import DAG_PB, cid_for
from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import JobFileError, RemoteProtocolError
from distributeai.consensus.gossip import check_gossip
from distributeai.consensus.jobfile import KNOWN, MAX_JOB_FILE, load_job_document, parse_job, parse_tasks
from distributeai.consensus.messages import (
    MAX_ENVELOPE, MAX_SIZE, Bid, Commit, Decline, JobSpec, RevealRequest, Withdraw, sign, verify,
)
from distributeai.consensus.names import (
    AWARD_PROTOCOL, BID_PROTOCOL, COMMIT_PROTOCOL, DECLINE_PROTOCOL, REVEAL_PROTOCOL, WITHDRAW_PROTOCOL,
)
from distributeai.consensus.unixfs import MAX_BLOCK, BadBlock, decode_block
from distributeai.consensus.validate import CheckedWiden, widened_share
from distributeai.p2p import bitswap_wire, reqresp, session
from distributeai.p2p.identity import peer_id_from_public_key

from distributeai.node import wire
from distributeai.node.control_request import MAX_REQUEST, REJECT_REASON, BadRequest, parse_line
from distributeai.node.inbound import decode_award, decode_reveal_answer
from distributeai.node.submitting import Submitting
from . import corpus as corpus_mod
from .corpus import Corpus

PROTOCOLS = [BID_PROTOCOL, DECLINE_PROTOCOL, COMMIT_PROTOCOL, WITHDRAW_PROTOCOL, AWARD_PROTOCOL, REVEAL_PROTOCOL]
SESSION_MAX_BYTES = 1 << 20  # the overlay's default max_message_bytes, as nodes run it
SESSION_INPUT_DEADLINE_S = 10.0  # one input's session must end by then (a hang otherwise)


class InvariantBroken(AssertionError):
    """An input was accepted but what it produced breaks the decoder's contract."""


@dataclass
class Decoder:
    name: str
    seeds: list[bytes]
    fmt: str  # how the mutator sees inputs: "msgpack", "json" or "bytes"
    max_size: int  # the decoder's size cap (the mutator sometimes goes past it)
    check: Callable[[bytes], Any]
    errors: tuple[type[BaseException], ...]
    reason: Callable[[BaseException], str]
    is_async: bool = False


def _protocol_reason(exc: BaseException) -> str:
    return exc.reason  # type: ignore[attr-defined]


def _session_reason(exc: BaseException) -> str:
    return f"session_{exc.reason}"  # type: ignore[attr-defined]


def _job_file_reason(exc: BaseException) -> str:
    field = exc.field  # type: ignore[attr-defined]
    return f"job_file_{field}" if field in KNOWN or field in ("job", "tasks") else "job_file_unknown_field"


def build(c: Corpus) -> dict[str, Decoder]:
    """Every decoder, its seeds taken from `c`; the context of the checks (who sent what, this
    node's key, the time) is `c`'s: gossip comes from the submitter, requests from the executor,
    awards name the executor as this node, and the clock reads `c.now_ms`."""
    executor_peer = peer_id_from_public_key(c.executor.public_key)
    me = c.executor.public_key
    msgs = c.messages

    def from_sender(expect: type) -> Callable[[bytes], None]:
        def check(data: bytes) -> None:
            Submitting._check_sender(verify(data, expect), executor_peer, expect.kind)
        return check

    def request(name: str, check: Callable[[bytes], Any], seeds: list[bytes], kind: str) -> Decoder:
        return Decoder(name, seeds, "msgpack", MAX_SIZE[kind], check, (RemoteProtocolError,), _protocol_reason)

    other = [msgs["spec"][0], msgs["bid"][0], msgs["award"][0]]  # another kind: wrong_kind
    decoders = [
        Decoder("gossip", c.of("announce", "widen", "certificate") + [msgs["bid"][0]], "msgpack", MAX_ENVELOPE,
                lambda data: check_gossip(data, c.submitter.public_key, c.now_ms, 0), (RemoteProtocolError,),
                _protocol_reason),
        Decoder("widen", msgs["widen"] + [msgs["announce"][0]], "msgpack", MAX_SIZE["widen"],
                lambda data: check_widen_of_job(data, c.submitter.public_key, c.now_ms), (RemoteProtocolError,),
                _protocol_reason),
        request("bid", from_sender(Bid), msgs["bid"] + other, "bid"),
        request("commit", from_sender(Commit), msgs["commit"] + other, "commit"),
        request("withdraw", from_sender(Withdraw), msgs["withdraw"] + other, "withdraw"),
        request("decline", from_sender(Decline), msgs["decline"] + other, "decline"),
        request("award", lambda data: decode_award(data, me), msgs["award"] + other, "award"),
        request("reveal_request", lambda data: verify(data, RevealRequest), msgs["reveal_request"] + other,
                "reveal_request"),
        request("reveal", lambda data: decode_reveal_answer(data, me), msgs["reveal"] + other, "reveal"),
        Decoder("answer", corpus_mod.answer_seeds(c), "msgpack", MAX_ENVELOPE + 64, wire.parse_answer,
                (RemoteProtocolError,), _protocol_reason),
        Decoder("session_frame", corpus_mod.frame_seeds(c, PROTOCOLS), "bytes", SESSION_MAX_BYTES + 512,
                check_frame, (session.FrameError,), _session_reason),
        Decoder("session", corpus_mod.frame_seeds(c, PROTOCOLS), "bytes", SESSION_MAX_BYTES + 512,
                check_session_stream, (), _session_reason, is_async=True),
        Decoder("job_file", corpus_mod.job_file_seeds(), "json", MAX_JOB_FILE,
                lambda data: check_job_file(data, c.submitter, c.now_ms), (JobFileError,), _job_file_reason),
        Decoder("tasks_file", corpus_mod.tasks_file_seeds(), "bytes", MAX_SIZE["spec"] * 4,
                lambda data: check_tasks_file(data, c.submitter, c.now_ms), (JobFileError,), _job_file_reason),
        Decoder("control", corpus_mod.control_seeds(), "json", MAX_REQUEST, parse_line, (BadRequest,),
                lambda exc: REJECT_REASON),
        Decoder("unixfs_block", corpus_mod.unixfs_block_seeds(), "bytes", MAX_BLOCK,
                lambda data: decode_block(cid_for(DAG_PB, data), data), (BadBlock,), lambda exc: "bad_block"),
        Decoder("bitswap", bitswap_seeds(), "bytes", bitswap_wire.MAX_MESSAGE, bitswap_wire.decode_message,
                (bitswap_wire.WireError,), lambda exc: exc.reason),  # type: ignore[attr-defined]
    ]
    return {d.name: d for d in decoders}


def check_widen_of_job(data: bytes, submitter: bytes, now_ms: int) -> None:
    """A widening as a node takes it for a job of `submitter` it knows at share 1: the gossip
    check, then `widened_share` (another kind of gossip is refused as a node refuses it there)."""
    checked = check_gossip(data, submitter, now_ms, 0)
    if not isinstance(checked, CheckedWiden):
        raise RemoteProtocolError("wrong_kind", "not a widening")
    widened_share(checked, submitter, 1)


def bitswap_seeds() -> list[bytes]:
    """Bitswap messages: wants (block, have, cancel, full), blocks with prefixes, presences."""
    import hashlib

    block = bytes(range(256)) * 4
    cid = bytes([1, 0x55, 0x12, 0x20]) + hashlib.sha256(block).digest()
    w = bitswap_wire
    return [w.encode_message(m) for m in (
        w.Message(entries=(w.Entry(cid, send_dont_have=True), w.Entry(cid, 3, want_have=True)), full=True),
        w.Message(entries=(w.Entry(cid, cancel=True),)),
        w.Message(blocks=((w.cid_prefix(cid), block),), pending_bytes=1024),
        w.Message(presences=((cid, True), (cid, False))),
    )]


# --- session framing ------------------------------------------------------------------------------

def check_frame(data: bytes) -> None:
    """One request frame as `serve_session` reads it: a header, then the body it announces."""
    length, _, discard = session.parse_request_header(data[:session.HEADER.size], SESSION_MAX_BYTES)
    if discard:
        raise session.FrameError("too_large", f"{length} bytes", fatal=False)  # read, dropped, refused
    body = data[session.HEADER.size:session.HEADER.size + length]
    if len(body) < length:  # serve_session waits for the rest, then gives up: counted as malformed
        raise session.FrameError("malformed", "the body did not arrive", fatal=True)
    session.parse_request_body(body, PROTOCOLS, SESSION_MAX_BYTES)


class _MemoryNetStream:
    """A trio memory stream with the few INetStream methods serve_session uses."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.muxed_conn = SimpleNamespace(peer_id="fuzz-peer")

    async def read(self, n: int) -> bytes:
        try:
            return await self._stream.receive_some(n)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return b""

    async def write(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def reset(self) -> None:
        await self._stream.aclose()


async def _accept_anything(peer: str, data: bytes) -> bytes:
    return wire.ok()


_SESSION_HANDLERS = {p: _accept_anything for p in PROTOCOLS}


async def check_session_stream(data: bytes) -> list[str]:
    """Feed `data` to a real `serve_session` as everything a peer sent on one session, then end
    the stream; return the reasons of the frames it refused. Invariants: it returns within
    SESSION_INPUT_DEADLINE_S, and every frame it wrote back is a well-formed response."""
    client, server = trio.testing.memory_stream_pair()
    stats: collections.Counter[str] = collections.Counter()
    with trio.fail_after(SESSION_INPUT_DEADLINE_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve_session, _MemoryNetStream(server), _SESSION_HANDLERS,
                               SESSION_MAX_BYTES, stats, reqresp.new_limiter())
            try:
                await client.send_all(data)
                await client.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the session was reset before it read everything: a malformed frame
        answers = bytearray()
        while True:
            try:
                chunk = await client.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            answers += chunk
    _check_responses(bytes(answers))
    return [f"session_{key[len('requests_rejected_'):]}" for key, n in stats.items()
            if key.startswith("requests_rejected_") for _ in range(n)]


def _check_responses(data: bytes) -> None:
    while data:
        try:
            length, _ = session.parse_response_header(data[:session.HEADER.size], SESSION_MAX_BYTES)
        except session.FrameError as exc:
            raise InvariantBroken(f"serve_session wrote a malformed response: {exc}") from None
        body, data = data[session.HEADER.size:session.HEADER.size + length], data[session.HEADER.size + length:]
        if len(body) < length or body[0] > reqresp.STATUS_RESPONSE_TOO_LARGE:
            raise InvariantBroken("serve_session wrote a truncated response or an unknown status")


# --- job files --------------------------------------------------------------------------------------

def check_job_file(data: bytes, submitter: Identity, now_ms: int) -> None:
    """A job file as `distributeai submit -f` reads it (a `wasm_file` stands for the module the
    CLI would read from that file: here, the name's own bytes)."""
    doc = load_job_document(data)
    if isinstance(doc, dict) and "wasm_file" in doc:
        doc["wasm_module"] = str(doc.pop("wasm_file")).encode()
    _check_spec(parse_job(doc), submitter, now_ms)


def check_tasks_file(data: bytes, submitter: Identity, now_ms: int) -> None:
    """A `--tasks` file as `submit --tasks FILE --image alpine:latest --cmd echo` reads it."""
    tasks = parse_tasks(data)
    _check_spec(parse_job({"image": "alpine:latest", "command": ["echo"], "tasks": tasks}), submitter, now_ms)


def _check_spec(fields: dict, submitter: Identity, now_ms: int) -> None:
    spec = JobSpec(submitter=submitter.public_key, nonce=bytes(16), created_ms=now_ms, **fields)
    try:
        verify(sign(submitter, spec), JobSpec)
    except RemoteProtocolError as exc:
        raise InvariantBroken(f"parse_job accepted a job whose spec every node refuses: {exc}") from None
