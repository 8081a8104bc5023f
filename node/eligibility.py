"""Sampled bidding on the node's side (consensus/sampling.py holds the rules): how big the network
looks from here, and what a gossiped widening of a job does to this node.

- `network_size(own, keys, bootstraps)`: this node and the peers it knows from the DHT (routing
  table and connections, each by its Kademlia key; bootstraps aside, which run no jobs), counted
  as they are while fewer than ESTIMATE_K are known (no bucket of the routing table was ever full,
  so it holds every peer heard of), else estimated from the XOR density of the ESTIMATE_K closest
  (`sampling.estimate_network_size`).
- `may_bid`: an announcement's share stored (when not every node's); whether this node is
  eligible for the job. One that is not does nothing more: no bid, no decline.
- `on_widen`: a checked widening (`consensus.gossip.check_gossip`) of a job this node knows
  (`unknown_job` otherwise), signed by the job's submitter (`wrong_signer`) and growing its share
  (`replay` otherwise: a replayed or reordered one changes nothing), is stored as the job's share;
  then, if this node became eligible only now and the job has no certificate yet, it considers
  the job (bids or declines). Raises only RemoteProtocolError (and the store's errors).
"""

from __future__ import annotations

import json
from typing import Awaitable, Callable, Iterable, Mapping

from distributeai.consensus.errors import RemoteProtocolError
from distributeai.consensus.messages import JobSpec, verify
from distributeai.consensus.sampling import SHARE_ALL, eligible, estimate_network_size
from distributeai.consensus.validate import CheckedAnnounce, CheckedWiden, widened_share

ESTIMATE_K = 20  # Kademlia's k

Consider = Callable[[bytes, JobSpec, tuple], Awaitable[None]]  # Executing.consider


def network_size(own: bytes, keys: Mapping[str, bytes], bootstraps: Iterable[str] = ()) -> int:
    """How many nodes the network holds, as this node can tell (the module's docstring)."""
    skip = set(bootstraps)
    peers = [key for peer, key in keys.items() if peer not in skip]
    if len(peers) < ESTIMATE_K:
        return len(peers) + 1
    return estimate_network_size(own, peers, ESTIMATE_K)


async def may_bid(ann: CheckedAnnounce, store, me: bytes) -> bool:
    """Store a newly announced job's share (when not every node's); whether `me` is eligible."""
    if ann.share >= SHARE_ALL:
        return True
    await store.set_job_share(ann.job_id.hex(), ann.share)
    return eligible(ann.job_id, me, ann.share)


async def on_widen(widen: CheckedWiden, store, me: bytes, consider: Consider) -> int:
    """Apply a checked widening (the module's docstring); returns the job's new share."""
    job_hex = widen.job_id.hex()
    row = await store.get_job(job_hex)
    if row is None:
        raise RemoteProtocolError("unknown_job", "widen of a job this node never saw")
    spec = verify(row["signed_spec"], JobSpec).msg
    known = await store.job_share(job_hex) or SHARE_ALL
    share = widened_share(widen, spec.submitter, known)
    await store.set_job_share(job_hex, share)
    if (row["certificate"] is None and spec.submitter != me and not eligible(widen.job_id, me, known)
            and eligible(widen.job_id, me, share)):
        await consider(widen.job_id, spec, tuple(json.loads(row["submitter_addrs"])))
    return share
