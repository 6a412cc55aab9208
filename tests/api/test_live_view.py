"""api.snapshot.LiveView: the live set's popularity order, computed once per snapshot state, so a
request's default candidates cost the same with 100 or 100,000 streams live."""
from __future__ import annotations

import numpy as np
import pandas as pd

from api.snapshot import LiveView, SnapshotState


def _frame(clicks: dict) -> pd.DataFrame:
    return pd.DataFrame({"s_clicks_7d": list(clicks.values())}, index=pd.Index(list(clicks), name="stream_id"))


def test_popularity_order_and_cap_keep_the_live_order_on_ties():
    view = LiveView.of((3, 5, 7, 9, 11), _frame({3: 1.0, 5: 9.0, 7: None, 9: 9.0, 11: 4.0, 99: 100.0}))
    assert len(view) == 5 and 99 not in view.members and 7 in view.members
    assert view.most_popular(3) == [5, 9, 11]               # ties (5, 9) in live order; 99 is not live
    assert view.most_popular(10) == [5, 9, 11, 3, 7]         # unknown clicks count as 0
    assert view.capped(3) == [5, 9, 11]                     # the 3 most popular, in the live order
    assert view.capped(2) == [5, 9]
    assert view.capped(5) == [3, 5, 7, 9, 11]               # all live: all, in the live order


def test_a_stream_without_a_row_counts_as_unpopular():
    view = LiveView.of((1, 2), _frame({2: 3.0}))
    assert view.most_popular(2) == [2, 1]
    empty = LiveView.of((), _frame({2: 3.0}))
    assert len(empty) == 0 and empty.capped(5) == [] and empty.most_popular(5) == []


def test_a_state_builds_its_view_once():
    st = SnapshotState(frame=_frame({1: 1.0, 2: 2.0}), categories={1: 0, 2: 0}, live_ids=(1, 2),
                       as_of=pd.Timestamp.now(tz="UTC").to_pydatetime(), read_at=0.0)
    assert st.live is st.live and st.live.most_popular(1) == [2]
    assert isinstance(st.live.ids, np.ndarray)
