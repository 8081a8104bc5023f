"""p2p/bitswap*.py: the wire codec (pure), and fetches from real provider processes.

The providers are OS processes running tests/bitswap_peer.py on 127.0.0.1, started together once
for the module: "a" and "b" serve every block, "bad" serves every block with a byte flipped,
"half" only the second half. The last test kills "b". The fetcher is this process.
"""

from __future__ import annotations

import json
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import time

import pytest
import trio
from libp2p.bitswap.pb.bitswap_pb2 import Message as ReferenceMessage

from distributeai.consensus.cid import raw_cid, verify_block
from distributeai.p2p import bitswap_wire as wire
from distributeai.p2p.bitswap import BitswapLimits
from distributeai.p2p.bitswap_fetch import BlocksUnavailable
from distributeai.p2p.overlay import open_overlay

PEER_SCRIPT = pathlib.Path(__file__).with_name("bitswap_peer.py")
BLOCK = 256 << 10
N_BLOCKS = 32  # 8 MiB
STARTUP_S = 120.0  # five processes importing libp2p on two loaded cores: a safety net
FETCH_S = 60.0


def _cid(data: bytes) -> bytes:
    return raw_cid(data)


# --- the wire codec ---------------------------------------------------------------------------


def _sample() -> wire.Message:
    data = os.urandom(1000)
    cid = _cid(data)
    return wire.Message(
        entries=(wire.Entry(cid, 7, False, True, True), wire.Entry(cid, -2, cancel=True)), full=True,
        blocks=((wire.cid_prefix(cid), data),), presences=((cid, True), (cid, False)), pending_bytes=5)


def test_codec_round_trips_and_matches_the_reference_protobuf() -> None:
    msg = _sample()
    body = wire.encode_message(msg)
    assert wire.decode_message(body) == msg
    ref = ReferenceMessage()
    ref.ParseFromString(body)
    assert [e.priority for e in ref.wantlist.entries] == [7, -2] and ref.wantlist.full
    assert ref.wantlist.entries[0].wantType == 1 and ref.wantlist.entries[0].sendDontHave
    assert [p.type for p in ref.blockPresences] == [0, 1] and ref.pendingBytes == 5
    assert wire.decode_message(ref.SerializeToString()) == msg
    prefix, data = msg.blocks[0]
    assert wire.cid_from_prefix(prefix, data) == msg.entries[0].cid
    assert wire.encode_frame(msg) == wire.uvarint(len(body)) + body


@pytest.mark.parametrize("body, reason", [
    (b"\xff", "malformed"),                                    # truncated varint key
    (b"\x0a\x05\x00", "malformed"),                            # field past the end
    (b"\x0b", "malformed"),                                    # a group
    (b"\x0a\x02\x0a\x00", "malformed"),                        # an entry without a CID
    (b"\x0a\x04\x0a\x02\x0a\x00", "malformed"),                # a CID of 0 bytes
    (b"\x22\x04\x0a\x02\x01\x55", "malformed"),                # a presence's CID cut short
    (b"\x0a" + wire.uvarint(4_000_000) + b"\x0a\x00" * 2_000_000, "malformed"),  # 2M entries, no CID
    (b"\x0a" + wire.uvarint(40 * 40_000) + (b"\x0a\x26\x0a\x24" + bytes([1, 0x55, 0x12, 0x20]) + bytes(32)) * 40_000,
     "too_large"),                                             # 40,000 entries
    (b"\x1a" + wire.uvarint(wire.MAX_BLOCK + 5) + b"\x12" + wire.uvarint(wire.MAX_BLOCK + 1)
     + bytes(wire.MAX_BLOCK + 1), "too_large"),                # a block over the limit
    (bytes(wire.MAX_MESSAGE + 1), "too_large"),
])
def test_hostile_bytes_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    start = time.process_time()
    with pytest.raises(wire.WireError) as caught:
        wire.decode_message(body)
    assert caught.value.reason == reason
    assert time.process_time() - start < 1.0  # refused while scanning, not after building it all


def test_random_bytes_only_ever_raise_wire_errors() -> None:
    rng = __import__("random").Random(16)
    seed = wire.encode_message(_sample())
    for _ in range(3000):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            wire.decode_message(bytes(data[: rng.randint(0, len(data))]))
        except wire.WireError:
            pass


def test_prefix_other_than_sha256_is_malformed() -> None:
    with pytest.raises(wire.WireError):
        wire.cid_from_prefix(b"\x01\x55\x13\x40", b"x")  # sha2-512
    with pytest.raises(wire.WireError):
        wire.cid_from_prefix(b"\x01\x55\x12\x20\x00", b"x")  # trailing byte


# --- providers in processes -------------------------------------------------------------------


class Provider:
    def __init__(self, name: str, *args: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(PEER_SCRIPT), "serve", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.peer_id = self.addr = ""

    def wait_ready(self, deadline: float) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"provider {self.name} did not start")
        info = json.loads(self.proc.stdout.readline())
        self.peer_id, self.addr = info["peer_id"], info["addrs"][0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def blocks(tmp_path_factory) -> tuple[list[bytes], dict[bytes, bytes], pathlib.Path, pathlib.Path]:
    full, half = tmp_path_factory.mktemp("full"), tmp_path_factory.mktemp("half")
    data = {}
    for i in range(N_BLOCKS):
        block = os.urandom(BLOCK)
        cid = _cid(block)
        data[cid] = block
        (full / cid.hex()).write_bytes(block)
        if i >= N_BLOCKS // 2:
            (half / cid.hex()).write_bytes(block)
    return list(data), data, full, half


@pytest.fixture(scope="module")
def providers(blocks, tmp_path_factory):
    _, _, full, half = blocks
    empty = tmp_path_factory.mktemp("empty")
    procs = {"a": Provider("a", "--dir", str(full)), "b": Provider("b", "--dir", str(full)),
             "bad": Provider("bad", "--dir", str(full), "--corrupt"), "half": Provider("half", "--dir", str(half)),
             "empty": Provider("empty", "--dir", str(empty))}
    try:
        deadline = time.monotonic() + STARTUP_S
        for p in procs.values():
            p.wait_ready(deadline)
        yield procs
    finally:
        for p in procs.values():  # all at once: each takes a while to close its host
            if p.proc.poll() is None:
                p.proc.stdin.close()
        for p in procs.values():
            p.stop()


async def _fetch(providers, names, cids, data, *, on_block=None, window=8, probe=None):
    """Fetch `cids` from the named providers; returns (delivered {cid: block}, bitswap stats, rejects).
    `probe`: (names, cids) fetched first by the same node, where some cid must be missing; the
    stats right after it are stats["probe"]."""
    got: dict[bytes, bytes] = {}
    rejects: list[str] = []

    async def deliver(cid: bytes, block: bytes) -> None:
        assert cid not in got and verify_block(cid, block)
        got[cid] = block
        if on_block is not None:
            on_block(len(got))

    async with open_overlay(os.urandom(32)) as overlay:
        overlay.set_reject_hook(rejects.append)
        bitswap = overlay.start_bitswap(_NoBlocks(), verify_block)
        for name in names:
            await overlay.connect(providers[name].addr)
        started = time.monotonic()
        with trio.fail_after(FETCH_S):
            probe_stats = None
            if probe is not None:
                with pytest.raises(BlocksUnavailable):
                    await bitswap.fetch(probe[1], [providers[n].peer_id for n in probe[0]], _ignore)
                probe_stats = overlay.stats()
            try:
                await bitswap.fetch(cids, [providers[n].peer_id for n in names], deliver, window=window)
            finally:
                stats = dict(overlay.stats(), probe=probe_stats)
                print(f"fetch from {names}: {time.monotonic() - started:.2f} s")
    assert all(got[c] == data[c] for c in got)
    return got, stats, rejects


async def _ignore(cid: bytes, block: bytes) -> None:
    pass


class _NoBlocks:
    async def get(self, cid: bytes) -> None:
        return None

    async def has(self, cid: bytes) -> bool:
        return False


async def test_fetch_from_two_providers_at_once(blocks, providers) -> None:
    cids, data, _, _ = blocks
    got, stats, rejects = await _fetch(providers, ["a", "b"], cids, data)
    assert set(got) == set(cids)
    # blocks_in may exceed N_BLOCKS: at the tail a cid asked of both can come from both
    assert stats["bitswap_blocks_in"] >= N_BLOCKS and stats["bitswap_bad_block"] == 0 and not rejects


async def test_bad_block_is_counted_and_the_fetch_completes_from_the_other(blocks, providers) -> None:
    cids, data, _, _ = blocks
    # First from "bad" alone (its answer is sure to come: nobody else can cancel the want), then
    # from both: the fetch completes whatever "bad" sends.
    got, stats, rejects = await _fetch(providers, ["bad", "a"], cids, data, probe=(["bad"], cids[:1]))
    assert set(got) == set(cids)
    assert stats["probe"]["bitswap_bad_block"] == 1 and "bad_block" in rejects
    # Having sent a bad block, "bad" lost its standing: the second fetch did not ask it at all.
    assert stats["bitswap_providers_distrusted"] == 1 and stats["bitswap_bad_block"] == 1


async def test_dont_have_moves_wants_to_the_other_provider(blocks, providers) -> None:
    cids, data, _, _ = blocks
    # "half" lacks the first half: alone it answers DONT_HAVE; with "b" (asked second) the fetch
    # completes, the wants "half" refuses moving to "b".
    got, stats, _ = await _fetch(providers, ["half", "b"], cids, data, probe=(["half"], cids[:1]))
    assert set(got) == set(cids)
    assert stats["probe"]["bitswap_dont_have"] == 1


async def test_a_provider_that_holds_nothing_is_dropped_after_a_window_of_dont_haves(blocks, providers) -> None:
    cids, data, _, _ = blocks
    # Alone, "empty" is asked for its window (16) and is then out of the fetch: the 32 cids are
    # not each asked of it in turn. With "a", the fetch completes.
    got, stats, _ = await _fetch(providers, ["empty", "a"], cids, data, probe=(["empty"], cids))
    assert set(got) == set(cids)
    assert stats["probe"]["bitswap_fetch_lacking"] == 1 and stats["probe"]["bitswap_dont_have"] < len(cids)


async def test_blocks_nobody_has_are_reported_missing(blocks, providers) -> None:
    cids, data, _, _ = blocks
    unknown = _cid(b"nobody has this block")
    with pytest.raises(BlocksUnavailable) as caught:
        await _fetch(providers, ["half"], [cids[0], cids[-1], unknown], data)
    assert set(caught.value.missing) == {cids[0], unknown}


async def test_provider_killed_mid_fetch(blocks, providers) -> None:
    """Last in the module: it kills "b"."""
    cids, data, _, _ = blocks
    victim = providers["b"]

    def kill_on_first_block(count: int) -> None:
        if count == 1:
            victim.proc.send_signal(signal.SIGKILL)

    got, _, _ = await _fetch(providers, ["b", "a"], cids, data, on_block=kill_on_first_block)
    assert set(got) == set(cids)
    assert victim.proc.wait(10) == -signal.SIGKILL


# --- a hostile peer, in this process ----------------------------------------------------------


class _DictSource:
    def __init__(self, blocks: dict[bytes, bytes]) -> None:
        self.blocks = blocks

    async def get(self, cid: bytes) -> bytes | None:
        return self.blocks.get(cid)

    async def has(self, cid: bytes) -> bool:
        return cid in self.blocks


async def _raw_stream(attacker, target):
    from libp2p.custom_types import TProtocol

    return await attacker._host.new_stream(attacker.check_peer_id(target.peer_id), [TProtocol(wire.PROTOCOL)])


async def test_hostile_messages_are_refused_and_the_node_keeps_serving() -> None:
    block = os.urandom(1000)
    cid = _cid(block)
    rejects: list[str] = []
    async with open_overlay(os.urandom(32)) as server, open_overlay(os.urandom(32)) as client:
        server.set_reject_hook(rejects.append)
        serving = server.start_bitswap(_DictSource({cid: block}), verify_block,
                                       BitswapLimits(max_wants_per_peer=16, message_rate=0))
        bitswap = client.start_bitswap(_NoBlocks(), verify_block)
        await client.connect(server.multiaddrs()[0])
        with trio.fail_after(FETCH_S):
            stream = await _raw_stream(client, server)
            await stream.write(wire.uvarint(3) + b"\x0a\x05\x00")  # a field past its message
            while server.stats()["bitswap_malformed"] == 0:
                await trio.sleep(0.01)
            # 20 wants of blocks the server lacks, 16 allowed: 4 refused with DONT_HAVE
            lacking = [_cid(os.urandom(8)) for _ in range(20)]
            stream = await _raw_stream(client, server)
            want = wire.Message(entries=tuple(wire.Entry(c) for c in lacking[:16]) +
                                tuple(wire.Entry(c, send_dont_have=True) for c in lacking[16:]))
            await stream.write(wire.encode_frame(want))
            while server.stats()["bitswap_wants_refused"] < 4:
                await trio.sleep(0.01)
            # The 16 it took are answered (dropped: it lacks them, no DONT_HAVE asked) before the
            # fetch below, else its want would be the 17th and refused as the flood's were.
            from libp2p.peer.id import ID

            flooder = serving.peer(ID.from_base58(client.peer_id))
            while flooder.wants or flooder.serving:
                await trio.sleep(0.01)
            got = {}

            async def deliver(c: bytes, b: bytes) -> None:
                got[c] = b

            await bitswap.fetch([cid], [server.peer_id], deliver)
    assert got == {cid: block}
    assert rejects.count("malformed") == 1 and "too_large" in rejects


async def test_provider_found_through_the_dht_is_dialed_and_fetched_from() -> None:
    block = os.urandom(5000)
    cid = _cid(block)
    async with open_overlay(os.urandom(32)) as hub, open_overlay(os.urandom(32)) as holder, \
            open_overlay(os.urandom(32)) as seeker:
        holder.start_bitswap(_DictSource({cid: block}), verify_block)
        bitswap = seeker.start_bitswap(_NoBlocks(), verify_block)
        with trio.fail_after(FETCH_S):
            await holder.connect(hub.multiaddrs()[0])
            await seeker.connect(hub.multiaddrs()[0])
            assert await holder.provide(cid)
            providers = await seeker.find_providers(cid)
            assert providers == [holder.peer_id]
            got = {}

            async def deliver(c: bytes, b: bytes) -> None:
                got[c] = b

            await bitswap.fetch([cid], providers, deliver)
    assert got == {cid: block}
