"""Retrieval: the stage before the ranker (issue 14).

- :mod:`retrieval.model`: the two-tower model (stream tower; causal-transformer user tower with
  time-gap encoding and long-short fusion, or K interests).
- :mod:`retrieval.data`: training and query rows from an event log (user histories before t).
- :mod:`retrieval.train`: in-batch sampled softmax with logQ correction.
- :mod:`retrieval.evaluate`: recall@k / ndcg@10 over the catalog, all / new queries.
- :mod:`retrieval.index`: the ANN index over the live streams (updates while serving).
"""
