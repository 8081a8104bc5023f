"""Adaptive replication without a trusted server: who may run a job alone, and the spot-check coin.

BOINC trusts a host whose results validated `consecutive_valid` (CV) times in a row and checks its
results at rate 1/CV (`sched_send.cpp`, `set_trust()`). Here every node derives CV from verified
certificates (consensus/trust.py), and the coin is one no executor can foresee and no submitter
can choose:

- An adaptive job (`JobSpec.verification == "adaptive"`) whose best-ranked bidder has CV >=
  `trust_threshold` in the job's runtime class (`runtime_class`) is awarded to that bidder alone.
- Once it has committed (its seal names its result), the submitter signs `draw_message(job_id,
  seal)`. Ed25519 signatures are deterministic (RFC 8032), so the submitter has exactly one valid
  signature to give, and the executor, which has only the public key, cannot compute it when it
  commits. `spot_check(signature, cv, floor_ppm)`: a check when the signature's SHA-256, read as a
  64-bit fraction, falls below max(1/CV, floor), in exact integer arithmetic.
- The certificate carries the `Evidence` (the CV the submitter counted, the draw signature and the
  trusted executor's signed commit), so every node can re-derive the coin (`check_evidence`) and
  the mode (`mode_of`): "single" (no check: the one reveal is the result), "spot_checked" (a
  check: two results agree) or "replicated" (k-of-n: a replicate job, no trusted bidder, or a
  check that disagreed and escalated).

Whether the claimed CV holds is the ledger's to say (trust.py): it depends on the certificates a
node holds, so it is judged against them, never inside `verify_certificate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .codec import Identity, encode, sha256
from .errors import RemoteProtocolError
from .fields import PLATFORM_CLASSES, PLATFORM_VALUE_MAX, PPM, _bytes, _fail, _int, _list, _str

DRAW_DOMAIN = b"distributeai/spot-check/v1\x00"
MODES = ("single", "spot_checked", "replicated")
NO_PLATFORM = ("", "", "")


def check_platform(body) -> tuple[str, ...]:
    """A bid's platform from its body: one printable value per PLATFORM_CLASSES entry, "" unknown."""
    values = _list(body, "platform", len(PLATFORM_CLASSES))
    if len(values) != len(PLATFORM_CLASSES):
        raise _fail("platform", f"must be [{', '.join(PLATFORM_CLASSES)}]")
    out = tuple(_str(v, "platform[]", PLATFORM_VALUE_MAX) for v in values)
    if any(not (v.isascii() and v.isprintable()) for v in out):
        raise _fail("platform[]", "must be printable ASCII")
    return out


def platform_class(platform: tuple[str, ...], classes: tuple[str, ...]) -> tuple[str, ...]:
    """The values of `platform` for the named classes (JobSpec.homogeneous), in their order."""
    return tuple(platform[PLATFORM_CLASSES.index(c)] for c in classes)


def runtime_class(spec, platform: tuple[str, ...]) -> bytes:
    """The class a consecutive-valid count is kept in: the sandbox kind, what it runs (the image
    reference, a digest when pinned; the wasm module's hash or CID) and the executor's advertised
    platform. 32 bytes, equal on every node for the same spec fields and platform."""
    runs = spec.image.encode() if spec.sandbox != "wasm" else (spec.wasm_cid or sha256(spec.wasm_module))
    return sha256(encode([spec.sandbox, runs, list(platform)]))


def draw_message(job_id: bytes, seal: bytes) -> bytes:
    return DRAW_DOMAIN + job_id + seal


def sign_draw(identity: Identity, job_id: bytes, seal: bytes) -> bytes:
    """The submitter's draw for a trusted executor's commit: its deterministic Ed25519 signature."""
    return identity.private_key.sign(draw_message(job_id, seal))


def spot_check(signature: bytes, cv: int, floor_ppm: int) -> bool:
    """True: the job is checked. u = the first 8 bytes of SHA-256(signature) as an integer; checked
    when u / 2^64 < max(1/cv, floor_ppm / 10^6), computed exactly (cv >= 1)."""
    u = int.from_bytes(sha256(signature)[:8], "big")
    return u * max(1, cv) < 1 << 64 or u * PPM < floor_ppm << 64


def check_probability(cv: int, floor_ppm: int) -> float:
    """The chance of a check, for people and the simulator: max(1/cv, floor)."""
    return max(1 / max(1, cv), floor_ppm / PPM)


@dataclass(frozen=True)
class Evidence:
    """What a certificate of an adaptive job run by a trusted executor carries: the CV the
    submitter counted for it (as of the bids), the draw signature, and the executor's signed
    commit (whose seal the draw signs)."""

    cv: int
    draw: bytes
    commit: bytes  # the trusted executor's signed Commit, raw

    def to_body(self) -> list:
        return [self.cv, self.draw, self.commit]

    @classmethod
    def from_body(cls, body) -> "Evidence | None":
        """None for an empty list: the certificate carries no draw."""
        body = _list(body, "evidence", 3)
        if not body:
            return None
        if len(body) != 3:
            raise _fail("evidence", "must be [] or [cv, draw, commit]")
        return cls(_int(body[0], "evidence cv", 1, 2**32), _bytes(body[1], "evidence draw", 64),
                   _bytes(body[2], "evidence commit", max_len=1024))


def check_evidence(evidence: Evidence, spec, submitter: bytes, job_id: bytes, commit) -> bool:
    """Check the draw of a certificate's evidence (`commit`: its commit, already verified and for
    this job) and return whether it drew a spot check. Raises RemoteProtocolError
    (`bad_evidence`) when the job is not adaptive, the claimed CV is below the job's threshold, or
    the draw is not the submitter's signature over the job id and the commit's seal."""
    if spec.verification != "adaptive":
        raise RemoteProtocolError("bad_evidence", "a replicate job carries no spot-check draw")
    if evidence.cv < spec.trust_threshold:
        raise RemoteProtocolError("bad_evidence", f"the executor's CV {evidence.cv} is below the threshold {spec.trust_threshold}")
    if commit.job_id != job_id:
        raise RemoteProtocolError("bad_evidence", "the evidence's commit is for another job")
    try:
        Ed25519PublicKey.from_public_bytes(submitter).verify(evidence.draw, draw_message(job_id, commit.seal))
    except (InvalidSignature, ValueError):
        raise RemoteProtocolError("bad_evidence", "the draw is not the submitter's signature over the job and seal")
    return spot_check(evidence.draw, evidence.cv, spec.spot_check_floor_ppm)


def mode_of(drawn: bool | None, trusted: bytes | None, revealed: set[bytes] | frozenset[bytes]) -> str:
    """How a job's verdict was reached, from its draw (None: the certificate carries none), the
    trusted executor and who revealed: "single" (no check drawn, only the trusted executor
    revealed), "spot_checked" (a check drawn, the trusted executor and one other revealed),
    otherwise "replicated" (the spec's k-of-n). The submitter and every certificate check use this."""
    if drawn is None or trusted not in revealed:
        return "replicated"
    if not drawn and len(revealed) == 1:
        return "single"
    if drawn and len(revealed) == 2:
        return "spot_checked"
    return "replicated"


def mode_quorum(mode: str, spec) -> int:
    """The agreeing results a verdict needs in `mode`: one for a single run, two for a spot check."""
    return {"single": 1, "spot_checked": 2}.get(mode, spec.quorum)
