"""BehaviorSequenceTransformer (BST): shapes, padding never matters, an empty history is finite,
the behaviours and the candidate interact, reset is deterministic."""
import torch

from ranking.model.bst import BehaviorSequenceTransformer
from tests.ranking.model.checks import assert_reset_is_deterministic

D, L = 8, 6


def _inputs(B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(B, D, generator=g), torch.randn(B, L, D, generator=g)
    mask = torch.rand(B, L, generator=g) > 0.4
    mask[0] = False                                   # no history
    mask[1] = True
    return q, k, mask


def test_shape_padding_and_empty_rows():
    bst = BehaviorSequenceTransformer(D, max_len=10, n_heads=2).eval()
    q, k, mask = _inputs()
    out = bst(q, k, mask)
    assert out.shape == (5, D) and torch.isfinite(out).all()
    noisy = torch.where(mask.unsqueeze(-1), k, torch.randn_like(k) * 100)       # change only the padding
    torch.testing.assert_close(bst(q, noisy, mask), out, atol=1e-5, rtol=0)
    # the behaviours matter where they are real, and the output depends on the candidate
    other = k.clone()
    other[1] += 1.0
    assert not torch.allclose(bst(q, other, mask)[1], out[1])
    assert not torch.allclose(bst(q + 1.0, k, mask)[1], out[1])
    assert "BehaviorSequenceTransformer(d=8" in repr(bst)


def test_backward_and_reset():
    bst = BehaviorSequenceTransformer(D, max_len=10, n_heads=2).train()
    q, k, mask = _inputs()
    bst(q, k, mask).sum().backward()
    assert all(p.grad is not None for p in bst.parameters())
    assert_reset_is_deterministic(bst, 3)
    longer = torch.randn(2, 20, D)                   # longer than max_len: the most recent 10 are used
    assert bst(torch.randn(2, D), longer, torch.ones(2, 20, dtype=torch.bool)).shape == (2, D)
