"""The Feast objects (entities, sources, feature views, the GBDT feature service) built from the
definitions (feature_repo.definitions) and the model's references (feature_repo.features), and the
fingerprint that tells ``feast apply`` when they changed."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from .definitions import (BATCH_VIEWS, ENTITIES, PROJECT, PUSH_SOURCES, PUSH_VIEWS, RT_ITEMS_N, RT_ITEMS_WINDOW,
                          TIMESTAMP_FIELD, VIEW_ENTITIES, VIEW_FEATURES, source_path, view_ttl_s)
from .features import GBDT_FEATURE_REFS, SEQUENCE_REFS


def fingerprint(data_dir: Path, bucket_s: int) -> str:
    """Changes whenever the definitions (or the source folder) change: apply is skipped otherwise."""
    import hashlib
    import json
    ttls = {v: view_ttl_s(v, bucket_s) for v in VIEW_FEATURES}
    blob = json.dumps([PROJECT, ENTITIES, VIEW_FEATURES, VIEW_ENTITIES, ttls, PUSH_SOURCES,
                       GBDT_FEATURE_REFS, SEQUENCE_REFS, [RT_ITEMS_WINDOW, RT_ITEMS_N], TIMESTAMP_FIELD,
                       str(Path(data_dir).resolve())], sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def build_objects(data_dir: Path, bucket_s: int = 3600) -> list:
    """Entities, sources, feature views and feature services for Parquet files under ``data_dir``,
    written by the statistics job with ``bucket_s`` buckets (settings.stats_bucket_s)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Array, Float64, Int64

    ftypes = {"int64": Int64, "float64": Float64, "int64_list": Array(Int64)}
    entities = {name: Entity(name=name, join_keys=[key], value_type=ValueType.INT64,
                             description=f"{name} ({key}, int64)")
                for name, key in ENTITIES.items()}
    objects: list = list(entities.values())
    views = {}
    for view in BATCH_VIEWS + PUSH_VIEWS:
        batch = FileSource(name=f"{view}_source", path=str(source_path(data_dir, view)),
                           timestamp_field=TIMESTAMP_FIELD)
        source = PushSource(name=PUSH_SOURCES[view], batch_source=batch) if view in PUSH_VIEWS else batch
        ttl = view_ttl_s(view, bucket_s)
        fv = FeatureView(
            name=view,
            entities=[entities[e] for e in VIEW_ENTITIES[view]],
            ttl=timedelta(seconds=ttl),
            schema=[Field(name=n, dtype=ftypes[dt]) for n, dt in VIEW_FEATURES[view]],
            source=source,
            online=True,
        )
        views[view] = fv
        objects.append(fv)
    by_view: dict[str, list[str]] = {}
    for ref in GBDT_FEATURE_REFS:
        v, f = ref.split(":")
        by_view.setdefault(v, []).append(f)
    objects.append(FeatureService(name="gbdt_v1", features=[views[v][fs] for v, fs in by_view.items()],
                                  description="V1 LightGBM point-wise ranker (seed 004)",
                                  tags={"definitions": fingerprint(data_dir, bucket_s),
                                        "stats_bucket_s": str(int(bucket_s))}))
    return objects


__all__ = ["fingerprint", "build_objects"]
