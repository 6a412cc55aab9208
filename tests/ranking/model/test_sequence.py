"""LiveStreamTransformer: shapes, padding masks, causality, time encoding, determinism."""
import math

import pytest
import torch

from ranking.model.sequence import LiveStreamTransformer, PreLNEncoderLayer, time_buckets

D = 16
LENGTHS = (4, 3, 6)          # core, real-time, user


def _inputs(B=5, seed=0, lengths=LENGTHS, pad=0.4):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(B, D, generator=g)
    segments = []
    for L in lengths:
        emb = torch.randn(B, L, D, generator=g)
        mask = torch.rand(B, L, generator=g) > pad
        segments.append((emb, mask))
    dt = torch.rand(B, lengths[2], generator=g) * 1e5
    return target, segments, dt


def _model(**kw):
    torch.manual_seed(0)
    return LiveStreamTransformer(D, n_heads=2, **kw).eval()


def test_output_shape_and_out_dim():
    model = _model(n_layers=2, time_encoding=True)
    target, segments, dt = _inputs()
    out = model(target, segments, dt)
    assert model.out_dim == 2 * D
    assert out.shape == (5, 2 * D)
    assert torch.isfinite(out).all()
    assert "LiveStreamTransformer(16" in repr(model)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_tokens_do_not_change_the_output(causal):
    model = _model(causal=causal, time_encoding=True)
    target, segments, dt = _inputs()
    out = model(target, segments, dt)
    # (random changes: a constant shift of a token would vanish in the input LayerNorm)
    changed = [(torch.where(mask.unsqueeze(-1), emb, 10.0 * torch.randn_like(emb)), mask) for emb, mask in segments]
    dt_changed = torch.where(segments[2][1], dt, torch.full_like(dt, 7.0))
    out2 = model(target, changed, dt_changed)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=0)
    # ... while changing a REAL token does change it (the test can fail)
    emb, mask = segments[0]
    real = mask.nonzero()[0]
    emb = emb.clone()
    emb[real[0], real[1]] += torch.randn(D)
    out3 = model(target, [(emb, mask)] + segments[1:], dt)
    assert (out3[real[0]] - out[real[0]]).abs().max() > 1e-4


def test_all_padding_rows_are_finite_with_zero_context_mean():
    model = _model(causal=True, time_encoding=True).train()
    target, segments, dt = _inputs()
    segments = [(emb, torch.zeros_like(mask)) for emb, mask in segments]
    segments[1][1][0, 0] = True                # row 0 keeps one real token, the others none
    target.requires_grad_(True)
    out = model(target, segments, torch.full_like(dt, float("nan")))
    assert torch.isfinite(out).all()
    assert torch.equal(out[1:, D:], torch.zeros(4, D))      # mean of no context token = zeros
    assert out[0, D:].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(target.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_causal_mask_is_causal():
    model = _model(causal=True, n_layers=2)
    target, segments, _ = _inputs(pad=0.0)
    tokens = [model.embed_target(target)] + [model.embed_tokens(e, k + 1) for k, (e, _) in enumerate(segments)]
    masks = [m for _, m in segments]
    h, mask = model.encode(tokens, masks)
    T = h.shape[1]
    assert T == 1 + sum(LENGTHS) and mask.shape == (5, T) and mask[:, 0].all()
    t = 6                                       # token 6 = the 2nd real-time token (target, 4 core, ...)
    changed = [x.clone() for x in tokens]
    changed[2][:, 1] += torch.randn(5, D)      # random: a constant shift would vanish in LayerNorm
    h2, _ = model.encode(changed, masks)
    torch.testing.assert_close(h2[:, :t], h[:, :t], atol=0, rtol=0)       # earlier tokens untouched
    assert (h2[:, t:] - h[:, t:]).abs().amax(dim=(0, 2)).min() > 1e-5     # it and later ones see it
    # without the causal mask the same change reaches earlier tokens (the check above can fail)
    model.causal = False
    h3, _ = model.encode(tokens, masks)
    h4, _ = model.encode(changed, masks)
    assert (h4[:, :t] - h3[:, :t]).abs().max() > 1e-5


def test_time_buckets():
    dt = torch.tensor([float("nan"), -5.0, 0.0, 1.0, math.e - 1.001, math.e, 1e4, 1e12, float("inf")])
    b = time_buckets(dt, 16)
    assert b.tolist() == [0, 0, 1, 1, 1, 2, 10, 15, 15]
    assert b.dtype == torch.long


def test_time_encoding_is_used_only_when_enabled():
    target, segments, dt = _inputs(pad=0.0)
    on, off = _model(time_encoding=True), _model(time_encoding=False)
    assert on.time_emb.weight[0].abs().sum() == 0          # unknown gap row is zero
    assert (on(target, segments, dt) - on(target, segments, dt * 100)).abs().max() > 1e-5
    torch.testing.assert_close(off(target, segments, dt), off(target, segments, dt * 100), atol=0, rtol=0)
    torch.testing.assert_close(off(target, segments, dt), off(target, segments), atol=0, rtol=0)
    # NaN / negative gaps are "unknown": the same as giving no gaps at all
    unknown = torch.full_like(dt, float("nan"))
    unknown[:, ::2] = -1.0
    torch.testing.assert_close(on(target, segments, unknown), on(target, segments), atol=1e-6, rtol=0)


def test_position_and_type_embeddings_matter_and_long_segments_clamp():
    model = _model(max_positions=4)
    target, segments, _ = _inputs(lengths=(9, 3, 2), pad=0.0)
    out = model(target, segments)                            # 9 > max_positions: clamped, no error
    assert torch.isfinite(out).all()
    # the same tokens as a different segment type give a different output
    swapped = model(target, [segments[1], segments[0], segments[2]])
    assert (swapped - out).abs().max() > 1e-5


def test_absent_segments_are_skipped():
    model = _model(time_encoding=True)
    target, segments, dt = _inputs()
    out = model(target, [None, None, segments[2]], dt)
    assert out.shape == (5, 2 * D) and torch.isfinite(out).all()
    # a None segment equals an all-padding segment
    empty = [(segments[0][0], torch.zeros_like(segments[0][1])), (segments[1][0], torch.zeros_like(segments[1][1]))]
    torch.testing.assert_close(model(target, empty + [segments[2]], dt), out, atol=1e-6, rtol=0)


def test_gradients_reach_every_parameter():
    model = _model(n_layers=2, time_encoding=True).train()
    target, segments, dt = _inputs(pad=0.2)
    model(target, segments, dt).pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reset_parameters_is_deterministic_under_a_seed():
    model = LiveStreamTransformer(D, time_encoding=True)
    torch.manual_seed(3)
    model.reset_parameters()
    first = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(4)
    model.reset_parameters()
    assert any(not torch.equal(first[k], v) for k, v in model.state_dict().items())
    torch.manual_seed(3)
    model.reset_parameters()
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_encoder_layer_rejects_bad_heads_and_handles_fully_masked_rows():
    with pytest.raises(ValueError):
        PreLNEncoderLayer(10, n_heads=3)
    layer = PreLNEncoderLayer(D, n_heads=2).eval()
    x = torch.randn(2, 5, D)
    mask = torch.zeros(2, 1, 5, dtype=torch.bool)           # no key at all: finite, not NaN
    assert torch.isfinite(layer(x, mask)).all()


@pytest.mark.parametrize("causal", [False, True])
def test_trailing_padding_columns_change_nothing(causal):
    model = _model(causal=causal, time_encoding=True)
    target, segments, dt = _inputs(pad=0.3)
    out = model(target, segments, dt)
    longer = [(torch.cat([e, torch.randn(5, 3, D)], 1), torch.cat([m, torch.zeros(5, 3, dtype=torch.bool)], 1))
              for e, m in segments]
    out2 = model(target, longer, torch.cat([dt, torch.rand(5, 3)], 1))
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=0)
    tokens = [model.embed_target(target)] + [model.embed_tokens(e, k + 1) for k, (e, _) in enumerate(longer)]
    h, mask = model.encode(tokens, [m for _, m in longer])
    assert h.shape[1] == mask.shape[1] <= 1 + sum(LENGTHS)       # all-padding columns were dropped


@pytest.mark.parametrize("causal,n_layers", [(False, 1), (True, 2)])
def test_a_shared_segment_of_batch_one_equals_it_expanded(causal, n_layers):
    # the request path hands the user's history as one [1, L] segment for all B candidates
    model = LiveStreamTransformer(D, n_heads=2, n_layers=n_layers, causal=causal, dropout=0.0).eval()
    target, segments, _ = _inputs(B=7, pad=0.3)
    user_emb, user_mask = segments[2][0][:1], segments[2][1][:1]          # [1, L], one user
    user_mask[0, -1] = False                                               # trailing padding column
    expanded = segments[:2] + [(user_emb.expand(7, -1, -1), user_mask.expand(7, -1))]
    shared = segments[:2] + [(user_emb, user_mask)]
    ref = model(target, expanded)
    out = model(target, shared)
    assert out.shape == (7, 2 * D)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    # and an all-padding shared segment is dropped like any other
    empty = segments[:2] + [(user_emb, torch.zeros_like(user_mask))]
    torch.testing.assert_close(model(target, empty), model(target, segments[:2] + [None]), atol=1e-6, rtol=1e-5)
