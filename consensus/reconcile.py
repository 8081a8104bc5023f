"""Range-based set reconciliation of certificate sets (after Meyer's RBSR, as Negentropy does it):
how a node learns the certificates a peer holds and it lacks, at a cost that grows with the
difference between the two sets, not with their history. Pure: no I/O, no clock.

Items are certificate keys: `key_bytes(created_ms, job_id)`, 8 bytes of big-endian time then the
32-byte job id, so byte order is the ledger's fold order. A range is `[lo, hi)` over keys; `lo`
b"" is the start, `hi` b"" the end. A range's fingerprint is its item count and
`SHA-256(count || sum of SHA-256(item) mod 2^256)[:16]`, computed from prefix sums in O(log n).

One session, pulled by the initiator (the peer is stateless):
- request `["rq", [[lo, hi, count, fp], ...]]`: the initiator's count and fingerprint of each range;
- answer `["ra", [item, ...]]`, one item per range: `[0]` the same fingerprint (done); `[1, [key,
  ...]]` every key the peer holds in the range (it holds at most ID_LIMIT there); `[2, [[hi, count,
  fp], ...]]` the range split at the peer's own items into 2..SPLIT_PARTS consecutive sub-ranges
  (the first starts at lo, the last ends at hi), each with the peer's count and fingerprint. The
  initiator asks again about each sub-range whose fingerprint differs from its own and that the
  peer holds items in; a key list tells it what it lacks (`Session.missing`).
- then `["gq", [job_id, ...]]` asks for up to GET_MAX certificates, answered `["ga", [raw, ...]]`
  with those the peer holds, in the order asked, within GET_ANSWER_MAX bytes (at least one). Each
  certificate is then checked by the node exactly as a gossiped one (consensus.gossip).

Nothing here carries authority: the keys and fingerprints only steer which certificates are
asked for, and every certificate proves itself; so the messages are not signed (the libp2p
connection authenticates the peer). Every decoder is strict: a message over its cap, of the wrong
shape, with keys out of order or outside their range raises RemoteProtocolError (`malformed`,
`oversize`, `noncanonical`). A session is bounded: at most MAX_ROUNDS answers, MAX_RANGES ranges per
request, MAX_MISSING keys pulled; past a bound it ends (`Session.done`, `Session.cut_short`).
Rounds: about log_SPLIT_PARTS(n / ID_LIMIT) + 1 when the sets differ in a few places.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass, field

from .certificate import CheckedCertificate
from .codec import decode_canonical, encode
from .errors import RemoteProtocolError
from .fields import _bytes, _fail, _int, _list
from .gossip import check_gossip
from .messages import MAX_ENVELOPE

KEY_LEN = 40
FP_LEN = 16
ID_LIMIT = 32  # a peer lists its keys in a range when it holds at most this many there
SPLIT_PARTS = 16  # sub-ranges a range is split into otherwise
MAX_RANGES = 32  # ranges in one request
MAX_ROUNDS = 32  # answers one session reads
MAX_MISSING = 4096  # keys one session pulls; the next session finds the rest
GET_MAX = 64  # certificates asked for in one request
GET_ANSWER_MAX = 1_040_000  # bytes of one answer of certificates: under the overlay's 1 MiB cap
CERT_MAX = 1_000_000  # one certificate (consensus.fields CERTIFICATE_CAP)
REQUEST_MAX = 64 + MAX_RANGES * (2 * (KEY_LEN + 2) + 10 + FP_LEN + 2)
ANSWER_MAX = 64 + MAX_RANGES * max(ID_LIMIT * (KEY_LEN + 2) + 8, SPLIT_PARTS * (KEY_LEN + FP_LEN + 16) + 8)
GET_REQUEST_MAX = 64 + GET_MAX * 35

SAME, IDS, SPLIT = 0, 1, 2
_MOD = 1 << 256


def key_bytes(created_ms: int, job_id: bytes) -> bytes:
    """The item of a certificate: its fold-order key as bytes (time, then job id)."""
    return created_ms.to_bytes(8, "big") + job_id


def _item_hash(key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(b"distributeai/rbsr/v1\x00" + key).digest(), "big")


def fingerprint(count: int, total: int) -> bytes:
    return hashlib.sha256(count.to_bytes(8, "big") + total.to_bytes(32, "big")).digest()[:FP_LEN]


@dataclass
class KeySet:
    """A sorted set of keys with prefix sums of their hashes: a range's fingerprint in O(log n).
    `add` is O(1) amortized for a key past the last one (the common case); an earlier one makes
    the prefix sums after it stale, recomputed on the next read."""
    keys: list[bytes] = field(default_factory=list)
    _hashes: list[int] = field(default_factory=list)
    _prefix: list[int] = field(default_factory=lambda: [0])  # _prefix[i]: sum of hashes before i
    _members: set[bytes] = field(default_factory=set)

    @classmethod
    def of(cls, keys) -> "KeySet":
        """A set of many keys at once: one sort instead of an insert each."""
        ordered = sorted(set(keys))
        return cls(ordered, [_item_hash(k) for k in ordered], [0], set(ordered))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: bytes) -> bool:
        return key in self._members

    def add(self, key: bytes) -> bool:
        if key in self._members:
            return False
        self._members.add(key)
        i = bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self._hashes.insert(i, _item_hash(key))
        del self._prefix[i + 1:]  # stale from i on
        return True

    def _prefix_to(self, i: int) -> int:
        while len(self._prefix) <= i:
            j = len(self._prefix) - 1
            self._prefix.append((self._prefix[j] + self._hashes[j]) % _MOD)
        return self._prefix[i]

    def index(self, bound: bytes, end: bool) -> int:
        """Position of a range bound: b"" is 0 as a lower bound, len as an upper one."""
        if bound == b"":
            return len(self.keys) if end else 0
        return bisect_left(self.keys, bound)

    def span(self, lo: bytes, hi: bytes) -> tuple[int, int]:
        a, b = self.index(lo, False), self.index(hi, True)
        return a, max(a, b)

    def fingerprint(self, lo: bytes, hi: bytes) -> tuple[int, bytes]:
        a, b = self.span(lo, hi)
        total = (self._prefix_to(b) - self._prefix_to(a)) % _MOD
        return b - a, fingerprint(b - a, total)


def _in_range(key: bytes, lo: bytes, hi: bytes) -> bool:
    return key >= lo and (hi == b"" or key < hi)


def _bound(v, name: str) -> bytes:
    b = _bytes(v, name, max_len=KEY_LEN)
    if len(b) not in (0, KEY_LEN):
        raise _fail(name, "must be empty or a 40-byte key")
    return b


def _range_ok(lo: bytes, hi: bytes) -> bool:
    return hi == b"" or lo < hi


def _envelope(data: bytes, tag: str, cap: int) -> list:
    value = decode_canonical(data, cap)
    if not isinstance(value, list) or len(value) != 2 or value[0] != tag:
        raise _fail("reconcile message", f"must be [{tag!r}, body]")
    return value[1]


# --- the messages, each with its strict decoder ------------------------------------------------

Range = tuple[bytes, bytes, int, bytes]  # lo, hi, count, fingerprint


def encode_request(ranges: list[Range]) -> bytes:
    return encode(["rq", [list(r) for r in ranges]])


def decode_request(data: bytes) -> list[Range]:
    """Ranges ascending and disjoint, each with lo < hi (hi b"": to the end)."""
    out: list[Range] = []
    for item in _list(_envelope(data, "rq", REQUEST_MAX), "ranges", MAX_RANGES):
        item = _list(item, "range", 4)
        if len(item) != 4:
            raise _fail("range", "must be [lo, hi, count, fingerprint]")
        lo, hi = _bound(item[0], "lo"), _bound(item[1], "hi")
        if not _range_ok(lo, hi) or (out and (out[-1][1] == b"" or lo < out[-1][1])):
            raise _fail("range", "bounds out of order")
        out.append((lo, hi, _int(item[2], "count"), _bytes(item[3], "fingerprint", FP_LEN)))
    if not out:
        raise _fail("ranges", "empty")
    return out


Item = tuple  # (SAME,) | (IDS, [key, ...]) | (SPLIT, [(hi, count, fp), ...])


def encode_answer(items: list[Item]) -> bytes:
    body = []
    for it in items:
        if it[0] == SAME:
            body.append([SAME])
        elif it[0] == IDS:
            body.append([IDS, list(it[1])])
        else:
            body.append([SPLIT, [list(s) for s in it[1]]])
    return encode(["ra", body])


def decode_answer(data: bytes, ranges: list[Range]) -> list[Item]:
    """The answer to `ranges`: one item each; keys ascending inside their range; a split's
    sub-ranges ascending, non-empty, from the range's lo to its hi."""
    body = _list(_envelope(data, "ra", ANSWER_MAX), "items", MAX_RANGES)
    if len(body) != len(ranges):
        raise _fail("items", "must answer every range")
    out: list[Item] = []
    for raw, (lo, hi, _, _) in zip(body, ranges):
        raw = _list(raw, "item", 2)
        if not raw:
            raise _fail("item", "empty")
        mode = _int(raw[0], "mode", 0, 2)
        if mode == SAME:
            if len(raw) != 1:
                raise _fail("item", "same takes nothing")
            out.append((SAME,))
        elif mode == IDS:
            if len(raw) != 2:
                raise _fail("item", "ids take a list")
            keys = [_bytes(k, "key", KEY_LEN) for k in _list(raw[1], "keys", ID_LIMIT)]
            if any(not _in_range(k, lo, hi) for k in keys) or any(a >= b for a, b in zip(keys, keys[1:])):
                raise _fail("keys", "out of order or outside their range")
            out.append((IDS, keys))
        else:
            if len(raw) != 2:
                raise _fail("item", "a split takes a list")
            parts = _list(raw[1], "parts", SPLIT_PARTS)
            if len(parts) < 2:
                raise _fail("parts", "a split has at least two")
            subs, prev = [], lo
            for p in parts:
                p = _list(p, "part", 3)
                if len(p) != 3:
                    raise _fail("part", "must be [hi, count, fingerprint]")
                sub_hi = _bound(p[0], "part hi")
                ended = prev == hi and len(subs) > 0
                inside = sub_hi == hi if sub_hi == b"" else (sub_hi > prev and (hi == b"" or sub_hi <= hi))
                if ended or not inside:
                    raise _fail("part", "bounds out of order")
                subs.append((sub_hi, _int(p[1], "count"), _bytes(p[2], "fingerprint", FP_LEN)))
                prev = sub_hi
            if prev != hi:
                raise _fail("parts", "must end at the range's end")
            out.append((SPLIT, subs))
    return out


def encode_get(job_ids: list[bytes]) -> bytes:
    return encode(["gq", list(job_ids)])


def decode_get(data: bytes) -> list[bytes]:
    ids = [_bytes(j, "job_id", 32) for j in _list(_envelope(data, "gq", GET_REQUEST_MAX), "job_ids", GET_MAX)]
    if not ids or len(set(ids)) != len(ids):
        raise _fail("job_ids", "empty or repeated")
    return ids


def encode_got(raws: list[bytes]) -> bytes:
    return encode(["ga", list(raws)])


def decode_got(data: bytes, asked: int) -> list[bytes]:
    """Certificates' bytes, at most as many as were asked for (each then checked in full)."""
    raws = [_bytes(r, "certificate", max_len=CERT_MAX) for r in _list(_envelope(data, "ga", GET_ANSWER_MAX + 64),
                                                                      "certificates", asked)]
    return raws


def check_pulled(raw: bytes, wanted: dict[bytes, bytes], now_ms: int, pow_difficulty: int) -> CheckedCertificate:
    """A certificate a peer sent when asked for `wanted` (job id -> the key it was listed under),
    checked exactly as a gossiped one (`check_gossip`, its author being the certificate's own
    signer: a pulled certificate is relayed by design), then held to what was asked: a
    certificate nobody asked for, or under another key, is `reconcile_unasked`."""
    value = decode_canonical(raw, MAX_ENVELOPE)
    signer = value[2] if isinstance(value, list) and len(value) == 4 and isinstance(value[2], bytes) else None
    checked = check_gossip(raw, signer, now_ms, pow_difficulty)
    if not isinstance(checked, CheckedCertificate):
        raise RemoteProtocolError("unknown_kind", "reconciliation carries certificates only")
    cert = checked.certificate
    if wanted.get(cert.job_id) != key_bytes(cert.created_ms, cert.job_id):
        raise RemoteProtocolError("reconcile_unasked", "a certificate not asked for, or under another key")
    return checked


# --- the two sides -------------------------------------------------------------------------------

def answer(mine: KeySet, request: bytes) -> bytes:
    """The stateless peer's answer to a request (RemoteProtocolError if it is malformed). Work:
    O(log n) per range plus the keys listed."""
    items: list[Item] = []
    for lo, hi, count, fp in decode_request(request):
        own = mine.fingerprint(lo, hi)
        a, b = mine.span(lo, hi)
        if own == (count, fp):
            items.append((SAME,))
        elif b - a <= ID_LIMIT:
            items.append((IDS, mine.keys[a:b]))
        else:
            cuts = [a + (b - a) * j // SPLIT_PARTS for j in range(1, SPLIT_PARTS)]
            bounds = [mine.keys[c] for c in cuts] + [hi]
            subs, prev = [], lo
            for sub_hi in bounds:
                subs.append((sub_hi, *mine.fingerprint(prev, sub_hi)))
                prev = sub_hi
            items.append((SPLIT, subs))
    return encode_answer(items)


def get_answer(have, job_ids: list[bytes], cap: int = GET_ANSWER_MAX) -> list[bytes]:
    """The certificates' bytes `have(job_id)` returns (None: not held), in the order asked,
    while they fit `cap` (always the first one found)."""
    out, size = [], 0
    for j in job_ids:
        raw = have(j)
        if raw is None:
            continue
        if out and size + len(raw) + 8 > cap:
            break
        out.append(raw)
        size += len(raw) + 8
    return out


@dataclass
class Session:
    """The initiator's side of one session over `mine`: `start()`, then `on_answer(data)` for each
    answer until it returns None; `missing` then holds the keys the peer has and `mine` lacks.
    RemoteProtocolError from `on_answer` ends the session (the peer sent something malformed).
    `cut_short` says a bound (MAX_ROUNDS, MAX_MISSING) ended it before the sets were compared."""
    mine: KeySet
    missing: list[bytes] = field(default_factory=list)
    rounds: int = 0
    cut_short: bool = False
    _pending: list[tuple[bytes, bytes]] = field(default_factory=list)
    _asked: list[Range] = field(default_factory=list)

    def start(self) -> bytes:
        self._pending = [(b"", b"")]
        return self._next()

    def _next(self) -> bytes | None:
        if not self._pending or len(self.missing) >= MAX_MISSING:
            self.cut_short = self.cut_short or bool(self._pending)
            return None
        if self.rounds >= MAX_ROUNDS:
            self.cut_short = True
            return None
        batch, self._pending = self._pending[:MAX_RANGES], self._pending[MAX_RANGES:]
        self._asked = [(lo, hi, *self.mine.fingerprint(lo, hi)) for lo, hi in batch]
        return encode_request(self._asked)

    def on_answer(self, data: bytes) -> bytes | None:
        """The next request, or None when the session is over."""
        self.rounds += 1
        items = decode_answer(data, self._asked)
        for (lo, hi, _, _), item in zip(self._asked, items):
            if item[0] == IDS:
                self.missing.extend(k for k in item[1] if k not in self.mine)
            elif item[0] == SPLIT:
                prev = lo
                for sub_hi, count, fp in item[1]:
                    if count and self.mine.fingerprint(prev, sub_hi) != (count, fp):
                        self._pending.append((prev, sub_hi))
                    prev = sub_hi
        self._pending.sort(key=lambda r: r[0])
        del self.missing[MAX_MISSING:]
        return self._next()
