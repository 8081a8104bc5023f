"""The node's one clock read. The protocol core never reads a clock; the node passes this in."""

import time


def now_ms() -> int:
    return int(time.time() * 1000)
