"""The narrow interfaces (ports) through which the node's two roles reach the rest of the node.

`Submitting` (submitting.py) and `Executing` (executing.py) never see the `Agent`: the agent builds
these ports from its overlay, store, ledger, counters, clock and nursery and hands them over; a
test builds them from an in-memory network instead (tests/test_inprocess.py). Each port is a small
frozen dataclass of callables (or, for the store, a `typing.Protocol` the SQLite `Store` meets), so
a fake is a few lambdas.

Contract of each port:
- `Transport`: `publish(data)` gossips on the jobs topic; `deliver(to, protocol, data)` sends a
  request to the peer with public key `to` (this node's own handlers when `to` is this node) and
  returns the payload of a positive answer, raising `RemoteProtocolError` for a refusal and
  `p2p.overlay.RemoteError` when the peer cannot be reached; `connect(addr)` dials a multiaddr
  (RemoteError/ValueError on failure); `connected_peers()`, `remote_ip(peer_id)`, `multiaddrs()`;
  `network_size()`, this node's estimate of how many nodes the network holds (Agent.network_size).
- `StorePort`: the `Store` methods the roles use, with the same contracts (node/store.py).
- `Ledger`: `consensus.ledger.Ledger` itself (pure): the roles read reputation and credits and fold
  their own offences and certificates into it.
- `Events`: counters and metrics (`count`, `reject`, `job_finished`, `sandbox_run`), and change
  notification (`notify()` wakes whoever waits on `changed()`, the event current at the call).
- `Runtime`: the clock (`now_ms()`, the node's one clock read) and `spawn(fn, *args)`, which starts
  a task in the node's nursery. A spawned task is a task boundary: a `StoreFull` (node/store.py)
  raised in it drops what the task was doing, is counted and tells the disk guard; it never ends
  the node.
- `disk`: the `DiskGuard` of the data directory (node/disk.py): whether it is low on space, and
  how much is free above the reserve. Optional: by default a guard that watches nothing.
`Ports` bundles these for both roles. The executor also gets `Sandboxes`: the backend for
each spec sandbox kind, whether each passed its check at start, the outputs directory, and
`offload` (a blocking sandbox call off the trio thread, `offload_to_thread`). `NodeSettings` is
the configuration both roles read (capacity, price, timing, proof-of-work difficulty and nonce,
the bid sample factor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import trio

from distributeai.consensus.ledger import GENESIS_CREDITS, Ledger
from distributeai.consensus.sampling import DEFAULT_FACTOR
from distributeai.consensus.submitter import Timing
from distributeai.sandbox.base import Sandbox

from .bidding import Capacity
from .disk import DEFAULT_KEEP_OUTPUTS_S, DEFAULT_MAX_OUTPUT, DEFAULT_RESERVE, DiskGuard


@dataclass
class NodeSettings:
    sandbox_name: str  # the backend of container jobs: docker, bwrap or process
    gpu: bool = False  # whether this node offers a GPU; jobs that need one are not bid on otherwise
    capacity: Capacity = field(default_factory=Capacity)
    price: int = 1
    request_timeout_s: float = 10.0
    genesis_credits: int = GENESIS_CREDITS
    timing: Timing = field(default_factory=Timing)
    # Proof-of-work bits this node demands of every bidder and announcer (consensus/pow.py), and
    # its own nonce, solved for at least that many bits (node/proof.py).
    pow_difficulty: int = 0
    pow_nonce: bytes = b""
    # Disk (node/disk.py, node/retention.py): the data directory watched for free space (None: not
    # watched), the bytes kept free there, the largest output quota accepted, and how long a job's
    # outputs are kept once it ended.
    data_dir: Path | None = None
    disk_reserve: int = DEFAULT_RESERVE
    max_output: int = DEFAULT_MAX_OUTPUT
    keep_outputs_s: float = DEFAULT_KEEP_OUTPUTS_S
    # The peer ids of the bootstraps this node was started with (`--bootstrap .../p2p/ID`): they
    # seed discovery and never bid, so they are not counted among the peers that could run a job.
    bootstrap_peers: frozenset[str] = frozenset()
    # Seconds between reconciliations of the certificate set with one random peer (node/reconcile.py;
    # 0: only when a peer connects).
    reconcile_interval_s: float = 60.0
    # Sampled bidding (consensus/sampling.py): a job is announced to about this many times its
    # replicas of the estimated network (c); 0: every node may bid, as before sampling.
    bid_sample_factor: int = DEFAULT_FACTOR
    # What this node advertises in its bids (Bid.platform: arch, CPU vendor, GPU model; "" unknown),
    # detected once at start (node/hostplatform.py).
    platform: tuple[str, ...] = ("", "", "")


@dataclass(frozen=True)
class Transport:
    publish: Callable[[bytes], Awaitable[None]]
    deliver: Callable[[bytes, str, bytes], Awaitable[bytes]]
    connect: Callable[[str], Awaitable[None]]
    connected_peers: Callable[[], list[str]]
    remote_ip: Callable[[str], str | None]
    multiaddrs: Callable[[], list[str]]
    network_size: Callable[[], int] = lambda: 1  # unknown: every node is eligible (sampling.initial_share)


@dataclass(frozen=True)
class Events:
    count: Callable[[str], None]
    reject: Callable[..., None]  # (reason, detail="")
    notify: Callable[[], None]
    changed: Callable[[], trio.Event]
    job_finished: Callable[[str, str, float], None]  # (status, reason, seconds since start)
    sandbox_run: Callable[[str, float], None]  # (backend, seconds)


@dataclass(frozen=True)
class Runtime:
    now_ms: Callable[[], int]
    spawn: Callable[..., None]  # spawn(async_fn, *args): a task in the node's nursery


CANCEL_WAIT_S = 10.0  # a Docker kill or bwrap's cgroup sweep (up to 2 s); never holds a stop longer


async def offload_to_thread(fn: Callable[..., Any], *args: Any, limiter: trio.CapacityLimiter | None = None,
                            on_cancel: Callable[[], None] | None = None) -> Any:
    """`fn(*args)` on a worker thread. Without `on_cancel` a cancellation waits for `fn` to return
    (trio's default). With it, a cancellation is not kept waiting: `on_cancel()` (which must make
    `fn` end soon, e.g. `Sandbox.cancel`) runs on a worker thread too, for at most
    CANCEL_WAIT_S, and `fn`'s thread is left to finish on its own, its result dropped."""
    if on_cancel is None:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
    try:
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter, abandon_on_cancel=True)
    except trio.Cancelled:
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_WAIT_S):
            await trio.to_thread.run_sync(on_cancel, abandon_on_cancel=True)
        raise


@dataclass(frozen=True)
class Sandboxes:
    """The executor's sandboxes: the backend for each spec sandbox kind, whether each passed its
    check at start, where container jobs write their output files (None: nowhere), and how a
    blocking sandbox call is run off the trio thread (`offload(fn, *args, limiter=..., on_cancel=...)`,
    see `offload_to_thread`; a test of protocol logic may run a fake sandbox inline instead)."""

    backends: dict[str, Sandbox]
    ok: dict[str, bool]
    outputs_dir: Path | None = None
    offload: Callable[..., Awaitable[Any]] = offload_to_thread


class StorePort(Protocol):
    async def insert_job(self, job_id: str, role: str, name: str, signed_spec: bytes, status: str,
                         now_ms: int, submitter_addrs: list[str] | None = None,
                         announce: bytes | None = None) -> bool: ...
    async def get_job(self, job_id: str) -> dict | None: ...
    async def list_jobs(self, role: str | None = None, limit: int = 100) -> list[dict]: ...
    async def add_job_role(self, job_id: str, role: str) -> None: ...
    async def set_bid_decision(self, job_id: str, decision: str) -> None: ...
    async def record_input(self, job_id: str, kind: str, raw: bytes, meta: dict, now_ms: int, *,
                           status: str, reason: str, certificate: bytes | None,
                           offences: list[tuple[bytes, str]]) -> bool: ...
    async def inputs(self, job_id: str) -> list[tuple[str, bytes, dict, int]]: ...
    async def record_offence(self, job_id: str, peer: bytes, reason: str, now_ms: int) -> None: ...
    async def insert_execution(self, job_id: str, award: bytes, now_ms: int) -> bool: ...
    async def update_execution(self, job_id: str, now_ms: int, *, status: str, reason: str = "",
                               result: dict | None = None, reveal: bytes | None = None) -> None: ...
    async def record_execution_input(self, job_id: str, kind: str, raw: bytes, meta: dict, now_ms: int, *,
                                     status: str, reason: str = "", result: dict | None = None,
                                     reveal: bytes | None = None) -> None: ...
    async def execution_inputs(self, job_id: str) -> list[tuple[str, bytes, dict, int]]: ...
    async def get_execution(self, job_id: str) -> dict | None: ...
    async def executions_with_status(self, *statuses: str) -> list[dict]: ...
    async def set_job_share(self, job_id: str, share: int) -> None: ...
    async def job_share(self, job_id: str) -> int | None: ...


@dataclass(frozen=True)
class Content:
    """Blocks by CID: the node's block store (node/blockstore.py), fetching a DAG into it from
    providers over Bitswap, then from those the DHT names (`fetch_dag(root, providers, *,
    pin=None, progress=None, max_bytes=None)`, node/transfer.py; each fetch listed in `transfers`,
    the node's Transfers, where an import lists itself too), and announcing a root held whole as a
    DHT provider record (`announce(cid)`: returns at once, the record is published in the
    background)."""

    blocks: Any
    fetch_dag: Callable[..., Awaitable[Any]]
    announce: Callable[[bytes], None] = lambda cid: None
    transfers: Any = None


@dataclass(frozen=True)
class Ports:
    """Everything a role may reach, bundled: each role uses the parts it needs."""

    transport: Transport
    store: StorePort
    ledger: Ledger
    events: Events
    runtime: Runtime
    disk: DiskGuard = field(default_factory=lambda: DiskGuard(None))
    content: Content | None = None  # None: a node without a block store (tests of other parts)

    def now_ms(self) -> int:
        return self.runtime.now_ms()


__all__ = ["Content", "Events", "Ledger", "NodeSettings", "Ports", "Runtime", "Sandboxes", "StorePort", "Transport"]
