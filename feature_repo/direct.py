"""A direct reader of Feast's online store (SQLite and Redis): the same rows and values as
``FeatureStore.get_online_features(...).to_dict()``, without Feast's per-value Python machinery.

Feast stays the definition (feature_repo.definitions), the writer (materialize, push) and the
training reader; this module only reads what Feast wrote, in Feast 0.67's layout:

- Entity key (``entity_key_serialization_version: 3``, ``feast.infra.key_encoding_utils.
  serialize_entity_key``): uint32 little-endian number of join keys; per join key, sorted by
  name: uint32 type (2 = STRING), uint32 length, the UTF-8 name; per value: uint32 type
  (4 = INT64), uint32 length (8), int64 little-endian.
- SQLite (``feast.infra.online_stores.sqlite``): table ``<project>_<view>``, one row per
  (entity_key, feature_name), ``value`` a serialized ``feast.types.Value``.
- Redis (``feast.infra.online_stores.redis``): one hash per entity key (``<entity key><project>``)
  for every view of that entity; field ``mmh3_32("<view>:<feature>")`` (4 bytes little-endian)
  holds a serialized ``Value``, ``_ts:<view>`` the row's timestamp.

Feast's online read applies no TTL (feast.utils._populate_response_from_feature_data), so none
is applied here. A missing row or feature reads as ``None``, lists as Python lists of int.
tests/feature_repo/test_direct.py checks every feature of every view, present and missing
rows, value for value against ``get_online_features`` on both stores.
"""
from __future__ import annotations

import sqlite3
import struct
import threading
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .definitions import ENTITIES, PROJECT, VIEW_ENTITIES, VIEW_FEATURES

_STRING, _INT64 = 2, 4          # feast.types.Value.ValueType
_FEATURE_VIEW = {n: v for v, feats in VIEW_FEATURES.items() for n, _ in feats}   # names are unique


def _key_header(join_keys: Sequence[str]) -> bytes:
    out = [struct.pack("<I", len(join_keys))]
    for k in join_keys:
        kb = k.encode("utf8")
        out += [struct.pack("<II", _STRING, len(kb)), kb]
    return b"".join(out)


_INT64_VALUE = struct.Struct("<IIq")


def entity_key(join_keys: Sequence[str], values: Sequence[int], *, _headers: dict = {}) -> bytes:
    """Feast's serialized entity key for int64 join keys (``join_keys`` sorted by name)."""
    header = _headers.get(tuple(join_keys))
    if header is None:
        header = _headers.setdefault(tuple(join_keys), _key_header(join_keys))
    return header + b"".join(_INT64_VALUE.pack(_INT64, 8, int(v)) for v in values)


# A serialized ``feast.types.Value`` is a protobuf oneof. The views here use three of its kinds;
# they are decoded by hand (importing feast's generated module imports all of Feast: ~6.5 s at a
# worker's first request). Field numbers (feast/protos/feast/types/Value.proto): int64_val = 4
# (varint), double_val = 5 (fixed64), int64_list_val = 14 (Int64List{repeated int64 val = 1},
# packed). Anything else goes through Feast's own class.
_DOUBLE = struct.Struct("<d")


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _int64(u: int) -> int:
    return u - (1 << 64) if u >= 1 << 63 else u


def _int64_list(buf: bytes) -> list:
    out, i, n = [], 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        if tag == (1 << 3) | 2:                    # packed
            size, i = _varint(buf, i)
            end = i + size
            while i < end:
                u, i = _varint(buf, i)
                out.append(_int64(u))
        elif tag == (1 << 3) | 0:                  # unpacked element
            u, i = _varint(buf, i)
            out.append(_int64(u))
        else:
            raise ValueError("unexpected field in Int64List")
    return out


_SCALARS: dict = {}          # serialized scalar Value -> its Python value (counts and ratios repeat a lot)
_SCALARS_MAX = 200_000


def _python(value_bytes: Optional[bytes]):
    """A serialized feast Value -> the Python value to_dict() gives (None when unset)."""
    if value_bytes is None:
        return None
    hit = _SCALARS.get(value_bytes)
    if hit is not None:
        return hit
    buf = bytes(value_bytes)
    if not buf:
        return None                                # no field set
    v = _decode(buf)
    if isinstance(v, (int, float)) and not (isinstance(v, float) and v != v):    # NaN is not a key
        if len(_SCALARS) >= _SCALARS_MAX:
            _SCALARS.clear()
        _SCALARS[buf] = v
    return v


def _decode(buf: bytes):
    try:
        tag, i = _varint(buf, 0)
        rest_ok = True
        if tag == (4 << 3) | 0:
            v, i = _varint(buf, i)
            v = _int64(v)
        elif tag == (5 << 3) | 1:
            v, i = _DOUBLE.unpack_from(buf, i)[0], i + 8
        elif tag == (14 << 3) | 2:
            size, i = _varint(buf, i)
            v, i = _int64_list(buf[i:i + size]), i + size
        else:
            rest_ok = False
        if rest_ok and i == len(buf):
            return v
    except (IndexError, ValueError, struct.error):
        pass
    return _python_via_feast(buf)


def _python_via_feast(buf: bytes):
    from feast.protos.feast.types.Value_pb2 import Value
    v = Value.FromString(buf)
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    x = getattr(v, kind)
    if kind.endswith("_list_val"):
        return list(x.val)
    return x


def mmh3_field(view: str, feature: str) -> bytes:
    """Feast's Redis hash field of a feature (feast.infra.online_stores.helpers._mmh3)."""
    import mmh3
    return struct.pack("<Q", mmh3.hash(f"{view}:{feature}", signed=False))[:4]


class DirectOnlineReader:
    """``get_online_features(features=refs, entity_rows=rows).to_dict()`` read straight from the
    online store of ``settings`` (thread-safe: a SQLite connection per thread; Redis clients are
    thread-safe)."""

    def __init__(self, settings):
        self.settings = settings
        self.kind = "sqlite" if settings.feast_online == "sqlite" else "redis"
        self._local = threading.local()
        self._redis = None
        self._fields: dict = {}

    # ------------------------------------------------------------------ connections
    def _sqlite(self) -> Optional[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            path = Path(self.settings.feast_repo) / "online.db"
            if not path.exists():                  # nothing materialized or pushed yet: no rows
                return None
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0, check_same_thread=False)
            self._local.conn = conn
        return conn

    def _redis_client(self):
        if self._redis is None:
            import redis
            self._redis = redis.Redis.from_url(self.settings.feast_online, socket_timeout=2.0,
                                               socket_connect_timeout=2.0)
        return self._redis

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def version(self):
        """SQLite: ``PRAGMA data_version`` of this thread's connection, which changes when any other
        connection committed (Feast's materialize or push); None for Redis (no such marker)."""
        if self.kind != "sqlite":
            return None
        conn = self._sqlite()
        if conn is None:
            return None
        return ("sqlite", id(conn), conn.execute("PRAGMA data_version").fetchone()[0])

    # ------------------------------------------------------------------ reads
    def read(self, refs: Sequence[str], entity_rows: Mapping[str, Sequence[int]]) -> dict:
        """Like ``get_online_features(features=refs, entity_rows=...).to_dict()``: the join keys
        of ``entity_rows`` (columnar: join key -> values) and one list per feature."""
        by_view: dict[str, list[str]] = {}
        for ref in refs:
            view, name = ref.split(":", 1)
            by_view.setdefault(view, []).append(name)
        n = len(next(iter(entity_rows.values()))) if entity_rows else 0
        out = {k: [int(x) for x in v] for k, v in entity_rows.items()}
        reads = []
        for view, names in by_view.items():
            keys = sorted(ENTITIES[e] for e in VIEW_ENTITIES[view])
            missing = [k for k in keys if k not in entity_rows]
            if missing:
                raise ValueError(f"view {view} needs join key(s) {missing}")
            cols = [entity_rows[k] for k in keys]
            ekeys = [entity_key(keys, vals) for vals in zip(*cols)] if n else []
            reads.append((view, names, ekeys))
        values = self._read_sqlite(reads) if self.kind == "sqlite" else self._read_redis(reads)
        for (view, names, _), vals in zip(reads, values):
            for name, col in zip(names, vals):
                out[name] = col
        return out

    def _read_sqlite(self, reads) -> list:
        conn = self._sqlite()
        results = []
        for view, names, ekeys in reads:
            found: dict = {}
            uniq = list(dict.fromkeys(ekeys)) if conn is not None else []
            table = f'"{PROJECT}_{view}"'
            for i in range(0, len(uniq), 900):           # below SQLite's 999-parameter floor
                part = uniq[i:i + 900]
                q = (f"SELECT entity_key, feature_name, value FROM {table} WHERE entity_key IN "
                     f"({','.join('?' * len(part))})")
                try:
                    rows = conn.execute(q, part).fetchall()
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):       # nothing materialized or pushed yet
                        rows = []
                    else:
                        raise
                for k, f, v in rows:
                    found[(bytes(k), f)] = v
            results.append([[_python(found.get((k, name))) for k in ekeys] for name in names])
        return results

    def _read_redis(self, reads) -> list:
        r = self._redis_client()
        pipe = r.pipeline(transaction=False)
        project = PROJECT.encode()
        plan = []
        for view, names, ekeys in reads:
            fields = [self._field(view, n) for n in names]
            uniq = list(dict.fromkeys(ekeys))
            for k in uniq:
                pipe.hmget(k + project, fields)
            plan.append((names, ekeys, uniq))
        replies = pipe.execute() if plan and any(u for _, _, u in plan) else []
        results, pos = [], 0
        for names, ekeys, uniq in plan:
            got = {k: replies[pos + i] for i, k in enumerate(uniq)}
            pos += len(uniq)
            results.append([[_python(got[k][j]) for k in ekeys] for j in range(len(names))])
        return results

    def _field(self, view: str, name: str) -> bytes:
        f = self._fields.get((view, name))
        if f is None:
            f = self._fields.setdefault((view, name), mmh3_field(view, name))
        return f


__all__ = ["DirectOnlineReader", "entity_key", "mmh3_field"]
