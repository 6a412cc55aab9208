"""The ranker's artifact: weights, config, history, metrics and its input pipeline in one folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

MODEL_NAME = "ranker"


WEIGHTS_FILE = "ranker.pt"


CONFIG_FILE = "ranker.json"


def save_ranker(model, inputs, directory, *, history: Optional[dict] = None, metrics: Optional[dict] = None,
                fusion: Optional[dict] = None) -> Path:
    """The trained ranker (Biasnet included: the scorer drops it) + its input pipeline."""
    import torch
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), d / WEIGHTS_FILE)
    meta = {"config": model.config.to_dict(), "history": history or {}, "metrics": metrics or {},
            "fusion": fusion}
    (d / CONFIG_FILE).write_text(json.dumps(meta, indent=1, default=_json_default))
    inputs.save(d)
    return d


def load_ranker(directory):
    """(trained Ranker in eval mode, RankerInputs, meta)."""
    import torch
    from .dataset import RankerInputs
    from .model.ranker import Ranker, RankerConfig
    d = Path(directory)
    meta = json.loads((d / CONFIG_FILE).read_text())
    # versions saved before Biasnet had a shape / form option used the additive per-slot MLP
    model = Ranker(RankerConfig.from_dict({"bias_form": "additive", "bias_shape": "mlp", **meta["config"]}))
    model.load_state_dict(torch.load(d / WEIGHTS_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, RankerInputs.load(d), meta


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


__all__ = ["MODEL_NAME", "WEIGHTS_FILE", "CONFIG_FILE", "save_ranker", "load_ranker"]
