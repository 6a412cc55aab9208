"""MMoE and SharedBottom: shapes, gates, the gate-weighted mixture, shared bottom outputs."""
import pytest
import torch

from ranking.model.mmoe import MMoE, SharedBottom
from tests.ranking.model.checks import assert_reset_is_deterministic


def test_mmoe_shapes_and_gates_sum_to_one():
    torch.manual_seed(0)
    head = MMoE(10, n_tasks=3, n_experts=4, expert_hidden=(16, 8))
    x = torch.randn(6, 10)
    outputs, gates = head(x, return_gates=True)
    assert head.out_dim == 8 and len(outputs) == 3
    assert all(o.shape == (6, 8) for o in outputs)
    assert gates.shape == (6, 3, 4)
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(6, 3))
    # each task's output is its gate-weighted mixture of the expert MLPs (ReLU outputs)
    experts = torch.stack([f(x) for f in head.experts], dim=1)                 # [B, E, h]
    assert (experts >= 0).all()
    for k in range(3):
        torch.testing.assert_close(outputs[k], (gates[:, k, :, None] * experts).sum(1))
    # tasks have their own gates, so their inputs differ
    assert (outputs[0] - outputs[1]).abs().max() > 1e-6
    assert [o.shape for o in head(x)] == [o.shape for o in outputs]


@pytest.mark.parametrize("hidden", [(16,), (16, 8)])
def test_the_fused_matmul_equals_the_expert_and_gate_modules(hidden):
    # forward fuses the experts' first layers and the gates into one matmul: the same numbers as
    # running each nn.Module on its own (the parameters, and so old checkpoints, are unchanged)
    torch.manual_seed(3)
    head = MMoE(10, n_tasks=3, n_experts=4, expert_hidden=hidden).eval()
    x = torch.randn(50, 10)
    outputs, gates = head(x, return_gates=True)
    ref_experts = torch.stack([f(x) for f in head.experts], dim=1)              # [B, E, h]
    ref_gates = torch.stack([torch.softmax(g(x), -1) for g in head.gates], 1)  # [B, K, E]
    torch.testing.assert_close(gates, ref_gates, atol=1e-6, rtol=1e-5)
    for k in range(3):
        torch.testing.assert_close(outputs[k], torch.bmm(ref_gates, ref_experts)[:, k], atol=1e-6, rtol=1e-5)


def test_mmoe_gradients_dropout_and_reset():
    head = MMoE(10, n_tasks=2, n_experts=3, dropout=0.5)
    x = torch.randn(6, 10)
    outputs = head(x)
    sum(o.sum() for o in outputs).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
    head.eval()
    torch.testing.assert_close(head(x)[0], head(x)[0], atol=0, rtol=0)      # no dropout in eval
    assert_reset_is_deterministic(head, seed=2)
    assert "MMoE(10, 64, tasks=2, experts=3" in repr(head)


def test_shared_bottom_gives_every_task_the_same_output():
    head = SharedBottom(10, n_tasks=3, hidden=(12, 5))
    x = torch.randn(4, 10)
    outputs, gates = head(x, return_gates=True)
    assert head.out_dim == 5 and len(outputs) == 3 and outputs[0].shape == (4, 5)
    assert all(o is outputs[0] for o in outputs)
    assert torch.equal(gates, torch.ones(4, 3, 1))
    torch.testing.assert_close(outputs[0], head.bottom(x))
    with pytest.raises(ValueError):
        SharedBottom(10, 2, hidden=())
    with pytest.raises(ValueError):
        MMoE(10, 2, expert_hidden=())
