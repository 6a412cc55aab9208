"""Behaviour tokens (RankerConfig.behaviour_tokens, seed 001's fine-grained behaviour): the Feast
behaviour / dwell lists become aligned batch arrays, the ranker adds a behaviour embedding (and a
dwell bucket) to each recent stream's key and a behaviour embedding to each recent item token; the
scorer's shared-history request path scores as the model's forward."""
import numpy as np
import pandas as pd
import pytest

from ranking.dataset import RankerInputs
from tests.ranking.test_dataset import _frame

torch = pytest.importorskip("torch")

TINY = {"d_model": 8, "n_heads": 2, "n_experts": 2, "expert_dim": 16, "tower_dim": 8, "use_biasnet": False,
        "dropout": 0.0}


def _with_behaviour(f: pd.DataFrame) -> pd.DataFrame:
    f = f.copy()
    # aligned with recent_streams [[101], [], None, [100, 102], [999], [100]] and
    # recent_items [[5, 6], None, [7], [], [5, 6, 7, 8], [9]]
    f["recent_stream_acts"] = [[2], [], None, [4, 1], [2], [1]]
    f["recent_stream_dwell"] = [[300], [], None, [3600, 0], [50], [0]]
    f["recent_item_acts"] = [[4, 3], None, [3], [], [3, 3, 4, 3], [4]]
    return f


def test_behaviour_lists_are_aligned_truncated_and_masked_like_their_ids():
    f = _with_behaviour(_frame())
    inp = RankerInputs.fit(f.iloc[:5], ["a", "b"], lengths={"user_items": 3, "user_streams": 2})
    x = inp.transform(f)
    assert x["user_streams_act"].dtype == np.int64 and x["user_streams_dwell"].dtype == np.float32
    assert x["user_streams_act"].tolist() == [[2, 0], [0, 0], [0, 0], [4, 1], [2, 0], [1, 0]]
    assert x["user_streams_dwell"].tolist() == [[300, 0], [0, 0], [0, 0], [3600, 0], [50, 0], [0, 0]]
    assert x["user_items_act"].shape == (6, 3) and x["user_items_act"][4].tolist() == [3, 3, 4]   # truncated
    # an id unknown to the vocabulary (item 9: not in the fit rows) carries no behaviour either
    assert x["user_items"][5].tolist() == [0, 0, 0] and x["user_items_act"][5].tolist() == [0, 0, 0]
    plain = inp.transform(_frame())
    assert not {"user_streams_act", "user_streams_dwell", "user_items_act"} & set(plain)


def test_behaviour_tokens_move_the_output_train_and_serve_as_the_forward():
    from ranking.batches import to_tensors
    from ranking.model.ranker import dwell_bucket
    from ranking.scorer import RankerScorer
    from ranking.train import build_ranker
    assert dwell_bucket(torch.tensor([0.0, 1.0, 10.0, 30.0, 600.0, 3600.0, 1e9])).tolist() == [0, 1, 2, 3, 6, 9, 12]
    f = _with_behaviour(_frame())
    inputs = RankerInputs.fit(f, ["a", "b"])
    torch.manual_seed(0)
    model = build_ranker(inputs, behaviour_tokens=True, **TINY).eval()
    assert model.act_emb is not None and model.dwell_emb is not None
    batch = to_tensors(inputs.transform(f))
    with torch.no_grad():
        ref = model(batch)["ctr_logit"]
        other = dict(batch, user_streams_act=batch["user_streams_act"].clamp(max=1) * (batch["user_streams"] > 0),
                     user_streams_dwell=batch["user_streams_dwell"] * 0, user_items_act=batch["user_items_act"] * 0)
        moved = model(other)["ctr_logit"]
    has_history = ((batch["user_streams"] > 0).any(1) | (batch["user_items"] > 0).any(1)).numpy()
    assert (ref - moved).abs()[has_history].max() > 1e-4
    assert torch.equal(ref[~has_history], moved[~has_history])          # row 1: no history, nothing to move
    # the option off: the lists are unused
    torch.manual_seed(0)
    plain = build_ranker(inputs, **TINY).eval()
    no_lists = {k: v for k, v in batch.items() if k not in ("user_streams_act", "user_streams_dwell", "user_items_act")}
    with torch.no_grad():
        assert torch.equal(plain(batch)["ctr_logit"], plain(no_lists)["ctr_logit"])
    # gradients reach the behaviour and dwell rows that occur, never the padding row
    model.train()
    y = {"click": torch.tensor([1.0, 0, 0, 1, 0, 1])}
    model.losses(model(batch), y)["ctr"].backward()
    assert model.act_emb.weight.grad[1:].abs().sum() > 0 and model.act_emb.weight.grad[0].abs().sum() == 0
    assert model.dwell_emb.weight.grad[dwell_bucket(torch.tensor([300.0, 3600.0]))].abs().sum() > 0
    model.eval()
    # serving: one user's request (the scorer shares the user's history as one [1, L] segment and
    # caches the candidates' tokens) scores as the forward on the full rows
    req = f.iloc[[0, 0, 0]].copy()
    req["stream_id"] = [100, 101, 102]
    shared = {c: [req[c].iloc[0]] * 3 for c in ("recent_items", "recent_streams", "recent_stream_acts",
                                                "recent_stream_dwell", "recent_item_acts")}
    for c, v in shared.items():
        req[c] = pd.Series([v[0]] * 3, index=req.index, dtype=object)
    with torch.no_grad():
        want = torch.sigmoid(model(to_tensors(inputs.transform(req)))["ctr_logit"]).double().numpy()
    got = RankerScorer.from_trained(model, inputs).outputs(req)["p_ctr"]
    np.testing.assert_allclose(got, want, atol=1e-6)
