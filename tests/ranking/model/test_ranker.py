"""Ranker: configs, forward / losses / backward, serving parity (Biasnet dropped, candidate cache),
ESMM and stay losses, uncertainty weighting, predict, position curve, a planted training run."""
import json

import pytest
import torch

from ranking.model.biasnet import BiasNet
from ranking.model.ranker import (Ranker, RankerConfig, UncertaintyWeighting, biased_click_logit, position_curve,
                                  position_curve_shown)
from tests.ranking.model.checks import assert_reset_is_deterministic

SIZES = dict(n_users=40, n_streams=25, n_items=60, n_categories=6, n_dense=5)
LENGTHS = dict(core_items=4, rt_items=3, user_items=6, user_streams=5)
M2V, TREES, LEAF_TOKENS = 6, 3, 3 * 7 + 1
SEED = 0


def full_config(**kw) -> RankerConfig:
    base = dict(SIZES, n_leaf_tokens=LEAF_TOKENS, n_trees=TREES, m2v_dim=M2V, d_model=16, use_cross=True,
                time_encoding=True, n_experts=3, expert_dim=16, tower_dim=8, n_positions=12, n_pages=4)
    return RankerConfig(**{**base, **kw})


def minimal_config(**kw) -> RankerConfig:
    base = dict(SIZES, d_model=8, use_transformer=False, use_target_attention=False, use_biasnet=False,
                head="shared_bottom", expert_dim=8, tower_dim=4, tasks=("ctr",))
    return RankerConfig(**{**base, **kw})


def make_batch(B=12, seed=0, pad=0.3) -> dict:
    g = torch.Generator().manual_seed(seed)

    def ids(n, *shape, p=pad):
        x = torch.randint(1, n, shape, generator=g)
        return x * (torch.rand(shape, generator=g) >= p)

    batch = {"user_id": ids(SIZES["n_users"], B, p=0), "stream_id": ids(SIZES["n_streams"], B, p=0),
             "category": ids(SIZES["n_categories"], B, p=0), "dense": torch.randn(B, SIZES["n_dense"], generator=g),
             "leaves": ids(LEAF_TOKENS, B, TREES, p=0.1), "m2v_user": torch.randn(B, M2V, generator=g),
             "m2v_stream": torch.randn(B, M2V, generator=g),
             "user_items_dt": torch.rand(B, LENGTHS["user_items"], generator=g) * 1e5,
             "position": torch.randint(0, 15, (B,), generator=g), "page": torch.randint(0, 4, (B,), generator=g)}
    batch["core_items"] = ids(SIZES["n_items"], B, LENGTHS["core_items"])
    batch["rt_items"] = ids(SIZES["n_items"], B, LENGTHS["rt_items"])
    batch["user_items"] = ids(SIZES["n_items"], B, LENGTHS["user_items"])
    batch["user_streams"] = ids(SIZES["n_streams"], B, LENGTHS["user_streams"])
    batch["user_items"][0] = 0                     # a user without history
    batch["user_streams"][0] = 0
    batch["core_items"][1] = 0                     # a stream without products
    batch["rt_items"][1] = 0
    return batch


def make_labels(B=12, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    click = (torch.rand(B, generator=g) < 0.5).float()
    return {"click": click, "purchase": click * (torch.rand(B, generator=g) < 0.5).float(),
            "stay": click * torch.rand(B, generator=g) * 5}


def _model(config, seed=0) -> Ranker:
    torch.manual_seed(seed)
    return Ranker(config)


# ----------------------------------------------------------------------------- config
def test_config_json_round_trip_and_validation():
    cfg = full_config(tasks=("ctr", "stay"), head="shared_bottom")
    back = RankerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.tasks == ("ctr", "stay")
    with pytest.raises(ValueError):
        RankerConfig.from_dict({**cfg.to_dict(), "typo": 1})
    for bad in (("cvr",), ("cvr", "ctr"), ("ctr", "gmv")):
        with pytest.raises(ValueError):
            full_config(tasks=bad)
    with pytest.raises(ValueError):
        full_config(head="ple")
    with pytest.raises(ValueError):
        full_config(d_model=15, n_heads=2)


# ----------------------------------------------------------------------------- forward / backward
def test_full_config_forward_losses_backward():
    model = _model(full_config()).train()
    batch, labels = make_batch(), make_labels()
    out = model(batch)
    assert set(out) == {"ctr_logit", "cvr_logit", "stay", "bias_logit"}
    assert all(v.shape == (12,) and torch.isfinite(v).all() for v in out.values())
    losses = model.losses(out, labels)
    assert set(losses) == {"ctr", "cvr", "stay"} and all(v.ndim == 0 for v in losses.values())
    weighting = UncertaintyWeighting(model.config.tasks)
    weighting(losses).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # every block is trained from the first step (the monotone Biasnet's slot decrements too)
    for prefix in ("user_emb", "item_emb", "leaf_emb", "m2v_user", "dense_proj", "sequence", "target_attention",
                   "cross", "head", "towers", "biasnet.decrement"):
        grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and sum(grads) > 0, prefix
    assert weighting.log_vars.grad.abs().sum() > 0


def test_bias_logit_only_in_training_or_on_request():
    model = _model(full_config())
    batch = make_batch()
    assert "bias_logit" in model.train()(batch)
    model.eval()
    assert "bias_logit" not in model(batch)
    assert "bias_logit" in model(batch, with_bias=True)
    no_position = {k: v for k, v in batch.items() if k != "position"}
    assert "bias_logit" not in model.train()(no_position)


def test_position_feature_only_in_training_and_the_validation_loss():
    """position_feature: the slot's embedding is an input in training (and with_position), the zero
    row at serving — eval outputs do not depend on the slot and equal those with no position."""
    model = _model(full_config(position_feature=True, use_biasnet=False))
    batch = make_batch()
    moved = dict(batch, position=(batch["position"] % 5) + 1)
    model.train()
    torch.manual_seed(0)
    a = model(batch)["ctr_logit"]
    torch.manual_seed(0)
    b = model(moved)["ctr_logit"]
    assert not torch.allclose(a, b)                                     # training sees the slot
    model.eval()
    ref = model({k: v for k, v in batch.items() if k != "position"})["ctr_logit"]
    assert torch.equal(model(batch)["ctr_logit"], ref) and torch.equal(model(moved)["ctr_logit"], ref)
    assert torch.equal(model(batch, with_bias=True)["ctr_logit"], ref)  # the debiased outputs too
    assert not torch.allclose(model(batch, with_position=True)["ctr_logit"], ref)
    out = model.train()(batch)
    model.losses(out, make_labels())["ctr"].backward()
    assert model.position_emb.weight.grad[1:].abs().sum() > 0 and model.position_emb.weight.grad[0].abs().sum() == 0
    assert model.position_emb.weight[0].abs().sum() == 0               # the "no slot" row stays zero
    assert RankerConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))).position_feature


def test_time_gaps_on_the_target_attention_keys():
    """time_gaps: the keys of DIN carry a log bucket of the time since each recent stream — the
    output moves with the gaps, padding keys stay zero, and without gaps the keys are plain."""
    from ranking.model.ranker import gap_bucket
    assert gap_bucket(torch.tensor([0.0, 59.0, 60.0, 3600.0, 86400.0, 1e9])).tolist() == [1, 1, 2, 6, 11, 16]
    model = _model(full_config(time_gaps=True)).eval()
    batch = make_batch()
    batch["user_streams_dt"] = torch.rand(12, LENGTHS["user_streams"]) * 1e6
    a = model(batch)["ctr_logit"]
    b = model(dict(batch, user_streams_dt=batch["user_streams_dt"] * 0 + 30.0))["ctr_logit"]
    assert not torch.allclose(a, b)
    assert torch.equal(a[:1], b[:1])                    # row 0 has no history: nothing to move
    plain = _model(full_config(time_gaps=False)).eval()
    no_dt = {k: v for k, v in batch.items() if k != "user_streams_dt"}
    assert torch.equal(plain(batch)["ctr_logit"], plain(no_dt)["ctr_logit"])   # the option off: gaps unused
    model.train()
    model.losses(model(batch), make_labels())["ctr"].backward()
    assert model.gap_emb.weight.grad[1:].abs().sum() > 0 and model.gap_emb.weight.grad[0].abs().sum() == 0


def test_bst_user_sequence_forward_and_candidate_cache():
    """user_sequence="bst": BST over the user's streams in DIN's place; the candidate cache gives
    the same outputs; an unknown block name is refused."""
    model = _model(full_config(user_sequence="bst")).eval()
    batch = make_batch()
    ref = model(batch)
    assert all(torch.isfinite(v).all() for v in ref.values())
    cand = model.encode_candidates(batch)
    got = model(batch, cand=cand, cand_index=torch.arange(12))
    torch.testing.assert_close(got["ctr_logit"], ref["ctr_logit"])
    model.train()
    model.losses(model(batch), make_labels())["ctr"].backward()
    assert sum(p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith("target_attention")) > 0
    with pytest.raises(ValueError, match="user_sequence"):
        full_config(user_sequence="gru")


def test_position_towers_train_per_slot_and_serve_slot_one():
    """position_towers=K: in training each row's click logit comes from its slot's tower (unknown
    slot or slot 1: the ctr tower; slots >= K: the last), at serving always from the ctr tower."""
    model = _model(full_config(position_towers=3, use_biasnet=False))
    batch = make_batch()
    batch["position"] = torch.tensor([0, 1, 2, 3, 4, 9, 1, 2, 3, 1, 2, 3])
    model.eval()
    serve = model(batch)["ctr_logit"]
    trained_form = model(batch, with_position=True)["ctr_logit"]
    at_top = batch["position"] <= 1
    torch.testing.assert_close(trained_form[at_top], serve[at_top])
    assert not torch.allclose(trained_form[~at_top], serve[~at_top])
    three = model(dict(batch, position=torch.full((12,), 3)), with_position=True)["ctr_logit"]
    torch.testing.assert_close(trained_form[batch["position"] >= 3], three[batch["position"] >= 3])
    # a row's loss reaches only its slot's tower
    model.train()
    only_slot2 = {k: (v[2:3] if v.dim() else v) for k, v in batch.items()}
    model.losses(model(only_slot2), {k: v[2:3] for k, v in make_labels().items()})["ctr"].backward()
    assert model.slot_towers[0][0].weight.grad.abs().sum() > 0                     # slot 2's tower
    assert model.slot_towers[1][0].weight.grad is None or model.slot_towers[1][0].weight.grad.abs().sum() == 0
    assert model.towers["ctr"][0].weight.grad is None or model.towers["ctr"][0].weight.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="position_towers"):
        full_config(position_towers=1)


def test_minimal_config_forward_losses_backward():
    model = _model(minimal_config()).train()
    batch = {k: make_batch()[k] for k in ("user_id", "stream_id", "category", "dense", "position")}
    out = model(batch)
    assert set(out) == {"ctr_logit"} and out["ctr_logit"].shape == (12,)
    losses = model.losses(out, make_labels())
    assert set(losses) == {"ctr"}
    losses["ctr"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.biasnet is None and model.sequence is None and model.target_attention is None
    assert model.item_emb is None and model.leaf_emb is None and model.m2v_user is None
    assert model.in_dim == 4 * 8                    # user, stream, category, dense


def test_absent_optional_inputs_are_skipped():
    model = _model(full_config()).eval()
    batch = make_batch()
    with torch.no_grad():
        # an absent list is the same as an all-padding one
        no_lists = {k: v for k, v in batch.items() if k not in ("user_streams", "user_items", "user_items_dt")}
        empty = dict(batch, user_streams=torch.zeros_like(batch["user_streams"]),
                     user_items=torch.zeros_like(batch["user_items"]))
        torch.testing.assert_close(model(no_lists)["ctr_logit"], model(empty)["ctr_logit"], atol=1e-6, rtol=0)
        bare = {k: batch[k] for k in ("user_id", "stream_id")}
        out = model(bare)
        assert torch.isfinite(out["ctr_logit"]).all() and out["ctr_logit"].shape == (12,)


def test_padding_rows_do_not_matter():
    model = _model(full_config()).eval()
    batch = make_batch()
    with torch.no_grad():
        out = model(batch)
        for emb in (model.item_emb, model.stream_emb, model.leaf_emb):   # stream_id > 0 in the batch
            emb.weight[0].normal_(0, 10)
        again = model(batch)
    for k in out:
        torch.testing.assert_close(again[k], out[k], atol=1e-6, rtol=0)


def test_reset_parameters_is_deterministic_and_keeps_padding_rows_zero():
    model = _model(full_config())
    assert_reset_is_deterministic(model, seed=11)
    for emb in (model.user_emb, model.stream_emb, model.item_emb, model.category_emb, model.leaf_emb):
        assert torch.equal(emb.weight[0], torch.zeros(16))
    assert "Ranker(d=16" in repr(model)


# ----------------------------------------------------------------------------- serving parity
def test_without_biasnet_parity_and_no_biasnet_parameters():
    model = _model(full_config()).eval()
    with torch.no_grad():
        model.biasnet.decrement.normal_()                        # a non-trivial position tower
    serving = model.without_biasnet()
    assert serving.biasnet is None and serving.config.use_biasnet is False
    assert not [n for n, _ in serving.named_parameters() if "biasnet" in n]
    assert model.biasnet is not None and model.config.use_biasnet      # the original is untouched
    batch = make_batch()
    with torch.no_grad():
        a, b = model(batch), serving(batch)
        assert "bias_logit" not in b and "bias_logit" not in serving(batch, with_bias=True)
    assert set(a) == set(b)
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-6
    assert model(batch, with_bias=True)["bias_logit"].abs().max() > 0


def test_candidate_cache_gives_identical_outputs():
    model = _model(full_config()).eval()
    candidates = make_batch(B=9, seed=3)
    rows = make_batch(B=20, seed=4)
    cand_index = torch.randint(0, 9, (20,), generator=torch.Generator().manual_seed(5))
    full = dict(rows)
    for key in ("stream_id", "category", "m2v_stream", "core_items", "rt_items"):
        full[key] = candidates[key][cand_index]
    user_side = {k: v for k, v in rows.items() if k not in ("stream_id", "category", "m2v_stream", "core_items",
                                                            "rt_items")}
    with torch.no_grad():
        direct = model(full, with_bias=True)
        cand = model.encode_candidates(candidates)
        cached = model(user_side, cand=cand, cand_index=cand_index, with_bias=True)
    assert set(direct) == set(cached)
    for k in direct:
        assert (direct[k] - cached[k]).abs().max() < 1e-6
    pred = model.predict(user_side, cand=cand, cand_index=cand_index)
    torch.testing.assert_close(pred["p_ctr"], torch.sigmoid(direct["ctr_logit"]), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- losses / predict
def test_losses_esmm_and_stay_on_clicks_only():
    model = _model(full_config())
    g = torch.Generator().manual_seed(0)
    out = {k: torch.randn(8, generator=g) for k in ("ctr_logit", "cvr_logit", "stay", "bias_logit")}
    labels = make_labels(B=8)
    losses = model.losses(out, labels)
    z = out["ctr_logit"] + out["bias_logit"]
    p_ctcvr = torch.sigmoid(z) * torch.sigmoid(out["cvr_logit"])
    y = labels["purchase"]
    expected_cvr = -(y * p_ctcvr.log() + (1 - y) * (1 - p_ctcvr).log()).mean()
    torch.testing.assert_close(losses["cvr"], expected_cvr)
    expected_ctr = torch.nn.functional.binary_cross_entropy(torch.sigmoid(z), labels["click"])
    torch.testing.assert_close(losses["ctr"], expected_ctr)
    clicked = labels["click"] > 0
    torch.testing.assert_close(losses["stay"], ((out["stay"] - labels["stay"])[clicked] ** 2).mean())
    # non-clicked rows' stay labels do not count; no click at all gives 0 (and still backprops)
    changed = dict(labels, stay=torch.where(clicked, labels["stay"], torch.full((8,), 99.0)))
    torch.testing.assert_close(model.losses(out, changed)["stay"], losses["stay"])
    stay = out["stay"].clone().requires_grad_(True)
    none = model.losses(dict(out, stay=stay), dict(labels, click=torch.zeros(8)))
    assert none["stay"] == 0
    none["stay"].backward()
    assert torch.equal(stay.grad, torch.zeros(8))
    # extreme logits: pCTCVR is clamped, the loss stays finite
    extreme = dict(out, ctr_logit=torch.full((8,), -200.0), bias_logit=torch.zeros(8))
    assert torch.isfinite(model.losses(extreme, labels)["cvr"])
    # row weights: a zero-weight row does not count
    w = torch.ones(8)
    w[0] = 0.0
    weighted = model.losses(out, labels, weights=w)
    sub = model.losses({k: v[1:] for k, v in out.items()}, {k: v[1:] for k, v in labels.items()})
    for k in ("ctr", "cvr", "stay"):
        torch.testing.assert_close(weighted[k], sub[k])


def test_uncertainty_weighting():
    weighting = UncertaintyWeighting(("ctr", "cvr", "stay"))
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.5, -1.0, 2.0]))
    losses = {"ctr": torch.tensor(0.7), "stay": torch.tensor(3.0)}
    expected = torch.exp(torch.tensor(-0.5)) * 0.7 + 0.5 + torch.exp(torch.tensor(-2.0)) * 3.0 + 2.0
    torch.testing.assert_close(weighting(losses), expected)
    with pytest.raises(KeyError):
        weighting({"gmv": torch.tensor(1.0)})
    weighting.reset_parameters()
    assert torch.equal(weighting.log_vars, torch.zeros(3))


def test_predict_is_debiased_eval_and_restores_the_mode():
    model = _model(full_config()).train()
    batch = make_batch()
    pred = model.predict(batch)
    assert model.training                                           # mode restored
    assert set(pred) == {"p_ctr", "p_cvr", "p_ctcvr", "stay_s"}
    assert all(not v.requires_grad for v in pred.values())
    assert ((pred["p_ctr"] > 0) & (pred["p_ctr"] < 1)).all()
    torch.testing.assert_close(pred["p_ctcvr"], pred["p_ctr"] * pred["p_cvr"])
    assert (pred["stay_s"] >= 0).all()
    with torch.no_grad():
        out = model.eval()(batch)
    torch.testing.assert_close(pred["p_ctr"], torch.sigmoid(out["ctr_logit"]))
    torch.testing.assert_close(pred["stay_s"], torch.expm1(out["stay"]).clamp(min=0))
    assert set(_model(minimal_config()).predict(batch)) == {"p_ctr"}


def test_biased_click_logit_adds_or_multiplies():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, generator=g) * 3, torch.randn(100, generator=g) * 2
    torch.testing.assert_close(biased_click_logit(a, b, "additive"), a + b)
    log_exam = -torch.rand(100, generator=g) * 4                   # log P(seen) <= 0
    z = biased_click_logit(a, log_exam, "multiplicative")
    torch.testing.assert_close(torch.sigmoid(z), torch.sigmoid(a) * log_exam.exp(), atol=1e-6, rtol=1e-5)
    # extreme: always seen and a huge logit stays finite, and gradients exist
    a2 = torch.tensor([60.0, -60.0, 0.0], requires_grad=True)
    z2 = biased_click_logit(a2, torch.zeros(3), "multiplicative")
    assert torch.isfinite(z2).all()
    z2.sum().backward()
    assert torch.isfinite(a2.grad).all()
    with pytest.raises(ValueError):
        biased_click_logit(a, b, "max")


def test_multiplicative_losses_and_curve():
    model = _model(full_config(bias_form="multiplicative"))
    assert model.biasnet.form == "multiplicative"
    g = torch.Generator().manual_seed(0)
    out = {"ctr_logit": torch.randn(8, generator=g), "bias_logit": -torch.rand(8, generator=g)}
    labels = make_labels(B=8)
    p = torch.sigmoid(out["ctr_logit"]) * out["bias_logit"].exp()
    expected = torch.nn.functional.binary_cross_entropy(p, labels["click"])
    torch.testing.assert_close(model.losses(out, {"click": labels["click"]})["ctr"], expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model.biasnet.decrement.normal_(generator=g)
    # the curve is exp(b_k - b_1) whatever the debiased logits
    b = model.biasnet.position_logits(range(1, 6))
    for a in (torch.randn(30, generator=g), torch.full((30,), 5.0)):
        torch.testing.assert_close(position_curve(model, a, positions=range(1, 6)), (b - b[0]).exp(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        full_config(bias_form="both")
    with pytest.raises(ValueError):
        full_config(bias_shape="spline")


def test_position_curve_is_the_ratio_of_mean_click_rates():
    torch.manual_seed(0)
    net = BiasNet(n_positions=12, shape="mlp")
    with torch.no_grad():
        torch.nn.init.normal_(net.out.weight)
    a = torch.randn(50)
    curve = position_curve(net, a, positions=range(1, 6))
    b = net.position_logits(range(1, 6))
    expected = torch.sigmoid(a[:, None] + b).mean(0) / torch.sigmoid(a + b[0]).mean()
    torch.testing.assert_close(curve, expected)
    assert curve[0] == 1.0
    model = _model(full_config())
    model.biasnet = net
    torch.testing.assert_close(position_curve(model, a, positions=[3, 4]), expected[2:4])
    with pytest.raises(ValueError):
        position_curve(model.without_biasnet(), a)


def test_position_curve_shown_sums_over_each_slots_own_impressions():
    torch.manual_seed(0)
    net = BiasNet(n_positions=12, shape="mlp")
    with torch.no_grad():
        torch.nn.init.normal_(net.out.weight)
    a, shown = torch.randn(60), torch.arange(60) % 4 + 1                         # slots 1..4, none at 5
    curve = position_curve_shown(net, a, shown, positions=range(1, 6))
    b = net.position_logits(range(1, 6))
    for j, k in enumerate(range(1, 5)):
        rows = shown == k
        expected = torch.sigmoid(a[rows] + b[j]).sum() / torch.sigmoid(a[rows] + b[0]).sum()
        torch.testing.assert_close(curve[j], expected)
    assert curve[0] == 1.0 and torch.isnan(curve[4])
    pal = BiasNet(n_positions=12, form="multiplicative")                         # PAL: exactly e^(b_k - b_1)
    with torch.no_grad():
        pal.decrement.normal_()
    bp = pal.position_logits(range(1, 5))
    torch.testing.assert_close(position_curve_shown(pal, a, shown, range(1, 5)), (bp - bp[0]).exp())


def test_shown_readout_recovers_the_curve_an_additive_tower_fits_on_a_confounded_log():
    """P(click) = exam(k) · r with relevance falling down the list (the logging policy's order)
    and exam(1) = 1. An additive tower fitted on the TRUE relevance logits matches each slot's
    clicks; read on each slot's own impressions it gives the planted curve, read on one population
    for all slots (position_curve) it does not — the error is the readout's, not the tower's."""
    from ranking.refit import fit_biasnet_to_logits
    g = torch.Generator().manual_seed(0)
    n = 200_000
    pos = torch.randint(1, 11, (n,), generator=g)                                # [N]
    rel = torch.sigmoid(1.0 - 0.25 * pos.float() + torch.randn(n, generator=g))  # [N] higher on top
    y = (torch.rand(n, generator=g) < pos.float() ** -0.7 * rel).float()
    a = torch.logit(rel)
    torch.manual_seed(0)
    tower = BiasNet(form="additive", shape="monotone")
    fit_biasnet_to_logits(tower, a, pos, None, y, "additive")
    truth = torch.arange(1, 11).float() ** -0.7
    shown_err = float((position_curve_shown(tower, a, pos) - truth).abs().max())
    population_err = float((position_curve(tower, a) - truth).abs().max())
    # sampling noise at 200k rows is about 0.02 (test_fit_biasnet_to_logits_recovers_a_planted_curve)
    assert shown_err < 0.03, shown_err
    assert population_err > shown_err + 0.02, (population_err, shown_err)


# ----------------------------------------------------------------------------- planted training
def test_training_lowers_the_loss_and_recovers_the_position_effect():
    """Clicks follow sigma(relevance + position effect), the effect falling with the slot; after
    100 Adam steps the loss is lower and Biasnet ranks slot 1 above slot 10."""
    N, BATCH = 1024, 128
    g = torch.Generator().manual_seed(SEED)
    batch = make_batch(B=N, seed=7)
    batch["position"] = torch.randint(1, 11, (N,), generator=g)     # independent of relevance
    relevance = 1.5 * batch["dense"][:, 0] + (batch["stream_id"] % 3 == 0).float() - 0.5
    position_effect = -0.3 * (batch["position"] - 1).float()       # slot 1: 0, slot 10: -2.7
    click = (torch.rand(N, generator=g) < torch.sigmoid(relevance + position_effect)).float()
    labels = {"click": click, "purchase": click * (torch.rand(N, generator=g) < torch.sigmoid(batch["dense"][:, 1])),
              "stay": click * (1 + batch["dense"][:, 2]).clamp(min=0)}
    labels["purchase"] = labels["purchase"].float()

    model = _model(full_config(d_model=8, dropout=0.0, expert_dim=8, tower_dim=8, use_cross=False,
                               time_encoding=False), seed=1)
    weighting = UncertaintyWeighting(model.config.tasks)
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=1e-2)

    def ctr_loss():
        model.eval()
        with torch.no_grad():
            return model.losses(model(batch, with_bias=True), labels)["ctr"].item()

    before = ctr_loss()
    gen = torch.Generator().manual_seed(1)
    for step in range(100):
        model.train()
        idx = torch.randint(0, N, (BATCH,), generator=gen)
        rows = {k: v[idx] for k, v in batch.items()}
        losses = model.losses(model(rows), {k: v[idx] for k, v in labels.items()})
        optimizer.zero_grad()
        weighting(losses).backward()
        optimizer.step()
    after = ctr_loss()
    assert after < before - 0.02, (before, after)
    b1, b10 = model.biasnet.position_logits([1, 10]).tolist()
    assert b1 - b10 > 0.5, (b1, b10)            # planted: 2.7
    with torch.no_grad():
        a = model.eval()(batch)["ctr_logit"]
    curve = position_curve(model, a, positions=[1, 5, 10])
    assert curve[0] == 1.0 and curve[2] < 1.0
