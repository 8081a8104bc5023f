"""Whether this node bids on a job: small predicates, each returning a decision with a reason
code (for code to act on, and sent to the submitter in a signed Decline: every code here is one of
`consensus.fields.DECLINE_CODES`) and a reason text (for people).

Checked in the order of `PREDICATES`, first refusal wins (semantic checks before resource checks,
as in Bacalhau's bid strategies; the image last, since a missing image is pulled, and only worth
pulling for a job the node would otherwise run):

    predicate        code                  refuses when
    submitter_pays   submitter_cannot_pay  the submitter cannot pay the job's most cost in this
                                           node's view of credits
    sandbox_ready    no_sandbox            no working backend for the job's sandbox kind (e.g.
                                           dockerd unreachable)
    has_gpu          no_gpu                the job needs a GPU and this node offers none
    fits_resources   not_enough_cpu,       the job asks for more CPU, or more memory, than the node
                     not_enough_memory     offers
    disk_room        disk_low              the data dir's free space is below the node's reserve
                                           (node/disk.py), or a store write just failed for want
                                           of disk
    fits_output      output_too_large      a container job's output quota (out_max_bytes) is over
                                           what this node accepts (--max-output) or over its free
                                           space above the reserve, less the quotas of the jobs
                                           it has been awarded and not yet run
    fits_inputs      inputs_too_large      the job's inputs, less what this node's block store holds
                                           of them already, are more than the store can take (its
                                           cap less its pinned blocks) or than the disk has free
                                           above the reserve and the output quotas promised
    has_free_slot    busy                  the node already runs its maximum number of jobs
    image_present    image_missing         the image is not available locally (the executor then
                                           tries to pull it and decides again)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from distributeai.consensus.messages import JobSpec
from distributeai.consensus.units import human_bytes



@dataclass(frozen=True)
class Capacity:
    cpu_millis: int = 2000      # what the volunteer lends: both cores of a small machine
    memory_mb: int = 2048       # a quarter of a modest machine's memory
    max_running: int = 4        # concurrent jobs; sandbox starts dominate beyond this on 2 cores


SUBMITTER_CANNOT_PAY = "submitter_cannot_pay"
NO_SANDBOX = "no_sandbox"
NO_GPU = "no_gpu"
NOT_ENOUGH_CPU = "not_enough_cpu"
NOT_ENOUGH_MEMORY = "not_enough_memory"
BUSY = "busy"
IMAGE_MISSING = "image_missing"
DISK_LOW = "disk_low"
OUTPUT_TOO_LARGE = "output_too_large"
INPUTS_TOO_LARGE = "inputs_too_large"
FITS = "fits"


@dataclass(frozen=True)
class Decision:
    bid: bool
    reason: str  # for people: the log and `bid` in the job's status
    code: str = FITS  # for code: one of the constants above


@dataclass(frozen=True)
class BidContext:
    spec: JobSpec
    capacity: Capacity
    running: int
    sandbox_ok: bool
    image_ok: Callable[[str], bool]
    submitter_can_pay: bool = True
    gpu_ok: bool = True
    # The data dir's space (node/disk.py DiskGuard): whether it is low, bytes free above the
    # reserve less the output quotas of the jobs awarded and not yet run, and the largest output
    # quota this node accepts. None: not watched (no limit).
    disk_low: bool = False
    disk_headroom: int | None = None
    max_output: int | None = None
    # The job's inputs (node/job_inputs.py): bytes of them this node holds already, and what its
    # block store can still take (cap less pinned). None: no block store (no limit).
    inputs_held: int = 0
    store_room: int | None = None


def submitter_pays(c: BidContext) -> Decision | None:
    if c.submitter_can_pay:
        return None
    return Decision(False, "the submitter cannot pay for this job", SUBMITTER_CANNOT_PAY)


def sandbox_ready(c: BidContext) -> Decision | None:
    return None if c.sandbox_ok else Decision(False, f"no working sandbox for {c.spec.sandbox} jobs", NO_SANDBOX)


def image_present(c: BidContext) -> Decision | None:
    if c.image_ok(c.spec.image):
        return None
    return Decision(False, f"image {c.spec.image} not available locally", IMAGE_MISSING)


def has_gpu(c: BidContext) -> Decision | None:
    return None if c.gpu_ok else Decision(False, "the job needs a GPU and this node has none", NO_GPU)


def fits_resources(c: BidContext) -> Decision | None:
    if c.spec.cpu_millis > c.capacity.cpu_millis:
        return Decision(False, f"needs {c.spec.cpu_millis} millicores, offers {c.capacity.cpu_millis}", NOT_ENOUGH_CPU)
    if c.spec.memory_mb > c.capacity.memory_mb:
        return Decision(False, f"needs {c.spec.memory_mb} MiB, offers {c.capacity.memory_mb}", NOT_ENOUGH_MEMORY)
    return None


def disk_room(c: BidContext) -> Decision | None:
    if not c.disk_low:
        return None
    return Decision(False, "disk_low: the data dir's free space is below this node's reserve", DISK_LOW)


def fits_output(c: BidContext) -> Decision | None:
    """Only container jobs of one task write /out (a batch's tasks and wasm jobs write nothing)."""
    if c.spec.sandbox != "container" or c.spec.is_batch:
        return None
    quota = c.spec.out_max_bytes
    if c.max_output is not None and quota > c.max_output:
        return Decision(False, f"output_too_large: the job may write {human_bytes(quota)}, this node accepts "
                               f"{human_bytes(c.max_output)}", OUTPUT_TOO_LARGE)
    if c.disk_headroom is not None and quota > c.disk_headroom:
        return Decision(False, f"output_too_large: the job may write {human_bytes(quota)}, this node has "
                               f"{human_bytes(max(0, c.disk_headroom))} free above its reserve and the jobs it "
                               f"runs", OUTPUT_TOO_LARGE)
    return None


def fits_inputs(c: BidContext) -> Decision | None:
    """The inputs still to fetch must fit the block store and the disk (the outputs' promises
    already taken off `disk_headroom`)."""
    need = max(0, c.spec.inputs_size - c.inputs_held)
    if not need:
        return None
    for room, what in ((c.store_room, "its block store has room for"), (c.disk_headroom, "its disk has free")):
        if room is not None and need > room:
            return Decision(False, f"inputs_too_large: the job's inputs need {human_bytes(need)} more, {what} "
                                   f"{human_bytes(max(0, room))}", INPUTS_TOO_LARGE)
    return None


def has_free_slot(c: BidContext) -> Decision | None:
    return None if c.running < c.capacity.max_running else Decision(False, "all job slots busy", BUSY)


PREDICATES = (submitter_pays, sandbox_ready, has_gpu, fits_resources, disk_room, fits_output, fits_inputs,
              has_free_slot, image_present)


def decide(c: BidContext) -> Decision:
    for predicate in PREDICATES:
        refusal = predicate(c)
        if refusal is not None:
            return refusal
    return Decision(True, "fits", FITS)
