r"""The live-stream ranker: embeddings → sequence block + target attention → (cross) → MMoE →
task towers, with a training-only position-bias tower.

One row is an impression (user, candidate stream). Read top to bottom, :meth:`Ranker.forward`:

1. **Id embeddings** (``d = d_model``; row 0 = padding / unknown, a zero vector): user, stream,
   category, and items (one table shared by every item list; created only with the sequence
   block, its one user). GBDT leaves (seed 004's LightGBM, :class:`ranking.gbdt.LeafEncoder`
   ids + 1): the mean of their embeddings over the trees (an ``EmbeddingBag``; padding
   excluded). Metapath2vec vectors of the user and the
   stream: each projected to ``d`` by its own Linear, plus their dot product
   :math:`\mathbf{u}^{\top}\mathbf{s}` as one scalar feature. Dense statistics:
   :math:`\text{ReLU}(W \mathbf{x}_{\text{dense}} + \mathbf{b})`.
2. **Sequence block** (:class:`~ranking.model.sequence.LiveStreamTransformer`): target
   = stream + category embedding; tokens = the stream's core products, its real-time products
   and the user's items (with time gaps when ``time_encoding``) → ``[B, 2d]``.
3. **Target attention** (:class:`~ranking.model.target_attention.TargetAttention`, DIN): the
   stream embedding attends over the embeddings of the user's recent streams → :math:`\mathbf{v}`;
   both :math:`\mathbf{v}` and :math:`\mathbf{s} \odot \mathbf{v}` are features.
4. Everything concatenated → ``x [B, in_dim]`` → optional
   :class:`~ranking.model.cross.CrossNetMix` (DCN-V2) → :class:`~ranking.model.mmoe.MMoE` or
   :class:`~ranking.model.mmoe.SharedBottom` → one tower per task
   (``Linear(expert_dim, tower_dim) → ReLU → Linear(tower_dim, 1)``).

Outputs: ``ctr_logit`` (debiased: no position term), ``cvr_logit`` (post-click conversion,
ESMM), ``stay`` (predicted :math:`\log(1 + \text{seconds})` of a click's stay) and, in training
(or with ``with_bias=True``) when the batch has ``position``, ``bias_logit`` from
:class:`~ranking.model.biasnet.BiasNet` (PAL / YouTube's shallow tower). The losses combine it
with the CTR logit (:func:`biased_click_logit`: added, or — ``bias_form="multiplicative"``, PAL —
multiplied in as an examination probability); serving never sees it
(:meth:`Ranker.without_biasnet` drops the tower).

Losses (:meth:`Ranker.losses`), with :math:`z` the biased click logit
(:math:`\text{ctr\_logit} + \text{bias\_logit}`, or :math:`\text{logit}(\sigma(\text{ctr\_logit})\,
e^{\text{bias\_logit}})` in the multiplicative form):

.. math::
    \mathcal{L}_{\text{ctr}} = \text{BCE}(\sigma(z), \text{click}), \quad
    \mathcal{L}_{\text{cvr}} = \text{BCE}(\sigma(z)\,\sigma(\text{cvr\_logit}), \text{purchase}), \quad
    \mathcal{L}_{\text{stay}} = \text{mean}_{\text{click}=1}(\hat{y} - y)^2

The CVR loss is ESMM's (`"Entire Space Multi-Task Model" <https://arxiv.org/abs/1804.07931>`_,
Ma et al. SIGIR 2018): the conversion tower is supervised through pCTCVR = pCTR · pCVR on ALL
impressions, which avoids training it on the clicked sample only. :class:`UncertaintyWeighting`
(`Kendall et al. CVPR 2018 <https://arxiv.org/abs/1705.07115>`_) balances the task losses with
learned log-variances.

Serving cache: :meth:`Ranker.encode_candidates` computes everything that depends on the
candidate stream alone (its id embeddings, projected m2v vector, and the transformer's target /
core / real-time tokens incl. type and position rows) once per candidate; ``forward(batch,
cand=..., cand_index=...)`` gathers those rows instead of recomputing them — the same numbers.

Batch (a dict of tensors, ``B`` rows; optional keys may be absent and their part of ``x`` is
then zeros, so the input size never changes): ``user_id``, ``stream_id``, ``category`` ``[B]``
long; ``dense [B, n_dense]``; ``leaves [B, n_trees]`` long; ``m2v_user``, ``m2v_stream``
``[B, m2v_dim]``; ``core_items [B, Lc]``, ``rt_items [B, Lr]``, ``user_items [B, Lu]``,
``user_items_dt [B, Lu]`` (seconds), ``user_streams [B, Ls]`` long (0 = padding); ``position``,
``page`` ``[B]`` long (1-based, 0 = unknown; Biasnet and the position feature only).

``time_gaps=True`` (seed 001's time-difference encoding, on DIN's keys): each of the user's recent
streams enters target attention as :math:`\mathbf{e}_{s_i} + \mathbf{G}_{b(\Delta t_i)}`, with
:math:`\Delta t_i` the seconds since the user's latest click / watch of it (``user_streams_dt``)
and :math:`b(\Delta t) = 1 + \min(15, \lfloor \log_2(1 + \Delta t / 60) \rfloor)` a log-scale
bucket (a minute ago, an hour ago, ... a month ago): the attention can tell a stream watched a
minute ago from one watched last week. Without ``user_streams_dt`` in the batch the keys are the
plain embeddings.

``behaviour_tokens=True`` (seed 001's fine-grained behaviour): each recent stream's key adds
:math:`\mathbf{A}_{a_i} + \mathbf{W}_{w(\text{dwell}_i)}` — the deepest behaviour on it
(``user_streams_act``: click, watch, item click, purchase in it) and a log-scale bucket of its
total watch seconds, :math:`w(s) = 1 + \min(11, \lfloor \log_2(1 + s / 10) \rfloor)` (0: never
watched) — and each of the user's item tokens adds :math:`\mathbf{A}_{a_j}` (item click or
purchase, ``user_items_act``): a stream watched for an hour and bought from is not a stream
clicked and left. Missing lists add nothing.

``position_towers=K`` (seed 004's per-position towers): the click tower of slot k (k < K; slots
≥ K share the last) is trained on the rows shown at slot k only; the slot-1 tower is the
``ctr`` tower, and serving and every debiased output use it — the click rate *had the stream been
at the top*.

``position_feature=True`` (seed 004's other answer to position bias, beside Biasnet): the slot's
embedding :math:`\mathbf{P}_k` is one more part of :math:`x` in training, and the zero row (slot
"unknown") at serving and in every debiased output — the model learns relevance *given* the slot
and is asked for it at no slot. Unlike Biasnet's additive logit, the slot can interact with every
other input through the experts.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .biasnet import BiasNet
from .bst import BehaviorSequenceTransformer
from .cross import CrossNetMix
from .mmoe import MMoE, SharedBottom
from .sequence import LiveStreamTransformer
from .target_attention import TargetAttention

TASKS = ("ctr", "cvr", "stay")
GAP_BUCKETS = 16                # time_gaps: log2 buckets of minutes, 1 .. 16 (0 = padding)
N_ACTS = 5                      # behaviour_tokens: 0 padding, 1 click, 2 watch, 3 item click, 4 purchase
DWELL_BUCKETS = 12              # behaviour_tokens: log2 buckets of 10 s of watch, 1 .. 12 (0 = none)


def gap_bucket(dt: Tensor) -> Tensor:
    """Seconds ``[...]`` → bucket ``1 + min(15, floor(log2(1 + dt / 60)))`` (long ``[...]``)."""
    b = torch.floor(torch.log2(1.0 + dt.clamp(min=0).to(torch.float32) / 60.0))
    return (1 + b.clamp(max=GAP_BUCKETS - 1)).long()


def dwell_bucket(seconds: Tensor) -> Tensor:
    """Watch seconds ``[...]`` → 0 when none, else ``1 + min(11, floor(log2(1 + s / 10)))`` (long)."""
    s = seconds.to(torch.float32)
    b = 1 + torch.floor(torch.log2(1.0 + s.clamp(min=0) / 10.0)).clamp(max=DWELL_BUCKETS - 1)
    return torch.where(s > 0, b, torch.zeros_like(b)).long()


OUTPUT_KEYS = {"ctr": "ctr_logit", "cvr": "cvr_logit", "stay": "stay"}
HEADS = ("mmoe", "shared_bottom")
USER_SEQUENCE_BLOCKS = ("din", "bst")
PROB_EPS = 1e-7                 # ESMM: pCTCVR clamped to [eps, 1 - eps] before the log
CORE_TYPE, RT_TYPE, USER_TYPE = 1, 2, 3   # LiveStreamTransformer token types (0 = target)


@dataclass
class RankerConfig:
    """Sizes and switches of a :class:`Ranker` (a JSON round trip: :meth:`to_dict` /
    :meth:`from_dict`). Vocabulary sizes count the padding row 0."""
    n_users: int            # vocab sizes INCLUDING padding id 0 (embedding rows)
    n_streams: int
    n_items: int
    n_categories: int
    n_dense: int            # normalised dense statistics (0 = none)
    n_leaf_tokens: int = 0  # GBDT global leaf ids (+1, 0 = padding) vocabulary (0 = no leaf input)
    n_trees: int = 0
    m2v_dim: int = 0        # Metapath2vec vector size (0 = no m2v input)
    item_vector_dim: int = 0  # precomputed item vectors (a file: item_id → vector) added to item tokens (0 = none)
    d_model: int = 32
    use_transformer: bool = True
    use_target_attention: bool = True
    use_cross: bool = False
    n_heads: int = 2
    n_layers: int = 1
    causal: bool = False
    time_encoding: bool = False
    head: str = "mmoe"       # or "shared_bottom"
    n_experts: int = 4
    expert_dim: int = 64
    tower_dim: int = 32
    use_biasnet: bool = True
    bias_form: str = "additive"   # or "multiplicative" (PAL: P(click) = P(seen | position) · σ(ctr_logit))
    bias_shape: str = "monotone"  # or "mlp" (a free embedding per slot)
    n_positions: int = 64
    n_pages: int = 8
    dropout: float = 0.0          # off by default: CPU bernoulli masks cost ~20 % of a step; early stopping + weight decay regularise
    tasks: tuple = ("ctr", "cvr", "stay")   # a subset in this order; "ctr" always present
    position_feature: bool = False          # the slot as an input in training, zeroed at serving (seed 004)
    time_gaps: bool = False                 # log-bucketed time since each recent stream, on DIN's keys (seed 001)
    user_sequence: str = "din"              # the block over the user's recent streams: "din" or "bst" (seed 000)
    position_towers: int = 0                # K > 1: a click tower per slot 1..K in training, slot 1's at serving (seed 004)
    behaviour_tokens: bool = False          # behaviour type (+ dwell bucket) of each recent stream / item token (seed 001)

    def __post_init__(self):
        self.tasks = tuple(self.tasks)
        if "ctr" not in self.tasks or any(t not in TASKS for t in self.tasks) or \
                list(self.tasks) != [t for t in TASKS if t in self.tasks]:
            raise ValueError(f"tasks must be a subset of {TASKS} in that order with 'ctr', got {self.tasks}")
        if self.bias_form not in BiasNet.FORMS:
            raise ValueError(f"bias_form must be one of {BiasNet.FORMS}, got {self.bias_form!r}")
        if self.bias_shape not in BiasNet.SHAPES:
            raise ValueError(f"bias_shape must be one of {BiasNet.SHAPES}, got {self.bias_shape!r}")
        if self.user_sequence not in USER_SEQUENCE_BLOCKS:
            raise ValueError(f"user_sequence must be one of {USER_SEQUENCE_BLOCKS}, got {self.user_sequence!r}")
        if self.position_towers < 0 or self.position_towers == 1:
            raise ValueError(f"position_towers must be 0 (off) or >= 2, got {self.position_towers}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if (self.use_transformer or self.user_sequence == "bst") and self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RankerConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown RankerConfig fields: {sorted(unknown)}")
        return cls(**d)


def _init_embedding(emb: Union[nn.Embedding, nn.EmbeddingBag], std: float):
    nn.init.normal_(emb.weight, std=std)
    if emb.padding_idx is not None:
        with torch.no_grad():
            emb.weight[emb.padding_idx].zero_()


class Ranker(nn.Module):
    r"""The multi-task live-stream ranker (module docstring).

    Args:
        config (RankerConfig): sizes and switches.

    ``forward(batch, cand=None, cand_index=None, with_bias=False)`` → dict of ``[B]`` tensors
    ``ctr_logit`` (+ ``cvr_logit``, ``stay``, ``bias_logit`` as configured / in training).
    """

    def __init__(self, config: RankerConfig):
        super().__init__()
        c = self.config = config
        d = c.d_model
        self.user_emb = nn.Embedding(c.n_users, d, padding_idx=0)
        self.stream_emb = nn.Embedding(c.n_streams, d, padding_idx=0)
        # items only enter through the sequence block: no table without it
        self.item_emb = nn.Embedding(c.n_items, d, padding_idx=0) if c.use_transformer else None
        # precomputed item vectors (e.g. multimodal content embeddings, seed 001): a fixed table (a
        # buffer: saved with the weights, so serving reads the training table) projected into the
        # token space beside the id embedding; row 0 (padding / unknown items) is zeros
        self.item_vec_proj = None
        if c.item_vector_dim > 0 and self.item_emb is not None:
            self.register_buffer("item_vectors", torch.zeros(c.n_items, c.item_vector_dim))
            self.item_vec_proj = nn.Linear(c.item_vector_dim, d, bias=False)
        self.category_emb = nn.Embedding(c.n_categories, d, padding_idx=0)
        in_dim = 3 * d                                                       # user, stream, category
        self.dense_proj = None
        if c.n_dense > 0:
            self.dense_proj = nn.Linear(c.n_dense, d)
            in_dim += d
        self.leaf_emb = None
        if c.n_leaf_tokens > 0:
            self.leaf_emb = nn.EmbeddingBag(c.n_leaf_tokens, d, mode="mean", padding_idx=0)
            in_dim += d
        self.m2v_user = self.m2v_stream = None
        if c.m2v_dim > 0:
            self.m2v_user = nn.Linear(c.m2v_dim, d)
            self.m2v_stream = nn.Linear(c.m2v_dim, d)
            in_dim += 2 * d + 1                                              # u, s, u·s
        self.sequence = None
        if c.use_transformer:
            self.sequence = LiveStreamTransformer(d, n_heads=c.n_heads, n_layers=c.n_layers, dropout=c.dropout,
                                                  causal=c.causal, time_encoding=c.time_encoding)
            in_dim += self.sequence.out_dim
        self.target_attention = None
        self.gap_emb = None
        if c.use_target_attention:
            # DIN's target attention, or BST's transformer over [recent streams; candidate]: same shapes
            self.target_attention = TargetAttention(d) if c.user_sequence == "din" else \
                BehaviorSequenceTransformer(d, max_len=64, n_heads=c.n_heads, dropout=c.dropout)
            in_dim += 2 * d                                                  # v, s ⊙ v
            if c.time_gaps:
                self.gap_emb = nn.Embedding(GAP_BUCKETS + 1, d, padding_idx=0)   # row 0: no gap known
        self.act_emb = self.dwell_emb = None
        if c.behaviour_tokens and (c.use_target_attention or c.use_transformer):
            self.act_emb = nn.Embedding(N_ACTS, d, padding_idx=0)                  # shared by stream and item tokens
            if c.use_target_attention:
                self.dwell_emb = nn.Embedding(DWELL_BUCKETS + 1, d, padding_idx=0)   # row 0: never watched
        self.position_emb = None
        if c.position_feature:
            self.position_emb = nn.Embedding(c.n_positions, d, padding_idx=0)          # row 0: no slot (serving)
            in_dim += d
        self.in_dim = in_dim
        self.cross = CrossNetMix(in_dim) if c.use_cross else None
        if c.head == "mmoe":
            self.head = MMoE(in_dim, len(c.tasks), n_experts=c.n_experts, expert_hidden=(c.expert_dim,),
                             dropout=c.dropout)
        else:
            self.head = SharedBottom(in_dim, len(c.tasks), hidden=(c.expert_dim,), dropout=c.dropout)
        self.towers = nn.ModuleDict({t: nn.Sequential(nn.Linear(c.expert_dim, c.tower_dim), nn.ReLU(),
                                                      nn.Linear(c.tower_dim, 1)) for t in c.tasks})
        self.biasnet = BiasNet(c.n_positions, c.n_pages, form=c.bias_form, shape=c.bias_shape) if c.use_biasnet else None
        # slots 2..K's click towers (slot 1's is towers["ctr"])
        self.slot_towers = nn.ModuleList(nn.Sequential(nn.Linear(c.expert_dim, c.tower_dim), nn.ReLU(),
                                                       nn.Linear(c.tower_dim, 1))
                                         for _ in range(max(c.position_towers - 1, 0)))
        self.reset_parameters()

    def embed_items(self, ids: Tensor) -> Tensor:
        """Item tokens ``[..., d]`` of item indices ``[...]``: the id embedding (+ the projected
        precomputed vector when ``item_vector_dim``)."""
        e = self.item_emb(ids)
        if self.item_vec_proj is not None:
            e = e + self.item_vec_proj(self.item_vectors[ids])
        return e

    def set_item_vectors(self, table) -> None:
        """Fill the precomputed item table ``[n_items, item_vector_dim]`` (row i = item index i)."""
        t = torch.as_tensor(table, dtype=self.item_vectors.dtype)
        if tuple(t.shape) != tuple(self.item_vectors.shape):
            raise ValueError(f"item vectors {tuple(t.shape)}, the model takes {tuple(self.item_vectors.shape)}")
        self.item_vectors.copy_(t)

    def reset_parameters(self):
        # N(0, 1/d): id vectors of about unit norm, so no input part dominates the concatenation.
        std = 1.0 / math.sqrt(self.config.d_model)
        for emb in (self.user_emb, self.stream_emb, self.item_emb, self.category_emb, self.leaf_emb,
                    self.position_emb, self.gap_emb, self.act_emb, self.dwell_emb):
            if emb is not None:
                _init_embedding(emb, std)
        for m in (self.dense_proj, self.m2v_user, self.m2v_stream, self.item_vec_proj, self.sequence, self.target_attention,
                  self.cross, self.head, self.biasnet):
            if m is not None:
                m.reset_parameters()
        for tower in [*self.towers.values(), *self.slot_towers]:
            for layer in tower:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()

    # ------------------------------------------------------------------ candidate side
    def encode_candidates(self, batch: dict) -> dict:
        """Everything that depends on the candidate stream alone, for ``N`` candidates (keys
        ``stream_id``, ``category``, ``m2v_stream``, ``core_items``, ``rt_items``): a dict of
        ``[N, ...]`` tensors for ``forward(..., cand=, cand_index=)``."""
        stream_id = batch["stream_id"]
        category = batch.get("category", torch.zeros_like(stream_id))
        stream = self.stream_emb(stream_id)                                          # [N, d]
        cand = {"stream": stream, "category": self.category_emb(category)}          # [N, d] each
        if self.m2v_stream is not None and "m2v_stream" in batch:
            cand["m2v_stream"] = self.m2v_stream(batch["m2v_stream"].to(stream.dtype))  # [N, d]
        if self.sequence is not None:
            cand["target_tokens"] = self.sequence.embed_target(stream + cand["category"])  # [N, 1, d]
            for name, type_id in (("core_items", CORE_TYPE), ("rt_items", RT_TYPE)):
                if name in batch:
                    ids = batch[name]                                                # [N, L]
                    cand[f"{name}_tokens"] = self.sequence.embed_tokens(self.embed_items(ids), type_id)  # [N, L, d]
                    cand[f"{name}_mask"] = ids > 0                                   # [N, L]
        return cand

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict, cand: Optional[dict] = None, cand_index: Optional[Tensor] = None,
                with_bias: bool = False, with_position: bool = False) -> dict:
        if cand is None:
            cand = self.encode_candidates(batch)
        elif cand_index is not None:
            cand = {k: v.index_select(0, cand_index) for k, v in cand.items()}      # [B, ...]
        stream = cand["stream"]                                                      # [B, d]
        B, d = stream.shape
        zeros = stream.new_zeros(B, d)
        user_id = batch.get("user_id")
        parts = [self.user_emb(user_id) if user_id is not None else zeros, stream, cand["category"]]

        if self.dense_proj is not None:
            dense = batch.get("dense")
            parts.append(F.relu(self.dense_proj(dense.to(stream.dtype))) if dense is not None else zeros)  # [B, d]
        if self.leaf_emb is not None:
            leaves = batch.get("leaves")
            parts.append(self.leaf_emb(leaves) if leaves is not None else zeros)    # [B, d]
        if self.m2v_user is not None:
            m2v_user = batch.get("m2v_user")
            u = self.m2v_user(m2v_user.to(stream.dtype)) if m2v_user is not None else zeros  # [B, d]
            s = cand.get("m2v_stream", zeros)                                        # [B, d]
            parts += [u, s, (u * s).sum(-1, keepdim=True)]                           # [B, d], [B, d], [B, 1]

        if self.sequence is not None:
            tokens, masks = [cand["target_tokens"]], []                              # [B, 1, d]
            for name in ("core_items", "rt_items"):
                if f"{name}_tokens" in cand:
                    tokens.append(cand[f"{name}_tokens"])                            # [B, L, d]
                    masks.append(cand[f"{name}_mask"])                               # [B, L]
            if "user_items" in batch:
                ids = batch["user_items"]                                            # [B, Lu]
                dt = batch.get("user_items_dt")
                e = self.embed_items(ids)                                            # [B, Lu, d]
                act = batch.get("user_items_act")
                if self.act_emb is not None and act is not None:
                    e = e + self.act_emb(act.clamp(0, N_ACTS - 1) * (ids > 0))
                tokens.append(self.sequence.embed_tokens(e, USER_TYPE, dt))          # [B, Lu, d]
                masks.append(ids > 0)
            h, mask = self.sequence.encode(tokens, masks)                            # [B, T, d], [B, T]
            parts.append(self.sequence.pool(h, mask))                                # [B, 2d]

        if self.target_attention is not None:
            ids = batch.get("user_streams")
            if ids is not None:
                keys = self.stream_emb(ids)                                          # [B, Ls, d]
                dt = batch.get("user_streams_dt")
                if self.gap_emb is not None and dt is not None:
                    keys = keys + self.gap_emb(gap_bucket(dt) * (ids > 0))           # [B, Ls, d]
                act, dwell = batch.get("user_streams_act"), batch.get("user_streams_dwell")
                if self.act_emb is not None and act is not None:
                    keys = keys + self.act_emb(act.clamp(0, N_ACTS - 1) * (ids > 0))  # [B, Ls, d]
                if self.dwell_emb is not None and dwell is not None:
                    keys = keys + self.dwell_emb(dwell_bucket(dwell) * (ids > 0))     # [B, Ls, d]
                v = self.target_attention(stream, keys, ids > 0)                     # [B, d]
            else:
                v = zeros
            parts += [v, stream * v]                                                 # [B, d] x 2

        if self.position_emb is not None:
            # the slot in training (and with_position: the validation loss); the zero row — no
            # slot — everywhere else (serving, the debiased outputs)
            pos = batch.get("position")
            if pos is not None and (self.training or with_position):
                parts.append(self.position_emb(pos.clamp(0, self.config.n_positions - 1)))   # [B, d]
            else:
                parts.append(zeros)

        x = torch.cat(parts, dim=-1)                                                 # [B, in_dim]
        if self.cross is not None:
            x = self.cross(x)                                                        # [B, in_dim]
        task_inputs = self.head(x)                                                   # K x [B, expert_dim]
        out = {OUTPUT_KEYS[t]: self.towers[t](h_t).squeeze(-1)                       # [B]
               for t, h_t in zip(self.config.tasks, task_inputs)}
        pos = batch.get("position")
        if len(self.slot_towers) and pos is not None and (self.training or with_position):
            # each row's click logit from its own slot's tower (unknown slot 0: slot 1's)
            h = task_inputs[0]
            logits = torch.stack([out["ctr_logit"]] + [t(h).squeeze(-1) for t in self.slot_towers], 1)  # [B, K]
            k = (pos.clamp(1, logits.shape[1]) - 1).long()
            out["ctr_logit"] = logits.gather(1, k.unsqueeze(1)).squeeze(1)             # [B]
        if self.biasnet is not None and "position" in batch and (self.training or with_bias):
            out["bias_logit"] = self.biasnet(batch["position"], batch.get("page"))   # [B]
        return out

    # ------------------------------------------------------------------ training
    def losses(self, out: dict, batch_labels: dict, weights: Optional[Tensor] = None) -> dict:
        """Per-task scalar losses (module docstring). ``batch_labels``: ``click``, ``purchase``,
        ``stay`` ``[B]`` (stay in log1p seconds; only clicked rows count). ``weights [B]``:
        optional per-row weights (weighted means). A task whose output or label is missing is
        left out."""
        ctr = out["ctr_logit"]                                                       # [B]
        if "bias_logit" in out:
            ctr = biased_click_logit(ctr, out["bias_logit"], self.config.bias_form)  # [B] biased logit
        click = batch_labels["click"].to(ctr.dtype)                                  # [B]
        w = None if weights is None else weights.to(ctr.dtype)

        def mean(v: Tensor) -> Tensor:
            return v.mean() if w is None else (v * w).sum() / w.sum().clamp(min=1e-12)

        losses = {"ctr": mean(F.binary_cross_entropy_with_logits(ctr, click, reduction="none"))}
        if "cvr_logit" in out and "purchase" in batch_labels:
            p_ctcvr = (torch.sigmoid(ctr) * torch.sigmoid(out["cvr_logit"])).clamp(PROB_EPS, 1 - PROB_EPS)  # [B]
            purchase = batch_labels["purchase"].to(ctr.dtype)
            losses["cvr"] = mean(F.binary_cross_entropy(p_ctcvr, purchase, reduction="none"))
        if "stay" in out and "stay" in batch_labels:
            clicked = (click > 0.5).to(ctr.dtype)                                    # [B]
            if w is not None:
                clicked = clicked * w
            se = (out["stay"] - batch_labels["stay"].to(ctr.dtype)) ** 2              # [B]
            # 0 (still attached to the graph) when no row is clicked
            losses["stay"] = (se * clicked).sum() / clicked.sum().clamp(min=1e-12)
        return losses

    # ------------------------------------------------------------------ serving
    @torch.no_grad()
    def predict(self, batch: dict, cand: Optional[dict] = None, cand_index: Optional[Tensor] = None) -> dict:
        """Debiased predictions in eval mode (the module's mode is restored): ``p_ctr``
        (+ ``p_cvr``, ``p_ctcvr`` = p_ctr · p_cvr, ``stay_s`` = expm1(stay) ≥ 0) ``[B]``."""
        was_training = self.training
        self.eval()
        try:
            out = self.forward(batch, cand=cand, cand_index=cand_index)
        finally:
            self.train(was_training)
        p_ctr = torch.sigmoid(out["ctr_logit"])
        pred = {"p_ctr": p_ctr}
        if "cvr_logit" in out:
            pred["p_cvr"] = torch.sigmoid(out["cvr_logit"])
            pred["p_ctcvr"] = p_ctr * pred["p_cvr"]
        if "stay" in out:
            pred["stay_s"] = torch.expm1(out["stay"]).clamp(min=0)
        return pred

    def without_biasnet(self) -> "Ranker":
        """A deep copy without the position tower (and ``config.use_biasnet=False``): the serving
        model. Its outputs equal this model's debiased ones."""
        model = copy.deepcopy(self)
        model.biasnet = None
        model.config = replace(model.config, use_biasnet=False)
        return model

    def __repr__(self) -> str:
        blocks = [name for name in ("sequence", "target_attention", "cross", "biasnet") if getattr(self, name) is not None]
        n_params = sum(p.numel() for p in self.parameters())
        return (f"{self.__class__.__name__}(d={self.config.d_model}, in_dim={self.in_dim}, "
                f"head={self.config.head}, tasks={self.config.tasks}, blocks={blocks}, params={n_params})")


class UncertaintyWeighting(nn.Module):
    r"""Task weighting by learned homoscedastic uncertainty (Kendall, Gal, Cipolla, CVPR 2018):

    .. math::
        \mathcal{L} = \sum_t e^{-s_t} \mathcal{L}_t + s_t, \qquad s_t = \log \sigma_t^2

    ``forward(losses)`` takes the dict of :meth:`Ranker.losses` (a subset of ``tasks``) → scalar.
    """

    def __init__(self, tasks: Sequence[str] = TASKS):
        super().__init__()
        self.tasks = tuple(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.log_vars)

    def forward(self, losses: dict) -> Tensor:
        unknown = set(losses) - set(self.tasks)
        if unknown:
            raise KeyError(f"no weight for tasks {sorted(unknown)} (have {self.tasks})")
        total = self.log_vars.new_zeros(())
        for i, task in enumerate(self.tasks):
            if task in losses:
                s = self.log_vars[i]
                total = total + torch.exp(-s) * losses[task] + s
        return total

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(tasks={self.tasks})"


def biased_click_logit(ctr_logit: Tensor, bias_logit: Tensor, form: str = "additive") -> Tensor:
    r"""The training-time (position-aware) click logit from the debiased ``ctr_logit`` and
    Biasnet's output (same shapes, broadcast).

    * ``"additive"`` (YouTube's shallow tower): :math:`z = a + b`.
    * ``"multiplicative"`` (PAL): ``bias_logit`` is :math:`\log P(\text{seen}) \le 0` and
      :math:`p = \sigma(a)\,e^{b}`, returned as its logit
      :math:`\log p - \log(1 - p)` (computed in log space; :math:`\log p` is capped just below 0
      so the logit stays finite)."""
    if form == "additive":
        return ctr_logit + bias_logit
    if form != "multiplicative":
        raise ValueError(f"unknown bias form {form!r}")
    log_p = (F.logsigmoid(ctr_logit) + bias_logit).clamp(max=-1e-6)                # log p < 0
    return log_p - torch.log(-torch.expm1(log_p))                                    # logit(p)


def _click_rates(model: Union[Ranker, BiasNet], ctr_logits: Tensor, positions, page) -> tuple:
    """``positions`` as ``[K]`` long and the training-form click probabilities of ``ctr_logits [N]``
    at slot 1 and at each of them → ``[N, 1 + K]`` (column 0 = slot 1)."""
    biasnet = model if isinstance(model, BiasNet) else model.biasnet
    if biasnet is None:
        raise ValueError("the model has no Biasnet")
    positions = torch.as_tensor(list(positions) if not isinstance(positions, Tensor) else positions,
                                dtype=torch.long).reshape(-1)                            # [K]
    b = biasnet.position_logits(torch.cat([positions.new_ones(1), positions]), page)     # [1 + K]
    a = ctr_logits.reshape(-1, 1).to(b.dtype)                                            # [N, 1]
    return positions, torch.sigmoid(biased_click_logit(a, b, biasnet.form))             # [K], [N, 1 + K]


@torch.no_grad()
def position_curve(model: Union[Ranker, BiasNet], ctr_logits: Tensor,
                   positions: Union[Sequence[int], Tensor] = range(1, 11),
                   page: Optional[Union[int, Tensor]] = None) -> Tensor:
    r"""The learned relative examination curve: for each position :math:`k`,
    :math:`\text{mean}_i\, \sigma(z(a_i, b_k)) / \text{mean}_i\, \sigma(z(a_i, b_1))` with :math:`a`
    the debiased CTR logits ``ctr_logits [N]`` of a set of impressions, :math:`b` the
    Biasnet position outputs (position 1 is the reference) and :math:`z` :func:`biased_click_logit`
    in the tower's form. → ``[K]``. Under P(click) = exam(k) · r this ratio of means is
    exam(k) / exam(1); in the multiplicative form it is exactly :math:`e^{b_k - b_1}`."""
    positions, rate = _click_rates(model, ctr_logits, positions, page)                  # [K], [N, 1 + K]
    rate = rate.mean(0)                                                                  # [1 + K]
    return rate[1:] / rate[0]                                                            # [K]


@torch.no_grad()
def position_curve_shown(model: Union[Ranker, BiasNet], ctr_logits: Tensor, shown: Tensor,
                         positions: Union[Sequence[int], Tensor] = range(1, 11),
                         page: Optional[Union[int, Tensor]] = None) -> Tensor:
    r"""The learned curve read on the impressions each slot actually showed: for each position
    :math:`k`, :math:`\sum_{i \in S_k} \sigma(z(a_i, b_k)) / \sum_{i \in S_k} \sigma(z(a_i, b_1))`
    with :math:`S_k` the impressions shown at slot :math:`k` (``shown [N]`` long, their slots),
    ``ctr_logits [N]`` their debiased logits. → ``[K]`` (NaN where no impression was shown at
    :math:`k`). The model's own answer to "how many clicks did slot k's impressions get, relative
    to what they would have got at slot 1" — under P(click) = exam(k) · r with the true relevance
    this is exam(k) / exam(1) for any form that fits each slot's clicks, where
    :func:`position_curve` (one population for every slot) is not when the form is additive: its
    shift b_k that fits slot k's (less relevant) impressions is applied to everyone's."""
    positions, rate = _click_rates(model, ctr_logits, positions, page)                  # [K], [N, 1 + K]
    shown = torch.as_tensor(shown).reshape(-1)                                           # [N]
    out = torch.full((len(positions),), float("nan"), dtype=rate.dtype)                  # [K]
    for j, k in enumerate(positions.tolist()):
        rows = shown == k                                                                # [N] bool
        if rows.any():
            out[j] = rate[rows, 1 + j].sum() / rate[rows, 0].sum()
    return out


__all__ = ["RankerConfig", "Ranker", "UncertaintyWeighting", "position_curve", "position_curve_shown",
           "biased_click_logit", "TASKS"]
