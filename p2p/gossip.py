"""The overlay's gossip side: what a node publishes and receives on its topics, and the rate
limits that cut a flood at its first hop.

- `GossipMessage(topic, from_peer, data)`: one received message; `from_peer` is its author as
  pubsub's signature check verified it.
- `Inbox`: `Overlay.messages()`, a FairQueue by author (MESSAGE_BUFFER messages, at most
  MESSAGE_BUFFER_PER_AUTHOR of one author; the excess is dropped and counted).
- `GossipSide`: the gossip half of `Overlay` (one of its base classes): `publish`, `messages`,
  `set_standing`, the draining of libp2p's subscriptions, and the two gossip rate limits (per
  forwarding peer before libp2p does any work on a message, `workarounds_pubsub.
  limit_gossip_rates`; per author in the topic validator, after the signature check). It uses
  the overlay's `_pubsub`, `_self_id`, `_max_bytes`, `_stats` and `_rejected`; `_init_gossip`
  sets up its own state.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import ISubscriptionAPI
from libp2p.peer.id import ID

from .fairqueue import FairQueue
from .ratelimit import KeyedLimiter, RateLimits

# Messages waiting in `Overlay.messages()` before new ones are dropped (and counted). libp2p's
# own subscription channel holds only 32 (`pubsub/pubsub.py:124`); this one is drained from
# it at once, so a slow consumer loses messages here, where they are counted.
MESSAGE_BUFFER = 4096
# ... of which one author may fill this many: its rate limit (ratelimit.py) lets through more
# than a busy node may handle at once, and the rest of the buffer stays for everyone else.
MESSAGE_BUFFER_PER_AUTHOR = 512
# An author's standing (Overlay.set_standing) is asked again after this long.
STANDING_CACHE_S = 1.0


@dataclass(frozen=True)
class GossipMessage:
    """One message of a subscribed topic, as `Overlay.messages()` yields it."""

    topic: str
    from_peer: str  # author, as verified by pubsub's signature check (strict signing)
    data: bytes


class Inbox:
    """`Overlay.messages()`: a FairQueue by author, awaited with `async for` (or `receive()`)."""

    def __init__(self) -> None:
        self._queue: FairQueue[GossipMessage] = FairQueue(MESSAGE_BUFFER, MESSAGE_BUFFER_PER_AUTHOR)
        self._ready = trio.Event()
        self._closed = False

    def put(self, author: ID, message: GossipMessage) -> bool:
        if self._closed or not self._queue.put(author, message):
            return False
        self._ready.set()
        return True

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def receive(self) -> GossipMessage:
        """The next message in turn; trio.EndOfChannel once closed and drained."""
        while not self._queue:
            if self._closed:
                raise trio.EndOfChannel
            self._ready = trio.Event()
            await self._ready.wait()
        await trio.lowlevel.checkpoint()  # a schedule point even when messages are waiting
        if not self._queue:  # taken meanwhile by another receiver (one consumer is the contract)
            return await self.receive()
        return self._queue.get()

    def __aiter__(self) -> "Inbox":
        return self

    async def __anext__(self) -> GossipMessage:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class GossipSide:
    """The gossip half of `Overlay`; see the module's docstring for what it needs of the overlay."""

    _pubsub: Any
    _self_id: ID
    _max_bytes: int
    _stats: collections.Counter[str]
    _rejected: Callable[[str, str], None]

    def _init_gossip(self, limits: RateLimits) -> None:
        # Gossip per forwarding peer before libp2p checks a signature, and per author after it.
        self._forwarder_rate = KeyedLimiter(limits.gossip_forwarder_rate)
        self._author_rate = KeyedLimiter(limits.gossip_author_rate)
        self._newcomer_rate = KeyedLimiter(limits.newcomer_gossip_rate)
        self._standing: Callable[[str], bool] | None = None
        self._standing_cache: dict[bytes, tuple[bool, float]] = {}
        self._inbox = Inbox()

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish to `topic` (subscribed or not). Best effort, like all GossipSub: a peer that
        joined the mesh less than a heartbeat (1 s) ago may miss it. Own publishes are not
        delivered to our own `messages()`. ValueError if data exceeds max_message_bytes."""
        if len(data) > self._max_bytes:
            raise ValueError(f"message of {len(data)} bytes exceeds max_message_bytes={self._max_bytes}")
        await self._pubsub.publish(topic, bytes(data))
        self._stats["gossip_out"] += 1

    def messages(self) -> Inbox:
        """The one stream of messages from all subscribed topics (not our own publishes), for
        `async for`; it ends when the overlay closes. Every call returns the same: one consumer.

        Messages are queued per author and taken from the authors in turn (fairqueue.py), so
        a busy author's backlog never delays another author's message by more than one of its
        own. It holds MESSAGE_BUFFER messages, MESSAGE_BUFFER_PER_AUTHOR of one author; beyond
        that new ones are dropped and counted in stats()["gossip_dropped"].
        """
        return self._inbox

    async def _drain(self, topic: str, subscription: ISubscriptionAPI) -> None:
        # docs/libp2p.md item 5: the subscription channel holds 32 messages and pubsub drops the
        # rest silently (`pubsub/pubsub.py:124,1370-1376`), so it is read here at once.
        async for msg in subscription:
            author = ID(msg.from_id)
            if author == self._self_id:
                continue  # pubsub delivers our own publishes to our subscriptions
            if self._inbox.put(author, GossipMessage(topic, author.to_base58(), bytes(msg.data))):
                self._stats["gossip_in"] += 1
            else:
                self._stats["gossip_dropped"] += 1

    def _allow_forwarder(self, forwarder: ID) -> bool:
        """Gossip from `forwarder` (the peer that sent it to us, whoever wrote it), checked before
        libp2p's seen-cache and signature check; False drops it: not verified, not relayed."""
        if self._forwarder_rate.allow(forwarder, trio.current_time()):
            return True
        self._rejected("gossip_rate_limited", "rate_limited")
        return False

    def _allow_author(self, forwarder: ID, msg) -> bool:
        """The topic validator: a gossip message seen for the first time, whose signature
        libp2p has verified, so its `from_id` is its author. False drops it: not delivered, not
        relayed, and pubsub remembers it as invalid for a while (`pubsub/pubsub.py:1681-1690`),
        so copies from other peers are dropped too. Our own publishes always pass."""
        if forwarder == self._self_id:
            return True
        author, now = bytes(msg.from_id), trio.current_time()
        limiter = self._author_rate if self._established(author, now) else self._newcomer_rate
        if limiter.allow(author, now):
            return True
        self._rejected("gossip_rate_limited", "rate_limited")
        return False

    def _established(self, author: bytes, now: float) -> bool:
        """Whether the node's standing function counts `author` (peer id bytes) as established;
        asked at most once a second per author, every author is established without one."""
        if self._standing is None:
            return True
        hit = self._standing_cache.get(author)
        if hit is not None and now - hit[1] < STANDING_CACHE_S:
            return hit[0]
        if len(self._standing_cache) > 10_000:  # bounded: forget rather than grow
            self._standing_cache.clear()
        value = bool(self._standing(ID(author).to_base58()))
        self._standing_cache[author] = (value, now)
        return value

    def set_standing(self, established: Callable[[str], bool]) -> None:
        """`established(peer id)`: whether gossip by that author gets the full per-author rate
        (RateLimits.gossip_author_rate) or a newcomer's (newcomer_gossip_rate). The node passes
        what its ledger knows of the author; without it every author is established."""
        self._standing = established
        self._standing_cache.clear()
