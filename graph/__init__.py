"""Graph jobs: Metapath2vec embeddings of users, items, live streams and categories (seed 004, V3).

Modules (nothing is imported here: ``import graph`` stays light; attributes load lazily):

- :mod:`graph.build` — event log + catalog → ``HeteroData`` with contiguous id maps
  (:func:`~graph.build.build_graph`, :func:`~graph.build.from_twitch`, :func:`~graph.build.from_taobao`,
  :data:`~graph.build.METAPATHS`). Imports torch / torch_geometric.
- :mod:`graph.metapath2vec` — :class:`~graph.metapath2vec.M2VConfig`,
  :func:`~graph.metapath2vec.train_metapath2vec` (fast loop and PyG's reference loop; warm start;
  fallback vectors for nodes no walk reaches). torch is imported inside functions.
- :mod:`graph.evaluate` — held-out link prediction (:func:`~graph.evaluate.evaluate_link_prediction`)
  against the degree-product and popularity baselines.
- :mod:`graph.artifacts` — :class:`~graph.artifacts.Embeddings` (numpy only: what the API and the
  ranker load) and :func:`~graph.artifacts.load_active`.
- :mod:`graph.job` — the worker job :func:`~graph.job.train_and_register_embeddings`.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Embeddings": "graph.artifacts",
    "load_active": "graph.artifacts",
    "train_and_register_embeddings": "graph.job",
    "M2VConfig": "graph.metapath2vec",
    "train_metapath2vec": "graph.metapath2vec",
    "build_graph": "graph.build",
    "GraphData": "graph.build",
    "evaluate_link_prediction": "graph.evaluate",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'graph' has no attribute {name!r}")


__all__ = list(_LAZY)
