"""A bounded queue that serves its keys in turn (round robin), pure.

The overlay queues gossip for the node by author: a flooder whose messages pass its rate limit
still makes more work than the node may do at once, and in one first-in first-out queue an honest
author's message would wait behind that whole backlog. Here it waits behind at most one message
of each other author with something queued. Bounded in all (`max_total`) and per key
(`max_per_key`, so one author cannot fill the queue for the others); `put` refuses what does not
fit, for the caller to count.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, Hashable, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self, max_total: int, max_per_key: int) -> None:
        if not 1 <= max_per_key <= max_total:
            raise ValueError("need 1 <= max_per_key <= max_total")
        self.max_total, self.max_per_key = max_total, max_per_key
        self._queues: OrderedDict[Hashable, deque[T]] = OrderedDict()  # keys in serving order
        self._len = 0

    def put(self, key: Hashable, item: T) -> bool:
        """Queue `item` under `key`; False (and nothing queued) if the queue or the key is full."""
        queue = self._queues.get(key)
        if self._len >= self.max_total or (queue is not None and len(queue) >= self.max_per_key):
            return False
        if queue is None:
            queue = self._queues[key] = deque()
        queue.append(item)
        self._len += 1
        return True

    def get(self) -> T:
        """The oldest item of the key whose turn it is; that key then goes last. IndexError if
        the queue is empty."""
        if not self._queues:
            raise IndexError("get from an empty FairQueue")
        key, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        self._len -= 1
        if queue:
            self._queues.move_to_end(key)
        else:
            del self._queues[key]
        return item

    def __len__(self) -> int:
        return self._len
