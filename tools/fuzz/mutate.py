"""A deterministic, seeded mutation engine: bytes in, a mutated input out.

Two families of mutations, chosen at random per input (all randomness from one random.Random):
- on bytes: bit flips, "interesting" bytes (MessagePack type markers, 0x00/0xff/0x7f/0x80),
  inserted, deleted, duplicated or overwritten ranges, truncation, splicing two seeds, and now and
  then an input past a size cap;
- on structure: the input is decoded (MessagePack, or JSON for JSON decoders), a random node of the
  tree is replaced by another type, a boundary or huge integer, a longer or shorter string/bytes,
  a deeper nesting, a float or a map (no canonical encoding), or a list gains or loses elements
  (wrong arity); then it is encoded again. A signed envelope `[kind, body, signer, signature]`
  whose signer the corpus knows is re-signed after its body changed, so the input gets past the
  signature check and reaches body validation; envelopes nested in bytes fields (the spec in an
  announcement, awards and reveals in a certificate) are mutated and re-signed inside the outer
  one, which is re-signed too.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import msgpack

from distributeai.consensus.codec import DOMAIN, PUBKEY_LEN, SIG_LEN, Identity, encode

INTERESTING_BYTES = bytes([0x00, 0x01, 0x7f, 0x80, 0xff, 0x90, 0x91, 0x94, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2,
                           0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4,
                           0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0])
BOUNDARY_INTS = (0, 1, -1, 2, 127, 128, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1,
                 2**32, 2**40, 2**53, 2**53 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63))
BOUNDARY_LENGTHS = (0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 4096, 65536)
MAX_NESTING = 40
MAX_TREE_NODES = 20_000  # a mutated tree, shared references expanded (as encoding will): beyond it, start over
JSON_HUGE_INT = 10**400  # past Python's 4300-digit int/str limit once written with more digits


class Mutator:
    """`mutate(seed, pool)`: one mutated input from `seed` (and the other seeds in `pool`, for
    splicing). `signers` maps a public key to the identity that may re-sign envelopes it signed.
    `fmt` is "msgpack", "json" or "bytes" (no structure-aware mutation)."""

    def __init__(self, rng: random.Random, signers: dict[bytes, Identity] | None = None, fmt: str = "msgpack",
                 max_size: int = 1 << 20) -> None:
        self.rng = rng
        self.signers = signers or {}
        self.fmt = fmt
        self.max_size = max_size

    def mutate(self, seed: bytes, pool: list[bytes]) -> bytes:
        data = self._mutate(seed, pool)
        if len(data) > 2 * self.max_size:  # replicated lists grow fast: past the cap is enough
            data = data[:self.max_size + 1 + self.rng.randrange(64)]
        return data

    def _mutate(self, seed: bytes, pool: list[bytes]) -> bytes:
        r = self.rng.random()
        if r < 0.03:
            return seed  # the seeds themselves, now and then: accepted inputs keep the check honest
        if self.fmt != "bytes" and r < 0.6:
            mutated = self.structural(seed)
            if mutated is not None:
                return mutated if self.rng.random() < 0.85 else self.bytewise(mutated, pool, 1)
        return self.bytewise(seed, pool, self.rng.choice((1, 1, 1, 2, 3, 6)))

    # --- bytes ----------------------------------------------------------------------------------

    def bytewise(self, data: bytes, pool: list[bytes], rounds: int) -> bytes:
        buf = bytearray(data)
        for _ in range(rounds):
            buf = self._byte_op(buf, pool)
        return bytes(buf)

    def _byte_op(self, buf: bytearray, pool: list[bytes]) -> bytearray:
        rng = self.rng
        n = len(buf)
        op = rng.randrange(11)
        if op == 0 and n:  # flip 1-8 bits
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting byte
            buf[rng.randrange(n)] = rng.choice(INTERESTING_BYTES)
        elif op == 2:  # insert bytes
            i = rng.randint(0, n)
            buf[i:i] = self._random_bytes(rng.choice((1, 1, 2, 4, 9, 32, 300)))
        elif op == 3 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, max(1, min(64, n - i)))]
        elif op == 4 and n:  # truncate
            del buf[rng.randrange(n):]
        elif op == 5 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            k = rng.randint(0, n)
            buf[k:k] = buf[i:j]
        elif op == 6 and pool:  # splice with another seed
            other = rng.choice(pool)
            buf = buf[:rng.randint(0, n)] + other[rng.randint(0, len(other)):]
        elif op == 7 and n:  # overwrite a range with random bytes
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 16))
            buf[i:j] = self._random_bytes(j - i)
        elif op == 8 and n >= 4:  # a length or count field: set 1, 2 or 4 bytes to a boundary
            i = rng.randrange(n - 3)
            width = rng.choice((1, 2, 4))
            value = rng.choice(BOUNDARY_INTS) % (1 << (8 * width))
            buf[i:i + width] = value.to_bytes(width, "big")
        elif op == 9 and rng.random() < 0.05:  # past the size cap (rarely: it costs memory)
            buf += bytes(max(0, self.max_size + 1 - n))
        elif op == 10:  # empty, or one byte
            buf = bytearray(rng.choice((b"", bytes([rng.randrange(256)]))))
        else:
            if n:
                buf[rng.randrange(n)] = rng.randrange(256)
        return buf

    def _random_bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    # --- structure --------------------------------------------------------------------------------

    def structural(self, data: bytes) -> bytes | None:
        """A structure-aware mutation of `data`, or None if it does not decode."""
        if self.fmt == "json":
            try:
                value = json.loads(data)
            except (ValueError, RecursionError):
                return None
            value = self._mutate_tree(value, json_mode=True)
            try:
                return self._dump_json(value)
            except (ValueError, TypeError, RecursionError):
                return None
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:  # not MessagePack (any of msgpack's error types)
            return None
        return self._pack(self._mutate_msgpack(value, depth=0))

    @staticmethod
    def _too_big(value: Any) -> bool:
        """Whether `value` has more than MAX_TREE_NODES nodes once its shared references are
        expanded. Replicating a list that holds a replicated list grows exponentially, and
        encoding (or re-signing) such a tree would take minutes; the cap is far past every
        decoder's size limit anyway."""
        budget = MAX_TREE_NODES
        stack = [value]
        while stack:
            v = stack.pop()
            budget -= 1
            if budget < 0:
                return True
            if isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, dict):
                stack.extend(v.values())
        return False

    def _dump_json(self, value: Any) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.04:  # a number JSON can write but Python cannot read back as an int
            return json.dumps(value).replace("0", "0" * 5000, 1).encode()
        if r < 0.06:  # nested past the parser's recursion limit
            return b"[" * rng.choice((999, 5000, 100_000)) + json.dumps(value).encode()
        return json.dumps(value, ensure_ascii=rng.random() < 0.5, allow_nan=True).encode()

    def _pack(self, value: Any) -> bytes:
        try:
            return msgpack.packb(value, use_bin_type=True)
        except (OverflowError, ValueError, TypeError, RecursionError):
            return b"\x94"  # not encodable (an integer past 64 bits): a truncated array instead

    def _is_envelope(self, value: Any) -> bool:
        return (isinstance(value, list) and len(value) == 4 and isinstance(value[0], str)
                and isinstance(value[1], list) and isinstance(value[2], bytes) and len(value[2]) == PUBKEY_LEN
                and isinstance(value[3], bytes) and len(value[3]) == SIG_LEN)

    def _mutate_msgpack(self, value: Any, depth: int) -> Any:
        """Mutate a decoded value; envelopes are mutated in their body (or a nested envelope)
        and re-signed when their signer is known."""
        rng = self.rng
        if self._is_envelope(value) and depth < 3:
            kind, body, signer, sig = value
            nested = [i for i, f in enumerate(body) if isinstance(f, bytes) and f[:1] == b"\x94"] + \
                     [(i, j) for i, f in enumerate(body) if isinstance(f, list)
                      for j, g in enumerate(f) if isinstance(g, bytes) and g[:1] == b"\x94"]
            where = rng.random()
            if nested and where < 0.4:  # into a nested envelope, re-signed inside this one
                spot = rng.choice(nested)
                inner = body[spot] if isinstance(spot, int) else body[spot[0]][spot[1]]
                try:
                    inner_value = msgpack.unpackb(inner, raw=False, strict_map_key=False)
                except Exception:
                    inner_value = None
                if inner_value is not None:
                    new = self._pack(self._mutate_msgpack(inner_value, depth + 1))
                    body = list(body)
                    if isinstance(spot, int):
                        body[spot] = new
                    else:
                        body[spot[0]] = list(body[spot[0]])
                        body[spot[0]][spot[1]] = new
            elif where < 0.9:  # the body
                body = self._mutate_tree(body, json_mode=False)
            else:  # the envelope itself: kind, signer, signature, arity
                value = self._mutate_tree(value, json_mode=False)
                return value
            return self._resign(kind, body, signer, sig)
        return self._mutate_tree(value, json_mode=False)

    def _resign(self, kind: str, body: Any, signer: bytes, sig: bytes) -> list:
        who = self.signers.get(signer)
        if who is None or self.rng.random() < 0.1:
            return [kind, body, signer, sig]  # stale signature: reaches bad_signature
        try:
            signature = who.private_key.sign(DOMAIN + encode([kind, body, signer]))
        except (TypeError, ValueError):  # the body has no canonical encoding: keep the old one
            return [kind, body, signer, sig]
        return [kind, body, signer, signature]

    def _mutate_tree(self, value: Any, json_mode: bool) -> Any:
        """Replace one randomly chosen node of `value` (the root included) by a mutation of it."""
        nodes: list[tuple[Any, Any]] = []  # (container, key); (None, None) is the root

        def walk(v: Any, parent: Any, key: Any, depth: int) -> None:
            nodes.append((parent, key))
            if depth > 12 or len(nodes) > 2000:
                return
            if isinstance(v, list):
                for i, item in enumerate(v):
                    walk(item, v, i, depth + 1)
            elif isinstance(v, dict):
                for k, item in v.items():
                    walk(item, v, k, depth + 1)

        walk(value, None, None, 0)
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            parent, key = self.rng.choice(nodes)
            if parent is not None and (key not in parent if isinstance(parent, dict) else key >= len(parent)):
                continue  # gone with an earlier round's change
            if parent is None:
                value = self._mutate_node(value, json_mode)
            elif isinstance(parent, dict) and self.rng.random() < 0.15:
                parent[self._mutate_key(key, json_mode)] = parent.pop(key)
            else:
                parent[key] = self._mutate_node(parent[key], json_mode)
            if self._too_big(value):
                return []  # the tree is changed in place, so start over from nothing: a small wrong shape
        return value

    def _mutate_key(self, key: Any, json_mode: bool) -> Any:
        renamed = f"{key}x" if isinstance(key, str) else "x"
        return self.rng.choice(["", "op", "job_id", "name", "command", "tasks", "image", "wasm_file", renamed,
                                "\x00", "é" * 3])

    def _mutate_node(self, v: Any, json_mode: bool) -> Any:
        rng = self.rng
        op = rng.randrange(10)
        if op == 0:  # another type
            return self._any_value(json_mode)
        if op == 1:  # a boundary or huge integer
            if json_mode and rng.random() < 0.2:
                return rng.choice((JSON_HUGE_INT, -JSON_HUGE_INT, float("nan"), float("inf"), 1e308, -0.0, 0.5))
            return rng.choice(BOUNDARY_INTS) if rng.random() < 0.8 else rng.choice((2**64, -(2**63) - 1, 2**100))
        if op == 2 and isinstance(v, int) and not isinstance(v, bool):  # nudge an integer
            return v + rng.choice((-1, 1, -v, v, 2**32, -(2**32)))
        if op == 3 and isinstance(v, (str, bytes)):  # another length
            return self._resize(v)
        if op == 4 and isinstance(v, list):  # wrong arity
            v = list(v)
            if v and rng.random() < 0.5:
                del v[rng.randrange(len(v))]
            else:
                v.insert(rng.randint(0, len(v)), self._any_value(json_mode) if rng.random() < 0.5 or not v
                         else rng.choice(v))
            return v
        if op == 5:  # deeper
            n = rng.choice((1, 2, 9, MAX_NESTING, 600 if json_mode else MAX_NESTING))
            for _ in range(n):
                v = [v]
            return v
        if op == 6 and isinstance(v, list) and len(v) > 1:  # reorder
            v = list(v)
            i, j = rng.randrange(len(v)), rng.randrange(len(v))
            v[i], v[j] = v[j], v[i]
            return v
        if op == 7:  # no canonical encoding
            return rng.choice((1.5, float("nan"), {"k": v} if json_mode else {b"k": 1}, {}, -0.0))
        if op == 8 and isinstance(v, list):  # many elements
            return v * rng.choice((2, 17, 300))
        if op == 9 and isinstance(v, bool):
            return not v
        return self._any_value(json_mode)

    def _resize(self, v: str | bytes) -> str | bytes:
        rng = self.rng
        n = rng.choice(BOUNDARY_LENGTHS) if rng.random() < 0.7 else max(0, len(v) + rng.choice((-1, 1, -16, 16)))
        if isinstance(v, bytes):
            return (v * (n // max(1, len(v)) + 1))[:n] if v else bytes(n)
        unit = v or rng.choice(("a", "é", "\u2028", "\x00", "€"))
        return (unit * (n // len(unit) + 1))[:n]

    def _any_value(self, json_mode: bool) -> Any:
        rng = self.rng
        pick = rng.randrange(9)
        if pick == 0:
            return None
        if pick == 1:
            return rng.random() < 0.5
        if pick == 2:
            return rng.choice(BOUNDARY_INTS)
        if pick == 3:
            return rng.choice(("", "a", "alpine:latest", "container", "wasm", "verified", "\x00", "é" * 40,
                               "x" * 300, "../../etc/passwd", "12D3KooW", "ab" * 32))
        if pick == 4:
            return [] if rng.random() < 0.5 else [rng.choice((0, "", None))] * rng.randint(1, 5)
        if pick == 5:
            return {} if json_mode else rng.randbytes(rng.choice(BOUNDARY_LENGTHS[:9]))
        if pick == 6:
            return rng.randbytes(32).hex() if json_mode else rng.randbytes(32)
        if pick == 7:
            return 0.0 if rng.random() < 0.5 else math.pi
        return rng.randint(-(2**63), 2**64 - 1)

