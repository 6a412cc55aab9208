r"""Metapath2vec embeddings of users, streams, items and categories.

The model is MetaPath2Vec from `"metapath2vec: Scalable Representation Learning for
Heterogeneous Networks" <https://ericdongyx.github.io/papers/KDD17-dong-chawla-swami-metapath2vec.pdf>`_
(Dong, Chawla, Swami, KDD 2017), as in PyG's :class:`torch_geometric.nn.MetaPath2Vec`:
random walks follow a metapath :math:`\mathcal{P} = (T_0 \xrightarrow{r_1} T_1 \cdots)`
(each step draws a uniform neighbour along the next relation) and a skip-gram objective with
negative sampling pulls together the nodes that co-occur within ``context_size`` of each other:

.. math::
    \mathcal{L} = -\sum_{(v, c)} \log \sigma(\mathbf{z}_v^{\top} \mathbf{z}_c)
                  - \frac{1}{K} \sum_{(v, n)} \log \sigma(-\mathbf{z}_v^{\top} \mathbf{z}_n)

over positive pairs :math:`(v, c)` (``c`` at distance :math:`1 \le k < C` after ``v`` on a
walk) and :math:`K` negatives per positive pair (``num_negative_samples``) drawn uniformly from
the nodes of the context's type — the weighting of PyG's ``MetaPath2Vec.loss`` (mean of the
positive terms + mean of the negative terms). One table :math:`\mathbf{Z}` holds every node
type, so :math:`\mathbf{z}_u^{\top}\mathbf{z}_s` scores a user–stream pair.

Two training loops over the same model, selected by ``M2VConfig.loop``:

``"reference"``
    PyG's documented loop: one ``MetaPath2Vec(..., sparse=True)`` per metapath (all of them
    re-based onto ONE shared ``nn.Embedding`` with a global node layout), ``model.loader(
    batch_size=128, shuffle=True)``, ``model.loss`` and ``torch.optim.SparseAdam``. Kept for the
    benchmark and as the definition of the objective.

``"fast"`` (default)
    The same walks and objective, built for CPU throughput (``bench/metapath2vec.py``):

    * walks are sampled once per epoch for every start node, vectorised over all walks
      (one ``torch.rand`` + CSR gather per step, not per batch);
    * a batch is ``batch_size`` whole walks: the ``[B, L+1, d]`` rows are gathered ONCE and every
      positive pair ``(i, i+k)``, ``1 <= k < C``, is a shifted elementwise product of that block
      (PyG gathers each window's ``C`` rows again, ``L+2-C`` times per walk);
    * negatives: for each context type a pool of ``negative_pool`` uniform nodes is drawn per
      batch and every walk position is scored against the whole pool with one GEMM; the term of
      centre :math:`v` is :math:`K \cdot n_T(v) \cdot \frac{1}{P}\sum_{p}\log\sigma(-\mathbf{z}_v^{\top}\mathbf{z}_p)`
      — an unbiased estimate of the same uniform-negative expectation (:math:`n_T(v)` = number of
      its positive contexts of type :math:`T`) with lower variance than :math:`K` draws per pair;
    * gradients come from autograd on the two gathered leaves (``[B, L+1, d]`` and the pools),
      then a hand-written lazy (sparse) Adam updates only the touched rows: duplicate rows are
      summed with ``index_add_`` and moments of untouched rows are left alone (as SparseAdam);
    * dead walk positions (a node with no neighbour along the next relation) are masked out;
      PyG routes them to a dummy node that is then trained as if it were a neighbour.

Combination across metapaths: all metapaths train ONE shared table (their batches are
interleaved in every epoch), so each node type has a single embedding space and dot products
across types are meaningful; a node type that several metapaths cover gets the gradient of all
of them. (Averaging per-metapath tables would average unrelated, arbitrarily rotated spaces.)

Nodes no walk reaches (isolated or zero-degree along every metapath: a stream that just started,
a user with no watch in the window) never crash a job and get a defined vector:
warm-started rows keep their previous vector; otherwise a stream / item gets the mean of the
trained nodes of its type in its category (``stream–in–category`` / ``item–in–category``), else
the mean of the trained nodes of its type; a type with no trained node at all gets zeros. The
type mean is also the ``default`` of :meth:`Embeddings.lookup` for unknown ids.

Warm start (``warm_start=Embeddings``): rows whose ORIGINAL id exists in the previous version
start from their previous vector (matched through the id maps), new ids get the fresh random
init (:math:`\mathcal{N}(0, \sigma^2)`, :math:`\sigma` = the previous vectors' per-coordinate
std, so they live at the same scale).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .artifacts import Embeddings

log = logging.getLogger(__name__)


@dataclass
class M2VConfig:
    r"""Hyper-parameters of :func:`train_metapath2vec`.

    Args:
        dim (int): embedding size :math:`d`.
        walk_length (int): steps per walk :math:`L` (a walk has :math:`L+1` nodes).
        context_size (int): window :math:`C`; pairs are the nodes ``1 .. C-1`` steps apart.
        walks_per_node (int): walks started from every node of a metapath's first type, per epoch.
        num_negative_samples (int): :math:`K` negatives per positive pair.
        epochs (int): passes over freshly sampled walks.
        batch_size (int): fast loop: walks per step; reference loop: start nodes per step (PyG's
            loader batch; each gives ``walks_per_node`` walks).
        lr (float, optional): Adam step size; ``None``: 0.02 (fast), 0.01 (reference, as PyG's
            example).
        metapaths (list, optional): each a list of edge-type triples; ``None``:
            :func:`graph.build.default_metapaths` of the graph.
        seed (int): seeds walks, negatives and the initialisation.
        loop (str): ``"fast"`` or ``"reference"``.
        negative_pool (int): fast loop: uniform negatives per context type per batch, shared.
        init_std (float, optional): std of the random init; ``None``: 1.0 for the reference loop
            (``nn.Embedding``'s default), :math:`1/\sqrt{d}` for the fast loop.
        num_threads (int, optional): ``torch.set_num_threads`` for the run (restored after).
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
    negative_pool: int = 128
    init_std: Optional[float] = None
    num_threads: Optional[int] = None
    log_every: int = 1

    def resolved(self) -> "M2VConfig":
        if self.loop not in ("fast", "reference"):
            raise ValueError(f"loop must be 'fast' or 'reference', got {self.loop!r}")
        fast = self.loop == "fast"
        out = M2VConfig(**{**asdict(self), "metapaths": self.metapaths})
        if out.batch_size is None:
            out.batch_size = 1024 if fast else 128
        if out.lr is None:
            out.lr = 0.02 if fast else 0.01
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

    def sample(self, walks_per_node: int, generator) -> "torch.Tensor":
        import torch
        cur = self.active_starts.repeat(walks_per_node)
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
            r = torch.minimum(r, (deg - 1).clamp(min=0))
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
def _fast_batch_loss(H, mask, pos_type_ids, pools, pool_rows, context_size: int, K: int):
    r"""Loss of a batch of walks.

    Args:
        H (Tensor): ``[B, L+1, d]`` gathered rows (leaf with grad).
        mask (Tensor): ``[B, L+1]`` bool, alive positions.
        pos_type_ids (Tensor): ``[L+1]`` type index of every position.
        pools (dict[int, Tensor]): type index → ``[P, d]`` negative rows (leaves with grad).
        context_size (int): :math:`C`.
        K (int): negatives per positive pair.

    Returns:
        ``(loss, n_pos)``: the mean over positive pairs of
        :math:`-\log\sigma(z_v^\top z_c) - \frac1K\sum\log\sigma(-z_v^\top z_n)`.
    """
    import torch
    import torch.nn.functional as F
    B, L1, d = H.shape
    pos = H.new_zeros(())
    n_pos = H.new_zeros(())
    ctx = {t: torch.zeros(B, L1, dtype=H.dtype) for t in pools}      # contexts of each type per centre
    maskf = mask.to(H.dtype)
    for k in range(1, min(context_size, L1)):
        valid = maskf[:, :-k] * maskf[:, k:]                        # [B, L1-k]
        s = (H[:, :-k] * H[:, k:]).sum(-1)
        pos = pos + (F.logsigmoid(s) * valid).sum()
        n_pos = n_pos + valid.sum()
        for t in pools:
            sel = (pos_type_ids[k:] == t).to(H.dtype)               # context position has type t
            ctx[t][:, :-k] += valid * sel
    neg = H.new_zeros(())
    flat = H.reshape(B * L1, d)
    for t, P in pools.items():
        w = ctx[t].reshape(-1)
        keep = w > 0
        if not bool(keep.any()):
            continue
        scores = flat[keep] @ P.t()                                   # [rows, P]
        neg = neg + (F.logsigmoid(-scores).mean(1) * w[keep]).sum()
    n = n_pos.clamp(min=1.0)
    # PyG's weighting: mean over positive pairs + mean over the K·n_pos negative pairs
    loss = -(pos / n) - (K * neg) / (K * n)
    return loss, n_pos


def _train_fast(graph, layout, metapaths, cfg: M2VConfig, W, progress: Optional[Callable] = None) -> dict:
    import torch
    gen = torch.Generator().manual_seed(cfg.seed)
    samplers = [WalkSampler(graph, layout, mp, cfg.walk_length) for mp in metapaths]
    opt = _RowAdam(W, cfg.lr)
    trained = torch.zeros(layout.total, dtype=torch.bool)
    type_ids = {s: torch.tensor([layout.type_index[t] for t in s.pos_types]) for s in samplers}
    K, P = cfg.num_negative_samples, cfg.negative_pool
    epochs = []
    walks_counted = sum(s.num_start_nodes for s in samplers) * cfg.walks_per_node
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        walks = [s.sample(cfg.walks_per_node, gen) for s in samplers]
        for w in walks:                                              # drop isolated-start walks early
            pass
        t_walk = time.perf_counter() - t0
        plan = []
        for i, w in enumerate(walks):
            w = w[w[:, 1] >= 0] if w.shape[1] > 1 else w[:0]
            walks[i] = w[torch.randperm(w.shape[0], generator=gen)]
            alive = walks[i] >= 0
            trained[walks[i][alive]] = True
            plan += [(i, j) for j in range(0, walks[i].shape[0], cfg.batch_size)]
        order = torch.randperm(len(plan), generator=gen).tolist()
        total, pairs = 0.0, 0.0
        for o in order:
            i, j = plan[o]
            rw = walks[i][j:j + cfg.batch_size]
            mask = rw >= 0
            idx = rw.clamp(min=0)
            B, L1 = rw.shape
            H = W.index_select(0, idx.reshape(-1)).view(B, L1, -1).requires_grad_(True)
            tid = type_ids[samplers[i]]
            pool_idx, pools = {}, {}
            for t in sorted(set(tid[1:].tolist())):
                typ = layout.types[t]
                n_t = layout.num_nodes[typ]
                pool_idx[t] = torch.randint(0, n_t, (P,), generator=gen) + layout.start[typ]
                pools[t] = W.index_select(0, pool_idx[t]).requires_grad_(True)
            loss, n_pos = _fast_batch_loss(H, mask, tid, pools, pool_idx, cfg.context_size, K)
            loss.backward()
            keep = mask.reshape(-1)
            rows = [idx.reshape(-1)[keep]] + [pool_idx[t] for t in pools]
            grads = [H.grad.reshape(B * L1, -1)[keep]] + [pools[t].grad for t in pools]
            with torch.no_grad():
                opt.step(torch.cat(rows), torch.cat(grads))
            total += float(loss) * float(n_pos)
            pairs += float(n_pos)
        dt = time.perf_counter() - t0
        epochs.append({"epoch": epoch + 1, "loss": total / max(pairs, 1.0), "seconds": dt,
                       "walk_seconds": t_walk, "walks": walks_counted, "pairs": int(pairs)})
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
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        total, n = 0.0, 0
        for model in models:
            for pos_rw, neg_rw in model.loader(batch_size=cfg.batch_size, shuffle=True):
                opt.zero_grad()
                loss = model.loss(pos_rw, neg_rw)
                loss.backward()
                opt.step()
                total += float(loss)
                n += 1
                real = pos_rw != dummy
                ok = real.sum(1) >= 2                                 # a window with a real pair
                trained[pos_rw[ok][real[ok]]] = True
        dt = time.perf_counter() - t0
        epochs.append({"epoch": epoch + 1, "loss": total / max(n, 1), "seconds": dt, "walks": walks_counted})
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
    if not metapaths:
        raise ValueError("no metapath: the graph has no edge along any default metapath "
                         "(pass M2VConfig(metapaths=...))")
    metapaths = _check_metapaths(graph, metapaths, cfg.walk_length)
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
        with torch.no_grad() if False else _nullcontext():
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
                  "walks_per_s": float(np.sum([e["walks"] for e in epochs]) / max(np.sum(secs), 1e-9)) if secs else None,
                  "seconds": round(time.perf_counter() - t0, 3), "untrained": untrained,
                  "warm_rows": int(warm.sum())},
        "fallback": "untrained rows: warm-start vector, else mean of trained rows of the type in the node's "
                    "category (stream/item), else mean of trained rows of the type; a type with none: zeros",
    }
    return Embeddings(tables=tables, id_maps={t: graph.id_maps[t].copy() for t in layout.types},
                      defaults=defaults, meta=meta)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


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
