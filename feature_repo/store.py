"""The Feast feature store of a :class:`store.settings.Settings`, built programmatically.

Layout of ``settings.feast_repo``::

    feature_store.yaml     written for humans and the ``feast`` CLI (the code does not read it)
    registry.db            Feast SQL registry in SQLite (transactional: a reader never sees a
                           half-written registry while a worker applies or materializes)
    online.db              SQLite online store (default; Redis when feast_online = redis://...)
    data/<view>.parquet    offline sources, read by the DuckDB offline store

The registry cache TTL is 1 s (Feast's default of 600 s makes a long-running API see a new
apply up to 10 minutes late — NOTES.md). Feast is imported inside the functions.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

from .definitions import BATCH_VIEWS, PROJECT, PUSH_VIEWS, arrow_schema, source_path

log = logging.getLogger(__name__)

# How late a process sees another's `feast apply` (Feast's default is 600 s). The API no longer
# reads through Feast; the workers push several times a second, and a 1 s TTL re-parsed the SQL
# registry on almost every push. A push to a view this cache does not know yet refreshes it
# (feature_repo.realtime.push_frames).
REGISTRY_CACHE_TTL_S = 30
_STORES: dict = {}
_LOCK = threading.Lock()


def data_dir(settings) -> Path:
    return Path(settings.feast_repo) / "data"


def redis_connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` -> Feast's ``host:port,db=N[,password=..][,ssl=true]``."""
    u = urlparse(url)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis URL: {url!r}")
    host = u.hostname or "localhost"
    port = u.port or 6379
    db = (u.path or "/").lstrip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"redis URL database must be an integer: {url!r}")
    parts = [f"{host}:{port}", f"db={int(db)}"]
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    if u.username and u.username != "default":
        parts.append(f"username={unquote(u.username)}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def _config_dict(settings) -> dict:
    repo = Path(settings.feast_repo)
    if settings.feast_online == "sqlite":
        online = {"type": "sqlite", "path": str(repo / "online.db")}
    else:
        # skip_dedup: last write wins, as in SQLite. With Feast's default a row whose timestamp is
        # not newer than the stored one is dropped, so re-materializing after a late event (same
        # row timestamps, new values) would leave Redis stale while SQLite is right.
        online = {"type": "redis", "connection_string": redis_connection_string(settings.feast_online),
                  "skip_dedup": True}
    return {
        "project": PROJECT,
        "provider": "local",
        "registry": {"registry_type": "sql", "path": f"sqlite:///{repo / 'registry.db'}",
                     "cache_ttl_seconds": REGISTRY_CACHE_TTL_S},
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
    }


def _write_yaml(path: Path, conf: dict) -> None:
    import yaml  # a Feast dependency
    text = ("# Written by feature_repo.store.get_store; StreamRank builds its FeatureStore from Settings\n"
            + yaml.safe_dump(conf, sort_keys=False))
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def ensure_sources(settings) -> list[Path]:
    """Write an empty, typed Parquet file for every view whose source file is missing."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    created = []
    d = data_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    for view in BATCH_VIEWS + PUSH_VIEWS:
        p = source_path(d, view)
        if not p.exists():
            schema = arrow_schema(view)
            pq.write_table(pa.Table.from_pylist([], schema=schema), p)
            created.append(p)
    return created


def new_store(settings):
    """An uncached ``feast.FeatureStore`` (its own online-store connection) on the same repo and
    registry as :func:`get_store` — for a thread that must not share connections (API snapshot)."""
    from feast import FeatureStore, RepoConfig
    apply_definitions(settings)            # the shared registry holds the definitions
    repo = Path(settings.feast_repo)
    return FeatureStore(repo_path=str(repo), config=RepoConfig(repo_path=repo, **_config_dict(settings)))


def get_store(settings, *, fresh: bool = False):
    """A ``feast.FeatureStore`` for ``settings`` (cached per repo + online store in this process)."""
    repo = Path(settings.feast_repo)
    repo.mkdir(parents=True, exist_ok=True)
    # the folder's inode is part of the key: a repo deleted and re-created in this process (tests)
    # must not reuse a store whose SQLite connections point at the deleted files
    key = (str(repo), repo.stat().st_ino, settings.feast_online)
    with _LOCK:
        if not fresh and key in _STORES:
            return _STORES[key]
        from feast import FeatureStore, RepoConfig
        conf = _config_dict(settings)
        _write_yaml(repo / "feature_store.yaml", conf)
        ensure_sources(settings)
        config = RepoConfig(repo_path=repo, **conf)
        store = FeatureStore(repo_path=str(repo), config=config)
        _STORES[key] = store
        return store


def apply_definitions(settings):
    """Apply the entities, views and services of :mod:`feature_repo.definitions`; idempotent.

    Skipped when the registry already holds these definitions (their fingerprint is a tag of the
    feature service), so the materialization history is kept and nothing is re-written.
    """
    from .objects import build_objects
    store = get_store(settings)
    ensure_sources(settings)
    if not needs_apply(settings, store):
        return store
    store.apply(build_objects(data_dir(settings), settings.stats_bucket_s))
    store.refresh_registry()
    return store


_APPLIED: dict = {}


def applied_store(settings, *, recheck_s: float = 60.0):
    """:func:`apply_definitions` at most once per ``recheck_s`` per process (the check alone reads
    the registry: ~120 ms, too much for every real-time push)."""
    import time
    repo = Path(settings.feast_repo)
    key = (str(repo), settings.feast_online)
    now = time.monotonic()
    with _LOCK:
        hit = _APPLIED.get(key)
    if hit is not None and now - hit[1] < recheck_s and repo.exists() and repo.stat().st_ino == hit[2]:
        return hit[0]
    store = apply_definitions(settings)
    _skip_uncached_precompute(store)
    with _LOCK:
        _APPLIED[key] = (store, now, repo.stat().st_ino)
    return store


def _skip_uncached_precompute(store) -> None:
    """Feast 0.67's ``push`` first lists the feature services from the SQL registry WITHOUT its
    cache (``_precompute_for_push`` -> ``list_feature_services(project)``: ~50 ms a push, most of
    a small push's cost) to find services with ``precompute_online``. None of ours has it: when
    the cached registry says so, that per-push lookup is skipped on this store object."""
    try:
        services = store.registry.list_feature_services(store.project, allow_cache=True)
    except Exception:
        return
    if not any(getattr(svc, "precompute_online", False) for svc in services):
        store._precompute_for_push = lambda feature_view_name, df: None


def needs_apply(settings, store=None) -> bool:
    from .definitions import BATCH_VIEWS, FEATURE_SERVICES, PUSH_VIEWS
    from .objects import fingerprint
    store = store or get_store(settings)
    try:
        tags = store.get_feature_service(FEATURE_SERVICES[0]).tags or {}
        if tags.get("definitions") != fingerprint(data_dir(settings), settings.stats_bucket_s):
            return True
        for view in BATCH_VIEWS + PUSH_VIEWS:
            store.get_feature_view(view)
    except Exception:  # not found (first apply) or unreadable: apply
        return True
    return False


def reset_cache() -> None:
    """Forget the cached stores (tests; after changing a repo on disk)."""
    with _LOCK:
        _STORES.clear()
        _APPLIED.clear()
