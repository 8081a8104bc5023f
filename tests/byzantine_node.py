"""A real node whose executor cheats, for the failure tests. Everything but one method is the
production node, started through the production CLI.

    python tests/byzantine_node.py wrong node start ...   reveals a wrong result, at once, for every job
    python tests/byzantine_node.py lazy  node start ...   runs nothing: commits a seal copied from the
                                                        job's submitter (as a colluder would pass it
                                                        on) and reveals the right hash, learned the
                                                        same way (BYZANTINE_STDOUT)
    python tests/byzantine_node.py silent node start ...  runs the job and commits honestly, then never
                                                        answers the reveal request (holds the stream)
    python tests/byzantine_node.py unsealed node start ... runs the job, commits the seal of its real
                                                        result, then reveals another (self-consistent,
                                                        signed) result: the reveal contradicts the seal
    python tests/byzantine_node.py cheap node start ...   honest, but bids at price 0 to outrank
                                                        everyone of equal reputation (a fresh Sybil)
    python tests/byzantine_node.py nopow node start ...   cheap, and its bids and announcements carry
                                                        a nonce that does not prove its difficulty
    python tests/byzantine_node.py fragile node start ... honest, but handling any gossip message that
                                                        contains b"boom" fails with a RuntimeError (an
                                                        injected bug: the node must survive it)
Every behaviour bids at price 0, so that with equal reputations it outranks honest nodes (price 1)
and is awarded first: the tests need the cheater in the job.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import trio

from distributeai.consensus.executor_job import ExecutorJob
from distributeai.consensus.messages import Commit, Reveal, sign, verify
from distributeai.consensus.pow import pow_ok
from distributeai.consensus.results import result_hash, seal
from distributeai.node import agent as agent_module
from distributeai.node import daemon
from distributeai.node.executing import Executing

WRONG_STDOUT = b"this is not the answer\n"


class WrongExecutor(Executing):
    async def run(self, job: ExecutorJob) -> tuple[bytes, dict]:
        """Runs nothing: reveals (and commits to) a wrong result at once."""
        rh = result_hash(0, False, WRONG_STDOUT, False)
        reveal = sign(self.identity, Reveal(job.job_id, self.me, rh, 0, WRONG_STDOUT, False, False))
        return reveal, {"byzantine": "wrong"}


class LazyExecutor(Executing):
    async def run(self, job: ExecutorJob) -> tuple[bytes, dict]:
        """Runs nothing: reveals the right result, learned from a colluder (BYZANTINE_STDOUT)."""
        stdout = os.environ["BYZANTINE_STDOUT"].encode()
        rh = result_hash(0, False, stdout, False)
        return sign(self.identity, Reveal(job.job_id, self.me, rh, 0, stdout, False, False)), {"byzantine": "lazy"}

    def commit_to_send(self, job: ExecutorJob, commit: bytes) -> bytes:
        """The seal the submitter's own executor sent, copied."""
        rh = verify(job.reveal, Reveal).msg.result_hash
        return sign(self.identity, Commit(job.job_id, self.me, seal(job.spec.submitter, job.job_id, rh)))


class SilentExecutor(Executing):
    async def handle_reveal(self, peer: str, data: bytes) -> bytes:
        await trio.sleep_forever()  # never answers: the submitter's request and reveal window run out
        raise AssertionError("unreachable")


class UnsealedExecutor(Executing):
    def reveal_answer(self, job: ExecutorJob, reveal: bytes) -> bytes:
        """The commit sealed the true result; the reveal answered is another (signed) one."""
        rh = result_hash(0, False, WRONG_STDOUT, False)
        return sign(self.identity, Reveal(job.job_id, self.me, rh, 0, WRONG_STDOUT, False, False))


class ByzantineAgent(agent_module.Agent):
    price: int | None = None  # None: the configured price
    weak_pow = False

    def __init__(self, identity, store, overlay, sandboxes, settings, **options) -> None:
        if self.price is not None:
            settings = dataclasses.replace(settings, price=self.price)
        if self.weak_pow:
            settings = dataclasses.replace(settings, pow_nonce=weak_nonce(identity.public_key, settings.pow_difficulty))
        super().__init__(identity, store, overlay, sandboxes, settings, **options)  # outputs_dir, blocks, ...


class FragileAgent(ByzantineAgent):
    async def _on_gossip(self, message) -> None:
        if b"boom" in message.data:
            raise RuntimeError("an injected bug in gossip handling")
        await super()._on_gossip(message)


def weak_nonce(public_key: bytes, difficulty: int) -> bytes:
    """The first 8-byte counter that does NOT prove `difficulty` bits on the key (at difficulty
    0 every nonce does, and there is nothing to cheat)."""
    if difficulty <= 0:
        return b""
    return next(n for c in range(1 << 20) if not pow_ok(public_key, n := c.to_bytes(8, "big"), difficulty))


def main() -> None:
    behaviour, args = sys.argv[1], sys.argv[2:]
    cheaters = {"wrong": WrongExecutor, "lazy": LazyExecutor, "silent": SilentExecutor, "unsealed": UnsealedExecutor}
    if behaviour not in (*cheaters, "cheap", "nopow", "fragile"):
        raise SystemExit(f"unknown behaviour {behaviour!r}")
    ByzantineAgent.executing_class = cheaters.get(behaviour, Executing)
    ByzantineAgent.price = 0  # every behaviour outbids honest nodes (price 1) of equal reputation
    ByzantineAgent.weak_pow = behaviour == "nopow"
    daemon.AGENT_CLASS = FragileAgent if behaviour == "fragile" else ByzantineAgent
    from distributeai.cli.main import app

    app(args, prog_name="distributeai")


if __name__ == "__main__":
    main()
