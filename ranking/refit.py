"""Biasnet refitted alone after training: the maximum-likelihood position tower for the kept relevance model."""
from __future__ import annotations

import math

import numpy as np

from .batches import predict_batches


def refit_biasnet(model, train: dict, train_labels: dict, rows=None, *, max_iter: int = 200,
                  batch_size: int = 8192) -> dict:
    """Fit the position tower alone, to convergence, against the frozen debiased click logits of
    the kept epoch: minimise the mean click log loss of ``biased_click_logit(a_i, b(k_i, p_i))``
    over the training rows with full-batch L-BFGS, every other parameter fixed.

    Why: during training Biasnet runs at its own large step size (``biasnet_lr``) so that it
    reaches the size of a real position effect within the first epoch; at that step size its
    few parameters keep jittering from batch to batch, and early stopping keeps whatever iterate
    the chosen epoch ended on. Refitting gives the maximum-likelihood tower for the relevance
    model that is actually kept. Returns the log loss before / after and the iterations."""
    import torch
    if rows is not None:
        train = {k: v[rows] for k, v in train.items()}
        train_labels = {k: v[rows] for k, v in train_labels.items()}
    pos = torch.from_numpy(np.ascontiguousarray(train["position"])).long()             # [N]
    if not bool((pos > 0).any()):
        return {"skipped": "no known positions"}
    if not list(model.biasnet.parameters()):
        return {"skipped": "the tower has no parameters"}
    a = torch.from_numpy(predict_batches(model, train, batch_size=batch_size)["ctr_logit"]).float()  # [N]
    page = torch.from_numpy(np.ascontiguousarray(train["page"])).long() if "page" in train else None
    y = torch.from_numpy(np.ascontiguousarray(train_labels["click"])).float()          # [N]
    return fit_biasnet_to_logits(model.biasnet, a, pos, page, y, model.config.bias_form, max_iter=max_iter)


def fit_biasnet_to_logits(tower, ctr_logit, position, page, click, form: str, *, max_iter: int = 200) -> dict:
    """Maximum-likelihood fit of a Biasnet ``tower`` alone: minimise the mean click log loss of
    ``biased_click_logit(ctr_logit, tower(position, page), form)`` with full-batch L-BFGS
    (``ctr_logit``, ``position``, ``page``, ``click``: ``[N]`` tensors; ``page`` may be None).
    Keeps the starting tower when the fit does not lower the loss. Used by :func:`refit_biasnet`
    and, with the simulator's true relevance as ``ctr_logit``, by bench/quality.py to show what
    each form can reach at best. Returns the loss before / after and the iterations."""
    import torch
    import torch.nn.functional as F
    from .model.ranker import biased_click_logit
    params = list(tower.parameters())
    if not params:
        return {"skipped": "the tower has no parameters"}

    def loss_fn():
        return F.binary_cross_entropy_with_logits(biased_click_logit(ctr_logit, tower(position, page), form), click)

    with torch.no_grad():
        before = float(loss_fn())
    state = {k: v.detach().clone() for k, v in tower.state_dict().items()}
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")
    tower.train()

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        after = float(loss_fn())
    if not math.isfinite(after) or after > before:        # never leave a worse tower behind
        tower.load_state_dict(state)
        after = before
    tower.eval()
    return {"loss_before": round(before, 6), "loss_after": round(after, 6),
            "iterations": int(opt.state[opt._params[0]].get("n_iter", 0))}


__all__ = ["refit_biasnet", "fit_biasnet_to_logits"]
