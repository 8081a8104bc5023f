"""Whether this node bids on a job: small predicates, each returning a decision with a reason.

Checked in order, first refusal wins (semantic checks before resource checks, as in Bacalhau's
bid strategies):

    predicate          refuses when
    submitter_pays     the submitter cannot pay the job's most cost in this node's view of credits
    sandbox_ready      no working backend for the job's sandbox kind (e.g. dockerd unreachable)
    has_gpu            the job needs a GPU and this node offers none
    image_present      the image is not available locally (no registry pulls yet)
    fits_resources     the job asks for more CPU or memory than the node offers
    has_free_slot      the node already runs its maximum number of jobs
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from distributeai.consensus.messages import JobSpec


@dataclass(frozen=True)
class Capacity:
    cpu_millis: int = 2000      # what the volunteer lends: both cores of a small machine
    memory_mb: int = 2048       # a quarter of a modest machine's memory
    max_running: int = 4        # concurrent jobs; sandbox starts dominate beyond this on 2 cores


@dataclass(frozen=True)
class Decision:
    bid: bool
    reason: str


@dataclass(frozen=True)
class BidContext:
    spec: JobSpec
    capacity: Capacity
    running: int
    sandbox_ok: bool
    image_ok: Callable[[str], bool]
    submitter_can_pay: bool = True
    gpu_ok: bool = True


def submitter_pays(c: BidContext) -> Decision | None:
    return None if c.submitter_can_pay else Decision(False, "the submitter cannot pay for this job")


def sandbox_ready(c: BidContext) -> Decision | None:
    return None if c.sandbox_ok else Decision(False, f"no working sandbox for {c.spec.sandbox} jobs")


def image_present(c: BidContext) -> Decision | None:
    return None if c.image_ok(c.spec.image) else Decision(False, f"image {c.spec.image} not available locally")


def has_gpu(c: BidContext) -> Decision | None:
    return None if c.gpu_ok else Decision(False, "the job needs a GPU and this node has none")


def fits_resources(c: BidContext) -> Decision | None:
    if c.spec.cpu_millis > c.capacity.cpu_millis:
        return Decision(False, f"needs {c.spec.cpu_millis} millicores, offers {c.capacity.cpu_millis}")
    if c.spec.memory_mb > c.capacity.memory_mb:
        return Decision(False, f"needs {c.spec.memory_mb} MiB, offers {c.capacity.memory_mb}")
    return None


def has_free_slot(c: BidContext) -> Decision | None:
    return None if c.running < c.capacity.max_running else Decision(False, "all job slots busy")


PREDICATES = (submitter_pays, sandbox_ready, has_gpu, fits_resources, has_free_slot, image_present)


def decide(c: BidContext) -> Decision:
    for predicate in PREDICATES:
        refusal = predicate(c)
        if refusal is not None:
            return refusal
    return Decision(True, "fits")
