"""CrossNetMix (DCN-V2): the formula against a per-expert loop, identity when crosses are off."""
import torch

from ranking.model.cross import CrossNetMix
from tests.ranking.model.checks import assert_reset_is_deterministic


def _reference(net: CrossNetMix, x: torch.Tensor) -> torch.Tensor:
    """x_{l+1} = x_0 * sum_e g_e(x_l) (U_e tanh(C_e tanh(V_e^T x_l)) + b_l) + x_l, one expert at a time."""
    x0, xl = x, x
    for l in range(net.n_layers):
        g = torch.softmax(xl @ net.gates[l].weight.T, dim=-1)                   # [B, E]
        mix = torch.zeros_like(x)
        for e in range(net.n_experts):
            V, C, U = net.V[l, e], net.C[l, e], net.U[l, e]                      # [D, r], [r, r], [D, r]
            low = torch.tanh(C @ torch.tanh(V.T @ xl.T))                         # [r, B]
            mix = mix + g[:, e:e + 1] * (x0 * ((U @ low).T + net.bias[l]))      # [B, D]
        xl = mix + xl
    return xl


def test_matches_the_formula_and_keeps_the_shape():
    torch.manual_seed(0)
    net = CrossNetMix(12, n_layers=3, n_experts=3, rank=4)
    with torch.no_grad():
        net.bias.normal_()
    x = torch.randn(9, 12)
    out = net(x)
    assert out.shape == (9, 12)
    torch.testing.assert_close(out, _reference(net, x), atol=1e-5, rtol=1e-5)
    assert (out - x).abs().max() > 1e-3
    assert repr(net) == "CrossNetMix(12, layers=3, experts=3, rank=4)"


def test_zero_experts_and_bias_give_the_identity():
    net = CrossNetMix(6)
    with torch.no_grad():
        net.U.zero_()
    x = torch.randn(4, 6)
    torch.testing.assert_close(net(x), x, atol=0, rtol=0)   # bias starts at 0 too


def test_gradients_and_deterministic_reset():
    net = CrossNetMix(8, n_layers=2, n_experts=2, rank=3)
    x = torch.randn(5, 8, requires_grad=True)
    net(x).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    assert_reset_is_deterministic(net, seed=7)
    assert torch.equal(net.bias, torch.zeros_like(net.bias))
