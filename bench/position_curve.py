"""The position curve from 1 % randomised traffic on the simulator, against its planted truth.

    python bench/position_curve.py [--explore-rate 0.01] [--requests-per-day 20000] [--days 14] [--seeds 3]

For each seed, simulates a world whose logging policy randomises a share of the requests
(``explore_rate``: a uniformly random slate, flagged ``policy = "randomised"`` with its exact
propensity), then estimates the examination curve relative to slot 1 with
``ope.position_curve`` — from the randomised requests alone (``randomised``) and by EM over every
impression (``em``) — and prints the max abs error against the planted curve
(``examination(p) = p^-0.7``), the CI coverage, and the log's size. The error of the randomised
estimate shrinks as 1 / sqrt(randomised requests): the printed size is what the 0.03 bar needs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--explore-rate", type=float, default=0.01)
    ap.add_argument("--requests-per-day", type=int, default=20_000)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=100)
    ap.add_argument("--no-em", action="store_true", help="skip the EM estimate (slow on big logs)")
    ap.add_argument("--plot", help="PNG of the first seed's estimates against the truth")
    args = ap.parse_args(argv)
    from ope.position_curve import impressions_with_clicks, plot, position_curve
    from store.sources.simulator import SimConfig, examination, simulate
    truth = examination(np.arange(1, 11)) / examination(1)
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        data = simulate(SimConfig(seed=seed, explore_rate=args.explore_rate, requests_per_day=args.requests_per_day,
                                  days=args.days))
        imps = impressions_with_clicks(data.events)
        del data
        n_rnd = int(imps.loc[imps["policy"] == "randomised", "request_id"].nunique())
        t_sim = time.perf_counter() - t0
        for method in (("randomised",) if args.no_em else ("randomised", "em")):
            t1 = time.perf_counter()
            _, rows = position_curve(imps, method=method, n_boot=args.bootstrap if method == "randomised" else 0)
            est = np.array([r["examination"] for r in rows])
            err = np.abs(est - truth[:len(est)])
            cover = [r["ci_low"] is not None and r["ci_low"] <= t <= r["ci_high"] for r, t in zip(rows[1:], truth[1:])]
            print(json.dumps({"seed": seed, "method": method, "explore_rate": args.explore_rate,
                              "impressions": len(imps), "randomised_requests": n_rnd,
                              "max_abs_error": round(float(err.max()), 4), "bar": 0.03, "met": bool(err.max() <= 0.03),
                              "ci_covers": f"{sum(cover)}/{len(cover)}" if method == "randomised" else None,
                              "curve": [round(float(x), 3) for x in est], "simulate_s": round(t_sim, 1),
                              "estimate_s": round(time.perf_counter() - t1, 1)}), flush=True)
            if args.plot and seed == 0 and method == "randomised":
                plot(method, rows, args.plot, truth=truth)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
