"""The Redis online store variant (STREAMRANK_FEAST_ONLINE=redis://...): materialize, push, read.

Needs a redis-server on 127.0.0.1:6379 (STREAMRANK_TEST_REDIS overrides); skipped when none is
reachable, except under CI=true where it must run (.ci/run starts one).
"""
import pandas as pd
import pytest

from feature_repo_testdata import T0, catalog, random_events, redis_base_url
from store.settings import Settings


def test_redis_connection_string():
    from feature_repo.store import redis_connection_string
    assert redis_connection_string("redis://127.0.0.1:6379/3") == "127.0.0.1:6379,db=3"
    assert redis_connection_string("redis://h:6380") == "h:6380,db=0"
    assert redis_connection_string("rediss://:s%40cret@h:6390/1") == "h:6390,db=1,password=s@cret,ssl=true"
    with pytest.raises(ValueError):
        redis_connection_string("http://h:1/0")


def test_redis_online_store_materialize_push_read(tmp_path):
    base = redis_base_url()
    import redis
    db = 15                     # tests/workers uses 5-14
    client = redis.Redis.from_url(f"{base}/{db}")
    client.flushdb()
    try:
        from feature_repo.online import OnlineFeatures
        from feature_repo.realtime import push_realtime
        from feature_repo.parquet import materialize, write_statistics
        from feature_repo.statistics import compute_statistics
        from feature_repo.store import get_store
        settings = Settings(home=tmp_path, feast_online=f"{base}/{db}").ensure_dirs()
        assert "type: redis" in (get_store(settings) and (settings.feast_repo / "feature_store.yaml").read_text())
        ev = random_events(seed=4, n=800, n_users=10, n_streams=5, span_s=3 * 86_400)
        streams, items = catalog()
        end = (pd.Timestamp(T0) + pd.Timedelta(days=3)).to_pydatetime()
        frames = compute_statistics(ev, streams, bucket_s=3600, end=end, items=items)
        write_statistics(settings, frames)
        materialize(settings, frames, end)
        assert client.dbsize() > 0                       # rows live in Redis, not in a SQLite file
        assert not (settings.feast_repo / "online.db").exists()
        store = get_store(settings)
        got = store.get_online_features(features=["stream_stats:s_clicks_7d", "user_recent:recent_streams"],
                                        entity_rows=[{"stream_id": s, "user_id": s} for s in range(1, 6)]).to_dict()
        ss = frames["stream_stats"]
        for i, sid in enumerate(range(1, 6)):
            last = ss[(ss.stream_id == sid) & (ss.event_timestamp <= pd.Timestamp(end))].iloc[-1]
            assert got["s_clicks_7d"][i] == last["s_clicks_7d"]
        ur = frames["user_recent"]
        assert list(got["recent_streams"][0]) == list(ur[ur.user_id == 1].iloc[-1]["recent_streams"])

        at = pd.Timestamp(end) + pd.Timedelta(minutes=1)
        clicks = pd.DataFrame({"event_id": ["r1", "r2", "r3"], "user_id": [1, 2, 2],
                               "ts": pd.Series([at - pd.Timedelta(seconds=5)] * 3).astype("datetime64[us, UTC]"),
                               "type": ["click", "click", "item_click"], "stream_id": [4, 4, 4],
                               "item_id": [None, None, 107], "request_id": [None] * 3, "position": [None] * 3,
                               "page": [None] * 3, "value": [None] * 3})
        assert push_realtime(settings, clicks, at.to_pydatetime(), stream_ids=[4], user_ids=[1, 2]) == 3
        snap = OnlineFeatures(settings).stream_rows([4, 5])
        assert snap.loc[0, "clicks_5m"] == 2 and snap.loc[0, "viewers_5m"] == 2
        assert snap.loc[0, "rt_items"] == [107]                          # pushed list, read back from Redis
        user = OnlineFeatures(settings).user_rows(2, [4, 5], [streams.category[3], streams.category[4]])
        assert list(user.loc[0, "recent_streams"]) == [4]
        assert user.loc[0, "recent_items"][0] == 107
    finally:
        client.flushdb()
