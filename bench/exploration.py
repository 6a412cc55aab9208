"""Cold-start exploration: cumulative regret of Thompson sampling vs no exploration vs ε-greedy.

    python bench/exploration.py [--seeds 5] [--requests 20000] [--share 0.1] [--new 5] [--plot docs/exploration_regret.png]

On policy.online_sim's world (60 live streams with a history, ``--new`` new ones after a quarter of
the requests, the first of them far better than any other), each policy serves every request through
policy.page.build_page: ``none`` (the ranked order), ``thompson`` (the product's default:
Beta–Bernoulli posteriors, the exploration share of the page's slots), ``thompson_gate`` (the
same, a slot explored only when the draw beats the candidates' mean click rate) and ``uniform`` (ε-greedy's
choice: the same slots, a uniformly random cold stream). Prints per policy the mean ± std over
seeds of the cumulative regret (vs the best page by the planted click rates), the requests
until the new star is first in the top 3 ranked slots and until every new stream was shown once,
one JSON line per run, and plots the regret curves.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLICIES = ("none", "uniform", "thompson", "thompson_gate")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--new", type=int, default=5, help="streams going live after a quarter of the requests")
    ap.add_argument("--plot", help="PNG of the cumulative regret curves")
    args = ap.parse_args(argv)
    from policy.online_sim import run
    runs = {p: [] for p in POLICIES}
    for seed in range(args.seeds):
        for p in POLICIES:
            t0 = time.perf_counter()
            r = run(p, requests=args.requests, share=args.share, n_new=args.new, seed=seed)
            runs[p].append(r)
            line = {k: v for k, v in r.items() if k != "curve"}
            line["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(line), flush=True)
    print(f"\n{args.requests} requests, {args.new} new streams, exploration share {args.share}, {args.seeds} seeds "
          f"(mean ± std)")
    print(f"{'policy':<10} {'cumulative regret':>22} {'star in top 3 after':>24} {'all new shown after':>20}")
    for p in POLICIES:
        reg = np.array([r["cumulative_regret"] for r in runs[p]])
        star = [r["star_top3_after"] for r in runs[p]]
        got = [s for s in star if s is not None]
        star_txt = (f"{np.mean(got):.0f} ± {np.std(got):.0f}" if got else "never") + \
            (f" ({len(star) - len(got)} never)" if got and len(got) < len(star) else "")
        shown = np.array([max(r["new_first_shown"]) if min(r["new_first_shown"]) >= 0 else np.nan for r in runs[p]])
        print(f"{p:<10} {reg.mean():>13.1f} ± {reg.std():<6.1f} {star_txt:>24} {np.nanmean(shown):>14.0f} ± {np.nanstd(shown):.0f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for p in POLICIES:
            curves = np.stack([r["curve"] for r in runs[p]])
            m, s = curves.mean(0), curves.std(0)
            x = np.arange(len(m))
            ax.plot(x, m, label=p)
            ax.fill_between(x, m - s, m + s, alpha=0.2)
        ax.axvline(int(0.25 * args.requests), color="k", ls=":", lw=1, label="new streams go live")
        ax.set_xlabel("request")
        ax.set_ylabel("cumulative regret (expected clicks)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
