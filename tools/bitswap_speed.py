"""Bitswap throughput between two processes on 127.0.0.1, A/B against another checkout.

    python tools/bitswap_speed.py [--mib 256] [--rounds 3] [--base DIR] [--profile DIR]

One provider process opens a real `node.blockstore.BlockStore` holding a file of --mib MiB of
random bytes (imported once, 256 KiB raw leaves, before anything is timed) and serves it with
`Overlay.start_bitswap`; one fetcher process opens an empty BlockStore and fetches the file's DAG
through `node.transfer.fetch_dag` -> `Bitswap.fetch` (the real path: verified, stored with
put_many). Each side reports its CPU-seconds over the transfer (getrusage, from just before the
fetch starts to its end); the fetcher also wall seconds, so MB/s (1e6 bytes) and CPU-s per GiB.

`--base DIR`: a checkout of the repository (e.g. `git archive <rev> | tar -x -C DIR`) run as the
"base" variant next to this one ("head"): each round runs base then head, or head then base on
odd rounds, so both meet the same load on a shared machine. Compare the variants within one run.
`--profile DIR`: cProfile each side into DIR/<variant>-<round>-{serve,fetch}.prof.
`--no-store`: the fetcher counts blocks and drops them (no BlockStore writes): the transfer alone.
`--window W` / `--base-window W`: Bitswap.fetch's window for both variants / for base only (with
`--base .` the same tree against itself at two windows).

The peer mode (`peer serve|fetch`) is internal: the parent starts it with the variant's tree first
on sys.path.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
GIB = float(1 << 30)


# --- peer side (a child process) ----------------------------------------------------------------

def _use_tree(tree: str) -> None:
    """Make `import distributeai` resolve to `tree` (a repository checkout) before anything else."""
    shim = Path(tempfile.mkdtemp(prefix="bsspeed-shim-"))
    atexit.register(shutil.rmtree, shim, True)
    (shim / "distributeai").symlink_to(Path(tree).resolve())
    sys.path.insert(0, str(shim))
    for finder in list(sys.meta_path):  # an editable install's finder would map it to this checkout
        if "editable" in type(finder).__name__.lower() or "editable" in getattr(finder, "__module__", ""):
            sys.meta_path.remove(finder)


def _count_window_polls() -> list[int]:
    """Count yamux's 10 ms polls for send window (`YamuxStream.write`): a writer stalled on the
    receiver's window. Wraps the `trio.sleep` that yamux's module sees; [count], updated live."""
    import trio
    from libp2p.stream_muxer.yamux import yamux

    count = [0]
    real = trio.sleep

    class _Trio:
        def __getattr__(self, name):
            return getattr(trio, name)

        @staticmethod
        async def sleep(seconds):
            if seconds == 0.01:
                count[0] += 1
            await real(seconds)

    yamux.trio = _Trio()
    return count


def _cpu() -> float:
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _serve(args: argparse.Namespace) -> None:
    import trio
    from distributeai.consensus.cid import verify_block
    from distributeai.node.blockstore import BlockStore
    from distributeai.p2p.overlay import open_overlay

    store = await BlockStore.open(Path(args.store), max_bytes=1 << 40)
    try:
        async with open_overlay(os.urandom(32)) as overlay:
            bitswap = overlay.start_bitswap(store, verify_block)
            print(json.dumps({"peer_id": overlay.peer_id, "addrs": overlay.multiaddrs()}), flush=True)
            # The fetcher writes "go" on our stdin when it starts; EOF when it is done.
            await trio.to_thread.run_sync(sys.stdin.readline)
            sleeps = _count_window_polls()
            profile, cpu = _start_profile(args), _cpu()
            await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
            _stop_profile(profile, args)
            print(json.dumps({"cpu_s": _cpu() - cpu, "window_polls": sleeps[0], "stats": bitswap.stats()}),
                  flush=True)
    finally:
        await store.close()


async def _fetch(args: argparse.Namespace) -> None:
    import time as _time
    from distributeai.consensus.cid import DAG_PB, codec_of, verify_block
    from distributeai.node.blockstore import BlockStore
    from distributeai.node.transfer import fetch_dag
    from distributeai.p2p.overlay import open_overlay

    class Counter:  # a sink that keeps only the DAG's inner nodes (--no-store)
        def __init__(self):
            self.nodes = {}

        async def have(self, cids):
            return set()

        async def get(self, cid):
            return self.nodes.get(cid)

        async def put_many(self, pairs, *, pin=None):
            self.nodes.update((c, b) for c, b in pairs if codec_of(c) == DAG_PB)

    store = Counter() if args.no_store else await BlockStore.open(Path(args.store), max_bytes=1 << 40)
    try:
        async with open_overlay(os.urandom(32)) as overlay:
            bitswap = overlay.start_bitswap(store if not args.no_store else _Empty(), verify_block)
            provider = await overlay.connect(args.peer)
            root = bytes.fromhex(args.root)
            print("go", flush=True)
            profile, cpu, start = _start_profile(args), _cpu(), _time.perf_counter()
            fetch = bitswap.fetch if not args.window else functools.partial(bitswap.fetch, window=args.window)
            progress = await fetch_dag(root, store, fetch, [provider])
            seconds = _time.perf_counter() - start
            _stop_profile(profile, args)
            print(json.dumps({"bytes": progress.bytes, "blocks": progress.blocks, "seconds": seconds,
                              "cpu_s": _cpu() - cpu, "stats": bitswap.stats()}), flush=True)
    finally:
        if not args.no_store:
            await store.close()


class _Empty:
    async def get(self, cid):
        return None

    async def has(self, cid):
        return False


def _start_profile(args):
    if not args.profile:
        return None
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
    return profile


def _stop_profile(profile, args) -> None:
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)


def peer_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bitswap_speed.py peer")
    parser.add_argument("mode", choices=["serve", "fetch"])
    parser.add_argument("--tree", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--peer")
    parser.add_argument("--root")
    parser.add_argument("--profile")
    parser.add_argument("--no-store", action="store_true")
    parser.add_argument("--window", type=int, default=0)
    args = parser.parse_args(argv)
    _use_tree(args.tree)
    import trio
    trio.run(_serve if args.mode == "serve" else _fetch, args)


# --- the parent: data, rounds, figures ------------------------------------------------------------

def _import(store_dir: Path, mib: int) -> str:
    """Write mib MiB of random bytes into a new BlockStore at store_dir; the root CID's hex."""
    import trio
    from distributeai.node.blockstore import BlockStore

    async def run() -> str:
        src = store_dir.parent / "input.bin"
        with open(src, "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        store = await BlockStore.open(store_dir, max_bytes=1 << 40)
        try:
            root, _size = await store.add_path(src)
        finally:
            await store.close()
        src.unlink()
        return root.hex()

    return trio.run(run)


def _line(proc: subprocess.Popen) -> str:
    """The child's next line of ours (py-spy, when used, writes its own lines first)."""
    while True:
        line = proc.stdout.readline()
        if not line or line.startswith(("{", "go")):
            return line


def _one(tree: Path, served: Path, root: str, work: Path, profile: str | None, no_store: bool,
         window: int) -> dict:
    me = [sys.executable, str(Path(__file__).resolve()), "peer"]
    spy = os.environ.get("BSSPEED_PYSPY")  # a directory: both sides run under py-spy (wall time, idle too)
    if spy and profile is None:
        me_serve = ["py-spy", "record", "--idle", "-r", "250", "-f", "raw", "-o", f"{spy}/serve.txt", "--"] + me
        me_fetch = ["py-spy", "record", "--idle", "-r", "250", "-f", "raw", "-o", f"{spy}/fetch.txt", "--"] + me
    else:
        me_serve = me_fetch = me
    server = subprocess.Popen(me_serve + ["serve", "--tree", str(tree), "--store", str(served)]
                              + (["--profile", profile + "-serve.prof"] if profile else []),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    fetch_store = work / "fetched"
    try:
        hello = json.loads(_line(server))
        fetcher = subprocess.Popen(me_fetch + ["fetch", "--tree", str(tree), "--store", str(fetch_store),
                                         "--peer", hello["addrs"][0], "--root", root]
                                   + (["--profile", profile + "-fetch.prof"] if profile else [])
                                   + (["--no-store"] if no_store else [])
                                   + (["--window", str(window)] if window else []),
                                   stdout=subprocess.PIPE, text=True)
        assert _line(fetcher).strip() == "go"
        server.stdin.write("go\n")
        server.stdin.flush()
        result = json.loads(_line(fetcher))
        fetcher.wait(timeout=60)
        server.stdin.close()
        served_report = json.loads(_line(server))
        result["server_cpu_s"] = served_report["cpu_s"]
        result["window_polls"] = served_report["window_polls"]
        server.wait(timeout=60)
    finally:
        for proc in (server,):
            if proc.poll() is None:
                proc.kill()
        shutil.rmtree(fetch_store, ignore_errors=True)
    gib = result["bytes"] / GIB
    return {"mb_s": result["bytes"] / result["seconds"] / 1e6, "seconds": result["seconds"],
            "fetch_cpu_gib": result["cpu_s"] / gib, "serve_cpu_gib": result["server_cpu_s"] / gib,
            "bytes": result["bytes"], "msgs_in": result["stats"].get("messages_in", 0),
            "window_polls": result["window_polls"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "peer":
        peer_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", help="a checkout to compare against (the 'base' variant)")
    parser.add_argument("--profile", help="a directory for cProfile dumps of both sides")
    parser.add_argument("--no-store", action="store_true", help="the fetcher drops blocks (no BlockStore)")
    parser.add_argument("--window", type=int, default=0, help="Bitswap.fetch's window (default: its own)")
    parser.add_argument("--base-window", type=int, help="the base variant's window, if not --window")
    args = parser.parse_args()
    variants = {"head": HERE}
    if args.base:
        variants = {"base": Path(args.base).resolve(), "head": HERE}
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bsspeed-"))
    try:
        served = work / "served"
        t0 = time.perf_counter()
        root = _import(served, args.mib)
        print(f"imported {args.mib} MiB in {time.perf_counter() - t0:.1f} s, root {root[:16]}...", flush=True)
        results: dict[str, list[dict]] = {name: [] for name in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                prof = os.path.join(args.profile, f"{name}-{r}") if args.profile else None
                window = args.base_window if name == "base" and args.base_window is not None else args.window
                out = _one(variants[name], served, root, work, prof, args.no_store, window)
                results[name].append(out)
                print(f"round {r} {name:4s}: {out['mb_s']:6.1f} MB/s  {out['seconds']:6.2f} s  "
                      f"CPU-s/GiB fetch {out['fetch_cpu_gib']:5.1f} serve {out['serve_cpu_gib']:5.1f}  "
                      f"msgs {out['msgs_in']} window polls {out['window_polls']}", flush=True)
        for name, runs in results.items():
            print(f"{name:4s} median: {statistics.median(r['mb_s'] for r in runs):6.1f} MB/s  "
                  f"CPU-s/GiB fetch {statistics.median(r['fetch_cpu_gib'] for r in runs):5.1f} "
                  f"serve {statistics.median(r['serve_cpu_gib'] for r in runs):5.1f}  "
                  f"(min {min(r['mb_s'] for r in runs):.1f}, max {max(r['mb_s'] for r in runs):.1f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
