"""Page re-ranking against a planted page effect: plain order vs greedy vs beam search (W = 3).

    python bench/rerank.py [--seeds 3] [--logged 30000] [--requests 2000] [--plot docs/rerank.png]

For each seed, policy.page_world plants a world (same-category-below ×0.5, paired-category-below
×1.5, ×0.85 per same-category stream above) and logs ``--logged`` pages from its Plackett–Luce
logging policy; policy.slate_model's GRU is trained on them. On ``--requests`` fresh requests
(other users' draws, never in the log) each policy builds a page of 10 and the world gives its
true expected clicks:

* ``plain``      — the ranker's order;
* ``diversity``  — beam W = 3 over the ranker's σ(score)·examination (no slate model), constraints on;
* ``greedy``     — the slate model, W = 1, constraints on;
* ``beam3``      — the slate model, W = 3, constraints on (the product's default);
* ``oracle3``    — beam W = 3 with the planted truth as the slot value (a ceiling, not a policy).

Constraints: at most 3 streams of one category in the top 10, no two of one category adjacent.
Prints one JSON line per seed and policy (mean expected clicks, the paired gain over greedy and
over plain with its standard error, pages that had to relax the constraints, ms per page) and a
table; the plot shows expected clicks by policy and seed.
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
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--logged", type=int, default=30_000)
    ap.add_argument("--requests", type=int, default=2_000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--plot", help="PNG of expected clicks per page by policy and seed")
    args = ap.parse_args(argv)
    from policy.page_world import PageWorld, PageWorldConfig, PlantedValue
    from policy.rerank import RerankConfig, ScoreValue, rerank, violations
    from policy.slate_model import SlateValue, train_slate_model
    k = 10
    table = {}
    for seed in range(args.seeds):
        world = PageWorld(PageWorldConfig(seed=seed, k=k))
        t0 = time.perf_counter()
        logged = world.log(args.logged)
        model, curve = train_slate_model(logged.score, logged.cat, logged.click, epochs=args.epochs, seed=seed)
        train_s = time.perf_counter() - t0
        req = world.requests(args.requests)
        pages = {"plain": (np.argsort(-req.score, axis=1, kind="stable")[:, :k], 0, 0.0)}
        policies = {"diversity": (3, lambda i: ScoreValue()), "greedy": (1, lambda i: SlateValue(model)),
                    "beam3": (3, lambda i: SlateValue(model)), "oracle3": (3, lambda i: PlantedValue(world, req.rel[i]))}
        for name, (width, value) in policies.items():
            cfg = RerankConfig(width=width, top=k)
            out, relaxed, bad = [], 0, 0
            t0 = time.perf_counter()
            for i in range(args.requests):
                r = rerank(req.score[i], req.cat[i], k, cfg, value(i))
                out.append(r.order)
                relaxed += r.relaxed
                bad += bool(violations(req.cat[i][r.order], cfg))
            ms = (time.perf_counter() - t0) * 1000 / args.requests
            pages[name] = (np.array(out), relaxed, ms, bad)
        value = {n: world.expected_clicks(req, p[0]) for n, p in pages.items()}
        for name, clicks in value.items():
            line = {"seed": seed, "policy": name, "expected_clicks": round(float(clicks.mean()), 4)}
            for ref in ("greedy", "plain"):
                if name != ref:
                    d = clicks - value[ref]
                    line[f"gain_vs_{ref}"] = round(float(d.mean()), 4)
                    line[f"se_vs_{ref}"] = round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)
            if name != "plain":
                line.update(relaxed_pages=pages[name][1], violating_pages=pages[name][3],
                            ms_per_page=round(pages[name][2], 2))
            else:
                line["train_s"] = round(train_s, 1)
                line["slate_valid_logloss"] = round(curve["valid"][-1], 4) if curve["valid"] else None
            print(json.dumps(line), flush=True)
            table.setdefault(name, []).append(float(clicks.mean()))
    names = list(table)
    print(f"\ntrue expected clicks per page of 10 ({args.requests} requests per seed, slate model on "
          f"{args.logged} logged pages)")
    print(f"{'policy':<10} " + " ".join(f"{'seed ' + str(s):>9}" for s in range(args.seeds)) + f" {'mean':>9}")
    for n in names:
        print(f"{n:<10} " + " ".join(f"{v:>9.4f}" for v in table[n]) + f" {np.mean(table[n]):>9.4f}")
    wins_g = sum(b > g for b, g in zip(table["beam3"], table["greedy"]))
    wins_p = sum(b > p for b, p in zip(table["beam3"], table["plain"]))
    print(f"beam3 > greedy in {wins_g}/{args.seeds} seeds, beam3 > plain in {wins_p}/{args.seeds} seeds")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.4))
        x = np.arange(len(names))
        for s in range(args.seeds):
            ax.plot(x, [table[n][s] for n in names], "o-", alpha=0.8, label=f"seed {s}")
        ax.set_xticks(x, names)
        ax.set_ylabel("true expected clicks / page")
        ax.set_title("re-ranking on the planted page effect")
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
