"""p2p/workarounds_import.py: a node imports only the py-libp2p that runs (docs/libp2p.md items
17-22). Each check runs in a fresh interpreter, since the finder acts at libp2p's first import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Third-party packages that only the lazily loaded modules need.
UNUSED = ("aioquic", "dns", "zeroconf", "httpx", "requests", "trio_websocket", "OpenSSL", "service_identity",
          "miniupnpc", "Crypto", "coincurve", "libp2p.relay.circuit_v2.protocol", "libp2p.bitswap.client",
          "libp2p.transport.quic.connection", "libp2p.security.tls.certificate")


def _run(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_constants_given_are_the_real_ones() -> None:
    values = _run("""
        import importlib, json
        from distributeai.p2p import workarounds_import as w
        print(json.dumps([[m, n, v, getattr(importlib.import_module(m), n)] for (m, n), v in w.VALUES.items()]))
    """, {"LIBP2P_IMPORT_ALL": "1"})
    assert values and all(given == real for _, _, given, real in values), values
    names = _run("""
        import importlib, json
        from distributeai.p2p import workarounds_import as w
        print(json.dumps([m for m in sorted(w.LAZY | w.HOLLOW) if importlib.import_module(m) is None]))
    """, {"LIBP2P_IMPORT_ALL": "1"})
    assert names == []  # every module named exists in the pinned libp2p


def test_a_running_overlay_loads_none_of_the_lazy_modules() -> None:
    """Two hosts connect (TCP, Noise, yamux, identify), gossip on a topic and answer a request,
    and nothing of QUIC, TLS, DNS, WebSocket, relay, mDNS, RSA or libp2p's Bitswap was loaded."""
    result = _run(f"""
        import json, os, sys, trio
        from distributeai.p2p import workarounds_import
        from distributeai.p2p.overlay import open_overlay

        async def main():
            async def echo(peer, data):
                return data
            async with open_overlay(os.urandom(32), topics=("t",)) as a, \\
                    open_overlay(os.urandom(32), topics=("t",), bootstrap=[]) as b:
                a.set_handler("/echo/1", echo)
                await b.connect(a.multiaddrs()[0])
                with trio.fail_after(60):
                    assert await b.request(a.peer_id, "/echo/1", b"hi", timeout=30) == b"hi"
                    async with trio.open_nursery() as nursery:
                        async def publish():  # gossip is best effort: again until it arrives
                            while True:
                                if b.gossip_peers("t"):
                                    await b.publish("t", b"news")
                                await trio.sleep(0.5)
                        nursery.start_soon(publish)
                        async for message in a.messages():
                            assert message.data == b"news"
                            break
                        nursery.cancel_scope.cancel()
        trio.run(main)
        print(json.dumps({{"lazily": workarounds_import.loaded_lazily(),
                          "unused": [m for m in {UNUSED!r} if m in sys.modules]}}))
    """)
    assert result == {"lazily": [], "unused": []}


def test_a_stand_in_loads_its_module_when_used() -> None:
    result = _run("""
        import json, sys
        from distributeai.p2p import workarounds_import
        import libp2p
        from multiaddr import Multiaddr
        from libp2p.transport.quic.utils import is_quic_multiaddr
        from libp2p.crypto.serialization import deserialize_public_key
        from libp2p.crypto.rsa import RSAPublicKey
        before = ("aioquic" in sys.modules, "Crypto" in sys.modules, isinstance(object(), RSAPublicKey))
        quic = is_quic_multiaddr(Multiaddr("/ip4/1.2.3.4/udp/1/quic-v1"))
        tcp = is_quic_multiaddr(Multiaddr("/ip4/1.2.3.4/tcp/1"))
        from Crypto.PublicKey import RSA
        from libp2p.crypto.keys import KeyType
        from libp2p.crypto.pb import crypto_pb2
        der = RSA.generate(1024).publickey().export_key("DER")
        key = deserialize_public_key(crypto_pb2.PublicKey(key_type=KeyType.RSA.value, data=der).SerializeToString())
        print(json.dumps({"before": before, "quic": quic, "tcp": tcp, "rsa": isinstance(key, RSAPublicKey),
                          "lazily": workarounds_import.loaded_lazily()}))
    """)
    assert result == {"before": [False, False, False], "quic": True, "tcp": False, "rsa": True,
                      "lazily": ["libp2p.crypto.rsa", "libp2p.transport.quic.utils"]}


def test_import_all_turns_it_off() -> None:
    result = _run("""
        import json, sys
        import distributeai.p2p.overlay
        print(json.dumps("aioquic" in sys.modules))
    """, {"LIBP2P_IMPORT_ALL": "1"})
    assert result is True
