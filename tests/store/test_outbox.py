"""store.outbox: a batch's push is recorded in the batch's own transaction, acknowledged by the
push, and re-sent once (across concurrent sweepers) when nobody acknowledged it."""
from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from store import outbox
from store.ingest import IngestError, ingest_events, upsert_catalog


@pytest.fixture
def url(database_url):
    upsert_catalog(database_url, streams=pd.DataFrame({"stream_id": [10, 11], "streamer_id": [1, 1], "category": [3, 4]}))
    return database_url


def ev(i, **kw):
    return {"event_id": f"o{i}", "user_id": 7, "ts": "2026-01-01T12:00:00Z", "type": "click", "stream_id": 10, **kw}


def test_the_outbox_row_is_written_with_the_batch_and_only_with_new_events(url):
    r = ingest_events(url, [ev(1), ev(2)], return_ids=True, outbox=True)
    assert r.inserted == 2 and r.outbox_id is not None
    rows = outbox.pending(url)
    assert [row["id"] for row in rows] == [r.outbox_id] and rows[0]["event_ids"] == ["o1", "o2"]
    again = ingest_events(url, [ev(1), ev(2)], return_ids=True, outbox=True)     # duplicates only
    assert again.inserted == 0 and again.outbox_id is None and len(outbox.pending(url)) == 1
    with pytest.raises(IngestError):                                             # a rejected batch
        ingest_events(url, [ev(3), ev(4, stream_id=999)], outbox=True)
    assert len(outbox.pending(url)) == 1
    assert ingest_events(url, [ev(5)]).outbox_id is None                          # bulk ingest: no push
    outbox.done(url, r.outbox_id)
    outbox.done(url, r.outbox_id)                                                 # twice: no-op
    outbox.done(url, None)
    assert outbox.pending(url) == []


def test_a_stale_row_is_resent_once_by_concurrent_sweepers(url):
    ids = [ingest_events(url, [ev(10 + i)], outbox=True).outbox_id for i in range(4)]
    assert outbox.resend_stale(url, lambda *a: None, older_than_s=60) == []       # fresh: the API's send stands
    time.sleep(0.6)
    sent, lock = [], threading.Lock()

    def send(event_ids, oid):
        with lock:
            sent.append((oid, event_ids))
    # four sweepers at once (well within the age of 0.5 s of each other): every row once
    threads = [threading.Thread(target=outbox.resend_stale, args=(url, send), kwargs={"older_than_s": 0.5})
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(oid for oid, _ in sent) == sorted(ids)                           # each row exactly once
    assert dict(sent)[ids[0]] == ["o10"]
    assert outbox.resend_stale(url, send, older_than_s=30) == []                   # just re-sent: not again yet
    outbox.done(url, ids[0])
    time.sleep(0.05)
    assert sorted(outbox.resend_stale(url, lambda *a: None, older_than_s=0.01)) == sorted(ids[1:])
