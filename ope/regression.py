"""The reward model q̂(x, a, p) ≈ P(click | context x, action a at position p) of DM and DR.

A logistic regression whose logit is additive in the row's context, the action, the position and
(when the log has it) the row's affinity to that action:

    logit q̂(x_i, a, p) = b + x_i·w_x + u_a + v_p + w_aff · affinity_i[a]

fitted by L-BFGS on the log-loss summed over rows plus ½·l2·‖w‖² (``l2 = 1`` is scikit-learn's
default ``C = 1``). Cross-fitting (as obp's ``RegressionModel.fit_predict``): with ``n_folds``
folds, each row's q̂ comes from the model fitted on the other folds, so DR's correction term is
not fitted on its own residual. Output ``[n, n_actions, len_list]``.
"""
from __future__ import annotations

import numpy as np
import torch

from .data import BanditLog


class RewardModel:
    def __init__(self, log: BanditLog, *, l2: float = 1.0, max_iter: int = 200):
        self.n_actions, self.len_list = log.n_actions, log.len_list
        self.d = log.context.shape[1]
        self.use_affinity = log.affinity is not None
        self.l2 = float(l2)
        self.max_iter = int(max_iter)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dt = torch.float64
        self.b = torch.zeros(1, dtype=dt, requires_grad=True)
        self.w_x = torch.zeros(self.d, dtype=dt, requires_grad=True)
        self.u = torch.zeros(self.n_actions, dtype=dt, requires_grad=True)
        self.v = torch.zeros(self.len_list, dtype=dt, requires_grad=True)
        self.w_aff = torch.zeros(1, dtype=dt, requires_grad=True)

    def _params(self):
        return [self.b, self.w_x, self.u, self.v, self.w_aff]

    def _logit(self, x, a, p, aff_a) -> torch.Tensor:
        out = self.b + x @ self.w_x + self.u[a] + self.v[p]
        if self.use_affinity:
            out = out + self.w_aff * aff_a
        return out

    def fit(self, log: BanditLog, rows: np.ndarray) -> "RewardModel":
        self.reset_parameters()
        x = torch.as_tensor(log.context[rows], dtype=torch.float64)
        a = torch.as_tensor(log.action[rows])
        p = torch.as_tensor(log.position[rows])
        y = torch.as_tensor(log.reward[rows], dtype=torch.float64)
        aff = torch.as_tensor(log.affinity[rows, log.action[rows]], dtype=torch.float64) if self.use_affinity else None
        opt = torch.optim.LBFGS(self._params(), max_iter=self.max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            z = self._logit(x, a, p, aff)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="sum")
            loss = loss + 0.5 * self.l2 * sum((w ** 2).sum() for w in (self.w_x, self.u, self.v, self.w_aff))
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def predict(self, log: BanditLog, rows: np.ndarray) -> np.ndarray:
        """q̂ for every action and position of ``rows``: ``[len(rows), n_actions, len_list]``."""
        x = torch.as_tensor(log.context[rows], dtype=torch.float64)
        z = (self.b + x @ self.w_x)[:, None, None] + self.u[None, :, None] + self.v[None, None, :]
        if self.use_affinity:
            z = z + self.w_aff * torch.as_tensor(log.affinity[rows], dtype=torch.float64)[:, :, None]
        return torch.sigmoid(z).numpy()


def fit_predict(log: BanditLog, *, n_folds: int = 3, seed: int = 12345, l2: float = 1.0) -> np.ndarray:
    """Cross-fitted q̂ ``[n, n_actions, len_list]`` (``n_folds = 1``: one model on every row)."""
    n = log.n
    q = np.empty((n, log.n_actions, log.len_list))
    model = RewardModel(log, l2=l2)
    if n_folds <= 1:
        rows = np.arange(n)
        q[:] = model.fit(log, rows).predict(log, rows)
        return q
    folds = np.array_split(np.random.default_rng(seed).permutation(n), n_folds)
    for k, test in enumerate(folds):
        train = np.concatenate([f for j, f in enumerate(folds) if j != k])
        q[test] = model.fit(log, train).predict(log, test)
    return q


__all__ = ["RewardModel", "fit_predict"]
