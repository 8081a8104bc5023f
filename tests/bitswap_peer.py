"""A Bitswap peer as an OS process, for tests/test_bitswap.py and the throughput measurement.

    python tests/bitswap_peer.py serve --dir D [--corrupt]
        serves the blocks in D (one file per block, named by the hex of its CID); --corrupt
        flips a byte of every block it sends (a lying provider)
    python tests/bitswap_peer.py serve --synthetic N [--size S] [--profile F]
        serves N blocks of S bytes (default 256 KiB) made on demand (`synthetic_block`)
    python tests/bitswap_peer.py fetch --peer ADDR --synthetic N [--size S] [--window W] [--profile F]
        fetches those N blocks from ADDR and prints {"bytes", "seconds", "mb_s", "stats"}

A server prints one JSON line {"peer_id", "addrs"} once listening, then runs until its stdin
closes (or it is killed).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import pathlib
import struct
import sys
import time

import trio

from distributeai.consensus.cid import raw_cid, verify_block
from distributeai.p2p.overlay import open_overlay


def synthetic_block(i: int, size: int) -> bytes:
    """Block i of a synthetic set: distinct per i, made without hashing."""
    return struct.pack("<Q", i) * (size // 8)


class DirSource:
    def __init__(self, root: pathlib.Path, corrupt: bool) -> None:
        self.root, self.corrupt = root, corrupt

    async def get(self, cid: bytes) -> bytes | None:
        path = self.root / cid.hex()
        if not path.exists():
            return None
        data = path.read_bytes()
        return bytes([data[0] ^ 1]) + data[1:] if self.corrupt else data

    async def has(self, cid: bytes) -> bool:
        return (self.root / cid.hex()).exists()


class SyntheticSource:
    def __init__(self, n: int, size: int) -> None:
        self.size = size
        self.index = {raw_cid(synthetic_block(i, size)): i for i in range(n)}

    async def get(self, cid: bytes) -> bytes | None:
        i = self.index.get(cid)
        return None if i is None else synthetic_block(i, self.size)

    async def has(self, cid: bytes) -> bool:
        return cid in self.index


async def serve(args: argparse.Namespace) -> None:
    source = (SyntheticSource(args.synthetic, args.size) if args.synthetic
              else DirSource(pathlib.Path(args.dir), args.corrupt))
    async with open_overlay(os.urandom(32)) as overlay:
        overlay.start_bitswap(source, verify_block)
        print(json.dumps({"peer_id": overlay.peer_id, "addrs": overlay.multiaddrs()}), flush=True)
        profile = cProfile.Profile() if args.profile else None
        cpu = _cpu()
        if profile:
            profile.enable()
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        print(json.dumps({"server_cpu_s": round(_cpu() - cpu, 2), "stats": overlay.bitswap.stats()}),
              file=sys.stderr, flush=True)


async def fetch(args: argparse.Namespace) -> None:
    cids = [raw_cid(synthetic_block(i, args.size)) for i in range(args.synthetic)]
    got = 0

    async def deliver(cid: bytes, block: bytes) -> None:
        nonlocal got
        got += len(block)

    async with open_overlay(os.urandom(32)) as overlay:
        bitswap = overlay.start_bitswap(SyntheticSource(0, args.size), verify_block)
        provider = await overlay.connect(args.peer)
        profile = cProfile.Profile() if args.profile else None
        start, cpu = time.perf_counter(), _cpu()
        if profile:
            profile.enable()
        await bitswap.fetch(cids, [provider], deliver, window=args.window)
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        seconds = time.perf_counter() - start
        print(json.dumps({"bytes": got, "seconds": round(seconds, 3), "mb_s": round(got / seconds / 1e6, 1),
                          "cpu_s": round(_cpu() - cpu, 2), "stats": bitswap.stats()}), flush=True)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["serve", "fetch"])
    parser.add_argument("--dir")
    parser.add_argument("--corrupt", action="store_true")
    parser.add_argument("--synthetic", type=int, default=0)
    parser.add_argument("--size", type=int, default=256 << 10)
    parser.add_argument("--peer")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--profile")
    args = parser.parse_args()
    trio.run(serve if args.mode == "serve" else fetch, args)


if __name__ == "__main__":
    main()
