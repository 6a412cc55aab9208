"""Where the jointly learned position tower's confounding comes from, on a simulator world.

Trains the default ranker (``full``, training seed 0) on a world's fit split exactly as
``bench/quality.py`` does, then prints, per logged slot (exploration slates left out), the mean
residual of the debiased click logit against the TRUE relevance logit, ``a - logit(r)``, and the
part of it that is the stream's mean residual. A residual that rises down the list means the
relevance towers under-rate what the logging policy puts on top — the part of the policy's
ordering Biasnet then absorbs (docs/ranker.md). The level is arbitrary (Biasnet's
level absorbs it); the slope is what matters.

    python bench/confounding.py --sim-seed 3 --sim-days 7
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # as bench/quality.py, before torch
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np
import pandas as pd


def residual_by_slot(task, model, inputs, frame: pd.DataFrame) -> pd.DataFrame:
    """Per slot: mean residual ``a - logit(r)`` and the mean of its stream means (policy slates only)."""
    from ranking.evaluate import outputs
    truth = task.truth.drop_duplicates("event_id").set_index("event_id").loc[frame["event_id"].astype(str)]
    rel = np.clip(truth["relevance"].to_numpy(float), 1e-6, 1 - 1e-6)
    a = outputs(model, inputs, frame)["ctr_logit"]
    d = pd.DataFrame({"residual": a - (np.log(rel) - np.log1p(-rel)),
                      "slot": pd.to_numeric(frame["position"]).to_numpy(),
                      "stream": frame["stream_id"].to_numpy()})[~truth["randomized"].to_numpy(bool)]
    d["stream_part"] = d.groupby("stream")["residual"].transform("mean")
    out = d.groupby("slot")[["residual", "stream_part"]].mean()
    out["rows"] = d.groupby("slot").size()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim-seed", type=int, default=3)
    ap.add_argument("--sim-days", type=float, default=7)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    args = ap.parse_args(argv)
    import torch
    import quality as Q
    torch.set_num_threads(Q.THREADS)
    os.environ.setdefault("STREAMRANK_HOME", tempfile.mkdtemp(prefix="streamrank-confounding-"))
    task = Q.set_graph_cut(Q.SimulatorTask(Path(tempfile.mkdtemp(prefix="streamrank-confounding-")) / "sim",
                                           sim_seed=args.sim_seed, days=args.sim_days))
    gbdt, _, emb = Q.seed_inputs(task, args.seed)
    model, inputs, _, extra = Q.run_ours(task, "full", args.seed, gbdt, emb, Q.EPOCHS)
    print(f"world seed {args.sim_seed}, {args.sim_days:g} days; curve max error {extra['position_curve_max_err']:.4f} "
          f"(each slot's own impressions {extra['position_curve_max_err_shown']:.4f})")
    for name, frame in (("training rows", task.fit), ("test rows", task.test)):
        t = residual_by_slot(task, model, inputs, frame)
        print(f"\n{name}: residual a - logit(r) by slot (slot 10 minus slot 1: "
              f"{t['residual'].iloc[-1] - t['residual'].iloc[0]:+.3f}, stream part "
              f"{t['stream_part'].iloc[-1] - t['stream_part'].iloc[0]:+.3f})")
        print(t.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
