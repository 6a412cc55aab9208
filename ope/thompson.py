"""Bernoulli Thompson sampling over slates: the policy, and its slate distribution by Monte Carlo.

Each action a has a Beta(α_a + clicks_a, β_a + shows_a − clicks_a) posterior of its click rate.
A slate of ``len_list`` positions is drawn by sampling θ_a from every posterior and showing the
actions by decreasing θ (the highest at position 0). The probability of action a at position p,

    π(a, p) = P(a has the (p+1)-th largest θ),

has no closed form; :func:`slate_distribution` estimates it from ``n_sim`` draws (its standard
error is ≤ 0.5 / sqrt(n_sim)). Draws come from ``numpy.random.RandomState(seed).beta`` in row
order (``n_sim`` × n_actions), the stream obp's ``BernoulliTS.compute_batch_action_dist`` uses
one slate at a time, so the same seed gives the same distribution.

The Open Bandit Dataset's Bernoulli-TS log was written by ZOZOTOWN's policy with a per-item Beta
prior per campaign; :func:`zozotown_prior` returns it (``ope/zozotown_prior_bts.json``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np

PRIOR_FILE = Path(__file__).with_name("zozotown_prior_bts.json")


def slate_distribution(alpha: np.ndarray, beta: np.ndarray, len_list: int, *, n_sim: int = 100_000,
                       seed: int = 12345, chunk: int = 10_000) -> np.ndarray:
    """``[n_actions, len_list]``: the share of ``n_sim`` Thompson draws that put each action at each
    position (each column sums to 1)."""
    alpha = np.asarray(alpha, dtype=float)
    beta = np.asarray(beta, dtype=float)
    n_actions = len(alpha)
    if len(beta) != n_actions:
        raise ValueError(f"alpha has {n_actions} actions, beta {len(beta)}")
    if not 1 <= len_list <= n_actions:
        raise ValueError(f"len_list must be in 1..{n_actions}, got {len_list}")
    if (alpha <= 0).any() or (beta <= 0).any():
        raise ValueError("Beta parameters must be > 0")
    rng = np.random.RandomState(seed)
    counts = np.zeros((n_actions, len_list))
    for start in range(0, n_sim, chunk):
        m = min(chunk, n_sim - start)
        theta = rng.beta(alpha, beta, size=(m, n_actions))              # [m, A], row by row
        top = np.argsort(theta, axis=1)[:, ::-1][:, :len_list]           # [m, L]: best first
        for p in range(len_list):
            counts[:, p] += np.bincount(top[:, p], minlength=n_actions)
    return counts / n_sim


def sample_slate(rng: np.random.Generator, alpha: np.ndarray, beta: np.ndarray, len_list: int) -> np.ndarray:
    """One Thompson slate: action ids, best first."""
    theta = rng.beta(alpha, beta)
    return np.argsort(-theta)[:len_list]


def zozotown_prior(campaign: str, path: Optional[Union[str, Path]] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, beta)`` per item of ZOZOTOWN's Bernoulli-TS prior for ``campaign`` (all, men,
    women), or of ``path`` (a JSON ``{campaign: {"alpha": [...], "beta": [...]}}``, or the YAML of
    obp's ``policy/conf/prior_bts.yaml``)."""
    path = Path(path) if path else PRIOR_FILE
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        table = yaml.safe_load(text)
    else:
        table = json.loads(text)
    table = table.get("campaigns", table)
    if campaign not in table:
        raise ValueError(f"no Bernoulli-TS prior for campaign {campaign!r} in {path} "
                         f"(have: {', '.join(sorted(k for k in table if not k.startswith('_')))})")
    entry = table[campaign]
    return np.asarray(entry["alpha"], dtype=float), np.asarray(entry["beta"], dtype=float)


__all__ = ["slate_distribution", "sample_slate", "zozotown_prior", "PRIOR_FILE"]
