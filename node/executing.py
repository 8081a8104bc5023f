"""The executor's side of the node: bid, run awarded jobs in the sandbox, commit, reveal.

Contract: the result and the signed reveal are written to the store before the commit is sent; a
restarted node re-runs what was awarded but not finished and re-sends commits not yet accepted.
A sandbox that cannot run the job sends a signed Withdraw so the submitter replaces this node at
once. A repeated award changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import trio

from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.codec import Identity, sha256
from distributeai.consensus.executor import make_batch_reveal, make_commit, make_reveal
from distributeai.consensus.messages import Award, Bid, JobSpec, Reveal, RevealRequest, Withdraw, sign, verify
from distributeai.consensus.names import BID_PROTOCOL, BLOB_PROTOCOL, COMMIT_PROTOCOL, WITHDRAW_PROTOCOL
from distributeai.p2p.identity import peer_id_from_public_key
from distributeai.p2p.overlay import RemoteError
from distributeai.sandbox.base import RunRequest, RunResult, Sandbox, SandboxError

from . import wire
from .bidding import IMAGE_MISSING, BidContext, decide
from .inbound import decode_award
from .ports import NodeSettings, Ports, Sandboxes

log = logging.getLogger("distributeai.node.executor")
SEND_RETRIES = 6  # the submitter may be restarting; backoff 0.5 s doubling: about 30 s in all


class Executing:
    """Reaches the node only through its ports (ports.py); the sandbox calls are `_run`,
    `_has_image` and `_pull_then_bid`."""

    def __init__(self, identity: Identity, settings: NodeSettings, ports: Ports, sandboxes: Sandboxes) -> None:
        self.identity = identity
        self.me = identity.public_key
        self.settings = settings
        self.ports = ports
        self.store = ports.store
        self.sandboxes = sandboxes
        self.running = 0
        self._limiter = trio.CapacityLimiter(settings.capacity.max_running)
        self._pull_limiter = trio.CapacityLimiter(1)  # one image pull at a time

    # --- bidding --------------------------------------------------------------------------------

    async def consider(self, job_id: bytes, spec: JobSpec, addrs: tuple[str, ...]) -> None:
        """Bid if the job fits; a missing image is pulled first where a registry answers, else the
        job is declined with the reason (log, and `bid` in this node's job status)."""
        boxes = self.sandboxes
        sandbox = boxes.backends.get(spec.sandbox)
        image_ok = True
        if spec.sandbox == "container" and sandbox is not None and boxes.ok.get("container"):
            image_ok = await self._has_image(sandbox, spec.image)
        decision = decide(BidContext(spec, self.settings.capacity, self.running, boxes.ok.get(spec.sandbox, False),
                                     lambda _: image_ok, submitter_can_pay=self.ports.ledger.can_pay(spec),
                                     gpu_ok=self.settings.gpu or not spec.gpu))
        if decision.code == IMAGE_MISSING:
            self.ports.runtime.spawn(self._pull_then_bid, job_id, spec, addrs)
            return
        await self._decided(job_id, spec, addrs, decision.bid, decision.reason)

    async def _decided(self, job_id: bytes, spec: JobSpec, addrs: tuple[str, ...], bid: bool, reason: str) -> None:
        if spec.submitter != self.me:
            await self.store.set_bid_decision(job_id.hex(), "bid" if bid else f"declined: {reason}")
        if not bid:
            log.info("declined job %s: %s", job_id.hex()[:12], reason)
            return
        s = self.settings
        msg = sign(self.identity, Bid(job_id, self.me, s.price, s.capacity.cpu_millis, s.capacity.memory_mb,
                                      (self.sandboxes.backends[spec.sandbox].name,), self.ports.now_ms(), s.pow_nonce))
        self.ports.runtime.spawn(self._send_bid, spec.submitter, msg, addrs)

    async def _has_image(self, sandbox: Sandbox, image: str) -> bool:
        try:
            return await self.sandboxes.offload(sandbox.has_image, image)
        except SandboxError:
            return False

    async def _pull_then_bid(self, job_id: bytes, spec: JobSpec, addrs: tuple[str, ...]) -> None:
        sandbox = self.sandboxes.backends["container"]
        pull = getattr(sandbox, "pull", None)
        if pull is None:
            await self._decided(job_id, spec, addrs, False, f"image {spec.image} is not available to {sandbox.name}")
            return
        try:
            await self.sandboxes.offload(pull, spec.image, limiter=self._pull_limiter)
        except SandboxError as exc:
            await self._decided(job_id, spec, addrs, False,
                                f"image {spec.image} is not available locally and could not be pulled ({exc})")
            return
        await self.consider(job_id, spec, addrs)

    async def _send_bid(self, submitter: bytes, bid: bytes, addrs: tuple[str, ...]) -> None:
        transport = self.ports.transport
        if submitter != self.me and peer_id_from_public_key(submitter) not in transport.connected_peers():
            for addr in addrs:
                try:
                    await transport.connect(addr)
                    break
                except (RemoteError, ValueError) as exc:
                    log.debug("dial %s failed: %s", addr, exc)
        try:
            await transport.deliver(submitter, BID_PROTOCOL, bid)
            self.ports.events.count("bids_sent")
        except (RemoteError, RemoteProtocolError) as exc:
            log.info("bid not accepted: %s", exc)

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
            self.ports.runtime.spawn(self.execute, award, spec)
        return wire.ok()

    async def execute(self, award: Award, spec: JobSpec) -> None:
        """Task boundary: whatever goes wrong with one job is that job's failure, never the node's."""
        try:
            await self._execute(award, spec)
        except Exception:
            log.exception("execution of %s failed unexpectedly", award.job_id.hex()[:12])
            await self.store.update_execution(award.job_id.hex(), self.ports.now_ms(), status="failed",
                                                    reason="internal error")

    async def _execute(self, award: Award, spec: JobSpec) -> None:
        p = self.ports
        job_hex = award.job_id.hex()
        self.running += 1
        try:
            await self.store.update_execution(job_hex, p.now_ms(), status="running")
            try:
                request = await self._request(award, spec)
                box = self.sandboxes.backends[spec.sandbox]
                if spec.is_batch:
                    results = await self.sandboxes.offload(run_tasks, box, spec, request, limiter=self._limiter)
                    await self._executed_batch(award, spec, results)
                    return
                result = await self.sandboxes.offload(box.run, request, limiter=self._limiter)
            except (SandboxError, ValueError, RemoteError, RemoteProtocolError) as exc:
                log.warning("job %s could not run: %s", job_hex[:12], exc)
                await self.store.update_execution(job_hex, p.now_ms(), status="failed", reason=str(exc))
                await self._withdraw(award, spec, str(exc)[:200])
                return
        finally:
            self.running -= 1
        p.events.sandbox_run(result.sandbox, result.duration_s)
        reveal = self.make_reveal(award, result)
        r: Reveal = verify(reveal, Reveal).msg
        summary = {"exit_code": result.exit_code, "timed_out": result.timed_out, "oom_killed": result.oom_killed,
                   "stdout_truncated": r.stdout_truncated, "stderr_truncated": result.stderr_truncated,
                   "duration_s": round(result.duration_s, 4), "sandbox": result.sandbox,
                   "result_hash": r.result_hash.hex(), "fuel_used": result.fuel_used,
                   "files": len(result.manifest), "out_truncated": result.out_truncated,
                   "stderr": result.stderr[:2048].decode("utf-8", "replace")}
        await self.store.update_execution(job_hex, p.now_ms(), status="executed", result=summary, reveal=reveal)
        await self.store.add_outputs(job_hex, [(d.hex(), path) for path, _, d in r.manifest])
        p.events.count("executed")
        p.events.notify()
        await self.send_commit(award, spec, reveal)

    async def _executed_batch(self, award: Award, spec: JobSpec, results: list[RunResult]) -> None:
        p = self.ports
        for result in results:
            p.events.sandbox_run(result.sandbox, result.duration_s)
        reveal = make_batch_reveal(self.identity, award.job_id, len(spec.tasks), [
            (r.exit_code, r.timed_out, r.stdout, r.stdout_truncated, r.fuel_used) for r in results],
            any(r.oom_killed for r in results), results[0].sandbox if results else "")
        r: Reveal = verify(reveal, Reveal).msg
        summary = {"tasks": len(results), "failed_tasks": sum(1 for x in results if x.exit_code != 0),
                   "timed_out_tasks": sum(1 for x in results if x.timed_out),
                   "duration_s": round(sum(x.duration_s for x in results), 4),
                   "sandbox": results[0].sandbox if results else "", "result_hash": r.result_hash.hex()}
        await self.store.update_execution(award.job_id.hex(), p.now_ms(), status="executed", result=summary,
                                          reveal=reveal)
        p.events.count("executed")
        p.events.notify()
        await self.send_commit(award, spec, reveal)

    async def _request(self, award: Award, spec: JobSpec) -> RunRequest:
        """The sandbox request for a job: its module (fetched by SHA-256 if it did not travel in the
        spec), its input, and a fresh output directory for container jobs."""
        module = None
        out_dir = None
        if spec.sandbox == "wasm":
            module = spec.wasm_module or await self._fetch_module(spec)
        elif self.sandboxes.outputs_dir is not None and not spec.is_batch:
            path = self.sandboxes.outputs_dir / award.job_id.hex()
            if path.exists():
                await trio.to_thread.run_sync(shutil.rmtree, path)  # a run cut short by a restart
            path.mkdir(parents=True)
            out_dir = str(path)
        return RunRequest(image=spec.image or "wasm", command=list(spec.command), env=dict(spec.env),
                          cpu=spec.cpu_millis / 1000, memory_mb=spec.memory_mb, timeout_s=float(spec.timeout_s),
                          stdin=spec.stdin, out_dir=out_dir, wasm_module=module, fuel=spec.fuel_limit or None)

    async def _fetch_module(self, spec: JobSpec) -> bytes:
        digest = spec.wasm_sha256
        cached = await self.store.get_blob(digest.hex())
        if cached is not None:
            return cached
        blob = await self.ports.transport.deliver(spec.submitter, BLOB_PROTOCOL, digest)
        if sha256(blob) != digest:
            raise RemoteProtocolError("bad_blob", "the submitter served a module with another hash")
        await self.store.put_blob(digest.hex(), blob)
        return blob

    def make_reveal(self, award: Award, result: RunResult) -> bytes:
        """The signed reveal of a result (consensus.executor.make_reveal)."""
        manifest = [(path, size, bytes.fromhex(digest)) for path, size, digest in result.manifest]
        return make_reveal(self.identity, award.job_id, result.exit_code, result.timed_out, result.stdout,
                           result.stdout_truncated, manifest, result.fuel_used, result.oom_killed, result.sandbox)

    def make_commit(self, award: Award, reveal: bytes) -> bytes:
        """The signed commit for a reveal: its seal binds the result to this executor."""
        return make_commit(self.identity, award.job_id, verify(reveal, Reveal).msg.result_hash)

    async def send_commit(self, award: Award, spec: JobSpec, reveal: bytes) -> None:
        if await self._send_with_retries(spec.submitter, COMMIT_PROTOCOL, self.make_commit(award, reveal), award):
            await self.store.update_execution(award.job_id.hex(), self.ports.now_ms(), status="committed")

    async def _withdraw(self, award: Award, spec: JobSpec, reason: str) -> None:
        msg = sign(self.identity, Withdraw(award.job_id, self.me, reason))
        await self._send_with_retries(spec.submitter, WITHDRAW_PROTOCOL, msg, award)

    async def _send_with_retries(self, to: bytes, protocol: str, data: bytes, award: Award) -> bool:
        for attempt in range(SEND_RETRIES):
            try:
                await self.ports.transport.deliver(to, protocol, data)
                return True
            except RemoteProtocolError as exc:
                log.info("%s refused for %s: %s", protocol, award.job_id.hex()[:12], exc)
                return False
            except RemoteError as exc:
                log.info("%s attempt %d for %s failed: %s", protocol, attempt + 1, award.job_id.hex()[:12], exc)
                await trio.sleep(0.5 * 2**attempt)  # back-off between retries, not synchronization
        return False

    # --- reveals --------------------------------------------------------------------------------

    async def handle_reveal(self, peer: str, data: bytes) -> bytes:
        signed = verify(data, RevealRequest)
        req: RevealRequest = signed.msg
        execution = await self.store.get_execution(req.job_id.hex())
        if execution is None or req.executor != self.me:
            raise RemoteProtocolError("unknown_job", "no execution of this job here")
        row = await self.store.get_job(req.job_id.hex())
        submitter = verify(row["signed_spec"], JobSpec).msg.submitter
        if signed.signer != submitter or peer_id_from_public_key(submitter) != peer:
            raise RemoteProtocolError("wrong_sender", "reveal requested by someone other than the submitter")
        # "executed": our commit reached the submitter (it asks only those it has) but its answer was lost.
        if execution["status"] not in ("executed", "committed", "revealed") or execution["reveal"] is None:
            raise RemoteProtocolError("not_committed", "nothing committed to reveal")
        await self.store.update_execution(req.job_id.hex(), self.ports.now_ms(), status="revealed")
        return wire.ok(execution["reveal"])

    # --- recovery -------------------------------------------------------------------------------

    async def recover(self) -> None:
        spawn = self.ports.runtime.spawn
        for execution in await self.store.executions_with_status("awarded", "running", "executed"):
            award: Award = verify(execution["award"], Award).msg
            row = await self.store.get_job(award.job_id.hex())
            spec = verify(row["signed_spec"], JobSpec).msg
            if execution["status"] == "executed":
                spawn(self.send_commit, award, spec, execution["reveal"])
            else:
                spawn(self.execute, award, spec)


def run_tasks(box: Sandbox, spec: JobSpec, request: RunRequest) -> list[RunResult]:
    """Run every task of a batch, in order, in one worker thread: the request's command with the
    task's arguments appended. A sandbox failure stops the batch (SandboxError)."""
    return [box.run(dataclasses.replace(request, command=spec.task_command(i))) for i in range(len(spec.tasks))]
