"""TargetAttention (DIN) and Dice: the DIN formula, masks, all-padding rows, softmax option."""
import pytest
import torch

from ranking.model.target_attention import Dice, TargetAttention
from tests.ranking.model.checks import assert_reset_is_deterministic

D, L = 8, 6


def _inputs(B=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(B, D, generator=g)
    keys = torch.randn(B, L, D, generator=g)
    mask = torch.rand(B, L, generator=g) > 0.4
    mask[0] = False                                    # row 0: no real key at all
    mask[1] = True                                     # row 1: all real
    return query, keys, mask


def _reference(att: TargetAttention, query, keys, mask):
    """DIN written naively: MLP on the concatenated [q, k, q-k, q*k] (eval: Dice on running stats)."""
    q = query.unsqueeze(1).expand_as(keys)
    z = torch.cat([q, keys, q - keys, q * keys], dim=-1).reshape(-1, 4 * D)
    for linear, act in zip(att.linears, att.acts):
        z = act(linear(z))
    scores = att.score(z).view(keys.shape[:2])
    if att.softmax:
        w = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
    else:
        w = scores * mask
    return (w.unsqueeze(-1) * keys).sum(1), w


@pytest.mark.parametrize("activation", ["dice", "prelu"])
@pytest.mark.parametrize("softmax", [False, True])
def test_matches_the_din_formula(activation, softmax):
    torch.manual_seed(0)
    att = TargetAttention(D, hidden=(16, 8), activation=activation, softmax=softmax)
    with torch.no_grad():                              # non-trivial Dice statistics / PReLU slopes
        for act in att.acts:
            if isinstance(act, Dice):
                act.running_mean.normal_()
                act.running_var.uniform_(0.5, 2.0)
                act.alpha.uniform_(-0.5, 0.5)
    att.eval()
    query, keys, mask = _inputs()
    out, w = att(query, keys, mask, return_weights=True)
    ref_out, ref_w = _reference(att, query, keys, mask)
    assert out.shape == (7, D) and w.shape == (7, L)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    assert torch.equal(w[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(out[0], torch.zeros(D))         # no real key -> zeros, not NaN
    if softmax:
        torch.testing.assert_close(w[1:].sum(-1), torch.ones(6))
    else:                                              # DIN: raw weights, not a distribution
        assert (w[1:].sum(-1) - 1).abs().max() > 1e-3


@pytest.mark.parametrize("training", [False, True])
def test_padded_keys_do_not_change_the_output(training):
    torch.manual_seed(0)
    att = TargetAttention(D).train(training)
    query, keys, mask = _inputs()
    state = {k: v.clone() for k, v in att.state_dict().items()}
    out = att(query, keys, mask)
    after_first = {k: v.clone() for k, v in att.state_dict().items()}
    att.load_state_dict(state)                         # same running statistics for the 2nd call
    keys2 = torch.where(mask.unsqueeze(-1), keys, 50 * torch.randn_like(keys))
    out2 = att(query, keys2, mask)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=0)
    # Dice's training statistics come from real keys only: the running stats agree too
    for k, v in att.state_dict().items():
        torch.testing.assert_close(v, after_first[k], atol=1e-6, rtol=0)
    if training:
        assert any(not torch.equal(v, state[k]) for k, v in after_first.items())  # stats did move


@pytest.mark.parametrize("softmax", [False, True])
def test_all_padding_batch_is_finite_with_gradients(softmax):
    att = TargetAttention(D, softmax=softmax).train()
    query, keys, _ = _inputs()
    query.requires_grad_(True)
    mask = torch.zeros(7, L, dtype=torch.bool)
    out = att(query, keys, mask)
    assert torch.equal(out, torch.zeros(7, D))
    out.sum().backward()
    assert torch.isfinite(query.grad).all()


def test_gradients_reach_the_scoring_mlp():
    att = TargetAttention(D, hidden=(16,)).train()
    query, keys, mask = _inputs()
    att(query, keys, mask).pow(2).sum().backward()
    for name, p in att.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_dice_statistics():
    dice = Dice(3).train()
    x = torch.randn(50, 3) * 4 + 2
    mask = torch.zeros(50, dtype=torch.bool)
    mask[:30] = True
    dice(x, mask)
    expected_mean = 0.9 * torch.zeros(3) + 0.1 * x[:30].mean(0)
    torch.testing.assert_close(dice.running_mean, expected_mean)
    torch.testing.assert_close(dice.running_var, 0.9 * torch.ones(3) + 0.1 * x[:30].var(0))
    # one masked row: no batch statistic (running ones used, not updated)
    before = dice.running_mean.clone()
    one = torch.zeros(50, dtype=torch.bool)
    one[0] = True
    dice(x, one)
    assert torch.equal(dice.running_mean, before)
    # alpha = 0, p -> 1 for large inputs: Dice ~ identity above the mean, ~0 far below
    dice.eval()
    y = dice(torch.tensor([[100.0, 100.0, 100.0], [-100.0, -100.0, -100.0]]))
    torch.testing.assert_close(y, torch.tensor([[100.0] * 3, [0.0] * 3]), atol=1e-3, rtol=0)


def test_reset_parameters_is_deterministic_and_arguments_checked():
    att = TargetAttention(D)
    assert_reset_is_deterministic(att, seed=1)
    with pytest.raises(ValueError):
        TargetAttention(D, activation="relu")
    with pytest.raises(ValueError):
        TargetAttention(D, hidden=())
    assert "TargetAttention(8" in repr(att)
