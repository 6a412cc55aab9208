"""A logged bandit feedback table, as the estimators read it, and the Open Bandit Dataset reader.

A :class:`BanditLog` is one row per (request, slot): the context the policy saw, the action
(item) it showed at that slot, the slot's position (0 = top), the reward (a click) and the
propensity: the logging policy's probability of that action at that position given the context.

OBD (Saito et al., "Open Bandit Dataset and Pipeline", NeurIPS 2021 datasets track) ships one
folder per policy and campaign, ``<policy>/<campaign>/<campaign>.csv`` (or ``all.csv``) with
``timestamp, item_id, position (1..3), click, propensity_score, user_feature_0..3,
user-item_affinity_0..{n_items-1}`` and ``item_context.csv``. :func:`read_obd` reads it the way
obp's ``OpenBanditDataset`` does (rows sorted by timestamp; context = the user features one-hot,
first level dropped; positions dense-ranked from 0), so estimates are comparable with obp's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd


@dataclass
class BanditLog:
    """Logged feedback, ``n`` rows. Arrays: ``context`` [n, d] float, ``action`` [n] int in
    [0, n_actions), ``position`` [n] int in [0, len_list), ``reward`` [n] float, ``pscore`` [n] in
    (0, 1]; ``affinity`` [n, n_actions] (optional per-row action features, OBD's user–item
    affinity); ``action_context`` [n_actions, k] (optional item features)."""
    context: np.ndarray
    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    n_actions: int
    len_list: int
    affinity: Optional[np.ndarray] = None
    action_context: Optional[np.ndarray] = None
    name: str = ""

    def __post_init__(self):
        n = len(self.action)
        for field in ("context", "position", "reward", "pscore"):
            if len(getattr(self, field)) != n:
                raise ValueError(f"{field} has {len(getattr(self, field))} rows, action has {n}")
        if n == 0:
            raise ValueError("empty log")
        if self.action.min() < 0 or self.action.max() >= self.n_actions:
            raise ValueError(f"actions must lie in [0, {self.n_actions}), got {self.action.min()}..{self.action.max()}")
        if self.position.min() < 0 or self.position.max() >= self.len_list:
            raise ValueError(f"positions must lie in [0, {self.len_list})")
        bad = ~((self.pscore > 0) & (self.pscore <= 1))
        if bad.any():
            raise ValueError(f"{int(bad.sum())} propensities outside (0, 1] (first at row {int(np.argmax(bad))}): "
                             "a logged slot needs the logging policy's probability of what it showed")

    @property
    def n(self) -> int:
        return len(self.action)


def _csv(folder: Path) -> Path:
    for name in (f"{folder.name}.csv", "all.csv"):
        if (folder / name).exists():
            return folder / name
    found = sorted(folder.glob("*.csv"))
    found = [p for p in found if p.name != "item_context.csv"]
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"{folder}: no {folder.name}.csv (an OBD folder holds <campaign>.csv and item_context.csv)")


def read_obd(folder: Union[str, Path]) -> BanditLog:
    """One OBD policy/campaign folder (e.g. ``.../obd/random/all``) as a :class:`BanditLog`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    data = pd.read_csv(_csv(folder), index_col=0)
    need = {"timestamp", "item_id", "position", "click", "propensity_score"}
    missing = need - set(data.columns)
    if missing:
        raise ValueError(f"{folder}: missing column(s) {sorted(missing)}")
    data = data.sort_values("timestamp")              # as obp: its bootstrap and folds follow this order
    user_cols = [c for c in data.columns if c.startswith("user_feature")]
    context = pd.get_dummies(data[user_cols], drop_first=True).to_numpy(dtype=float) if user_cols \
        else np.ones((len(data), 1))
    items_path = folder / "item_context.csv"
    n_actions = int(data["item_id"].max()) + 1
    action_context = None
    if items_path.exists():
        items = pd.read_csv(items_path, index_col=0).sort_values("item_id")
        n_actions = max(n_actions, int(items["item_id"].max()) + 1)
        cats = items.drop(columns=[c for c in ("item_id", "item_feature_0") if c in items.columns])
        coded = cats.apply(lambda col: pd.factorize(col, sort=True)[0])
        parts = [coded.to_numpy(dtype=float)]
        if "item_feature_0" in items.columns:
            parts.append(items[["item_feature_0"]].to_numpy(dtype=float))
        action_context = np.concatenate(parts, axis=1)
    aff_cols = [f"user-item_affinity_{a}" for a in range(n_actions)]
    affinity = data[aff_cols].to_numpy(dtype=float) if all(c in data.columns for c in aff_cols) else None
    pos_levels = np.sort(data["position"].unique())
    position = np.searchsorted(pos_levels, data["position"].to_numpy())      # dense rank from 0
    return BanditLog(context=context, action=data["item_id"].to_numpy(dtype=np.int64),
                     position=position.astype(np.int64), reward=data["click"].to_numpy(dtype=float),
                     pscore=data["propensity_score"].to_numpy(dtype=float), n_actions=n_actions,
                     len_list=len(pos_levels), affinity=affinity, action_context=action_context,
                     name=f"{folder.parent.name}/{folder.name}")


__all__ = ["BanditLog", "read_obd"]
