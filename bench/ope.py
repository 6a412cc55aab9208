"""Our off-policy estimators (ope/) beside obp 0.5.7's on the same Open Bandit Dataset inputs.

    bash bench/peer_env.sh                      # once: .bench-venv with obp 0.5.7 (never a product dependency)
    .bench-venv/bin/python bench/ope.py --obd ../shared/data/obd [--campaign all] [--n-sim 100000] [--bootstrap 10000]

The logged data is the uniform-random policy's log (``random/<campaign>``), the target ZOZOTOWN's
Bernoulli Thompson sampling (``bts/<campaign>``), whose own log gives the on-policy value.

1. inputs: our reader (ope.data.read_obd) against obp's ``OpenBanditDataset`` — action, position,
   reward and propensity of every row (max abs difference);
2. the target's slate distribution: ours (ope.thompson.slate_distribution) against obp's
   ``BernoulliTS(is_zozotown_prior=True).compute_batch_action_dist`` with the same seed;
3. IPS, SNIPS, DM and DR: ours (ope.estimators) and obp's (``OffPolicyEvaluation``) on the same
   arrays, the same slate distribution (obp's) and the same reward model (ours, ope.regression,
   cross-fitted), estimates and 95 % bootstrap CIs side by side; ``equal`` when every
   difference is <= 1e-6.

Prints a table and one JSON line per estimator; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOL = 1e-6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--obd", type=Path, required=True, help="the OBD root: <root>/{random,bts}/<campaign>/")
    ap.add_argument("--campaign", default="all")
    ap.add_argument("--n-sim", type=int, default=100_000)
    ap.add_argument("--bootstrap", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=12345)
    args = ap.parse_args(argv)
    try:
        from obp.dataset import OpenBanditDataset
        from obp.ope import (DirectMethod, DoublyRobust, InverseProbabilityWeighting, OffPolicyEvaluation,
                             SelfNormalizedInverseProbabilityWeighting)
        from obp.policy import BernoulliTS
    except ImportError as exc:
        raise SystemExit(f"obp is not importable ({exc}): run with .bench-venv/bin/python (bash bench/peer_env.sh)")
    import obp

    from ope.data import read_obd
    from ope.estimators import estimate
    from ope.regression import fit_predict
    from ope.thompson import slate_distribution, zozotown_prior

    # 1. the same inputs
    logged = read_obd(args.obd / "random" / args.campaign)
    target = read_obd(args.obd / "bts" / args.campaign)
    ds = OpenBanditDataset(behavior_policy="random", campaign=args.campaign, data_path=args.obd)
    bf = ds.obtain_batch_bandit_feedback()
    diffs = {k: float(np.max(np.abs(np.asarray(getattr(logged, k), float) - np.asarray(bf[k], float))))
             for k in ("action", "position", "reward", "pscore")}
    print(json.dumps({"bench": "inputs", "obp": obp.__version__, "rows": logged.n, "n_actions": logged.n_actions,
                      "len_list": logged.len_list, "max_abs_diff": diffs}), flush=True)

    # 2. the target's slate distribution
    t0 = time.perf_counter()
    alpha, beta = zozotown_prior(args.campaign)
    ours_dist = slate_distribution(alpha, beta, logged.len_list, n_sim=args.n_sim, seed=args.seed)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    bts = BernoulliTS(n_actions=ds.n_actions, len_list=ds.len_list, is_zozotown_prior=True,
                      campaign=args.campaign, random_state=args.seed)
    obp_dist = bts.compute_batch_action_dist(n_rounds=bf["n_rounds"], n_sim=args.n_sim)
    t_obp = time.perf_counter() - t0
    print(json.dumps({"bench": "slate_distribution", "n_sim": args.n_sim,
                      "max_abs_diff": float(np.max(np.abs(ours_dist - obp_dist[0]))),
                      "ours_s": round(t_ours, 2), "obp_s": round(t_obp, 2)}), flush=True)

    # 3. the estimators on the same arrays, distribution and reward model
    q_hat = fit_predict(logged, n_folds=3, seed=args.seed)
    inputs = dict(reward=logged.reward, action=logged.action, position=logged.position, pscore=logged.pscore,
                  action_dist=obp_dist, q_hat=q_hat)
    obp_names = {"ips": "ipw", "snips": "snipw", "dm": "dm", "dr": "dr"}
    ope = OffPolicyEvaluation(bandit_feedback=bf, ope_estimators=[
        InverseProbabilityWeighting(), SelfNormalizedInverseProbabilityWeighting(), DirectMethod(), DoublyRobust()])
    theirs = ope.estimate_policy_values(action_dist=obp_dist, estimated_rewards_by_reg_model=q_hat)
    t0 = time.perf_counter()
    intervals = ope.estimate_intervals(action_dist=obp_dist, estimated_rewards_by_reg_model=q_hat,
                                       n_bootstrap_samples=args.bootstrap, random_state=args.seed)
    t_obp_ci = time.perf_counter() - t0
    on_policy = float(target.reward.mean())
    rows, t_ours_ci = [], 0.0
    for name, key in obp_names.items():
        t0 = time.perf_counter()
        mine = estimate(name, n_boot=args.bootstrap, seed=args.seed, **inputs)
        t_ours_ci += time.perf_counter() - t0
        iv = intervals[key]
        lo = next(v for k, v in iv.items() if "lower" in k)
        hi = next(v for k, v in iv.items() if "upper" in k)
        diff = max(abs(mine["estimate"] - theirs[key]), abs(mine["ci_low"] - lo), abs(mine["ci_high"] - hi))
        rows.append({"estimator": name, "ours": mine["estimate"], "obp": float(theirs[key]),
                     "ours_ci": [mine["ci_low"], mine["ci_high"]], "obp_ci": [float(lo), float(hi)],
                     "max_abs_diff": float(diff), "equal": bool(diff <= TOL), "on_policy": on_policy,
                     "relative_error": abs(mine["estimate"] - on_policy) / on_policy})

    print(f"\nOBD {args.campaign}: Bernoulli TS valued from the random log ({logged.n} rows), on-policy "
          f"{on_policy:.6f}; our estimators vs obp {obp.__version__} on the same inputs")
    print(f"{'estimator':<9} {'ours':>10} {'obp':>10} {'ours 95% CI':>23} {'obp 95% CI':>23} {'|diff|':>9} {'rel.err':>8}")
    for r in rows:
        print(f"{r['estimator']:<9} {r['ours']:>10.6f} {r['obp']:>10.6f} "
              f"[{r['ours_ci'][0]:.6f}, {r['ours_ci'][1]:.6f}] [{r['obp_ci'][0]:.6f}, {r['obp_ci'][1]:.6f}] "
              f"{r['max_abs_diff']:>9.1e} {r['relative_error']:>8.3f}")
    print(f"all within {TOL:g}: {all(r['equal'] for r in rows)}; bootstrap ({args.bootstrap} resamples, 4 estimators): "
          f"ours {t_ours_ci:.1f}s, obp {t_obp_ci:.1f}s\n")
    for r in rows:
        print(json.dumps({"bench": "estimator", **r}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
