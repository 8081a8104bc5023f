"""The seed corpus: valid inputs of every decoder, built with the real consensus code.

`seed_messages` is the ONE place that constructs protocol messages for the fuzzer (keyword
arguments throughout, so a field added to a message with a default needs no change here, and one
without a default needs a change here only). Everything is deterministic: the identities are
derived from fixed seeds (or passed in), nonces are fixed, `now_ms` is an argument, and Ed25519
signatures are deterministic, so a fuzz run's inputs depend only on its seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from distributeai.consensus.adaptive import Evidence, sign_draw, spot_check
from distributeai.consensus.cid import raw_cid
from distributeai.consensus.compare import Compare
from distributeai.consensus.codec import Identity, sha256
from distributeai.consensus.dagpb import T_FILE, encode_node, encode_unixfs
from distributeai.consensus.executor import make_batch_reveal, make_commit, make_reveal
from distributeai.consensus.messages import (
    Announce, Award, Bid, Certificate, Commit, Decline, JobSpec, Reveal, RevealRequest, Widen, Withdraw, job_id_of, sign,
    verify,
)
from distributeai.consensus.sampling import SHARE_ALL
from distributeai.consensus.unixfs import CHUNK_SIZE, FileBuilder, Link, directory_block, file_cid
from distributeai.p2p.session import request_frame, response_frame

from distributeai.node import wire

FIXED_NOW_MS = 1_800_000_000_000  # the fuzz command's clock: inputs must not depend on the real one


def identity(name: str) -> Identity:
    """A fixed identity for the fuzzer (never a node's key)."""
    return Identity.from_seed(sha256(b"distributeai/fuzz/" + name.encode()))


@dataclass
class Corpus:
    """Seeds by message kind (signed envelopes) and by decoder input format; `signers` maps each
    public key that signed a seed to its identity, so mutated bodies can be re-signed."""

    submitter: Identity
    executor: Identity
    now_ms: int
    messages: dict[str, list[bytes]] = field(default_factory=dict)
    signers: dict[bytes, Identity] = field(default_factory=dict)

    def of(self, *kinds: str) -> list[bytes]:
        return [m for k in kinds for m in self.messages.get(k, [])]


def seed_messages(submitter: Identity | None = None, executor: Identity | None = None,
                  now_ms: int = FIXED_NOW_MS) -> Corpus:
    """Valid signed messages of every kind: specs (container, wasm inline and by hash, batch),
    announcements, bids, awards, commits, withdrawals, reveal requests, reveals (plain, with a
    manifest, at the stdout cap, batch) and certificates (verified, failed, nondeterministic,
    batch), all consistent with each other: `executor` bids on `submitter`'s jobs, is awarded,
    commits and reveals; two more fixed identities are the other executors."""
    s = submitter or identity("submitter")
    e = executor or identity("executor")
    others = [identity("executor-2"), identity("executor-3")]
    executors = [e, *others]
    c = Corpus(s, e, now_ms)
    m = c.messages
    for who in (s, *executors):
        c.signers[who.public_key] = who

    def spec(tag: int, **kw) -> bytes:
        return sign(s, JobSpec(submitter=s.public_key, nonce=bytes([tag]) * 16, created_ms=now_ms - tag, **kw))

    container = spec(1, name="hash", image="alpine:latest", command=("sh", "-c", "echo 'Hello' | sha256sum"),
                     env=(("A", "1"), ("LANG", "C")), stdin=b"input\n")
    wasm_inline = spec(2, name="wasm", image="", command=("hashverify",), sandbox="wasm",
                       wasm_module=b"\0asm\1\0\0\0" + bytes(64), fuel_limit=10**9, price_per_mfuel=2)
    wasm_by_cid = spec(3, name="wasm-big", image="", command=("hashverify",), sandbox="wasm",
                       wasm_cid=file_cid(b"\0asm\1\0\0\0" + bytes(8192)))
    batch = spec(4, name="batch", image="alpine:latest", command=("echo",), tasks=(("a",), ("b", "c"), ()),
                 max_total_results=4)
    # Issue 18's verification fields: adaptive jobs (one run alone unless drawn, one always checked),
    # a numeric comparator, homogeneous platform classes.
    numeric = Compare("numeric", "1e-06", "1e-09", ("out.json", "sub/b.txt"))
    adaptive = spec(5, name="adaptive", image="alpine:latest", command=("echo", "1.0"), verification="adaptive",
                    trust_threshold=3, spot_check_floor_ppm=0, compare=numeric)
    checked = spec(6, name="checked", image="alpine:latest", command=("echo", "1.0"), verification="adaptive",
                   trust_threshold=1, spot_check_floor_ppm=1_000_000, homogeneous=("arch", "gpu"))
    m["spec"] = [container, wasm_inline, wasm_by_cid, batch, adaptive, checked]
    m["announce"] = [sign(s, Announce(signed_spec=raw, submitter_addrs=("/ip4/127.0.0.1/tcp/4001/p2p/x",)))
                     for raw in m["spec"]] + [sign(s, Announce(signed_spec=container, submitter_addrs=())),
                                              sign(s, Announce(signed_spec=batch, submitter_addrs=(), share=1 << 20))]
    job = job_id_of(container)
    m["widen"] = [sign(s, Widen(job_id=job, share=SHARE_ALL // 2, created_ms=now_ms)),
                  sign(s, Widen(job_id=job_id_of(batch), share=SHARE_ALL, created_ms=now_ms - 1))]
    batch_job = job_id_of(batch)
    m["bid"] = [sign(e, Bid(job_id=job, bidder=e.public_key, price=1, cpu_millis=1000, memory_mb=256,
                            sandboxes=("container", "wasm"), created_ms=now_ms)),
                sign(e, Bid(job_id=batch_job, bidder=e.public_key, price=2**53, cpu_millis=256_000,
                            memory_mb=1 << 24, sandboxes=(), created_ms=0)),
                sign(e, Bid(job_id=job_id_of(checked), bidder=e.public_key, price=1, cpu_millis=1000, memory_mb=256,
                            sandboxes=("container",), created_ms=now_ms, platform=("x86_64", "GenuineIntel",
                                                                                   "NVIDIA A100-SXM4-40GB")))]
    awards = {x.public_key: sign(s, Award(job_id=job, executor=x.public_key, slot=i, deadline_ms=now_ms + 90_000))
              for i, x in enumerate(executors)}
    batch_awards = {x.public_key: sign(s, Award(job_id=batch_job, executor=x.public_key, slot=i,
                                                deadline_ms=now_ms + 90_000)) for i, x in enumerate(executors)}
    m["award"] = [awards[e.public_key], batch_awards[e.public_key]]
    hello = b"66a045b452102c59d840ec097d59d9467e13a3f34f6494e539ffd32c1bb35f18  -\n"
    reveals = {x.public_key: make_reveal(x, job, 0, False, hello, manifest=(("out/a.txt", 5, raw_cid(b"hello")),),
                                         sandbox="process") for x in executors}
    wrong = make_reveal(others[1], job, 1, False, b"wrong\n", stderr=b"Traceback: " + b"e" * 2000)  # stderr's end
    big = make_reveal(e, job, 0, False, bytes(range(256)) * 200, fuel_used=12345, oom_killed=True, sandbox="wasm")
    runs = [(0, False, b"a\n", False, None), (0, False, b"b c\n", False, None), (2, True, b"", True, 7)]
    batch_reveals = {x.public_key: make_batch_reveal(x, batch_job, 3, runs) for x in executors}
    numbers = b'{"loss": 0.25, "w": [1e-3, -2.5]}'
    carrying = make_reveal(e, job_id_of(adaptive), 0, False, b"1.0\n", manifest=(("out.json", len(numbers), file_cid(numbers)),),
                           compare=verify(adaptive, JobSpec).msg.compare, contents={"out.json": numbers})
    m["reveal"] = [reveals[e.public_key], big, batch_reveals[e.public_key], carrying]
    m["commit"] = [make_commit(e, job, verify(reveals[e.public_key], Reveal).msg.result_hash),
                   sign(e, Commit(job_id=batch_job, executor=e.public_key, seal=bytes(32)))]
    m["withdraw"] = [sign(e, Withdraw(job_id=job, executor=e.public_key, reason="image missing"))]
    m["decline"] = [sign(x, Decline(job_id=job, bidder=x.public_key, code="image_missing",
                                    detail="image alpine:latest is not available locally", created_ms=now_ms))
                    for x in others[:2]] + [sign(e, Decline(job_id=batch_job, bidder=e.public_key, code="busy",
                                                            detail="", created_ms=0))]
    m["reveal_request"] = [sign(s, RevealRequest(job_id=job, executor=e.public_key)),
                           sign(s, RevealRequest(job_id=batch_job, executor=e.public_key))]
    agreed = verify(reveals[e.public_key], Reveal).msg.result_hash

    def certificate(status: str, result: bytes, signed_spec: bytes, job_awards: list[bytes],
                    job_reveals: list[bytes], reason: str = "", bids: tuple = (), declines: tuple = ()) -> bytes:
        return sign(s, Certificate(job_id=job_id_of(signed_spec), status=status, result_hash=result,
                                   signed_spec=signed_spec, awards=tuple(job_awards), reveals=tuple(job_reveals),
                                   created_ms=now_ms, reason=reason, bids=bids, declines=declines))

    all_awards = list(awards.values())
    m["certificate"] = [
        certificate("verified", agreed, container, all_awards, list(reveals.values())),
        certificate("failed", b"", container, all_awards, [reveals[e.public_key]],
                    "only 1 node bid, the quorum needs 2: 2 nodes lack image alpine:latest", (m["bid"][0],),
                    tuple(m["decline"][:2])),
        certificate("nondeterministic", b"", container, all_awards,
                    [reveals[e.public_key], make_reveal(others[0], job, 3, False, b"x"), wrong]),
        certificate("verified", verify(batch_reveals[e.public_key], Reveal).msg.result_hash, batch,
                    list(batch_awards.values()), list(batch_reveals.values())),
    ]
    m["certificate"] += adaptive_certificates(c, adaptive, checked)
    return c


def adaptive_certificates(c: Corpus, single_spec: bytes, checked_spec: bytes) -> list[bytes]:
    """Certificates with `evidence`: a single run (a CV so high and a floor of 0 that the draw
    calls no check) and a spot check (a floor of 1: always checked; two executors agree, their
    platforms the same for the homogeneous classes)."""
    s, e = c.submitter, c.executor
    other = identity("executor-2")
    out = []
    for raw, who, cv in ((single_spec, [e], 2**32), (checked_spec, [e, other], 1)):
        job = job_id_of(raw)
        awards = [sign(s, Award(job_id=job, executor=x.public_key, slot=i, deadline_ms=c.now_ms + 90_000))
                  for i, x in enumerate(who)]
        reveals = [make_reveal(x, job, 0, False, b"1.0\n") for x in who]
        result = verify(reveals[0], Reveal).msg.result_hash
        commit = make_commit(e, job, result)
        draw = sign_draw(s, job, verify(commit, Commit).msg.seal)
        assert spot_check(draw, cv, verify(raw, JobSpec).msg.spot_check_floor_ppm) == (len(who) == 2)
        bids = tuple(sign(x, Bid(job_id=job, bidder=x.public_key, price=1, cpu_millis=1000, memory_mb=256,
                                 sandboxes=("container",), created_ms=c.now_ms, platform=("x86_64", vendor, "")))
                     for x, vendor in zip(who, ("GenuineIntel", "AuthenticAMD"))) if len(who) == 2 else ()
        out.append(sign(s, Certificate(job_id=job, status="verified", result_hash=result, signed_spec=raw,
                                       awards=tuple(awards), reveals=tuple(reveals), created_ms=c.now_ms, bids=bids,
                                       evidence=Evidence(cv=cv, draw=draw, commit=commit))))
    return out


def answer_seeds(c: Corpus) -> list[bytes]:
    """Answer frames as request handlers send them: ok with nothing, with a reveal, with raw bytes;
    refusals."""
    return [wire.ok(), wire.ok(c.messages["reveal"][0]), wire.ok(b"\0asm" * 100), wire.refuse("unknown_job"),
            wire.refuse("malformed")]


def reconcile_keysets() -> tuple:
    """Two fixed certificate-key sets (consensus/reconcile.py) that differ in a few places: the
    fuzzed node's own (`mine`) and a peer's."""
    from distributeai.consensus.reconcile import KeySet, key_bytes
    common = [key_bytes(FIXED_NOW_MS - i * 997, sha256(b"job %d" % i)) for i in range(300)]
    mine = KeySet.of(common[:-3])
    theirs = KeySet.of(common[2:] + [key_bytes(FIXED_NOW_MS, sha256(b"theirs"))])
    return mine, theirs


def reconcile_seeds(c: Corpus) -> list[bytes]:
    """Reconciliation messages of every kind: the first range request and a narrower one, the
    peer's answers to them (a split, key lists, the same), gets and an answer of certificates."""
    from distributeai.consensus.reconcile import Session, answer, encode_get, encode_got, encode_request
    mine, theirs = reconcile_keysets()
    first = Session(mine).start()
    narrow = encode_request([(mine.keys[10], mine.keys[40], *mine.fingerprint(mine.keys[10], mine.keys[40]))])
    return [first, narrow, answer(theirs, first), answer(theirs, narrow), answer(mine, first),
            encode_get([bytes(32), sha256(b"job 1")]), encode_got(c.of("certificate")[:2]), encode_got([])]


def frame_seeds(c: Corpus, protocols: list[str]) -> list[bytes]:
    """Session request frames carrying real requests on each protocol, one frame and several."""
    requests = [(p, c.of("bid", "commit", "award")[i % 3]) for i, p in enumerate(protocols)]
    frames = [request_frame(i + 1, p, data) for i, (p, data) in enumerate(requests)]
    return frames + [b"".join(frames[:3]), request_frame(7, protocols[0], b""),
                     response_frame(9, 0, b"not a request")]


def job_file_seeds() -> list[bytes]:
    """Job files: the seed's own format, ours with every field, BOINC's names, a batch, a wasm
    job (`wasm_file`, which the CLI reads into `wasm_module`)."""
    docs = [
        {"name": "hash", "docker_image": "alpine:latest", "command": ["sh", "-c", "echo 'Hello' | sha256sum"],
         "required_cpu": 1, "required_memory": 512},
        {"name": "all", "image": "python:3.9-slim", "command": ["python", "-c", "print(1)"], "cpu": 0.5,
         "memory_mb": "1g", "timeout": 30, "replicas": 4, "quorum": 3, "price": 2, "env": {"A": "1", "B": ""},
         "max_error_results": 2, "max_total_results": 8, "result_deadline": 60, "stdin": "text\n", "gpu": False},
        {"name": "boinc", "image": "alpine", "command": ["true"], "target_nresults": 3, "min_quorum": 2,
         "required_memory": "256Mi"},
        {"image": "alpine", "command": ["echo"], "tasks": [["a"], ["b", "c"], []], "replicas": 2},
        {"wasm_file": "hashverify.wasm", "command": ["hashverify"], "fuel": 1000000, "price_per_mfuel": 1},
        {"image": "python:3.12-slim", "command": ["python", "-c", "print(1.0)"], "verification": "adaptive",
         "trust_threshold": 5, "spot_check_floor": 0.1, "homogeneous": ["gpu", "arch"], "max_total_results": 6,
         "compare": {"kind": "numeric", "rel": 1e-6, "abs": "1e-9", "files": ["z.json", "out.json"]}},
        {"image": "alpine", "command": ["true"], "verification": "replicate", "compare": {"kind": "exact"},
         "spot_check_floor": 0, "homogeneous": []},
    ]
    return [json.dumps(d).encode() for d in docs]


def tasks_file_seeds() -> list[bytes]:
    return [b"alpha\nbeta\ngamma\n", b"# comment\n'one arg' two\n\n\"x y\" z\\ w\n", "ünï cödé 'ß'\n".encode()]


def control_seeds() -> list[bytes]:
    """Control requests of every op (none names a real job, peer or key)."""
    job = "ab" * 32
    reqs = [{"op": "info"}, {"op": "submit", "signed_spec": "00ff", "module": ""}, {"op": "status", "job_id": job},
            {"op": "wait", "job_id": job, "timeout": 0}, {"op": "list", "limit": 5}, {"op": "credits"},
            {"op": "reputation"}, {"op": "peers"}, {"op": "cancel", "job_id": job},
            {"op": "result", "job_id": job, "out": "/nonexistent/out"},
            {"op": "tasks", "job_id": job, "start": 0, "limit": 0}, {"op": "stored_peers"},
            {"op": "find_peers", "peer_ids": ["junk"], "lookup": False}]
    return [json.dumps(r).encode() for r in reqs]


def unixfs_block_seeds() -> list[bytes]:
    """dag-pb blocks as `ipfs add --cid-version 1` makes them: a file's root over three raw leaves,
    a directory (a file, a leaf, an empty directory), the empty directory, and a file node with
    inline data (what `ipfs add` without raw leaves makes of a small file)."""
    builder = FileBuilder()
    blocks = dict(builder.add(bytes(range(256)) * (2 * CHUNK_SIZE // 256) + b"end"))
    root, _, last = builder.finish()
    blocks.update(last)
    empty_cid, empty_dir = directory_block([])
    _, directory = directory_block([Link(root, "data.bin", builder.tsize or 0), Link(raw_cid(b"hi"), "a.txt", 2),
                                    Link(empty_cid, "empty", len(empty_dir))])
    inline = encode_node([], encode_unixfs(T_FILE, data=b"hello\n", filesize=6))
    return [blocks[root], directory, empty_dir, inline]
