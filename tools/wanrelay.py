"""The WAN relay: reads IPv4 packets from a TUN device and writes each back after a delay.

Runs inside the router namespace tools/netns.py builds (`python -m distributeai.tools.wanrelay
--tun wtun ...`), where policy routing sends every packet between two sites into the TUN and
routes what the relay writes back to its destination's site (docs/wan.md). The relay changes no
byte of a packet: addresses stay the real ones.

Delay: a packet from site a to site b (the third octet of 10.77.a.x and 10.77.b.y) is held for
`pair_delay_ms(a, b, ...)` (one way, the same both ways, drawn once per pair from [min, max] by a
hash of the pair and the seed) plus a jitter drawn per packet from [0, jitter]. A packet is never
released before an earlier packet of the same (source, destination) addresses, so jitter never
reorders a flow. At most MAX_HELD packets wait at once; beyond that a packet is dropped, as a full
router queue drops (TCP recovers).

One thread: an epoll loop on the TUN and a signal wakeup pipe, a heap of (release time, sequence,
packet). On SIGTERM or SIGINT it prints one JSON line (packets relayed, dropped, bytes, its CPU
seconds, the largest queue) and exits 0. It prints `ready` once it holds the TUN.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_HELD = 200_000
READS_PER_WAKE = 256


def pair_delay_ms(a: int, b: int, low: int, high: int, seed: int = 0) -> int:
    """The one-way delay between sites a and b: in [low, high], the same for (a, b) and (b, a)."""
    if low > high or low < 0:
        raise ValueError("delay: 0 <= min <= max")
    lo, hi = min(a, b), max(a, b)
    digest = hashlib.sha256(f"{seed}:{lo}:{hi}".encode()).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low + 1)


def open_tun(name: str) -> int:
    """Attach to the TUN device `name` (created beforehand, or created here): a non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class Relay:
    """The delay queue, pure but for the clock passed in: `take(packet, now)` queues a packet,
    `due(now)` pops those whose time has come, `next_at()` says when the next one is."""

    def __init__(self, low: int, high: int, jitter: int, seed: int = 0) -> None:
        self.low, self.high, self.jitter, self.seed = low, high, jitter, seed
        self.rng = random.Random(seed)
        self.heap: list[tuple[float, int, bytes]] = []
        self.last: dict[bytes, float] = {}  # (src, dst) addresses -> latest release time queued
        self.delays: dict[tuple[int, int], float] = {}
        self.seq = 0
        self.relayed = self.dropped = self.bytes = self.max_held = 0

    def delay_s(self, a: int, b: int) -> float:
        d = self.delays.get((a, b))
        if d is None:
            d = self.delays[(a, b)] = (0 if a == b else pair_delay_ms(a, b, self.low, self.high, self.seed)) / 1000
        return d

    def take(self, packet: bytes, now: float) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4 or len(self.heap) >= MAX_HELD:
            self.dropped += 1  # not IPv4 (nothing here routes IPv6 into the TUN), or queue full
            return
        flow = packet[12:20]
        at = now + self.delay_s(packet[14], packet[18]) + (self.rng.uniform(0, self.jitter) / 1000 if self.jitter else 0)
        at = max(at, self.last.get(flow, 0.0))
        self.last[flow] = at
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, packet))
        self.max_held = max(self.max_held, len(self.heap))

    def due(self, now: float) -> list[bytes]:
        out = []
        while self.heap and self.heap[0][0] <= now:
            out.append(heapq.heappop(self.heap)[2])
        return out

    def next_at(self) -> float | None:
        return self.heap[0][0] if self.heap else None


def run(tun: str, low: int, high: int, jitter: int, seed: int) -> dict:
    fd = open_tun(tun)
    relay = Relay(low, high, jitter, seed)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    ep = select.epoll()
    ep.register(fd, select.EPOLLIN)
    ep.register(wake_r, select.EPOLLIN)
    print("ready", flush=True)
    while not stop:
        nxt = relay.next_at()
        timeout = -1 if nxt is None else max(0.0, nxt - time.monotonic())
        ep.poll(timeout)
        now = time.monotonic()
        for _ in range(READS_PER_WAKE):
            try:
                relay.take(os.read(fd, 65536), now)
            except BlockingIOError:
                break
        for packet in relay.due(time.monotonic()):
            try:
                os.write(fd, packet)
                relay.relayed += 1
                relay.bytes += len(packet)
            except OSError:
                relay.dropped += 1  # e.g. no route back: as a router drops it
    t = os.times()
    return {"relayed": relay.relayed, "dropped": relay.dropped, "bytes": relay.bytes,
            "max_held": relay.max_held, "cpu_s": round(t.user + t.system, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tun", default="wtun")
    p.add_argument("--delay-min", type=int, default=10, help="one-way ms")
    p.add_argument("--delay-max", type=int, default=40, help="one-way ms")
    p.add_argument("--jitter", type=int, default=5, help="ms, per packet, never reordering a flow")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not 0 <= a.delay_min <= a.delay_max or a.jitter < 0:
        p.error("need 0 <= --delay-min <= --delay-max and --jitter >= 0")
    try:
        stats = run(a.tun, a.delay_min, a.delay_max, a.jitter, a.seed)
    except OSError as exc:
        print(f"wanrelay: cannot use TUN {a.tun!r}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
