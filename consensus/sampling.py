"""Sampled bidding: which nodes may bid on a job, so that the bids per job grow with the job's
replicas, not with the network.

A node is eligible for a job when `score(job_id, peer) < share`, where `score` is the first 32 bits
of SHA-256("distributeai/eligible/v1" || job_id || peer's public key), read as an unsigned integer,
and `share` is an integer in [1, SHARE_ALL]: the eligible fraction of the key space, times 2^32.
SHARE_ALL (2^32) makes every node eligible.

- The job id is the SHA-256 of the signed spec, which holds a fresh random nonce, so no identity
  can be ground toward a future job: who is eligible is unknown before the announcement.
- Every node computes the same answer from public facts, so the submitter checks each bidder's
  eligibility as the bidder does (`eligible`), and can tell which of its connected peers could
  still bid.
- The submitter sizes the first share so that about `factor * replicas` nodes of its estimate
  of the network qualify (`initial_share`); when too few acceptable bids arrive it widens:
  `widen(share)` doubles the share, until every node qualifies (Golem's network mask dropping
  a bit). A widening only ever grows the share, so a replayed or reordered one changes nothing
  (`accept_widen`).

`estimate_network_size` turns the XOR distances of the closest known peers to a key into an
estimate of how many nodes there are (Kademlia's keys are uniform, so the i-th closest of N keys
lies near i/(N+1) of the key space).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from hashlib import sha256
from typing import Iterable

SHARE_BITS = 32
SHARE_ALL = 1 << SHARE_BITS
DEFAULT_FACTOR = 4  # c: aim for about c * replicas eligible nodes
_DOMAIN = b"distributeai/eligible/v1"


def score(job_id: bytes, peer: bytes) -> int:
    """The peer's draw for this job: uniform in [0, SHARE_ALL), unknown before the job id is."""
    return int.from_bytes(sha256(_DOMAIN + job_id + peer).digest()[:4], "big")


def eligible(job_id: bytes, peer: bytes, share: int) -> bool:
    """Whether `peer` (an Ed25519 public key) may bid on the job at this share."""
    return share >= SHARE_ALL or score(job_id, peer) < share


def initial_share(network_size: int, replicas: int, factor: int = DEFAULT_FACTOR) -> int:
    """The share that makes about `factor * replicas` of `network_size` nodes eligible: all of
    them when the network is no larger than twice that (or its size is unknown, 0). Below that
    the sample would save at most half the bids, while a short sample widens (a window more) and
    leaves more of the established nodes outside it."""
    want = max(1, factor) * max(1, replicas)
    if network_size <= 2 * want:
        return SHARE_ALL
    return max(1, min(SHARE_ALL, (want * SHARE_ALL) // network_size))


def widen(share: int) -> int:
    """The next, doubled share (never past SHARE_ALL)."""
    return min(SHARE_ALL, max(1, share) * 2)


def accept_widen(known_share: int, new_share: int) -> bool:
    """Whether a widening to `new_share` changes a job known at `known_share`: only a larger share
    does, so a replayed, reordered or shrinking one is dropped (the caller counts it `replay`)."""
    return new_share > known_share


def check_share(share: int) -> int:
    """A share from the wire: an integer in [1, SHARE_ALL]; ValueError otherwise."""
    if not isinstance(share, int) or isinstance(share, bool) or not 1 <= share <= SHARE_ALL:
        raise ValueError(f"share must be an integer in [1, {SHARE_ALL}]")
    return share


def keyspace_distance(a: bytes, b: bytes) -> float:
    """XOR distance of two 256-bit keys as a fraction of the key space, in [0, 1)."""
    return int.from_bytes(bytes(x ^ y for x, y in zip(a, b)), "big") / float(1 << (8 * len(a)))


def estimate_network_size(own_key: bytes, peer_keys: Iterable[bytes], k: int = 20) -> int:
    """How many nodes the network holds, from the keys (uniform 256-bit hashes, as Kademlia's)
    of the peers this node knows: the k closest to `own_key` are fitted to d_i = i / N by least
    squares (N = sum(i^2) / sum(i * d_i)), so one unlucky distance moves the estimate little.
    Counts this node; never less than the peers known plus one."""
    keys = {key for key in peer_keys if key != own_key}
    distances = sorted(keyspace_distance(own_key, key) for key in keys)[:k]
    if not distances:
        return 1
    weighted = sum(i * d for i, d in enumerate(distances, start=1))
    squares = sum(i * i for i in range(1, len(distances) + 1))
    fitted = int(squares / weighted) if weighted > 0 else len(keys) + 1
    return max(len(keys) + 1, fitted)
