"""``streamrank evaluate-ope``: a target policy's value estimated from another policy's log.

For the Open Bandit Dataset (``--source obd``): the logged folder (e.g. the uniform-random
policy's ``random/all``) gives the rows; the target is ZOZOTOWN's Bernoulli Thompson sampling, its
slate distribution computed as obp does (the campaign's Beta prior, ``n_sim`` Monte-Carlo
slates, :mod:`ope.thompson`); the target folder's own log (``bts/all``) gives the on-policy value,
its mean click. One row per estimator::

    {"estimator", "estimate", "ci_low", "ci_high", "on_policy", "relative_error", "n", "logged", "target"}

``relative_error`` = |estimate − on_policy| / on_policy; the CI is the 95 % percentile bootstrap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from .data import read_obd
from .estimators import ESTIMATORS, estimate
from .regression import fit_predict
from .thompson import slate_distribution, zozotown_prior


def target_distribution(n_actions: int, len_list: int, campaign: str, *, n_sim: int, seed: int,
                        prior: Optional[str] = None) -> np.ndarray:
    alpha, beta = zozotown_prior(campaign, prior)
    if len(alpha) != n_actions:
        raise ValueError(f"the {campaign!r} prior has {len(alpha)} items, the log {n_actions}")
    return slate_distribution(alpha, beta, len_list, n_sim=n_sim, seed=seed)


def evaluate_ope(logged_dir, target_dir, *, campaign: Optional[str] = None, estimators: Sequence[str] = ESTIMATORS,
                 n_sim: int = 100_000, seed: int = 12345, n_boot: int = 10_000, n_folds: int = 3,
                 prior: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    say = progress or (lambda msg: None)
    logged, target = read_obd(logged_dir), read_obd(target_dir)
    campaign = campaign or Path(target_dir).name
    if (logged.n_actions, logged.len_list) != (target.n_actions, target.len_list):
        raise ValueError(f"the logs differ in shape: {logged.n_actions} items x {logged.len_list} positions vs "
                         f"{target.n_actions} x {target.len_list}")
    say(f"{logged.name}: {logged.n} rows, {logged.n_actions} items, {logged.len_list} positions; "
        f"target {target.name}: {target.n} rows")
    dist = target_distribution(logged.n_actions, logged.len_list, campaign, n_sim=n_sim, seed=seed, prior=prior)
    action_dist = np.broadcast_to(dist, (logged.n, *dist.shape))            # context-free policy
    q_hat = None
    if any(e in ("dm", "dr", "switch-dr") for e in estimators):
        say(f"reward model: logistic, {n_folds}-fold cross-fitted")
        q_hat = fit_predict(logged, n_folds=n_folds, seed=seed)
    on_policy = float(target.reward.mean())
    rows = []
    for name in estimators:
        r = estimate(name, reward=logged.reward, action=logged.action, position=logged.position,
                     pscore=logged.pscore, action_dist=action_dist, q_hat=q_hat, n_boot=n_boot, seed=seed)
        r.update(on_policy=on_policy, relative_error=abs(r["estimate"] - on_policy) / on_policy if on_policy else None,
                 n=logged.n, logged=logged.name, target=target.name)
        rows.append(r)
    return rows


def plot(rows: list[dict], path) -> None:
    """Each estimate with its CI beside the on-policy value."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = np.arange(len(rows))
    est = np.array([r["estimate"] for r in rows])
    err = np.array([[r["estimate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["estimate"] for r in rows]])
    ax.errorbar(x, est, yerr=err, fmt="o", capsize=4, label="estimate (95% bootstrap CI)")
    ax.axhline(rows[0]["on_policy"], color="k", ls="--", lw=1, label="on-policy (target's own log)")
    ax.set_xticks(x, [r["estimator"] for r in rows])
    ax.set_ylabel("policy value (click rate)")
    ax.set_title(f"{rows[0]['target']} from {rows[0]['logged']}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["evaluate_ope", "target_distribution", "plot"]
