r"""Metapath2vec embeddings of users, streams, items and categories.

The model is MetaPath2Vec from `"metapath2vec: Scalable Representation Learning for
Heterogeneous Networks" <https://ericdongyx.github.io/papers/KDD17-dong-chawla-swami-metapath2vec.pdf>`_
(Dong, Chawla, Swami, KDD 2017), as in PyG's :class:`torch_geometric.nn.MetaPath2Vec`:
random walks follow a metapath :math:`\mathcal{P} = (T_0 \xrightarrow{r_1} T_1 \cdots)`
(each step draws a uniform neighbour along the next relation) and a skip-gram objective with
negative sampling pulls together the nodes that co-occur within ``context_size`` of each other.
PyG's ``MetaPath2Vec.loss`` is

.. math::
    \mathcal{L} = -\frac{1}{|\mathcal{D}_+|}\sum_{(v, c) \in \mathcal{D}_+}
                      \log \sigma(\mathbf{z}_v^{\top} \mathbf{z}_c)
                  -\frac{1}{|\mathcal{D}_-|}\sum_{(a, b) \in \mathcal{D}_-}
                      \log \big(1 - \sigma(\mathbf{z}_a^{\top} \mathbf{z}_b) + \epsilon\big)

over positive pairs :math:`\mathcal{D}_+` (``c`` at distance :math:`1 \le k < C` after ``v`` on a
walk) and negative pairs :math:`\mathcal{D}_-`: PyG's negative "walks" are ``num_negative_samples``
(:math:`K`) rows of UNIFORM nodes of the metapath's types per walk, windowed like the positives,
so (but for the first window) both ends of a negative pair are uniform nodes of the two position
types. One table :math:`\mathbf{Z}` (``[num_nodes, dim]``) holds every node type, so
:math:`\mathbf{z}_u^{\top}\mathbf{z}_s` scores a user–stream pair.

Two training loops, selected by ``M2VConfig.loop``:

``"reference"``
    PyG's documented loop: one ``MetaPath2Vec(..., sparse=True)`` per metapath (all re-based onto
    ONE shared ``nn.Embedding`` with a global node layout), ``model.loader(batch_size=128,
    shuffle=True)``, ``model.loss`` and ``torch.optim.SparseAdam``. Kept for the benchmark and as
    the definition of the objective.

``"fast"`` (default)
    The same walks and the same objective, built for CPU throughput (``bench/metapath2vec.py``):

    * walks are sampled vectorised, thousands at a time (one ``torch.rand`` + CSR gather per step
      for the whole chunk, not a Python call per batch of 128 start nodes);
    * a batch is ``batch_size`` whole walks: the ``[B, L+1, d]`` rows are gathered ONCE and every
      positive pair ``(i, i+k)`` is a shifted elementwise product of that block (PyG gathers each
      window's ``C`` rows again, ``L+2-C`` times per walk);
    * negatives: per batch and node type, ``negative_blocks`` (:math:`N_b`) blocks of
      ``negative_pool`` (:math:`P`) uniform nodes; the mean negative term of a type pair
      :math:`(T, T')` is estimated on all :math:`P^2` pairs within each block pair (one ``bmm`` of
      ``[N_b, P, d] x [N_b, d, P]``), weighted by that type pair's share of the positive pairs —
      the expectation PyG estimates with :math:`K` random pairs per positive pair (so :math:`K` only
      sets the reference loop's sample count; here :math:`N_b P^2` pairs over :math:`N_b P` distinct
      rows per type do, for any :math:`K`). Many small blocks rather than one big pool: every
      step must touch many distinct rows (as PyG's draws do) while the pair count stays cheap;
    * gradients are written by hand (no autograd graph; see :func:`_fast_batch_grads`) and a lazy
      row-wise Adam (the update rule of ``SparseAdam``) updates only the touched rows, duplicates
      summed with ``index_add_``;
    * dead walk positions (a node with no neighbour along the next relation) are masked out;
      PyG routes them to a dummy node that is trained as if it were a neighbour.

Combination across metapaths: all metapaths train ONE shared table (their batches interleave in
every epoch), so each node type has a single embedding space and dot products across types are
meaningful; a node type several metapaths cover gets the gradients of all of them. (Averaging
per-metapath tables would average unrelated, arbitrarily rotated spaces.)

Nodes that no walk reaches (isolated or zero-degree along every metapath: a stream that just
started, a user with no watch in the window) never crash a job and get a defined vector:
a warm-started row keeps its previous vector; otherwise a stream / item gets the mean of the
trained nodes of its type in its category (``stream–in–category`` / ``item–in–category``), else
the mean of the trained nodes of its type; a type that no walk covers at all gets zeros. The
type mean is also the ``default`` of :meth:`Embeddings.lookup` for unknown ids.

Warm start (``warm_start=Embeddings``): rows whose ORIGINAL id exists in the previous version
start from their previous vector (matched through the id maps); new ids get the random init
:math:`\mathcal{N}(0, \sigma^2)` with :math:`\sigma` = the previous vectors' std, so they live at
the same scale.

torch and torch_geometric are imported inside the functions.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

if TYPE_CHECKING:                 # torch is imported inside the functions
    import torch

from .artifacts import Embeddings

log = logging.getLogger(__name__)

EPS = 1e-15                       # as PyG: log(1 - sigmoid(t) + EPS)
WALK_CHUNK = 4096                 # fast loop: walks sampled at a time (memory bound; metapath mixing)


@dataclass
class M2VConfig:
    r"""Hyper-parameters of :func:`train_metapath2vec`.

    Args:
        dim (int): embedding size :math:`d`.
        walk_length (int): steps per walk :math:`L` (a walk has :math:`L+1` nodes).
        context_size (int): window :math:`C`; pairs are the nodes ``1 .. C-1`` steps apart.
        walks_per_node (int): walks started from every node of a metapath's first type, per epoch.
        num_negative_samples (int): :math:`K` random negative pairs per positive pair (reference
            loop; the objective averages them, so :math:`K` is a sample count — the fast loop
            estimates the same mean with its pools, see the module docstring).
        epochs (int): passes over freshly sampled walks.
        batch_size (int): fast loop: walks per step; reference loop: start nodes per step (PyG's
            loader batch; each gives ``walks_per_node`` walks).
        lr (float, optional): Adam step size; ``None``: 0.01 (PyG's example uses 0.01 too).
        metapaths (list, optional): each a list of edge-type triples; ``None``:
            :func:`graph.build.default_metapaths` of the graph.
        seed (int): seeds walks, negatives and the initialisation.
        loop (str): ``"fast"`` or ``"reference"``.
        negative_pool (int): fast loop: rows :math:`P` per negative block (all :math:`P^2` pairs
            of a block pair are scored).
        negative_blocks (int): fast loop: blocks :math:`N_b` per node type per step (so
            :math:`N_b P` distinct uniform rows per type per step).
        init_std (float, optional): std of the random init; ``None``: 1.0 for the reference loop
            (``nn.Embedding``'s default), :math:`1/\sqrt{d}` for the fast loop.
        num_threads (int, optional): ``torch.set_num_threads`` for the run (restored after).
        max_steps (int, optional): stop every epoch after this many optimizer steps (benchmarks
            of the reference loop on big graphs); ``None``: full epochs.
        log_every (int): log the loss every this many epochs.
    """
    dim: int = 64
    walk_length: int = 20
    context_size: int = 5
    walks_per_node: int = 5
    num_negative_samples: int = 5
    epochs: int = 5
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    metapaths: Optional[list] = None
    seed: int = 0
    loop: str = "fast"
    negative_pool: int = 64
    negative_blocks: int = 32
    init_std: Optional[float] = None
    num_threads: Optional[int] = None
    max_steps: Optional[int] = None
    log_every: int = 1

    def resolved(self) -> "M2VConfig":
        if self.loop not in ("fast", "reference"):
            raise ValueError(f"loop must be 'fast' or 'reference', got {self.loop!r}")
        fast = self.loop == "fast"
        out = M2VConfig(**{**asdict(self), "metapaths": self.metapaths})
        if out.batch_size is None:
            out.batch_size = 512 if fast else 128
        if out.lr is None:
            out.lr = 0.01
        if out.init_std is None:
            out.init_std = 1.0 / math.sqrt(out.dim) if fast else 1.0
        if out.walk_length < 1 or out.context_size < 2 or out.walk_length + 1 < out.context_size:
            raise ValueError("need walk_length >= 1 and 2 <= context_size <= walk_length + 1")
        return out


# ----------------------------------------------------------------------------- layout
class _Layout:
    """Global node layout: the node types of the graph stacked in one index space."""

    def __init__(self, num_nodes: dict):
        self.types = sorted(num_nodes)
        self.num_nodes = dict(num_nodes)
        self.start, self.end = {}, {}
        n = 0
        for t in self.types:
            self.start[t] = n
            n += int(num_nodes[t])
            self.end[t] = n
        self.total = n
        self.type_index = {t: i for i, t in enumerate(self.types)}


def _check_metapaths(graph, metapaths: Sequence, walk_length: int) -> list:
    out = []
    for mp in metapaths:
        mp = [tuple(et) for et in mp]
        if not mp:
            raise ValueError("empty metapath")
        for et in mp:
            if len(et) != 3:
                raise ValueError(f"metapath edge type must be (src, relation, dst), got {et!r}")
            if et not in graph.data.edge_types:
                raise ValueError(f"metapath edge type {et} is not in the graph (have {graph.data.edge_types})")
        for a, b in zip(mp[:-1], mp[1:]):
            if a[-1] != b[0]:
                raise ValueError(f"invalid metapath: {a} is followed by {b}")
        if walk_length > len(mp) and mp[0][0] != mp[-1][-1]:
            raise ValueError(f"walk_length {walk_length} is longer than the metapath {mp}, which is not a cycle")
        out.append(mp)
    return out


def _csr(edge_index, n_src: int):
    """``(rowptr [n_src+1], col [E])`` of an edge index sorted by source."""
    import torch
    src, dst = edge_index[0], edge_index[1]
    order = torch.argsort(src * max(int(dst.max()) + 1 if dst.numel() else 1, 1) + dst) if src.numel() else src
    col = dst[order].contiguous()
    counts = torch.bincount(src, minlength=n_src) if src.numel() else torch.zeros(n_src, dtype=torch.long)
    rowptr = torch.zeros(n_src + 1, dtype=torch.long)
    rowptr[1:] = torch.cumsum(counts, 0)
    return rowptr, col


def _position_types(mp: list, walk_length: int) -> list:
    """Node type at every position ``0 .. L`` of a walk along ``mp``."""
    return [mp[0][0]] + [mp[i % len(mp)][2] for i in range(walk_length)]


# ----------------------------------------------------------------------------- walks (fast loop)
class WalkSampler:
    r"""Vectorised metapath random walks over the global layout.

    :meth:`sample` returns ``[num_walks, L+1]`` int64 global node ids, ``-1`` where the walk died
    (the node has no neighbour along the next relation; every later position is ``-1`` too).
    """

    def __init__(self, graph, layout: _Layout, metapath: list, walk_length: int):
        self.metapath = metapath
        self.walk_length = walk_length
        self.layout = layout
        self.csr = {et: _csr(graph.edge_index(et), layout.num_nodes[et[0]]) for et in set(metapath)}
        self.pos_types = _position_types(metapath, walk_length)
        self.start_type = metapath[0][0]
        rowptr, _ = self.csr[metapath[0]]
        deg = rowptr[1:] - rowptr[:-1]
        self.num_start_nodes = layout.num_nodes[self.start_type]
        self.active_starts = (deg > 0).nonzero().view(-1)        # isolated starts give empty walks

    def starts(self, walks_per_node: int, generator) -> "torch.Tensor":
        """Local ids of the start nodes of one epoch (every non-isolated start node
        ``walks_per_node`` times), shuffled."""
        import torch
        st = self.active_starts.repeat(walks_per_node)
        return st[torch.randperm(st.numel(), generator=generator)]

    def sample(self, starts, generator) -> "torch.Tensor":
        """Walks ``[len(starts), L+1]`` (global ids, ``-1`` = dead) from local start ids."""
        import torch
        cur = starts
        n = cur.numel()
        out = torch.full((n, self.walk_length + 1), -1, dtype=torch.long)
        out[:, 0] = cur + self.layout.start[self.start_type]
        alive = torch.ones(n, dtype=torch.bool)
        for i in range(self.walk_length):
            et = self.metapath[i % len(self.metapath)]
            rowptr, col = self.csr[et]
            if col.numel() == 0:
                break
            c = cur.clamp(min=0)
            lo = rowptr[c]
            deg = rowptr[c + 1] - lo
            alive &= deg > 0
            if not bool(alive.any()):
                break
            r = (torch.rand(n, generator=generator) * deg).long()
            r = torch.minimum(r, (deg - 1).clamp(min=0))              # float rounding at rand -> 1
            nxt = col[(lo + r).clamp(max=col.numel() - 1)]
            cur = torch.where(alive, nxt, torch.full_like(nxt, -1))
            out[:, i + 1] = torch.where(alive, cur + self.layout.start[et[2]], cur)
        return out


# ----------------------------------------------------------------------------- sparse Adam
class _RowAdam:
    r"""Lazy Adam on the rows of a dense table (the update rule of ``torch.optim.SparseAdam``).

    ``step(rows, grads)``: ``rows [n]`` may repeat (their gradients are summed); only the distinct
    rows' moments and weights change.
    """

    def __init__(self, weight, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import torch
        self.w = weight
        self.m = torch.zeros_like(weight)
        self.v = torch.zeros_like(weight)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.t = 0

    def step(self, rows, grads, lr: Optional[float] = None) -> None:
        import torch
        self.t += 1
        uniq, inv = torch.unique(rows, return_inverse=True)
        g = torch.zeros(uniq.numel(), grads.shape[1], dtype=grads.dtype).index_add_(0, inv, grads)
        m = self.m.index_select(0, uniq).mul_(self.b1).add_(g, alpha=1 - self.b1)
        v = self.v.index_select(0, uniq).mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
        self.m.index_copy_(0, uniq, m)
        self.v.index_copy_(0, uniq, v)
        step = (lr or self.lr) * math.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        upd = m.div_(v.sqrt_().add_(self.eps)).mul_(-step)
        self.w.index_add_(0, uniq, upd)


# ----------------------------------------------------------------------------- fast loop
def _fast_batch_grads(H, mask, band, pair_id, pair_keys: list, pools: dict):
    r"""Loss and gradients of one batch of walks, by hand (no autograd).

    Positive pairs are the alive positions :math:`(i, j)`, :math:`1 \le j - i < C`, of each walk:
    with :math:`\mathbf{S} = \mathbf{H}\mathbf{H}^{\top}` (``[B, L+1, L+1]``, one ``bmm``) and
    :math:`\mathbf{V}` the 0/1 mask of those pairs, the positive part of the loss is
    :math:`-\sum \mathbf{V} \odot \log\sigma(\mathbf{S})`. Negative pairs are, as in PyG's
    ``MetaPath2Vec`` (whose negative "walks" are uniform nodes of the metapath's types), pairs of
    two uniform nodes of the two position types: for every type pair :math:`(T, T')` with
    :math:`n_{TT'}` positive pairs in the batch, all pairs of the pool blocks
    :math:`\mathcal{A}_T \times \mathcal{A}_{T'}` (block ``i`` with block ``i``, one ``bmm``,
    :math:`a \ne b`) estimate the mean negative term:

    .. math::
        \ell = \frac{1}{n_{+}} \Big[ -\sum_{b, i, j} V_{bij} \log\sigma(S_{bij})
              - \sum_{(T, T')} \frac{n_{TT'}}{|\mathcal{A}_T \times \mathcal{A}_{T'}|}
                \sum_{a, b} \log\big(1 - \sigma(\mathbf{z}_a^{\top}\mathbf{z}_b) + \epsilon\big) \Big]

    i.e. PyG's ``loss`` (mean positive term + mean negative term, the negative pairs following
    the type-pair mix of the positives). Gradients:
    :math:`\mathbf{G} = \mathbf{V} \odot (\sigma(\mathbf{S}) - 1) / n_{+}` and
    :math:`\partial\ell/\partial\mathbf{H} = (\mathbf{G} + \mathbf{G}^{\top})\mathbf{H}`; for a pool
    pair block :math:`\mathbf{N} = w\,\sigma(\mathbf{A}\mathbf{B}^{\top})`,
    :math:`\partial\ell/\partial\mathbf{A} = \mathbf{N}\mathbf{B}` and
    :math:`\partial\ell/\partial\mathbf{B} = \mathbf{N}^{\top}\mathbf{A}`.

    Args:
        H (Tensor): ``[B, L+1, d]`` gathered rows of the walks.
        mask (Tensor): ``[B, L+1]`` bool, alive positions.
        band (Tensor): ``[L+1, L+1]`` float, 1 where ``1 <= j - i < C``.
        pair_id (Tensor): ``[(L+1)^2]`` int64, index into ``pair_keys`` of each ``(i, j)`` (``-1``
            off the band).
        pair_keys (list): the ``(type, type)`` pairs of the metapath's positions.
        pools (dict[int, Tensor]): type index → ``[N_b, P, d]`` uniform rows of that type (pairs
            are formed within block ``i`` of both types).

    Returns:
        ``(loss_sum, n_pos, gH [B, L+1, d], {type: gP [N_b, P, d]})`` with ``loss_sum = n_pos * loss``;
        the gradients are those of the MEAN loss :math:`\ell`.
    """
    import torch
    import torch.nn.functional as F
    m = mask.to(H.dtype)
    V = band * (m.unsqueeze(2) * m.unsqueeze(1))                     # [B, L+1, L+1]
    S = torch.bmm(H, H.transpose(1, 2))
    pos_sum = -float((F.logsigmoid(S) * V).sum())
    per_ij = V.sum(0).view(-1)
    on = pair_id >= 0
    n_pairs = torch.zeros(len(pair_keys), dtype=H.dtype).index_add_(0, pair_id[on], per_ij[on]).tolist()
    n_pos = float(sum(n_pairs))
    n = max(n_pos, 1.0)
    G = torch.sigmoid(S).sub_(1.0).mul_(V).div_(n)
    gH = torch.bmm(G + G.transpose(1, 2), H)
    neg_sum = 0.0
    gP = {t: torch.zeros_like(P) for t, P in pools.items()}
    for (a, b), c in zip(pair_keys, n_pairs):
        if c <= 0 or a not in pools or b not in pools:          # no positive pair of these types
            continue
        A, Bq = pools[a], pools[b]                                   # [nb, P, d]
        sig = torch.sigmoid(torch.bmm(A, Bq.transpose(1, 2)))       # [nb, P, P]
        nb, P = A.shape[0], A.shape[1]
        size = nb * P * Bq.shape[1]
        if a == b:                                                   # one pool: leave out a·a
            torch.diagonal(sig, dim1=1, dim2=2).zero_()
            size -= nb * P
        w = c / max(size, 1)
        neg_sum -= w * float(torch.rsub(sig, 1.0).add_(EPS).log_().sum())    # the zeroed diagonal adds 0
        g = sig.mul_(w / n)
        gP[a].baddbmm_(g, Bq)
        gP[b].baddbmm_(g.transpose(1, 2), A)
    return pos_sum + neg_sum, n_pos, gH, gP


def _train_fast(graph, layout, metapaths, cfg: M2VConfig, W, progress: Optional[Callable] = None) -> dict:
    import torch
    gen = torch.Generator().manual_seed(cfg.seed)
    samplers = [WalkSampler(graph, layout, mp, cfg.walk_length) for mp in metapaths]
    opt = _RowAdam(W, cfg.lr)
    trained = torch.zeros(layout.total, dtype=torch.bool)
    L1 = cfg.walk_length + 1
    ij = torch.arange(L1)
    gap = ij.view(1, -1) - ij.view(-1, 1)                           # j - i
    band = ((gap >= 1) & (gap < cfg.context_size)).to(W.dtype)
    pair_ids, pair_keys, pool_types = [], [], []
    for s in samplers:                                              # the type pair of every (i, j)
        tid = [layout.type_index[t] for t in s.pos_types]
        keys = sorted({(min(tid[i], tid[j]), max(tid[i], tid[j])) for i in range(L1) for j in range(L1)
                       if band[i, j] > 0})
        pid = torch.full((L1, L1), -1, dtype=torch.long)
        for i in range(L1):
            for j in range(L1):
                if band[i, j] > 0:
                    pid[i, j] = keys.index((min(tid[i], tid[j]), max(tid[i], tid[j])))
        pair_ids.append(pid.view(-1))
        pair_keys.append(keys)
        pool_types.append(sorted({t for key in keys for t in key}))
    P = cfg.negative_pool
    NB = cfg.negative_blocks
    epochs = []
    walks_counted = sum(s.num_start_nodes for s in samplers) * cfg.walks_per_node
    chunk = max(cfg.batch_size, (WALK_CHUNK // cfg.batch_size) * cfg.batch_size)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        t_walk, total, pairs = 0.0, 0.0, 0.0
        # walks are sampled chunk by chunk (bounded memory at any graph size); the chunks of all
        # metapaths are visited in a random order, so the metapaths' batches interleave
        starts = [s.starts(cfg.walks_per_node, gen) for s in samplers]
        plan = [(i, j) for i, st in enumerate(starts) for j in range(0, st.numel(), chunk)]
        steps = 0
        for o in torch.randperm(len(plan), generator=gen).tolist():
            if cfg.max_steps is not None and steps >= cfg.max_steps:
                break
            i, j = plan[o]
            tw = time.perf_counter()
            walks = samplers[i].sample(starts[i][j:j + chunk], gen)
            walks = walks[walks[:, 1] >= 0]                          # a walk needs a second node
            trained[walks[walks >= 0]] = True
            t_walk += time.perf_counter() - tw
            pid, keys, types = pair_ids[i], pair_keys[i], pool_types[i]
            for b in range(0, walks.shape[0], cfg.batch_size):
                if cfg.max_steps is not None and steps >= cfg.max_steps:
                    break
                steps += 1
                rw = walks[b:b + cfg.batch_size]
                mask = rw >= 0
                idx = rw.clamp(min=0).view(-1)
                B, L1 = rw.shape
                H = W.index_select(0, idx).view(B, L1, -1)
                pool_idx = {t: torch.randint(0, layout.num_nodes[layout.types[t]], (NB * P,), generator=gen)
                            + layout.start[layout.types[t]] for t in types if layout.num_nodes[layout.types[t]]}
                pools = {t: W.index_select(0, r).view(NB, P, -1) for t, r in pool_idx.items()}
                loss_sum, n_pos, gH, gP = _fast_batch_grads(H, mask, band, pid, keys, pools)
                # dead positions have zero gradient and point at row 0 of the table: drop them
                keep = mask.view(-1)
                rows, grads = idx, gH.view(B * L1, -1)
                if not bool(keep.all()):
                    rows, grads = rows[keep], grads[keep]
                opt.step(torch.cat([rows, *pool_idx.values()]),
                         torch.cat([grads, *(g.view(NB * P, -1) for g in gP.values())]))
                total += loss_sum
                pairs += n_pos
        dt = time.perf_counter() - t0
        walks_done = walks_counted if cfg.max_steps is None else min(walks_counted, steps * cfg.batch_size)
        epochs.append({"epoch": epoch + 1, "loss": total / max(pairs, 1.0), "seconds": dt, "steps": steps,
                       "walk_seconds": t_walk, "walks": walks_done, "pairs": int(pairs)})
        if progress is not None:
            progress(epochs[-1])
    return {"epochs": epochs, "trained": trained}


# ----------------------------------------------------------------------------- reference loop
def _train_reference(graph, layout, metapaths, cfg: M2VConfig, W, progress: Optional[Callable] = None) -> dict:
    """PyG's documented loop on one shared sparse embedding (see the module docstring)."""
    import torch
    from torch_geometric.nn import MetaPath2Vec

    torch.manual_seed(cfg.seed)
    dummy = layout.total
    emb = torch.nn.Embedding(layout.total + 1, cfg.dim, sparse=True)
    with torch.no_grad():
        emb.weight[:dummy] = W
        emb.weight[dummy].normal_(0.0, cfg.init_std)
    models = []
    for mp in metapaths:
        ets = set(mp)
        if any(graph.edge_index(et).shape[1] == 0 for et in ets):
            # PyG's sampler indexes the CSR of an empty relation out of bounds (IndexError when a
            # node type has no node); no walk could pass it anyway
            log.warning("reference loop: skipping metapath %s (an empty relation)", mp)
            continue
        model = MetaPath2Vec({et: graph.edge_index(et) for et in ets}, embedding_dim=cfg.dim, metapath=mp,
                             walk_length=cfg.walk_length, context_size=cfg.context_size,
                             walks_per_node=cfg.walks_per_node, num_negative_samples=cfg.num_negative_samples,
                             num_nodes_dict=dict(layout.num_nodes), sparse=True)
        # re-base onto the shared table and the global layout (PyG lays out only this metapath's types)
        model.embedding = emb
        model.dummy_idx = dummy
        model.start, model.end = dict(layout.start), dict(layout.end)
        offset = [layout.start[mp[0][0]]] + [layout.start[et[-1]] for et in mp] * (cfg.walk_length // len(mp) + 1)
        model.offset = torch.tensor(offset[:cfg.walk_length + 1])
        models.append(model)
    opt = torch.optim.SparseAdam(list(emb.parameters()), lr=cfg.lr)
    trained = torch.zeros(dummy + 1, dtype=torch.bool)
    walks_counted = sum(layout.num_nodes[mp[0][0]] for mp in metapaths) * cfg.walks_per_node
    epochs = []
    windows = cfg.walk_length + 2 - cfg.context_size
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        total, n, walks_done = 0.0, 0, 0
        for model in models:
            for pos_rw, neg_rw in model.loader(batch_size=cfg.batch_size, shuffle=True):
                if cfg.max_steps is not None and n >= cfg.max_steps:
                    break
                walks_done += pos_rw.shape[0] // windows                  # windows per walk
                opt.zero_grad()
                loss = model.loss(pos_rw, neg_rw)
                loss.backward()
                opt.step()
                total += loss.item()
                n += 1
                real = pos_rw != dummy
                ok = real.sum(1) >= 2                                 # a window with a real pair
                trained[pos_rw[ok][real[ok]]] = True
        dt = time.perf_counter() - t0
        epochs.append({"epoch": epoch + 1, "loss": total / max(n, 1), "seconds": dt, "steps": n,
                       "walks": walks_counted if cfg.max_steps is None else walks_done})
        if progress is not None:
            progress(epochs[-1])
    with torch.no_grad():
        W.copy_(emb.weight[:dummy])
    return {"epochs": epochs, "trained": trained[:dummy]}


# ----------------------------------------------------------------------------- public API
def train_metapath2vec(graph, config: Optional[M2VConfig] = None, *, warm_start: Optional[Embeddings] = None,
                       progress: Optional[Callable[[dict], None]] = None) -> Embeddings:
    r"""Train Metapath2vec embeddings of every node type of ``graph``.

    Args:
        graph (graph.build.GraphData): the graph and its id maps.
        config (M2VConfig, optional): hyper-parameters and loop (default :class:`M2VConfig()`).
        warm_start (Embeddings, optional): the previous version; rows of ids that still exist
            start from their previous vector.
        progress (callable, optional): called with each epoch's figures (a dict).

    Returns:
        :class:`graph.artifacts.Embeddings`: ``tables[t]`` ``[num_nodes[t], dim]`` float32 for every
        node type of the graph (rows in contiguous-id order, ``id_maps`` = the graph's), the type
        defaults, and ``meta`` (config, counts, per-epoch figures, ``untrained`` per type).
    """
    import torch

    from .build import default_metapaths

    cfg = (config or M2VConfig()).resolved()
    metapaths = cfg.metapaths if cfg.metapaths is not None else default_metapaths(graph)
    if cfg.metapaths is not None and not metapaths:
        raise ValueError("M2VConfig.metapaths is empty")
    metapaths = _check_metapaths(graph, metapaths, cfg.walk_length)
    if not metapaths:               # no edge along any default metapath (an empty log): no walks
        log.warning("train_metapath2vec: no default metapath has edges; every row gets its fallback (zeros)")
    cfg.metapaths = metapaths
    layout = _Layout(graph.num_nodes)
    old_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    t0 = time.perf_counter()
    try:
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        init_std = cfg.init_std
        warm = torch.zeros(layout.total, dtype=torch.bool)
        prev_rows = {}
        if warm_start is not None:
            if warm_start.dim != cfg.dim:
                raise ValueError(f"warm start has dim {warm_start.dim}, config has {cfg.dim}")
            for t in layout.types:
                if t not in warm_start.tables or not len(graph.id_maps[t]):
                    continue
                idx = warm_start.index_of(t, graph.id_maps[t])
                prev_rows[t] = idx
                warm[layout.start[t]:layout.end[t]] = torch.from_numpy(idx >= 0)
            known = [warm_start.tables[t][i[i >= 0]] for t, i in prev_rows.items() if (i >= 0).any()]
            if known:
                init_std = float(np.concatenate(known).std()) or init_std
        W = torch.randn(layout.total, cfg.dim, generator=gen) * init_std
        for t, idx in prev_rows.items():
            ok = idx >= 0
            if ok.any():
                rows = torch.from_numpy(np.flatnonzero(ok) + layout.start[t])
                W[rows] = torch.from_numpy(warm_start.tables[t][idx[ok]])
        log.info("train_metapath2vec: %s loop, %d metapaths, %d nodes, dim %d, %d epochs, %d warm rows",
                 cfg.loop, len(metapaths), layout.total, cfg.dim, cfg.epochs, int(warm.sum()))

        def report(e):
            if cfg.log_every and (e["epoch"] % cfg.log_every == 0 or e["epoch"] == cfg.epochs):
                log.info("train_metapath2vec: epoch %d loss %.4f %.2fs (%.0f walks/s)", e["epoch"], e["loss"],
                         e["seconds"], e["walks"] / max(e["seconds"], 1e-9))
            if progress is not None:
                progress(e)

        train = _train_fast if cfg.loop == "fast" else _train_reference
        out = train(graph, layout, metapaths, cfg, W, report)
        trained = out["trained"]
    finally:
        torch.set_num_threads(old_threads)
    Z = W.detach().numpy().astype(np.float32, copy=False)
    tables, defaults, untrained = _finish_tables(graph, layout, Z, trained.numpy(), warm.numpy())
    epochs = out["epochs"]
    secs = [e["seconds"] for e in epochs]
    meta = {
        "config": {**asdict(cfg), "metapaths": [[list(et) for et in mp] for mp in metapaths]},
        "counts": graph.counts,
        "train": {"loop": cfg.loop, "epochs": epochs, "final_loss": epochs[-1]["loss"] if epochs else None,
                  "epoch_seconds": float(np.mean(secs)) if secs else None,
                  "walks_per_s": (float(np.sum([e["walks"] for e in epochs]) / max(np.sum(secs), 1e-9))
                                  if secs else None),
                  "seconds": round(time.perf_counter() - t0, 3), "untrained": untrained,
                  "warm_rows": int(warm.sum())},
        "fallback": "untrained rows: warm-start vector, else mean of trained rows of the type in the node's "
                    "category (stream/item), else mean of trained rows of the type; a type with none: zeros",
    }
    return Embeddings(tables=tables, id_maps={t: graph.id_maps[t].copy() for t in layout.types},
                      defaults=defaults, meta=meta)


def _finish_tables(graph, layout: _Layout, Z: np.ndarray, trained: np.ndarray, warm: np.ndarray):
    """Split the global table per type and give every untrained row its fallback vector."""
    tables, defaults, untrained = {}, {}, {}
    dim = Z.shape[1]
    for t in layout.types:
        a, b = layout.start[t], layout.end[t]
        tab = np.array(Z[a:b], dtype=np.float32, copy=True)
        tr, wm = trained[a:b], warm[a:b]
        good = tr | wm                                  # rows with a learned vector
        finite = np.isfinite(tab).all(axis=1)
        good &= finite
        default = tab[tr & finite].mean(axis=0) if (tr & finite).any() else (
            tab[good].mean(axis=0) if good.any() else np.zeros(dim, np.float32))
        fill = ~good
        cats = graph.node_category.get(t)
        if fill.any() and cats is not None and len(cats) == len(tab):
            src = tr & finite & (cats >= 0)
            if src.any():
                n_cat = int(cats.max()) + 1
                sums = np.zeros((n_cat, dim), np.float64)
                np.add.at(sums, cats[src], tab[src])
                cnt = np.bincount(cats[src], minlength=n_cat)
                has = fill & (cats >= 0)
                has &= cnt[np.maximum(cats, 0)] > 0
                rows = np.flatnonzero(has)
                tab[rows] = (sums[cats[rows]] / cnt[cats[rows], None]).astype(np.float32)
                fill &= ~has
        tab[fill] = default
        tables[t] = tab
        defaults[t] = default.astype(np.float32)
        untrained[t] = int((~tr).sum())
    return tables, defaults, untrained


__all__ = ["M2VConfig", "train_metapath2vec", "WalkSampler", "Embeddings"]
