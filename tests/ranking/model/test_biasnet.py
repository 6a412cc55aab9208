"""BiasNet: unknown positions add nothing, clamping, pages, position_logits, training-start no-op;
the monotone shape never rises with the slot; the multiplicative form is a log probability."""
import pytest
import torch
from torch import nn

from ranking.model.biasnet import BiasNet
from tests.ranking.model.checks import assert_reset_is_deterministic


def _trained_like(seed=0, **kw) -> BiasNet:
    torch.manual_seed(seed)
    net = BiasNet(**{"shape": "mlp", **kw})
    with torch.no_grad():                          # the output layer starts at 0: perturb it
        nn.init.normal_(net.out.weight)
        net.out.bias.fill_(0.3)
    return net


def test_starts_as_a_no_op():
    net = BiasNet(shape="mlp")
    logit = net(torch.tensor([1, 2, 30]), torch.tensor([1, 0, 3]))
    assert torch.equal(logit, torch.zeros(3))
    assert repr(net) == "BiasNet(positions=64, pages=8, d=8, hidden=16, form=additive, shape=mlp)"
    assert repr(BiasNet()) == "BiasNet(positions=64, pages=8, form=additive, shape=monotone)"


def test_monotone_starts_nearly_flat_and_never_rises():
    net = BiasNet(n_positions=12)
    logit = net(torch.arange(0, 15))
    assert logit[0] == 0 and logit[1] == 0                           # unknown; slot 1 is the level (0)
    step = torch.nn.functional.softplus(torch.tensor(BiasNet.DECREMENT_INIT))
    torch.testing.assert_close(logit[1:12], -step * torch.arange(0, 11).float())   # slot k: -(k-1)·0.049
    assert (logit[11:] == logit[11]).all()                           # clamped to the last slot
    torch.manual_seed(0)
    with torch.no_grad():                                            # any parameters: still non-increasing
        net.decrement.normal_(std=3.0)
        net.level.fill_(0.7)
        net.page_offset.weight.normal_()
        net.page_offset.weight[0] = 0
    for page in (None, torch.full((11,), 3)):
        logit = net(torch.arange(1, 12), page)
        assert (logit[1:] <= logit[:-1]).all()
    shift = net(torch.arange(1, 12), torch.full((11,), 3)) - net(torch.arange(1, 12))
    torch.testing.assert_close(shift, torch.full((11,), net.page_offset.weight[3, 0].item()))   # a page shifts all slots
    torch.testing.assert_close(net(torch.arange(1, 12), torch.zeros(11, dtype=torch.long)), net(torch.arange(1, 12)))
    net(torch.tensor([1, 4, 9, 0]), torch.tensor([1, 2, 0, 1])).sum().backward()
    assert net.decrement.grad[2:10].abs().sum() > 0 and (net.decrement.grad[10:] == 0).all()
    assert net.decrement.grad[:2].abs().sum() == 0                   # rows 0 and 1 are never used
    with pytest.raises(ValueError, match="shape"):
        BiasNet(shape="isotonic")


@pytest.mark.parametrize("shape", ["mlp", "monotone"])
def test_multiplicative_form_is_a_log_examination_probability(shape):
    net = BiasNet(form="multiplicative", shape=shape)
    log_exam = net(torch.tensor([0, 1, 2, 30]), torch.tensor([1, 0, 3, 1]))
    assert log_exam[0] == 0                                          # unknown position: seen
    # untrained: slot 1 nearly always seen
    assert abs(log_exam[1].exp().item() - torch.sigmoid(torch.tensor(BiasNet.EXAM_INIT_LOGIT)).item()) < 1e-6
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=3.0)
    log_exam = net(torch.arange(0, 40))
    assert (log_exam <= 0).all() and log_exam[1:].unique().numel() > 1
    assert "form=multiplicative" in repr(net)
    try:
        BiasNet(form="sum")
    except ValueError as e:
        assert "form" in str(e)
    else:
        raise AssertionError("an unknown form must be refused")


def test_shape_unknown_positions_and_clamping():
    net = _trained_like(n_positions=10, n_pages=4)
    position = torch.tensor([0, 1, 2, 9, 10, 500, -3])
    logit = net(position)
    assert logit.shape == (7,)
    assert logit[0] == 0 and logit[6] == 0                          # unknown (0 / negative): no bias
    assert logit[1] != 0 and logit[1] != logit[2]
    assert logit[3] == logit[4] == logit[5]                         # >= n_positions - 1: last row
    # pages: 0 = unknown (same as no page), others shift the logit, large ids clamp
    page = torch.tensor([0, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(net(position, page), logit, atol=0, rtol=0)
    on_page = net(position, torch.full((7,), 2))
    assert (on_page[1:6] - logit[1:6]).abs().min() > 0
    assert on_page[0] == 0
    torch.testing.assert_close(net(position, torch.full((7,), 3)), net(position, torch.full((7,), 99)))


def test_position_logits_match_forward():
    net = _trained_like()
    positions = [1, 2, 3, 10]
    torch.testing.assert_close(net.position_logits(positions), net(torch.tensor(positions)))
    torch.testing.assert_close(net.position_logits(torch.tensor(positions), page=2),
                               net(torch.tensor(positions), torch.full((4,), 2)))


def test_gradients_and_deterministic_reset():
    net = _trained_like()
    net(torch.tensor([1, 3, 0]), torch.tensor([1, 2, 1])).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert torch.equal(net.position_emb.weight.grad[0], torch.zeros(8))   # padding row: no grad
    assert_reset_is_deterministic(net, seed=5)


@pytest.mark.parametrize("form", ["multiplicative", "additive"])
def test_table_shape_is_a_fixed_filled_table(form):
    net = BiasNet(n_positions=12, n_pages=3, form=form, shape="table")
    assert list(net.parameters()) == [] and "shape=table" in repr(net)
    assert torch.equal(net(torch.tensor([0, 1, 5, 40])), torch.zeros(4))       # empty: no position effect
    table = -torch.arange(12, dtype=torch.float32).repeat(3, 1) * 0.1            # [3, 12]
    table[2] -= 0.5                                                              # page 2 seen less
    table[:, 0] = 0
    assert net.set_table(table) is net
    got = net(torch.tensor([0, 1, 3, 11, 40, 3]), torch.tensor([1, 1, 1, 1, 1, 7]))
    torch.testing.assert_close(got, torch.tensor([0.0, -0.1, -0.3, -1.1, -1.1, -0.8]))   # unknown slot 0; clamps
    torch.testing.assert_close(net.position_logits([1, 2], page=2), torch.tensor([-0.6, -0.7]))
    torch.testing.assert_close(net(torch.tensor([2])), torch.tensor([-0.2]))     # no page: row 0
    state = net.state_dict()
    assert set(state) == {"log_exam"}                                           # saved with the model
    other = BiasNet(n_positions=12, n_pages=3, form=form, shape="table")
    other.load_state_dict(state)
    torch.testing.assert_close(other(torch.tensor([3]), torch.tensor([2])), torch.tensor([-0.8]))
    net.reset_parameters()
    assert torch.equal(net.log_exam, torch.zeros(3, 12))
    with pytest.raises(ValueError, match="must be"):
        net.set_table(torch.zeros(2, 12))
    with pytest.raises(ValueError, match="non-finite"):
        net.set_table(torch.full((3, 12), float("nan")))
    if form == "multiplicative":
        with pytest.raises(ValueError, match="<= 0"):
            net.set_table(torch.full((3, 12), 0.2))
    with pytest.raises(ValueError, match="shape='table'"):
        BiasNet().set_table(table)
