"""ranking.report (streamrank report): a real run on a one-day simulated world writes the version
table, the plots and the raw rows; a second task's section is merged beside the first; bad
arguments are errors that say what is wrong."""
import json

import pytest

from ranking.report import VERSIONS, run, section


def test_a_simulator_report_writes_tables_plots_and_rows(tmp_path):
    out = tmp_path / "docs" / "evolution.md"
    res = run("simulator", sim_days=1, seeds=(0,), ablations=["full_no_biasnet"], epochs=1, out=str(out))
    text = out.read_text()
    for v, m, _ in VERSIONS:
        assert f"| {v} (`{m}`) |" in text
    assert "`full_no_biasnet`" in text and "ndcg@10_true" in text
    names = {p.split("/")[-1] for p in res["plots"]}
    assert {"evolution_simulator_ndcg_at_10_true.png", "evolution_simulator_loss.png",
            "evolution_simulator_calibration.png"} <= names
    assert all((out.parent / n).stat().st_size > 1000 for n in names)
    raw = json.loads(out.with_suffix(".json").read_text())["simulator"]
    assert {r["model"] for r in raw} == {"lightgbm", "v2", "v3", "full", "full_no_biasnet"}
    assert all(0.5 < r["ndcg@10_true"] <= 1.0 for r in raw)
    # the numbers in the table are the rows' (one seed: the mean is the value)
    full = next(r for r in raw if r["model"] == "full")
    assert f"{full['ndcg@10_true']:.4f} ± 0.0000" in text
    # another task's section is kept when this one is rewritten
    fake = [{"task": "twitch", "model": m, "seed": 0, "auc": 0.9, "mrr": 0.8} for _, m, _ in VERSIONS]
    from ranking.report import _merge_markdown
    _merge_markdown(out, "twitch", section("twitch", fake, [], out.parent, [0], "Twitch"))
    _merge_markdown(out, "simulator", section("simulator", raw, [], out.parent, [0], "again"))
    text = out.read_text()
    assert text.count("<!-- evolution:twitch -->") == 1 and text.count("<!-- evolution:simulator -->") == 1
    assert "again" in text and "| V4 (`full`) |" in text


def test_bad_arguments_say_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="needs --path"):
        run("twitch", out=str(tmp_path / "e.md"))
    with pytest.raises(ValueError, match="unknown ablations"):
        run("simulator", ablations=["nope"], out=str(tmp_path / "e.md"))
    with pytest.raises(ValueError, match="source must be"):
        run("taobao", out=str(tmp_path / "e.md"))
