import itertools

import numpy as np
import pandas as pd

from tests.graph._worlds import planted_world


def _brute(sp, sn, k):
    """Expected HR@k and 1/rank with ties broken uniformly at random (all orders enumerated)."""
    hr, rr = [], []
    for p, negs in zip(sp, sn):
        tied = int((negs == p).sum())
        above = int((negs > p).sum())
        ranks = [1 + above + sum(1 for x in perm[:perm.index("p")]) for perm in
                 itertools.permutations(["p"] + ["t"] * tied)]
        hr.append(np.mean([r <= k for r in ranks]))
        rr.append(np.mean([1 / r for r in ranks]))
    return np.mean(hr), np.mean(rr)


def test_score_task_metrics_with_ties():
    from graph.evaluate import LinkTask, score_task
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=50).astype(float)            # many ties
    neg = rng.integers(0, 50, size=(12, 5))
    task = LinkTask(users=np.zeros(12, int), pos=rng.integers(0, 50, 12), neg=neg, cut=None, info={})
    out = score_task(task, lambda u, s: scores[s], ks=(1, 3))
    hr3, mrr = _brute(scores[task.pos], scores[neg], 3)
    assert abs(out["hr@3"] - hr3) < 1e-4 and abs(out["mrr"] - mrr) < 1e-4
    # pooled AUC against a direct count
    sp, sn = scores[task.pos], scores[neg].reshape(-1)
    direct = np.mean([(a > b) + 0.5 * (a == b) for a in sp for b in sn])
    assert abs(out["auc"] - direct) < 1e-4


def test_holdout_split_has_only_new_pairs_of_known_users():
    from graph.build import build_graph, to_contiguous
    from graph.evaluate import make_task, time_cut
    ev, cat, _ = planted_world(n_comm=2, users_per=20, streams_per=5, watches=6, seed=1)
    cut = time_cut(ev, 0.25)
    g = build_graph(ev, cat, end=cut)
    task = make_task(ev, g, cut, num_negatives=7)
    train = ev[ev.ts < cut]
    seen = set(zip(to_contiguous(g.id_maps["user"], train.user_id),
                   to_contiguous(g.id_maps["stream"], train.stream_id.astype("int64"))))
    everything = set(zip(to_contiguous(g.id_maps["user"], ev.user_id),
                         to_contiguous(g.id_maps["stream"], ev.stream_id.astype("int64"))))
    assert len(task.users) > 0 and task.neg.shape == (len(task.users), 7)
    assert not any((u, s) in seen for u, s in zip(task.users, task.pos))
    assert set(task.users) <= {u for u, _ in seen}
    assert not any((u, s) in everything for u, row in zip(task.users, task.neg) for s in row)
    assert pd.Timestamp(task.info["cut"]) == cut
