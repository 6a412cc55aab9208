"""Retrieval at scale: the live index and the user tower at N live streams (default 100,000).

    python bench/retrieval.py [--n 100000] [--queries 300] [--threads 2]

Vectors: a two-tower with the product's shapes (d = 64, 20-token user histories) and random
weights over N streams in 1,000 categories — the stream tower's output, so the vectors have the
category structure a trained tower gives them (``--uniform``: i.i.d. unit vectors instead, the
hard case for graph indexes). Prints one JSON line per measurement:

- ``build``: ``LiveIndex.sync`` of all N (seconds, vectors/s);
- ``ann``: recall@100 of the index against exact search over the same vectors, for user vectors
  of random histories; query p50 / p99 (one query, k = 150, one thread);
- ``update``: a sync that ends 1 % of the streams and starts as many new ones (seconds, ids/s);
- ``user_tower``: one user vector from a 20-stream history (p50 / p99, one thread);
- ``retrieve``: user tower + index search + channel merge (p50 / p99) — what api/retrieval.py does
  per request.

``/v1/recommend`` end to end over HTTP with N live streams: bench/retrieval_http.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pct(xs, q):
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2, help="index build threads")
    ap.add_argument("--uniform", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ef", type=int, default=None, help="hnswlib search ef (default: LiveIndex's)")
    args = ap.parse_args(argv)

    import torch

    from retrieval.candidates import merge
    from retrieval.data import gap_bucket
    from retrieval.index import LiveIndex
    from retrieval.model import TwoTowerConfig, build
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    n = args.n
    cfg = TwoTowerConfig(n_streams=n, n_categories=1000, dim=64, seq_len=20, long_len=20, n_stats=2)
    category = np.r_[0, rng.integers(1, 1001, n)]
    model = build(cfg, category=category, stats=rng.normal(size=(n + 1, 2)).astype(np.float32)).eval()
    with torch.no_grad():
        model.stream_tower.cat_emb.weight.mul_(20.0)          # categories dominate, as after training
        vecs = model.all_streams()[1:].numpy().astype(np.float32)
    if args.uniform:
        vecs = rng.normal(size=(n, 64)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1, n + 1, dtype=np.int64)
    print(f"{n} stream vectors ready", file=sys.stderr, flush=True)

    index = LiveIndex(64, threads=args.threads, **({"ef": args.ef} if args.ef else {}))
    t0 = time.perf_counter()
    index.sync((ids, vecs))
    build_s = time.perf_counter() - t0
    print(json.dumps({"bench": "build", "n": n, "seconds": round(build_s, 2), "per_s": round(n / build_s)}), flush=True)

    def user_vec(hist):
        seq = np.zeros((1, 20), np.int64)
        seq[0, 20 - len(hist):] = hist
        gap = np.zeros((1, 20), np.int64)
        gap[0, 20 - len(hist):] = gap_bucket(rng.exponential(3600 * 24, len(hist)))
        with torch.no_grad():
            return model.users(torch.as_tensor(seq), torch.as_tensor(gap), torch.as_tensor(seq))[0].numpy()

    hists = [rng.integers(1, n + 1, rng.integers(1, 21)) for _ in range(args.queries)]
    t_user, users = [], []
    for h in hists:
        t1 = time.perf_counter()
        users.append(user_vec(h))
        t_user.append(time.perf_counter() - t1)
    print(json.dumps({"bench": "user_tower", "p50_ms": pct(t_user, 50), "p99_ms": pct(t_user, 99)}), flush=True)

    recalls, t_q = [], []
    for u in users:
        t1 = time.perf_counter()
        found, _ = index.search(u[0], 150)
        t_q.append(time.perf_counter() - t1)
        exact = ids[np.argpartition(-(vecs @ u[0]), 100)[:100]]
        recalls.append(len(set(found[:100].tolist()) & set(exact.tolist())) / 100)
    print(json.dumps({"bench": "ann", "recall@100": round(float(np.mean(recalls)), 4), "k": 150, "ef": index.ef,
                      "p50_ms": pct(t_q, 50), "p99_ms": pct(t_q, 99)}), flush=True)

    t_r = []
    popular = ids[:200].tolist()
    for h, u in zip(hists, users):
        t1 = time.perf_counter()
        u2 = user_vec(h)
        found, _ = index.search(u2[0], 150)
        merge(repeat=[s for s in h.tolist()][:50], ann=found.tolist(), popular=popular, budget=200)
        t_r.append(time.perf_counter() - t1)
    print(json.dumps({"bench": "retrieve", "p50_ms": pct(t_r, 50), "p99_ms": pct(t_r, 99)}), flush=True)

    churn = n // 100
    keep = ids[churn:]
    new_ids = np.arange(n + 1, n + 1 + churn, dtype=np.int64)
    new_vecs = vecs[:churn][rng.permutation(churn)]
    t0 = time.perf_counter()
    index.sync((np.r_[keep, new_ids], np.r_[vecs[churn:], new_vecs]))
    up_s = time.perf_counter() - t0
    print(json.dumps({"bench": "update", "ended": int(churn), "started": int(churn), "seconds": round(up_s, 2),
                      "ids_per_s": round(2 * churn / up_s)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
