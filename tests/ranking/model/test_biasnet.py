"""BiasNet: unknown positions add nothing, clamping, pages, position_logits, training-start no-op."""
import torch
from torch import nn

from ranking.model.biasnet import BiasNet


def _trained_like(seed=0, **kw) -> BiasNet:
    torch.manual_seed(seed)
    net = BiasNet(**kw)
    with torch.no_grad():                          # the output layer starts at 0: perturb it
        nn.init.normal_(net.out.weight)
        net.out.bias.fill_(0.3)
    return net


def test_starts_as_a_no_op():
    net = BiasNet()
    logit = net(torch.tensor([1, 2, 30]), torch.tensor([1, 0, 3]))
    assert torch.equal(logit, torch.zeros(3))
    assert repr(net) == "BiasNet(positions=64, pages=8, d=8, hidden=16)"


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
    torch.manual_seed(5)
    net.reset_parameters()
    first = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(5)
    net.reset_parameters()
    assert all(torch.equal(first[k], v) for k, v in net.state_dict().items())
