"""Off-policy estimators of a target policy's value from a logged slate log, per position.

Notation (one row i per logged slot, as obp's slate-free "position" setting): context x_i,
action a_i shown at position p_i, reward r_i, logging propensity π_b(a_i | x_i, p_i) = pscore_i;
the target policy's distribution π_e(a | x_i, p_i) = ``action_dist[i, a, p_i]`` (each
``action_dist[i, :, p]`` sums to 1); the reward model q̂(x_i, a, p) = ``q_hat[i, a, p]``.
Importance weight w_i = π_e(a_i | x_i, p_i) / π_b(a_i | x_i, p_i). The estimate is the mean of the
per-round rewards ρ_i:

    IPS       ρ_i = w_i r_i                                   (Horvitz–Thompson; unbiased, high variance)
    SNIPS     ρ_i = w_i r_i / mean(w)                          (self-normalised: sum w r / sum w)
    DM        ρ_i = Σ_a π_e(a | x_i, p_i) q̂(x_i, a, p_i)      (as good as q̂)
    DR        ρ_i = DM_i + w_i (r_i − q̂(x_i, a_i, p_i))        (Dudík et al., ICML 2011)
    switch-DR ρ_i = DM_i + 1[w_i ≤ τ] w_i (r_i − q̂(x_i, a_i, p_i))   (Wang et al., ICML 2017; τ = ∞ is DR)

These are the definitions obp 0.5.7 implements (bench/ope.py checks equality to 1e-6 on the same
inputs). The confidence interval is the percentile bootstrap of the mean of ρ (with a
``numpy.random.RandomState(seed)``, resampling rows as obp's
``estimate_confidence_interval_by_bootstrap`` does, so its intervals are reproducible beside obp's).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr")


def _at(action_dist: np.ndarray, position: np.ndarray) -> np.ndarray:
    """π_e(· | x_i, p_i): ``[n, n_actions]``."""
    return action_dist[np.arange(len(position)), :, position]


def importance_weights(action, position, pscore, action_dist) -> np.ndarray:
    return action_dist[np.arange(len(action)), action, position] / pscore


def round_rewards(name: str, *, reward, action, position, pscore, action_dist,
                  q_hat: Optional[np.ndarray] = None, tau: float = np.inf) -> np.ndarray:
    """Per-round rewards ρ of estimator ``name`` (see the module docstring), shape ``[n]``."""
    reward = np.asarray(reward, dtype=float)
    if name in ("ips", "snips", "dr", "switch-dr"):
        w = importance_weights(action, position, pscore, action_dist)
    if name == "ips":
        return reward * w
    if name == "snips":
        return reward * w / w.mean()
    if q_hat is None:
        raise ValueError(f"{name} needs a reward model (q_hat)")
    n = len(action)
    pi = _at(action_dist, position)                                  # [n, A]
    q_at = q_hat[np.arange(n), :, position]                          # [n, A]
    dm = np.average(q_at, weights=pi, axis=1)
    if name == "dm":
        return dm
    q_factual = q_hat[np.arange(n), action, position]
    if name == "dr":
        return dm + w * (reward - q_factual)
    if name == "switch-dr":
        return dm + (w <= tau) * w * (reward - q_factual)
    raise ValueError(f"unknown estimator {name!r} (one of {', '.join(ESTIMATORS)}, switch-dr)")


def bootstrap_ci(samples: np.ndarray, *, alpha: float = 0.05, n_boot: int = 10_000, seed: int = 12345,
                 chunk: int = 200) -> tuple[float, float, float]:
    """``(bootstrap mean, low, high)``: the percentile CI of the mean of ``samples`` at level
    1 − alpha. Row draws are ``RandomState(seed).randint(0, n, n)`` per resample, in order (the
    stream ``RandomState.choice`` uses), taken ``chunk`` resamples at a time."""
    samples = np.asarray(samples, dtype=float)
    n = len(samples)
    if n == 0:
        raise ValueError("no samples")
    rng = np.random.RandomState(seed)
    means = np.empty(n_boot)
    for b in range(0, n_boot, chunk):
        m = min(chunk, n_boot - b)
        means[b:b + m] = samples[rng.randint(0, n, size=(m, n))].mean(axis=1)
    return (float(means.mean()), float(np.percentile(means, 100 * alpha / 2)),
            float(np.percentile(means, 100 * (1 - alpha / 2))))


def estimate(name: str, *, alpha: float = 0.05, n_boot: int = 10_000, seed: int = 12345, **inputs) -> dict:
    """``{"estimator", "estimate", "ci_low", "ci_high"}`` of one estimator."""
    rho = round_rewards(name, **inputs)
    _, lo, hi = bootstrap_ci(rho, alpha=alpha, n_boot=n_boot, seed=seed)
    return {"estimator": name, "estimate": float(rho.mean()), "ci_low": lo, "ci_high": hi}


__all__ = ["ESTIMATORS", "round_rewards", "importance_weights", "bootstrap_ci", "estimate"]
