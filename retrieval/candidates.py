"""The ranker's candidates: the union of the retrieval channels, de-duplicated, within a budget.

Channels, in order of precedence (a stream brought by two keeps the first one's name):

- ``repeat``: the user's recently watched streams that are live (repeat consumption dominates
  live streaming: Rappaz et al. 2021);
- ``ann``: the two-tower's nearest live streams to the user's vector (retrieval.index);
- ``popular``: the most popular live streams, as fill.

Each channel is a ranked sequence of stream ids; :func:`merge` takes them in this order until the
budget (200 into the ranker) is full and says which channel brought each.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

BUDGET = 200
CHANNELS = ("repeat", "ann", "popular")


def merge(*, repeat: Optional[Iterable] = None, ann: Optional[Iterable] = None, popular: Optional[Iterable] = None,
          budget: int = BUDGET) -> tuple[list, list]:
    """``(ids, sources)``: at most ``budget`` distinct ids, repeat first, then ann, then popular."""
    ids: list = []
    sources: list = []
    seen: set = set()
    for name, channel in (("repeat", repeat), ("ann", ann), ("popular", popular)):
        if channel is None:
            continue
        for sid in (channel.tolist() if isinstance(channel, np.ndarray) else channel):
            if len(ids) >= budget:
                return ids, sources
            if sid in seen:
                continue
            seen.add(sid)
            ids.append(sid)
            sources.append(name)
    return ids, sources


__all__ = ["BUDGET", "CHANNELS", "merge"]
