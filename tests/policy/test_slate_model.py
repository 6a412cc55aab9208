"""policy.slate_model: the GRU slate model learns the planted page effect from logged pages, and the
beam search it drives beats the ranker's plain order on the world's true expected clicks."""
import numpy as np
import pytest
import torch

from policy.page_world import PageWorld, PageWorldConfig
from policy.rerank import RerankConfig, rerank, violations
from policy.slate_model import (SlateModel, SlateModelConfig, SlateValue, load_slate_model, save_slate_model,
                                train_slate_model)


@pytest.fixture(scope="module")
def trained():
    world = PageWorld(PageWorldConfig(seed=5))
    logged = world.log(8000)
    model, curve = train_slate_model(logged.score, logged.cat, logged.click, epochs=8, seed=0)
    return world, model, curve


def test_training_lowers_the_validation_loss(trained):
    _, model, curve = trained
    assert len(curve["train"]) == 8 and curve["valid"][-1] < curve["valid"][0]
    assert "SlateModel(" in repr(model)


def test_it_learns_that_a_repeat_of_the_category_above_is_worth_less(trained):
    world, model, _ = trained
    v = SlateValue(model)
    C = world.cfg.n_categories
    cats = np.arange(C)
    same, paired = [], []
    for above in range(C):
        st = v.start(np.arange(C), cats, np.zeros(C))
        st = v.advance(st, np.array([0]), np.array([above]), 0)          # category `above` at slot 1
        p = v.values(st, 1)[0]                                          # every category at slot 2, same score
        others = np.median(np.delete(p, [above, (above + 1) % C]))
        same.append(p[above] / others)                                  # planted x0.5
        paired.append(p[(above + 1) % C] / others)                      # planted x1.5
    assert np.mean(same) < 0.7 and np.mean(paired) > 1.12, (same, paired)


def test_forward_and_the_beam_state_agree(trained):
    world, model, _ = trained
    logged = world.log(3)
    with torch.no_grad():
        logits = model(torch.as_tensor(logged.score, dtype=torch.float32), model.codes(logged.cat))
    v = SlateValue(model)
    page = 0
    st = v.start(np.arange(10), logged.cat[page], logged.score[page])
    for t in range(10):
        p = v.values(st, t)[0, t]
        assert p == pytest.approx(float(torch.sigmoid(logits[page, t])), abs=1e-5)
        st = v.advance(st, np.array([0]), np.array([t]), t)


def test_beam_on_the_slate_model_beats_the_plain_order(trained):
    world, model, _ = trained
    req = world.requests(300)
    cfg = RerankConfig(width=3)
    pages = np.array([rerank(req.score[i], req.cat[i], 10, cfg, SlateValue(model)).order for i in range(300)])
    plain = np.argsort(-req.score, axis=1, kind="stable")[:, :10]
    gain = world.expected_clicks(req, pages) - world.expected_clicks(req, plain)
    assert gain.mean() > 0.1 and gain.mean() > 5 * gain.std() / np.sqrt(len(gain))
    assert all(violations(req.cat[i][pages[i]], cfg) == [] for i in range(300))


def test_save_and_load_give_the_same_values(trained, tmp_path):
    _, model, _ = trained
    save_slate_model(model, tmp_path / "slate.pt")
    again = load_slate_model(tmp_path / "slate.pt")
    a, b = SlateValue(model), SlateValue(again)
    cats, scores = np.array([0, 1, 2, 9999]), np.array([0.3, -1.0, 2.0, 0.0])   # 9999: never seen
    assert a.values(a.start(None, cats, scores), 0) == pytest.approx(b.values(b.start(None, cats, scores), 0))
    assert int(model.codes([9999, -1])[0]) == model.unknown == int(model.codes([9999, -1])[1])


def test_start_slot_feeds_the_fixed_slots(trained):
    world, model, _ = trained
    req = world.requests(20)
    for i in range(20):
        r = rerank(req.score[i], req.cat[i], 10, RerankConfig(start_slot=2), SlateValue(model))
        assert r.order[:2].tolist() == np.argsort(-req.score[i], kind="stable")[:2].tolist()
        # the fixed slots may repeat a category (as ranked); from slot 2 on the rules hold
        assert violations(req.cat[i][r.order][1:], RerankConfig(top=9, max_per_category=0)) == []


def test_untrained_model_shapes():
    m = SlateModel(SlateModelConfig(n_categories=3, k=5), np.array([2, 5, 7]))
    out = m(torch.zeros(4, 5), m.codes(np.array([[2, 5, 7, 1, 2]] * 4)))
    assert out.shape == (4, 5)
    assert m.codes([1])[0] == m.unknown
