"""Import only the py-libp2p 0.8.1 that runs: its transports, discovery services and security
options the overlay never uses are loaded lazily, on first use (docs/libp2p.md items 17-22).

`import libp2p` runs every module of the package that its `__init__`, the host and the swarm
import at top level, whatever the host is configured with: QUIC (aioquic, pyOpenSSL,
service_identity), TLS and AutoTLS (httpx, requests, rich), WebSocket (trio_websocket), the DNS
resolvers (dnspython), the circuit relay, mDNS (zeroconf), UPnP, the persistent peer stores,
secio and py-libp2p's own Bitswap: about 35 MB of a node's memory and half of the import's
CPU, for code that never runs on a node that listens on TCP with Noise and yamux (workarounds.py
items 1 and 12).

`install()` (idempotent; run by `p2p/__init__.py` before anything imports libp2p) puts a finder
first on `sys.meta_path` that answers for the modules of `LAZY` and the packages of `HOLLOW`:

- a module of `LAZY` becomes a *lazy module*: an attribute read from it (which is what
  `from M import Name` does) gives a stand-in for `M.Name` without loading M. A stand-in loads M
  and hands over to the real object as soon as it is used: called (a class instantiated, a
  function called), an attribute read, `isinstance`/`issubclass` against it once M is loaded
  (before that no instance of it can exist, so the answer is False). The constants of `VALUES`
  are given as they are (`tests/test_workarounds_import.py` checks them against the real modules).
  Names of `INSTANCE_LAZY` are classes whose instances are made by libp2p and never used on our
  paths (the swarm's `DNSResolver()`): calling their stand-in gives a proxy that makes the real
  instance on its first attribute read.
- a package of `HOLLOW` is created without running its `__init__` but with its real `__path__`,
  so that one of its submodules loads alone; any other attribute read runs the real `__init__`
  into it first.
- importing a submodule of a lazy module loads the lazy module first.

What runs is unchanged: TCP, Noise, yamux, the peer store, identify, ping, GossipSub, Kademlia,
the resource manager and everything of `libp2p` the project imports are the real modules, loaded
as before. `LIBP2P_IMPORT_ALL=1` in the environment turns this off (everything loads at import,
as libp2p does by itself). `loaded_lazily()` names the lazy modules that something has loaded
since (none in a node: `tests/test_workarounds_import.py` checks a running overlay).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from typing import Any

# docs/libp2p.md item 18: QUIC (aioquic, pyOpenSSL, service_identity: about 12 MB). Imported at
# top level by `__init__.py:11,18-19` and `custom_types.py:29` (`QUICStream` in a type alias); the
# swarm makes a QUIC transport only for a /udp/.../quic listen address (`__init__.py:430-439`).
# `quic/config.py` and `quic/exceptions.py` are cheap and stay real (`network/stream/net_stream.py`
# catches the QUIC stream errors).
QUIC = ("libp2p.transport.quic.transport", "libp2p.transport.quic.utils", "libp2p.transport.quic.stream")
# item 19: TLS and AutoTLS (httpx, requests, rich). `__init__.py:101-104` and
# `host/basic_host.py:103-110`; used only by the default security options (`__init__.py:657-665`,
# we pass Noise alone: workarounds.security_options) and by AutoTLS (`basic_host.py:760-890`, off).
TLS = ("libp2p.security.tls.transport", "libp2p.security.tls.autotls.acme", "libp2p.security.tls.autotls.broker")
# item 20: DNS resolution (dnspython, about 10 MB) and the WebSocket transport (trio_websocket).
# The swarm makes a `DNSResolver()` it never uses (`network/swarm.py:321`); TCP resolves only a
# /dns address (`transport/tcp/tcp.py:365-420`); WebSocket only for a /ws listen address.
DNS_WS = ("multiaddr.resolvers", "libp2p.utils.dns_utils", "libp2p.transport.websocket.transport")
# item 21: discovery services and the circuit relay: mDNS (zeroconf), UPnP, bootstrap discovery,
# relay. `host/basic_host.py:50-110` imports them; each starts only when asked for
# (`basic_host.py:330-390`: enable_mDNS, enable_upnp, bootstrap, all off), and
# `is_private_ip` is read only by AutoTLS (`basic_host.py:814`).
DISCOVERY = ("libp2p.discovery.mdns.mdns", "libp2p.discovery.upnp.upnp", "libp2p.discovery.bootstrap.bootstrap",
             "libp2p.relay.circuit_v2.nat")
# item 21 too: what only `new_host`'s defaults use: secio, the persistent peer stores and key stores
# (`__init__.py:79-90,106-117`).
DEFAULTS = ("libp2p.security.secio.transport", "libp2p.peer.persistent", "libp2p.identity_utils",
            "libp2p.crypto.keystore", "libp2p.security.insecure.transport", "libp2p.stream_muxer.mplex.mplex",
            "libp2p.security.pnet.protector")
# item 22: RSA (pycryptodome, whose cffi set-up is a fifth of the import's CPU) and secp256k1
# (coincurve) keys. Only a peer with such a key needs them: `crypto/serialization.py:22-31`,
# `peer/envelope.py:205-215`, `records/pubkey.py:100-110` and `records/utils.py:20-31` call
# `from_bytes` of their classes; ours and our peers' keys are Ed25519.
KEYS = ("libp2p.crypto.rsa", "libp2p.crypto.secp256k1")
LAZY = frozenset(QUIC + TLS + DNS_WS + DISCOVERY + DEFAULTS + KEYS)
# Packages whose `__init__` imports all of them; kad_dht reads `parse_cid` from `libp2p.bitswap.cid`
# (`kad_dht/kad_dht.py:83`), which otherwise ran py-libp2p's whole Bitswap (item 14: unused).
HOLLOW = frozenset({"libp2p.relay", "libp2p.relay.circuit_v2", "libp2p.discovery.mdns", "libp2p.security.tls",
                    "libp2p.discovery.bootstrap", "libp2p.bitswap", "libp2p.transport.websocket"})
# Constants read at import time, as the real modules define them.
VALUES: dict[tuple[str, str], Any] = {
    ("libp2p.security.tls.transport", "PROTOCOL_ID"): "/tls/1.0.0",
    ("libp2p.security.secio.transport", "ID"): "/secio/1.0.0",
    ("libp2p.security.insecure.transport", "PLAINTEXT_PROTOCOL_ID"): "/plaintext/2.0.0",
    ("libp2p.stream_muxer.mplex.mplex", "MPLEX_PROTOCOL_ID"): "/mplex/6.7.0",
}
# Methods read from a stand-in class at import time (`crypto/serialization.py:22-31` builds its
# tables of `from_bytes`): a stand-in for each, loading the class on its first call.
DEFERRED_METHODS = frozenset({("libp2p.crypto.rsa", "RSAPublicKey", "from_bytes"),
                              ("libp2p.crypto.rsa", "RSAPrivateKey", "from_bytes"),
                              ("libp2p.crypto.secp256k1", "Secp256k1PublicKey", "from_bytes"),
                              ("libp2p.crypto.secp256k1", "Secp256k1PrivateKey", "from_bytes")})
INSTANCE_LAZY = frozenset({("multiaddr.resolvers", "DNSResolver")})

_lock = threading.RLock()
_installed: "_Finder | None" = None
_materialized: set[str] = set()


def install() -> bool:
    """Put the finder first on sys.meta_path, once. False (and nothing done) when libp2p is already
    imported, or LIBP2P_IMPORT_ALL is set."""
    global _installed
    with _lock:
        if _installed is not None:
            return True
        if "libp2p" in sys.modules or os.environ.get("LIBP2P_IMPORT_ALL"):
            return False
        _installed = _Finder()
        sys.meta_path.insert(0, _installed)
        return True


def loaded_lazily() -> list[str]:
    """The lazy modules and hollow packages something has made load for real, sorted."""
    with _lock:
        return sorted(_materialized)


def _real(name: str) -> types.ModuleType:
    """The real module `name`, loaded now if it is still lazy."""
    with _lock:
        current = sys.modules.get(name)
        if isinstance(current, _LazyModule):
            _materialized.add(name)
            del sys.modules[name]
            try:
                module = importlib.import_module(name)
            except BaseException:
                sys.modules[name] = current
                raise
            current.__dict__["_real_module"] = module
            return module
        if current is None:
            return importlib.import_module(name)
        return current


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        parent = name.rpartition(".")[0]
        if parent and isinstance(sys.modules.get(parent), _LazyModule):
            _real(parent)  # a submodule of a lazy module: the real package first
            return None
        if name in _materialized:
            return None
        if name in LAZY:
            return importlib.machinery.ModuleSpec(name, _LazyLoader(), is_package=False)
        if name in HOLLOW:
            real = self._real_spec(name, path)
            if real is None:
                return None
            spec = importlib.machinery.ModuleSpec(name, _HollowLoader(real), origin=real.origin, is_package=True)
            spec.submodule_search_locations = real.submodule_search_locations
            return spec
        return None

    def _real_spec(self, name: str, path: Any) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path)
            if spec is not None:
                return spec
        return None


class _LazyLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _LazyModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _LazyModule(types.ModuleType):
    """Stands for a module not loaded yet: its attributes are stand-ins (see the module doc)."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr == "_real_module":
            raise AttributeError(attr)
        real = self.__dict__.get("_real_module")
        if real is not None:
            return getattr(real, attr)
        key = (self.__name__, attr)
        if key in VALUES:
            return VALUES[key]
        stand_in = _stand_in(self.__name__, attr, key in INSTANCE_LAZY)
        setattr(self, attr, stand_in)
        return stand_in


class _HollowLoader(importlib.abc.Loader):
    def __init__(self, real: importlib.machinery.ModuleSpec) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        real_loader = self.real.loader

        def fill(attr: str) -> Any:
            # Any name the package's own __init__ defines: run that __init__ now, into this module.
            if attr.startswith("__"):
                raise AttributeError(attr)
            with _lock:
                if module.__dict__.get("__getattr__") is fill:
                    del module.__dict__["__getattr__"]
                    _materialized.add(module.__name__)
                    real_loader.exec_module(module)
            return module.__dict__[attr] if attr in module.__dict__ else getattr(module, attr)

        module.__dict__["__getattr__"] = fill


class _StandInMeta(type):
    """The type of a stand-in: calls, attribute reads and type checks go to the real object."""

    def _target(cls) -> Any:
        target = cls.__dict__.get("_resolved")
        if target is None:
            target = getattr(_real(cls._module_name), cls._attr)
            type.__setattr__(cls, "_resolved", target)
        return target

    def _loaded(cls) -> bool:
        current = sys.modules.get(cls._module_name)
        return current is not None and not isinstance(current, _LazyModule) or "_resolved" in cls.__dict__

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls._instance_lazy and not cls._loaded():
            return _LazyInstance(cls, args, kwargs)
        return cls._target()(*args, **kwargs)

    def __getattr__(cls, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_resolved", "_module_name", "_attr", "_instance_lazy"):
            raise AttributeError(attr)
        if (cls._module_name, cls._attr, attr) in DEFERRED_METHODS and not cls._loaded():
            def deferred(*args: Any, **kwargs: Any) -> Any:
                return getattr(cls._target(), attr)(*args, **kwargs)

            deferred.__qualname__ = f"{cls._attr}.{attr}"
            return deferred
        return getattr(cls._target(), attr)

    def __instancecheck__(cls, obj: Any) -> bool:
        if isinstance(obj, _LazyInstance) and obj._stand_in is cls:
            return True
        return cls._loaded() and isinstance(obj, cls._target())

    def __subclasscheck__(cls, sub: type) -> bool:
        return sub is cls or (cls._loaded() and issubclass(sub, cls._target()))

    def __repr__(cls) -> str:
        return f"<lazy {cls._module_name}.{cls._attr}>"


def _stand_in(module_name: str, attr: str, instance_lazy: bool) -> type:
    return _StandInMeta(attr, (), {"_module_name": module_name, "_attr": attr, "_instance_lazy": instance_lazy,
                                   "__module__": module_name, "__qualname__": attr})


class _LazyInstance:
    """An instance of a class of INSTANCE_LAZY, made for real on its first attribute read."""

    def __init__(self, stand_in: type, args: tuple, kwargs: dict) -> None:
        object.__setattr__(self, "_stand_in", stand_in)
        object.__setattr__(self, "_made", (args, kwargs))
        object.__setattr__(self, "_obj", None)

    def _get(self) -> Any:
        obj = object.__getattribute__(self, "_obj")
        if obj is None:
            args, kwargs = object.__getattribute__(self, "_made")
            obj = object.__getattribute__(self, "_stand_in")._target()(*args, **kwargs)
            object.__setattr__(self, "_obj", obj)
        return obj

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._get(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._get(), attr, value)
