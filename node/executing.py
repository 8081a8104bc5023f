"""The executor's side of the node: bid, run awarded jobs in the sandbox, commit, reveal.

The adapter of `consensus.executor_job.ExecutorJob`: each input (award, run result or failure,
the submitter's answers, a reveal request) is applied to the job (pure, `apply_input`), stored
with the state it led to (`Store.record_execution_input`), and only then acted on (the sandbox
run, the commit or withdrawal sent, the reveal answered). So the result and the signed reveal are
written before the commit is sent; a restarted node replays the stored inputs and re-runs what
was awarded but not finished and re-sends commits not yet accepted. A sandbox that cannot run the
job sends a signed Withdraw so the submitter replaces this node at once. A repeated award changes
nothing. The sandbox calls are `_has_image`, `_pull_then_bid` (`Sandbox.pull`) and `_run_in`
(`Sandbox.run`, and `Sandbox.cancel` when the node stops during a run or the job ends).

A job that ends at its submitter while this node still runs it (`job_ended`: its certificate
arrived over gossip, any status, or this node is the submitter and the job ended here) is stopped: the
`ended` input is stored first (a restarted node does not run it again), then its sandbox run is
cancelled (container killed and removed, bwrap's processes killed, the /out stage unmounted; the
wasm store interrupted) and its run slot freed; nothing is committed or revealed.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import threading
import uuid

import trio

from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.codec import Identity
from distributeai.consensus.compare import file_cap
from distributeai.consensus.executor import make_batch_reveal, make_reveal
from distributeai.consensus.outputs import describe_outputs, escape_name
from distributeai.consensus.executor_job import (
    SEND_RETRIES, UNFINISHED, AnswerReveal, ExecutorJob, RunJob, SendCommit, SendWithdraw, StopRun, apply_input,
    ended_reason, replay,
)
from distributeai.consensus.messages import (
    DECLINE_DETAIL_MAX, Award, Bid, Decline, JobSpec, Reveal, RevealRequest, sign, verify,
)
from distributeai.consensus.names import BID_PROTOCOL, COMMIT_PROTOCOL, DECLINE_PROTOCOL, WITHDRAW_PROTOCOL
from distributeai.p2p.identity import peer_id_from_public_key
from distributeai.p2p.overlay import RemoteError
from distributeai.sandbox.base import RunRequest, RunResult, Sandbox, SandboxError

from . import wire
from .bidding import IMAGE_MISSING, BidContext, decide
from .inbound import decode_award
from .job_inputs import InputsUnavailable, input_providers, job_inputs
from .job_module import fetch_module
from .joblog import executor_events
from .outputs_serving import FileCid, import_outputs, read_compared
from .ports import NodeSettings, Ports, Sandboxes
from .store import StoreFull

log = logging.getLogger("distributeai.node.executor")
__all__ = ["Executing", "SEND_RETRIES", "SandboxRun"]


class Executing:
    """Reaches the node only through its ports (ports.py). tests/byzantine_node.py overrides
    `run`, `commit_to_send`, `reveal_answer` or `handle_reveal` to cheat."""

    def __init__(self, identity: Identity, settings: NodeSettings, ports: Ports, sandboxes: Sandboxes) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.settings = settings
        self.ports = ports
        self.store = ports.store
        self.sandboxes = sandboxes
        self.running = 0
        self.jobs: dict[bytes, ExecutorJob] = {}
        self._stops: dict[bytes, trio.CancelScope] = {}  # the runs in progress, by job id
        self._lock = trio.Lock()  # inputs reach the store in the order they were applied
        self._limiter = trio.CapacityLimiter(settings.capacity.max_running)
        self._pull_limiter = trio.CapacityLimiter(1)  # one image pull at a time
        self.inputs = job_inputs(ports, settings)  # jobs' data inputs in the block store (None: no store)

    # --- bidding --------------------------------------------------------------------------------

    async def consider(self, job_id: bytes, spec: JobSpec, addrs: tuple[str, ...]) -> None:
        """Bid if the job fits; a missing image is pulled first where a registry answers, else the
        job is declined with the reason (log, and `bid` in this node's job status)."""
        boxes = self.sandboxes
        sandbox = boxes.backends.get(spec.sandbox)
        image_ok = True
        if spec.sandbox == "container" and sandbox is not None and boxes.ok.get("container"):
            image_ok = await self._has_image(sandbox, spec.image)
        disk = self.ports.disk
        # The room above the reserve, less what the jobs awarded and not yet run may still write.
        promised = sum(j.spec.out_max_bytes for j in self.jobs.values() if j.state in ("awarded", "running")
                       and j.spec.sandbox == "container" and not j.spec.is_batch)
        held = await self.inputs.held(spec) if self.inputs is not None and spec.inputs else 0
        decision = decide(BidContext(spec, self.settings.capacity, self.running, boxes.ok.get(spec.sandbox, False),
                                     lambda _: image_ok, submitter_can_pay=self.ports.ledger.can_pay(spec),
                                     gpu_ok=self.settings.gpu or not spec.gpu, disk_low=disk.low,
                                     disk_headroom=disk.headroom() - promised if disk.path is not None else None,
                                     max_output=self.settings.max_output, inputs_held=held,
                                     store_room=self.inputs.room() if self.inputs is not None else None))
        if decision.code == IMAGE_MISSING:
            self.ports.runtime.spawn(self._pull_then_bid, job_id, spec, addrs)
            return
        await self._decided(job_id, spec, addrs, decision.bid, decision.reason, decision.code, held)

    async def _decided(self, job_id: bytes, spec: JobSpec, addrs: tuple[str, ...], bid: bool, reason: str,
                       code: str, held: int = 0) -> None:
        """Bid, or tell the submitter in a signed Decline why not (its code and `reason`), so it
        can end a job nobody can run at once and say why."""
        if spec.submitter != self.me:
            await self.store.set_bid_decision(job_id.hex(), "bid" if bid else f"declined: {reason}")
        s = self.settings
        if bid:
            msg = sign(self.identity, Bid(job_id, self.me, s.price, s.capacity.cpu_millis, s.capacity.memory_mb,
                                          (self.sandboxes.backends[spec.sandbox].name,), self.ports.now_ms(), s.pow_nonce,
                                          held, s.platform))
            log.info("job %s bidding here", job_id.hex()[:12])
            self.ports.runtime.spawn(self._send_bid, spec.submitter, msg, addrs, BID_PROTOCOL)
            return
        self.ports.events.count(f"declined_{code}")
        log.info("job %s declined here: %s", job_id.hex()[:12], reason)
        detail = escape_name(reason, DECLINE_DETAIL_MAX)
        msg = sign(self.identity, Decline(job_id, self.me, code, detail, self.ports.now_ms(), s.pow_nonce))
        self.ports.runtime.spawn(self._send_bid, spec.submitter, msg, addrs, DECLINE_PROTOCOL)

    async def _has_image(self, sandbox: Sandbox, image: str) -> bool:
        try:
            return await self.sandboxes.offload(sandbox.has_image, image)
        except SandboxError:
            return False

    async def _pull_then_bid(self, job_id: bytes, spec: JobSpec, addrs: tuple[str, ...]) -> None:
        sandbox = self.sandboxes.backends["container"]
        try:
            await self.sandboxes.offload(sandbox.pull, spec.image, limiter=self._pull_limiter)
        except SandboxError as exc:
            await self._decided(job_id, spec, addrs, False,
                                f"image {spec.image} is not available locally and could not be pulled ({exc})",
                                IMAGE_MISSING)
            return
        await self.consider(job_id, spec, addrs)

    async def _send_bid(self, submitter: bytes, bid: bytes, addrs: tuple[str, ...], protocol: str) -> None:
        """Deliver a bid or a decline (`protocol`) to the submitter, dialing it first if need be."""
        transport = self.ports.transport
        if submitter != self.me and peer_id_from_public_key(submitter) not in transport.connected_peers():
            for addr in addrs:
                try:
                    await transport.connect(addr)
                    break
                except (RemoteError, ValueError) as exc:
                    log.debug("dial %s failed: %s", addr, exc)
        try:
            await transport.deliver(submitter, protocol, bid)
            self.ports.events.count("bids_sent" if protocol == BID_PROTOCOL else "declines_sent")
        except (RemoteError, RemoteProtocolError) as exc:
            log.info("%s not accepted: %s", "bid" if protocol == BID_PROTOCOL else "decline", exc)

    # --- awards ---------------------------------------------------------------------------------

    async def handle_award(self, peer: str, data: bytes) -> bytes:
        signed = decode_award(data, self.me)
        award: Award = signed.msg
        row = await self.store.get_job(award.job_id.hex())
        if row is None:
            raise RemoteProtocolError("unknown_job", "award for a job this node never saw")
        spec: JobSpec = verify(row["signed_spec"], JobSpec).msg
        if signed.signer != spec.submitter or peer_id_from_public_key(signed.signer) != peer:
            raise RemoteProtocolError("wrong_sender", "award not from the job's submitter")
        job_hex = award.job_id.hex()
        await self.store.add_job_role(job_hex, "executor")
        if await self.store.insert_execution(job_hex, data, self.ports.now_ms()):
            self.ports.events.count("awarded")
            job = self.jobs[award.job_id] = ExecutorJob(self.identity, award, spec)
            if row["certificate"] is not None:  # its certificate overtook the award: nothing to run
                await self.apply(job, "ended", meta={"reason": ended_reason(row["status"])})
            else:
                await self.apply(job, "start")
        return wire.ok()

    async def job_ended(self, job_id: bytes, status: str, reason: str = "") -> None:
        """The job ended at its submitter: its certificate's `status` and `reason` (the certificate
        already checked; or, on the submitter, its own verdict or cancel). A job this node
        runs and has not finished takes the `ended` input (stored before anything is done); a run
        in progress is then stopped (`StopRun`). Any other job id changes nothing."""
        job = self.jobs.get(job_id)
        if job is None or job.state not in UNFINISHED:  # a run of it here is over: its inputs may go
            if self.inputs is not None and (job.spec.block_roots if job is not None else
                                            await self.store.get_execution(job_id.hex()) is not None):
                await self.inputs.release(job_id.hex())
            return
        log.info("job %s ended at its submitter (%s): its run here stops", job_id.hex()[:12], reason or status)
        await self.apply(job, "ended", meta={"reason": ended_reason(status, reason)})

    # --- the loop of one input ------------------------------------------------------------------

    async def apply(self, job: ExecutorJob, kind: str, raw: bytes = b"", meta: dict | None = None, *,
                    result: dict | None = None) -> list:
        """Feed one input to a job (`apply_input`, as a replay does); store it with the state it led
        to (and `result`, the run's summary for the job's status); then act on it. Returns the
        actions (a reveal request's answer among them)."""
        meta = meta or {}
        async with self._lock:
            now = self.ports.now_ms()
            repeat, before = kind == "reveal_asked" and job.state == "revealed", job.state
            actions = apply_input(job, kind, raw, meta, now)
            executor_events(job, before)  # INFO: one line per state change
            if repeat:  # answered before: storing it again would change nothing but the table's size
                return actions
            await self.store.record_execution_input(job.job_id.hex(), kind, raw, meta, now, status=job.state,
                                                    reason=job.reason, result=result,
                                                    reveal=job.reveal if kind == "ran" else None)
        self.ports.events.notify()
        self._act(job, actions)
        if (job.state != before and job.state in ("failed", "ended") and job.spec.block_roots
                and self.inputs is not None):
            await self.inputs.release(job.job_id.hex())  # the inputs and module stay in the store, evictable
        return actions

    def _act(self, job: ExecutorJob, actions: list) -> None:
        spawn = self.ports.runtime.spawn
        for action in actions:
            if isinstance(action, RunJob):
                spawn(self.execute, job)
            elif isinstance(action, StopRun):
                stop = self._stops.get(job.job_id)
                if stop is not None:  # else its run has not begun: `_execute` will not begin it
                    stop.cancel()
            elif isinstance(action, SendCommit):
                spawn(self._send, job, COMMIT_PROTOCOL, self.commit_to_send(job, action.commit), action.delay_ms)
            elif isinstance(action, SendWithdraw):
                spawn(self._send, job, WITHDRAW_PROTOCOL, action.withdraw, action.delay_ms)
            # AnswerReveal: the caller of apply answers the request with it

    async def _send(self, job: ExecutorJob, protocol: str, data: bytes, delay_ms: int) -> None:
        """One attempt to send a commit or withdrawal; the job decides on a retry."""
        if delay_ms:
            await trio.sleep(delay_ms / 1000)  # back-off between retries, not synchronization
        try:
            await self.ports.transport.deliver(job.spec.submitter, protocol, data)
        except RemoteProtocolError as exc:
            log.info("job %s %s refused by its submitter: %s", job.job_id.hex()[:12],
                     "commit" if protocol == COMMIT_PROTOCOL else "withdrawal", exc.detail or exc.reason)
            await self.apply(job, "refused", meta={"reason": exc.reason})
        except RemoteError as exc:
            log.info("%s attempt %d for %s failed: %s", protocol, job.attempts + 1, job.job_id.hex()[:12], exc)
            await self.apply(job, "unreachable")
        else:
            await self.apply(job, "sent")

    # --- running --------------------------------------------------------------------------------

    async def execute(self, job: ExecutorJob) -> None:
        """Task boundary: whatever goes wrong with one job is that job's failure, never the node's."""
        try:
            await self._execute(job)
        except StoreFull:
            raise  # the disk is full: recording a crash would fail too (the spawned task's boundary drops it)
        except Exception as exc:  # a withdrawal says so at once: the submitter replaces this executor
            log.exception("execution of %s failed unexpectedly", job.job_id.hex()[:12])
            await self.apply(job, "crashed", meta={"reason": f"internal error ({type(exc).__name__})"})

    async def _execute(self, job: ExecutorJob) -> None:
        """Run the job and feed back the outcome. A `StopRun` cancels the run's scope: the sandbox
        run is cancelled (`_run_in`) and nothing is fed back, as for any job no longer running."""
        if job.state != "running":
            return  # it ended before its run began
        self.running += 1
        try:
            with trio.CancelScope() as self._stops[job.job_id]:
                reveal, summary = await self.run(job)
        except (SandboxError, ValueError, RemoteError, RemoteProtocolError, InputsUnavailable) as exc:
            if job.state != "running":
                return  # stopped: the sandbox said so before the scope did
            log.warning("job %s could not run: %s", job.job_id.hex()[:12], exc)
            await self.apply(job, "run_failed", meta={"reason": str(exc)})
            return
        finally:
            del self._stops[job.job_id]
            self.running -= 1
            self.ports.events.notify()  # a run slot is free: `node info` shows it
        if job.state != "running":
            log.info("job %s: run stopped (%s)", job.job_id.hex()[:12], job.reason)
            self.ports.events.count("runs_stopped")
            return
        manifest = verify(reveal, Reveal).msg.manifest
        if manifest and self.ports.content is not None:  # the kept files become blocks (outputs_serving.py)
            await import_outputs(self.ports.content.blocks, self.sandboxes.outputs_dir, job.job_id.hex(), manifest,
                                 self.ports.content.announce)
        await self.apply(job, "ran", reveal, result=summary)
        self.ports.events.count("executed")

    async def run(self, job: ExecutorJob) -> tuple[bytes, dict]:
        """Run the job in its sandbox: the signed reveal of the result and a summary for the status
        (SandboxError, ValueError, RemoteError, RemoteProtocolError: it could not run)."""
        award, spec = job.award, job.spec
        request = dataclasses.replace(await self._request(award, spec), out_hasher=FileCid)  # files named by CID
        box = self.sandboxes.backends[spec.sandbox]
        requests = ([dataclasses.replace(request, command=spec.task_command(i)) for i in range(len(spec.tasks))]
                    if spec.is_batch else [request])
        try:
            results = await self._run_in(box, requests)
        finally:
            if request.in_dir is not None and self.inputs is not None:
                with trio.CancelScope(shield=True):
                    await self.inputs.remove_dir(award.job_id.hex())
        if spec.is_batch:
            return self._batch_reveal(award, spec, results)
        result = results[0]
        self.ports.events.sandbox_run(result.sandbox, result.duration_s)
        contents = {}
        if spec.compare.files and request.out_dir is not None:  # the named files a reveal carries
            contents = await trio.to_thread.run_sync(read_compared, request.out_dir, spec.compare.files,
                                                     file_cap(spec.compare))
        reveal = self.make_reveal(award, spec, result, contents)
        r: Reveal = verify(reveal, Reveal).msg
        kept = kept_names(result)
        summary = {"exit_code": result.exit_code, "timed_out": result.timed_out, "oom_killed": result.oom_killed,
                   "stdout_truncated": r.stdout_truncated, "stderr_truncated": result.stderr_truncated,
                   "duration_s": round(result.duration_s, 4), "sandbox": result.sandbox,
                   "result_hash": r.result_hash.hex(), "fuel_used": result.fuel_used,
                   "files": r.outputs.files, "out_status": r.outputs.status, "out_skipped": r.outputs.skipped,
                   "out_enforced": result.out_enforced,
                   "files_not_kept": sum(1 for p, _, _ in r.manifest if p not in kept),
                   "stderr": result.stderr[:2048].decode("utf-8", "replace")}
        return reveal, summary

    async def _run_in(self, box: Sandbox, requests: list[RunRequest]) -> list[RunResult]:
        """Run `requests` one after another in `box` (a batch's tasks, or one job) off the trio
        thread. If this task is cancelled (the node stopping), the run in progress is cancelled in
        the sandbox (`Sandbox.cancel`: its container or processes are killed) and the rest never
        start, so the node does not wait out a job's timeout; a restart runs the job again. The
        same happens when the job ends at its submitter (`StopRun`), but then it is not run again."""
        run = SandboxRun(box, requests)
        return await self.sandboxes.offload(run.run_all, limiter=self._limiter, on_cancel=run.cancel)

    def _batch_reveal(self, award: Award, spec: JobSpec, results: list[RunResult]) -> tuple[bytes, dict]:
        for result in results:
            self.ports.events.sandbox_run(result.sandbox, result.duration_s)
        reveal = make_batch_reveal(self.identity, award.job_id, len(spec.tasks), [
            (r.exit_code, r.timed_out, r.stdout, r.stdout_truncated, r.fuel_used) for r in results],
            any(r.oom_killed for r in results), results[0].sandbox if results else "")
        r: Reveal = verify(reveal, Reveal).msg
        summary = {"tasks": len(results), "failed_tasks": sum(1 for x in results if x.exit_code != 0),
                   "timed_out_tasks": sum(1 for x in results if x.timed_out),
                   "duration_s": round(sum(x.duration_s for x in results), 4),
                   "sandbox": results[0].sandbox if results else "", "result_hash": r.result_hash.hex()}
        return reveal, summary

    async def _request(self, award: Award, spec: JobSpec) -> RunRequest:
        """The sandbox request for a job: its module (fetched by CID if it did not travel in the
        spec: `_fetch_module`), its input, its inputs fetched and laid out for /in (`JobInputs.fetch`:
        InputsUnavailable withdraws), and a fresh output directory for container jobs."""
        module = None
        out_dir = None
        in_dir = None
        if spec.sandbox == "wasm":
            module = spec.wasm_module or await self._fetch_module(award.job_id.hex(), spec)
        elif self.sandboxes.outputs_dir is not None and not spec.is_batch:
            path = self.sandboxes.outputs_dir / award.job_id.hex()
            if path.exists():
                await trio.to_thread.run_sync(shutil.rmtree, path)  # a run cut short by a restart
            path.mkdir(parents=True)
            out_dir = str(path)
        if spec.inputs:  # last: nothing after it can fail and leave the laid-out inputs behind
            if self.inputs is None or self.inputs.inputs_dir is None:
                raise InputsUnavailable("this node has no block store for the job's inputs")
            in_dir = str(await self.inputs.fetch(award.job_id.hex(), spec, self._providers(spec)))
        return RunRequest(image=spec.image or "wasm", command=list(spec.command), env=dict(spec.env),
                          cpu=spec.cpu_millis / 1000, memory_mb=spec.memory_mb, timeout_s=float(spec.timeout_s),
                          stdin=spec.stdin, out_dir=out_dir, out_max_bytes=spec.out_max_bytes,
                          out_max_files=spec.out_max_files, out_keep_free=self.settings.disk_reserve,
                          wasm_module=module, fuel=spec.fuel_limit or None, in_dir=in_dir)

    async def _fetch_module(self, job_hex: str, spec: JobSpec) -> bytes:
        """The module a spec names by CID, from the block store (node/job_module.py: fetched from
        the submitter and connected peers if need be, pinned for the run like the inputs)."""
        if self.ports.content is None:
            raise InputsUnavailable("this node has no block store for the job's wasm module")
        return await fetch_module(self.ports.content, job_hex, spec, self._providers(spec))

    def _providers(self, spec: JobSpec) -> list[str]:
        """Who may hold a job's blocks: its submitter first, then connected peers."""
        return input_providers(peer_id_from_public_key(spec.submitter), peer_id_from_public_key(self.me),
                               self.ports.transport.connected_peers())

    def make_reveal(self, award: Award, spec: JobSpec, result: RunResult,
                    contents: dict[str, bytes] | None = None) -> bytes:
        """The signed reveal of a result (consensus.executor.make_reveal: stdout, its size and the
        part of stderr it certifies), its outputs described by the one rule every executor applies
        (consensus.outputs.describe_outputs), carrying the output files its numeric comparison
        names (`contents`, from `read_compared`; consensus.compare.carried_files)."""
        manifest, outputs = describe_outputs(
            [(e.name, e.kind, e.size, e.digest) for e in result.out_entries],
            spec.out_max_bytes, spec.out_max_files)
        return make_reveal(self.identity, award.job_id, result.exit_code, result.timed_out, result.stdout,
                           result.stdout_truncated, manifest, result.fuel_used, result.oom_killed, result.sandbox,
                           outputs, stderr=result.stderr, stderr_truncated=result.stderr_truncated,
                           compare=spec.compare, contents=contents)

    def commit_to_send(self, job: ExecutorJob, commit: bytes) -> bytes:
        """The commit as sent: the job's own (a cheating executor's may differ)."""
        return commit

    def reveal_answer(self, job: ExecutorJob, reveal: bytes) -> bytes:
        """The reveal as answered: the job's own (a cheating executor's may differ)."""
        return reveal

    # --- reveals --------------------------------------------------------------------------------

    async def handle_reveal(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, RevealRequest)
        req: RevealRequest = signed.msg
        job = await self._job(req.job_id) if req.executor == self.me else None
        if job is None:
            raise RemoteProtocolError("unknown_job", "no execution of this job here")
        submitter = job.spec.submitter
        if signed.signer != submitter or peer_id_from_public_key(submitter) != peer:
            raise RemoteProtocolError("wrong_sender", "reveal requested by someone other than the submitter")
        actions = await self.apply(job, "reveal_asked", data)  # not_committed if nothing was
        answer = next(a.reveal for a in actions if isinstance(a, AnswerReveal))
        return wire.ok(self.reveal_answer(job, answer))

    # --- recovery -------------------------------------------------------------------------------

    async def _job(self, job_id: bytes) -> ExecutorJob | None:
        """The job in memory, or rebuilt from the store (an execution of an earlier run)."""
        job = self.jobs.get(job_id)
        if job is None:
            execution = await self.store.get_execution(job_id.hex())
            if execution is not None:
                job = self.jobs[job_id] = await self._load(execution)
        return job

    async def _load(self, execution: dict) -> ExecutorJob:
        award: Award = verify(execution["award"], Award).msg
        job_hex = award.job_id.hex()
        spec = verify((await self.store.get_job(job_hex))["signed_spec"], JobSpec).msg
        inputs = await self.store.execution_inputs(job_hex) or stored_as_inputs(execution)
        return replay(self.identity, award, spec, inputs)

    async def recover(self) -> None:
        """Rebuild unfinished executions from their stored inputs; run again what was not run to
        its end, send again a commit not yet accepted."""
        for execution in await self.store.executions_with_status("awarded", "running", "executed"):
            job = await self._load(execution)
            self.jobs[job.job_id] = job
            row = await self.store.get_job(job.job_id.hex())
            if row is not None and row["certificate"] is not None:  # it ended while this node was down
                await self.apply(job, "ended", meta={"reason": ended_reason(row["status"])})
            else:
                self._act(job, job.resume(self.ports.now_ms()))


def stored_as_inputs(execution: dict) -> list[tuple[str, bytes, dict, int]]:
    """The inputs an execution row stands for, when it was stored before executions had inputs
    (a store of an earlier version): started, and ran if it has a reveal."""
    at = execution["updated_ms"]
    inputs: list[tuple[str, bytes, dict, int]] = [("start", b"", {}, at)]
    if execution["reveal"] is not None:
        inputs.append(("ran", bytes(execution["reveal"]), {}, at))
        if execution["status"] in ("committed", "revealed"):
            inputs.append(("sent", b"", {}, at))
    elif execution["status"] == "failed":
        inputs.append(("crashed", b"", {"reason": execution["reason"]}, at))
    return inputs


def kept_names(result: RunResult) -> set[str]:
    """The output files the sandbox kept in the job's output directory (and so can be served)."""
    return {e.name.decode("utf-8", "replace") for e in result.out_entries if e.kept}

class SandboxRun:
    """The runs of one awarded job, each with its own `run_id`, cancellable from another thread."""

    def __init__(self, box: Sandbox, requests: list[RunRequest]) -> None:
        self.box = box
        self.requests = [dataclasses.replace(r, run_id=f"{uuid.uuid4().hex}/{i}") for i, r in enumerate(requests)]
        self._stop = threading.Event()
        self._current: str | None = None

    def run_all(self) -> list[RunResult]:
        """On a worker thread: every request in turn (SandboxError "cancelled" once `cancel` ran)."""
        results = []
        for request in self.requests:
            self._current = request.run_id  # before the check: a cancel either sees it or is seen
            if self._stop.is_set():
                raise SandboxError("cancelled", "the run was cancelled before it started")
            results.append(self.box.run(request))
        return results

    def cancel(self) -> None:
        """Stop the run in progress (or the one about to start) and every later one."""
        self._stop.set()
        if self._current is not None:
            self.box.cancel(self._current)
