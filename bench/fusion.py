"""Objective fusion on the simulator, judged by TRUE utility: fixed weights vs a learned global
weight vector vs the personalised fusion network (ranking.fusion).

    python bench/fusion.py [--sim-seed 1] [--sim-days 7] [--seeds 0,1,2] [--utility 1,1,1] \
        [--out var/bench/fusion]

Per training seed: the product's V4 ranker (``full``, bench/quality.py's harness:
ranking.versions) is trained once; then, the ranker frozen, on the same fit / early-stopping rows

* ``fixed`` — the product's default weights (ranking.objectives.DEFAULT_FUSION: ctr 1, cvr 0.3, stay 0.2),
* ``global`` — one weight vector for every user, fitted with the fusion network's listwise loss
  on the logged utility (``FusionConfig(personalised=False)``),
* ``personalised`` — the fusion network: the user's ``u_*`` statistics → the weights,
* ``expected`` — a reference, not a fusion the product serves: the ranker's own predictions
  combined as the expected utility, pCTR · (a + b · pCVR + c · predicted stay / 60).

Metrics on the test requests (the last 20 % of the impressions by time), with the world's planted
truth: the true expected utility of an impression if examined,
``g_i = relevance_i · (a + b · P(purchase | click)_i + c · E[stay | click]_i / 60)``
(``--utility a,b,c``: the same weights the fusion trains on, click + purchase + stay minutes), and

* ``utility@10`` — mean over requests of Σ_{k ≤ 10} exam(k) · g_(k), exam(k) = k^-0.7 the planted
  examination (the expected utility of showing the re-ranked request),
* ``utility@10_ratio`` — that over the oracle order's (sorted by g),
* ``ndcg@10_utility`` — NDCG@10 with gain g.

Printed as a table (mean ± std over seeds); every row is saved in ``--out`` as soon as it exists.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranking.versions import THREADS, SimulatorTask, run_ours, seed_inputs, set_graph_cut  # noqa: E402


def utility_at_k(groups, score, gain, k: int = 10):
    """(mean Σ_{slot ≤ k} exam(slot) · gain of the order by score, the same over the oracle order)."""
    from store.sources.simulator import examination
    df = pd.DataFrame({"g": np.asarray(groups), "s": np.asarray(score, float), "r": np.asarray(gain, float)})
    got, best = [], []
    for _, grp in df.groupby("g", sort=False):
        r = grp["r"].to_numpy()
        by_s = r[np.argsort(-grp["s"].to_numpy(), kind="stable")][:k]
        ideal = np.sort(r)[::-1][:k]
        ex = examination(np.arange(1, len(by_s) + 1))
        got.append(float(by_s @ ex))
        best.append(float(ideal @ ex))
    return float(np.mean(got)), float(np.mean(best))


def true_gain(task, frame: pd.DataFrame, utility: dict) -> np.ndarray:
    tr = task.truth.drop_duplicates("event_id").set_index("event_id").loc[frame["event_id"].astype(str)]
    return tr["relevance"].to_numpy(float) * (utility["click"] + utility["purchase"] * tr["p_purchase"].to_numpy(float)
                                              + utility["stay_min"] * tr["mean_stay_s"].to_numpy(float) / 60.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim-seed", type=int, default=1)
    ap.add_argument("--sim-days", type=float, default=7)
    ap.add_argument("--sim-requests-per-day", type=int, default=1500)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--utility", default="1,1,1", help="weights of click, purchase, stay minutes")
    ap.add_argument("--epochs", type=int, default=4, help="the ranker's epochs")
    ap.add_argument("--out", default=str(ROOT / "var" / "bench" / "fusion"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import torch
    from ranking.evaluate import ndcg_at_k
    from ranking.fusion import FusionConfig, fit_for_ranker, ranker_task_matrix
    from ranking.objectives import DEFAULT_FUSION
    torch.set_num_threads(THREADS)
    os.environ.setdefault("STREAMRANK_HOME", tempfile.mkdtemp(prefix="streamrank-fusion-"))
    a, b, c = (float(v) for v in args.utility.split(","))
    utility = {"click": a, "purchase": b, "stay_min": c}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    task = SimulatorTask(Path(tempfile.mkdtemp(prefix="streamrank-fusion-")) / "sim", sim_seed=args.sim_seed,
                         days=args.sim_days, requests_per_day=args.sim_requests_per_day)
    set_graph_cut(task)
    print(f"prepared: fit {len(task.fit):,} / stop {len(task.stop):,} / test {len(task.test):,} rows "
          f"in {time.perf_counter() - t0:.0f}s", flush=True)
    test = task.test
    gain = true_gain(task, test, utility)
    groups = test["request_id"].to_numpy()
    fixed = np.array([DEFAULT_FUSION["default"][t] for t in ("ctr", "cvr", "stay")])
    rows = []

    def record(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out / "results.json").write_text(json.dumps({"results": rows, "args": vars(args)}, indent=1))

    for seed in [int(s) for s in args.seeds.split(",") if s]:
        gbdt, _, emb = seed_inputs(task, seed)
        model, inputs, _, _, _ = run_ours(task, "full", seed, gbdt, emb, args.epochs)
        fit = task.fit[task.fit["ts"] >= task.graph_cut].reset_index(drop=True)     # the ranker's own fit rows
        _, tf = ranker_task_matrix(model, inputs, test)
        # reference: the ranker's own predicted expected utility, E[U] = pCTR · (a + b · pCVR + c · stay / 60)
        p = np.exp(tf)
        scores = {"fixed": tf @ fixed,
                  "expected": p[:, 0] * (a + b * p[:, 1] + c * np.expm1(tf[:, 2]) / 60.0)}
        info = {}
        for name, personalised in (("global", False), ("personalised", True)):
            t1 = time.perf_counter()
            net, hist = fit_for_ranker(model, inputs, fit, task.stop,
                                       FusionConfig(utility=utility, personalised=personalised, seed=seed))
            with torch.no_grad():
                scores[name] = net.score(net.features(test), torch.as_tensor(tf, dtype=torch.float32)).numpy()
            info[name] = {"weights": hist["weights"], "fusion_epochs": len(hist["epochs"]),
                          "stop_loss": [round(hist["initial_stop_loss"], 4), round(hist["best_stop_loss"], 4)],
                          "fusion_seconds": round(time.perf_counter() - t1, 1)}
        for name, s in scores.items():
            u, best = utility_at_k(groups, s, gain)
            record({"model": name, "seed": seed, "utility@10": round(u, 4), "utility@10_ratio": round(u / best, 4),
                    "ndcg@10_utility": round(ndcg_at_k(groups, s, gain), 4), **info.get(name, {})})
    df = pd.DataFrame(rows)
    print("\n| fusion | utility@10 | utility@10 / oracle | NDCG@10 (utility gain) | seeds |")
    print("|---|---|---|---|---|")
    for name, g in df.groupby("model", sort=False):
        cells = [f"{g[m].mean():.4f} ± {g[m].std(ddof=1) if len(g) > 1 else 0:.4f}"
                 for m in ("utility@10", "utility@10_ratio", "ndcg@10_utility")]
        print(f"| {name} | " + " | ".join(cells) + f" | {len(g)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
