"""node/eligibility.py on a real store: the network size estimate, an announcement's share, and
what a gossiped widening does (stored and obeyed, or refused with its reason, changing nothing)."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from distributeai.consensus.codec import Identity
from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import JobSpec, Widen, job_id_of, sign
from distributeai.consensus.sampling import SHARE_ALL, eligible
from distributeai.consensus.validate import CheckedAnnounce, CheckedWiden
from distributeai.node.eligibility import ESTIMATE_K, may_bid, network_size, on_widen
from distributeai.node.store import Store


def keys(n: int) -> dict[str, bytes]:
    return {f"peer{i}": hashlib.sha256(b"%d" % i).digest() for i in range(n)}


def test_network_size_counts_a_small_network_and_estimates_a_large_one():
    own = hashlib.sha256(b"me").digest()
    assert network_size(own, {}) == 1
    assert network_size(own, keys(7)) == 8
    assert network_size(own, keys(7), ["peer0", "peer1"]) == 6  # bootstraps run no jobs
    assert network_size(own, keys(500)) >= 501  # never less than the peers known, and this node


def spec_and_id(submitter: Identity) -> tuple[bytes, bytes, JobSpec]:
    spec = JobSpec(submitter=submitter.public_key, nonce=os.urandom(16), created_ms=int(time.time() * 1000),
                   name="", image="alpine:latest", command=("true",))
    signed = sign(submitter, spec)
    return signed, job_id_of(signed), spec


def widen_of(signer: Identity, job_id: bytes, share: int) -> CheckedWiden:
    return CheckedWiden(job_id, share, signer.public_key, int(time.time() * 1000),
                        sign(signer, Widen(job_id, share, int(time.time() * 1000))))


async def test_a_widening_is_stored_and_obeyed_once_or_refused_with_its_reason(tmp_path):
    store = await Store.open(tmp_path / "node.db")
    submitter, other = Identity.from_seed(os.urandom(32)), Identity.from_seed(os.urandom(32))
    signed, job_id, spec = spec_and_id(submitter)
    share = SHARE_ALL // 1024
    # A node not eligible at the first share, eligible at every node's.
    me = next(k for k in (Identity.from_seed(os.urandom(32)).public_key for _ in range(10_000)) if not eligible(job_id, k, share))
    await store.insert_job(job_id.hex(), "observer", "", signed, "announced", 1, ["/ip4/127.0.0.1/tcp/1"])
    ann = CheckedAnnounce(job_id, spec, signed, (), b"", share)
    assert not await may_bid(ann, store, me)
    assert await store.job_share(job_id.hex()) == share
    considered = []

    async def consider(job: bytes, spec: JobSpec, addrs: tuple) -> None:
        considered.append((job, addrs))

    for widen, reason in ((widen_of(other, job_id, SHARE_ALL), "wrong_signer"),
                          (widen_of(submitter, os.urandom(32), SHARE_ALL), "unknown_job"),
                          (widen_of(submitter, job_id, share), "replay")):
        with pytest.raises(RemoteProtocolError) as refused:
            await on_widen(widen, store, me, consider)
        assert refused.value.reason == reason
        assert await store.job_share(job_id.hex()) == share and not considered
    assert await on_widen(widen_of(submitter, job_id, SHARE_ALL), store, me, consider) == SHARE_ALL
    assert considered == [(job_id, ("/ip4/127.0.0.1/tcp/1",))]
    with pytest.raises(RemoteProtocolError) as refused:  # the same widening again
        await on_widen(widen_of(submitter, job_id, SHARE_ALL), store, me, consider)
    assert refused.value.reason == "replay" and len(considered) == 1
    assert ESTIMATE_K == 20
    await store.aclose()
