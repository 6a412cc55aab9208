"""feature_repo.direct reads Feast's online store (SQLite and Redis) value for value as
get_online_features does: every feature of every view, present and missing rows, lists."""
import math
import pandas as pd
import pytest

from feature_repo_testdata import T0, catalog, random_events, redis_base_url
from feature_repo.definitions import ENTITIES, VIEW_ENTITIES, VIEW_FEATURES
from store.settings import Settings


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def store(request, tmp_path_factory):
    from feature_repo.realtime import push_realtime
    from feature_repo.parquet import materialize, write_statistics
    from feature_repo.statistics import compute_statistics
    from feature_repo.store import apply_definitions
    home = tmp_path_factory.mktemp(request.param)
    client = None
    if request.param == "sqlite":
        settings = Settings(home=home).ensure_dirs()
    else:
        import redis
        base = redis_base_url()
        client = redis.Redis.from_url(f"{base}/4")
        client.flushdb()
        settings = Settings(home=home, feast_online=f"{base}/4").ensure_dirs()
    ev = random_events(seed=11, n=2500, n_users=15, n_streams=8, n_items=30, span_s=5 * 86_400)
    streams, items = catalog(n_streams=8, n_items=30)
    end = (pd.Timestamp(T0) + pd.Timedelta(days=5)).to_pydatetime()
    frames = compute_statistics(ev, streams, bucket_s=3600, end=end, items=items)
    write_statistics(settings, frames)
    apply_definitions(settings)
    materialize(settings, frames, end)
    at = pd.Timestamp(end) + pd.Timedelta(minutes=1)          # and the push views, as serving sees them
    recent = ev[ev.ts >= pd.Timestamp(end) - pd.Timedelta(hours=1)]
    push_realtime(settings, ev, at.to_pydatetime(), stream_ids=sorted(recent.stream_id.dropna().astype(int).unique()),
                  user_ids=sorted(ev.user_id.unique()))
    yield settings, ev
    if client is not None:
        client.flushdb()


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a or []) == list(b or []) if (a is not None and b is not None) else a is b
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("view", list(VIEW_FEATURES))
def test_every_feature_of_every_view_present_and_missing_rows(store, view):
    from feature_repo.direct import DirectOnlineReader
    from feature_repo.store import get_store
    settings, ev = store
    keys = [ENTITIES[e] for e in VIEW_ENTITIES[view]]
    ranges = {"user_id": list(range(0, 17)) + [10**12], "stream_id": list(range(0, 10)) + [2**62],
              "category_id": list(range(-1, 6)), "item_id": list(range(0, 3))}
    import itertools
    combos = list(itertools.product(*[ranges[k] for k in keys]))[:400]
    rows = {k: [c[i] for c in combos] for i, k in enumerate(keys)}
    refs = [f"{view}:{n}" for n, _ in VIEW_FEATURES[view]]
    want = get_store(settings).get_online_features(features=refs, entity_rows=[dict(zip(keys, c)) for c in combos]
                                                   ).to_dict()
    got = DirectOnlineReader(settings).read(refs, rows)
    assert set(got) == set(want)
    present = 0
    for name in want:
        for i, (a, b) in enumerate(zip(want[name], got[name])):
            assert _same(a, b), (view, name, combos[i], a, b)
        present += sum(v is not None for v in want[name])
    assert present > 0                                 # some rows exist ...
    assert any(v is None for v in want[refs[0].split(":")[1]])     # ... and some do not


def test_mixed_views_in_one_read_and_an_empty_read(store):
    from feature_repo.direct import DirectOnlineReader
    from feature_repo.online import USER_ROW_REFS
    from feature_repo.store import get_store
    settings, _ = store
    want = get_store(settings).get_online_features(features=USER_ROW_REFS, entity_rows=[{"user_id": 3}]).to_dict()
    got = DirectOnlineReader(settings).read(USER_ROW_REFS, {"user_id": [3]})
    assert all(_same(want[k][0], got[k][0]) for k in want)
    assert DirectOnlineReader(settings).read(USER_ROW_REFS, {"user_id": []})["recent_items"] == []


def test_entity_key_is_feasts(store):
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feature_repo.direct import entity_key
    for keys, vals in ((["user_id"], [7]), (["stream_id", "user_id"], [2**62, 3]), (["category_id", "user_id"], [-1, 0])):
        proto = EntityKey(join_keys=keys[::-1], entity_values=[Value(int64_val=v) for v in vals[::-1]])
        assert entity_key(keys, vals) == serialize_entity_key(proto, entity_key_serialization_version=3)


def test_online_features_user_rows_are_the_same_through_the_direct_reader(store):
    from feature_repo.online import OnlineFeatures
    settings, ev = store
    cands = list(range(0, 10))
    cats = [c % 4 for c in cands]
    via_feast = OnlineFeatures(settings, direct=False).user_rows(3, cands, cats)
    direct = OnlineFeatures(settings, direct=True).user_rows(3, cands, cats)
    pd.testing.assert_frame_equal(via_feast, direct)
    pd.testing.assert_frame_equal(OnlineFeatures(settings, direct=False).stream_rows(cands),
                                  OnlineFeatures(settings, direct=True).stream_rows(cands))


def test_value_decoder_matches_feasts_for_every_kind_it_decodes():
    from feast.protos.feast.types.Value_pb2 import Int64List, Value

    from feature_repo.direct import _python, _python_via_feast
    cases = [Value(), Value(int64_val=0), Value(int64_val=-5), Value(int64_val=2**63 - 1), Value(int64_val=-2**63),
             Value(double_val=0.0), Value(double_val=-1.5e300), Value(double_val=float("inf")),
             Value(int64_list_val=Int64List(val=[])), Value(int64_list_val=Int64List(val=[1, -2, 2**62, 300])),
             Value(string_val="x"), Value(float_val=0.5), Value(bool_val=True)]
    for v in cases:
        b = v.SerializeToString()
        assert _python(b) == _python_via_feast(b), v
    nan = _python(Value(double_val=float("nan")).SerializeToString())
    assert isinstance(nan, float) and math.isnan(nan)
    assert _python(None) is None
