r"""Peer sequential retrieval models (torch-rechub SASRec, GRU4Rec, MIND) on the protocol of
``streamrank evaluate-retrieval`` — same split, same queries, same subsets, same metrics.

Runs in the separate bench environment (``bash bench/peer_env.sh`` creates ``.bench-venv/``)::

    .bench-venv/bin/python bench/retrieval_quality.py --path ../shared/data/twitch/watches.csv \
        --split-slot 4000 --seeds 3 [--models sasrec,gru4rec,mind] [--epochs 6] [--batch-size 512]
        [--dim 64] [--threads 1] [--loss inbatch|logq] [--smoke]

stdout: one JSON line per (model, subset, seed), in the format of ``evaluate-retrieval``
(``{"model", "subset", "recall@10", "recall@50", "recall@200", "ndcg@10", "n", "seed"}``), then
one summary line per (model, subset): the metric keys hold the MEAN over the seeds, ``<metric>_std``
the sample standard deviation (ddof = 1), ``"seed": "mean"`` and ``"seeds": [...]``. stderr:
progress (per-epoch loss, validation mrr, queries/s, seconds) and one ``{"train_info": ...}`` JSON
line per run (best epoch, epochs run, train/eval seconds, parameters).

Protocol — nothing re-implemented: the repo root is put on ``sys.path`` and the product's own code
builds everything (``retrieval.data`` / ``retrieval.metrics`` import only numpy/pandas;
``retrieval.evaluate`` imports torch only inside functions that are not called here):

- ``retrieval.evaluate.read_twitch`` on ``slot < split`` (TRAIN) and ``slot >= split`` (TEST);
- ``retrieval.evaluate.World(train, test)`` — vocabulary (rows ``1..N`` over both files), sessions,
  and the queries ``world.q`` (every TEST row; history = the user's last 20 distinct streams before
  t, from both files, left-padded, latest last — what the product's two-tower gets), ``world.is_new``
  (the ``new`` subset);
- training examples: ``retrieval.data.training_queries(world.train_sessions, world.vocab,
  seq_len=20)`` — one per TRAIN session with at least one earlier TRAIN session; the newest 10 %
  by time are the validation set for early stopping (as ``retrieval.train.fit``); TEST is never
  looked at before the final scoring;
- scoring: every stream (rows 1..N) for every query, ``retrieval.metrics.rank_stats(scores[:, 1:],
  target - 1)`` then ``from_ranks`` on ``all`` and ``new``.

Models — the library's classes (torch_rechub 0.9.0, ``torch_rechub.models.matching``), embedding
dim ``--dim`` (64, the product's), padding row 0 (``padding_idx=0``), the library's initializer
(``RandomNormal(0, 1e-4)``) except for MIND:

- ``rechub_sasrec``: ``SASRec([SequenceFeature("seq", N+1, dim, pooling="concat", padding_idx=0)],
  max_len=20)``, library defaults otherwise (2 blocks, 1 head, dropout 0.5). Input: the stream-id
  sequence, RIGHT-padded (its ``user_tower`` reads the output at index ``#non-zero - 1``, i.e. it
  expects post-padding; with a causal mask that position sees exactly the real tokens). User
  vector = ``user_tower`` (last position, unnormalised); stream vectors = the rows of its item
  table ``item_emb.embed_dict["seq"]`` (the table its own pos/neg logits use), dot product.
- ``rechub_gru4rec``: ``GRU4Rec(user_features=[const], history_features=[SequenceFeature("hist",
  shared_with="stream_id", pooling="concat", padding_idx=0)], item_features=[SparseFeature(
  "stream_id", N+1, dim, padding_idx=0)], neg_item_feature=[], user_params={"dims": [128, dim]},
  temperature=0.02)`` (the library example's MLP shape ending at the item dim, and its
  temperature); 2-layer GRU (library default). Input: the stream-id sequence, LEFT-padded as the
  product's (the GRU has no bias and the pad embedding is 0, so leading pads keep h = 0: identical
  to no padding; its last hidden state is the user state). User = ``user_tower`` (L2-normalised),
  streams = ``item_tower`` in ``mode="item"`` (L2-normalised id embeddings), cosine / temperature.
- ``rechub_mind``: ``MIND(user_features=[const], history_features=[hist], item_features=[stream_id],
  neg_item_feature=[], max_length=20, interest_num=4, temperature=0.02)`` (K = 4 as the product's
  ``two_tower_multi``; dynamic_interest off: the library default). Input: the left-padded stream-id
  sequence (the capsule routing is position-free apart from the mask). Training: label-aware — the
  interest closest to the target (MIND's own ``forward``); scoring: ``max_k u_k . s`` over the 4
  interests (as the product's multi-interest score). MIND's routing logits start from
  ``torch.randn`` even in eval, so the scoring pass is seeded. Embedding init ``RandomNormal(0,
  0.05)`` (the product's std), through the features' ``initializer=`` argument: with the library's
  1e-4 the capsule squash (``|v|^2 / (1 + |v|^2) v / |v|`` ~ ``|v| v`` for small v) makes the
  interest vectors and their gradients vanish — on the VALIDATION queries (seed 0, lr 1e-3) the
  mrr was 0.0040 after 2 epochs (chance ~ 0.004) and 0.034 after 8, vs 0.012 / 0.139 with 0.05.
  (GRU4Rec was not helped by 0.05 — valid mrr 0.048 vs 0.067 after 2 epochs — so it keeps the
  default; SASRec was not tried.) No TEST number was looked at for this choice.

``const``: GRU4Rec and MIND require a non-empty ``user_features`` list (their user tower embeds it
and ``EmbeddingLayer`` refuses an empty one); the product's user tower has no user-id input, so they
get ``SparseFeature("const", 2, dim)`` always equal to 1 — a learned bias vector, no user identity.

What the peers do NOT get (the product's two-tower does): the time-gap encoding, the 100-session
long-term history, stream categories (none of the three can take an item-side attribute: the item
tower embeds ``item_features`` as separate candidate slots; SASRec's sequence takes exactly one
feature named "seq"), the Metapath2vec vectors and stream statistics.

Training recipe (same for the three models; a plain loop, because the library's ``MatchTrainer``
fits none of them as-is on 0.9.0: its in-batch mode needs 2-D user vectors (MIND's are [B, 4, d])
and ``item_tower`` outputs without negatives (GRU4Rec/MIND always concatenate ``neg_items``);
SASRec's ``item_tower`` reads ``self.item_emb.embedding``, which ``EmbeddingLayer`` does not have
(AttributeError); GRU4Rec's list-wise ``forward`` sums over dim 1 — the candidates — instead of
the embedding dim; GRU4Rec/MIND store ``temperature`` but never apply it):

- loss ``--loss inbatch`` (default): the library's in-batch softmax (``MatchTrainer(in_batch_neg=
  True)``: cross-entropy of each query's positive against the other targets of the batch, all B - 1
  of them), with two corrections — a batch target equal to the query's own target is masked (not a
  negative), and the logits are divided by the model's ``temperature`` (0.02, GRU4Rec / MIND, whose
  vectors are unit-norm; SASRec's are not normalised: 1). ``--loss logq``: the product's loss
  (``retrieval.train.loss_of``: in-batch + 512 uniform negatives, logQ correction
  ``- log(B p_j + M / N)``), as an ablation that isolates the architectures from the objective;
- Adam lr 1e-3, weight_decay 1e-6 (the library examples' values; lr 2e-3, the product's, was no
  better on validation for GRU4Rec / MIND), batch 512 (the product's), no gradient clipping; at most
  ``--epochs`` 6 epochs — a TIME cap (the product trains up to 8): one epoch of the 57,880 fitting
  queries took ~40 s (SASRec), ~22 s (GRU4Rec), ~7 s (MIND) on one busy core, so 3 seeds x 3 models
  x 6 epochs is ~22 min. All three were still improving on validation at 6 epochs (seed 0 valid
  mrr at epoch 6 -> best within 15: SASRec 0.123 -> 0.155 (15), GRU4Rec 0.116 -> 0.141 (15), MIND
  0.120 -> 0.152 (11)), so the default numbers are a lower bound for the architectures;
  ``--epochs 15`` for a longer run (SASRec alone ~11 min per seed).
  Early stopping on the validation mrr over the whole catalog (ties counted against, as the
  product's), patience 2, best epoch restored;
- seeds: ``random``, ``numpy``, ``torch.manual_seed(seed)``, batch order from
  ``np.random.default_rng(seed)``; ``torch.set_num_threads(--threads)`` (1: with the machine's two
  cores shared, 2 threads were no faster per batch).

Nothing is tuned on TEST (nothing is tuned at all: the hyper-parameters above are fixed).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
# sleeping OpenMP threads on the shared 2-core machine (see bench/peers.py); before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from retrieval.data import QueryBatch, training_queries  # noqa: E402
from retrieval.evaluate import World, read_twitch  # noqa: E402
from retrieval.metrics import KS, from_ranks, rank_stats  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODELS = ("sasrec", "gru4rec", "mind")
METRICS = [f"recall@{k}" for k in KS] + ["ndcg@10"]
TEMPERATURE = 0.02          # GRU4Rec / MIND (the library examples' value); SASRec: 1
LR, WEIGHT_DECAY = 1e-3, 1e-6
UNIFORM_NEGATIVES = 512     # --loss logq only (the product's TrainConfig)
MIND_INIT_STD = 0.05        # MIND's embedding init (the product's std); the library's 1e-4 stalls it


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

def right_pad(seq: np.ndarray) -> np.ndarray:
    """Left-padded ``[B, L]`` rows (real tokens contiguous at the end) → right-padded, same order."""
    L = seq.shape[1]
    c = (seq != 0).sum(1)
    pos = np.arange(L)[None, :]
    src = np.clip(pos + (L - c)[:, None], 0, L - 1)
    return np.where(pos < c[:, None], np.take_along_axis(seq, src, 1), 0)


class Peer:
    """One torch-rechub model + how to feed it and read user / stream vectors from it."""

    def __init__(self, name: str, n_streams: int, seq_len: int, dim: int):
        from torch_rechub.basic.features import SequenceFeature, SparseFeature
        from torch_rechub.models.matching import GRU4Rec, MIND, SASRec
        self.name, self.n, self.L = name, n_streams, seq_len
        V = n_streams + 1
        if name == "sasrec":
            seq = SequenceFeature("seq", vocab_size=V, embed_dim=dim, pooling="concat", padding_idx=0)
            self.model = SASRec([seq], max_len=seq_len)
            self.temperature = 1.0
            self.hparams = {"max_len": seq_len, "num_blocks": 2, "num_heads": 1, "dropout_rate": 0.5,
                            "padding": "right", "normalised": False}
        else:
            from torch_rechub.basic.initializers import RandomNormal
            # the library's default initializer (RandomNormal(0, 1e-4)), except MIND's (docstring)
            init = {"initializer": RandomNormal(0, MIND_INIT_STD)} if name == "mind" else {}
            const = SparseFeature("const", vocab_size=2, embed_dim=dim, **init)
            item = SparseFeature("stream_id", vocab_size=V, embed_dim=dim, padding_idx=0, **init)
            hist = SequenceFeature("hist", vocab_size=V, embed_dim=dim, pooling="concat",
                                   shared_with="stream_id", padding_idx=0)
            if name == "gru4rec":
                self.model = GRU4Rec([const], [hist], [item], [], user_params={"dims": [128, dim]},
                                     temperature=TEMPERATURE)
                self.hparams = {"user_params": {"dims": [128, dim]}, "gru_layers": 2, "padding": "left"}
            elif name == "mind":
                self.model = MIND([const], [hist], [item], [], max_length=seq_len, temperature=TEMPERATURE,
                                  interest_num=4)
                self.hparams = {"interest_num": 4, "max_length": seq_len, "dynamic_interest": False,
                                "padding": "left", "init_std": MIND_INIT_STD}
            else:
                raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
            self.temperature = float(self.model.temperature)
            self.hparams["normalised"] = True
        self.hparams["temperature"] = self.temperature
        self.hparams["dim"] = dim

    def inputs(self, seq: np.ndarray) -> dict:
        if self.name == "sasrec":
            return {"seq": torch.as_tensor(right_pad(seq))}
        return {"hist": torch.as_tensor(seq), "const": torch.ones(len(seq), dtype=torch.long)}

    def users(self, seq: np.ndarray) -> torch.Tensor:
        """``[B, K, d]`` (K = 4 for MIND, else 1), in the model's current train/eval mode."""
        u = self.model.user_tower(self.inputs(seq))
        return u if u.dim() == 3 else u.unsqueeze(1)

    def streams(self, rows: torch.Tensor) -> torch.Tensor:
        """``[R, d]`` stream vectors of ``rows``."""
        m = self.model
        if self.name == "sasrec":
            return m.item_emb.embed_dict["seq"](rows)
        old, m.mode = m.mode, "item"
        try:
            return m.item_tower({"stream_id": rows})
        finally:
            m.mode = old


# --------------------------------------------------------------------------------------------
# training / scoring
# --------------------------------------------------------------------------------------------

def loss_of(peer: Peer, seq: np.ndarray, target: np.ndarray, logq: torch.Tensor | None,
            gen: torch.Generator) -> torch.Tensor:
    tgt = torch.as_tensor(target)
    B = len(tgt)
    users = peer.users(seq)                                            # [B, K, d]
    cand = tgt
    if logq is not None:
        cand = torch.cat([tgt, torch.randint(1, peer.n + 1, (UNIFORM_NEGATIVES,), generator=gen)])
    s = peer.streams(cand)                                             # [C, d]
    if users.shape[1] > 1:                                             # MIND: label-aware interest
        with torch.no_grad():
            k = torch.einsum("bkd,bd->bk", users, s[:B]).argmax(1)
        u = users[torch.arange(B), k]
    else:
        u = users[:, 0]
    logits = u @ s.T / peer.temperature
    if logq is not None:
        logits = logits - logq[cand][None, :]
    same = cand[None, :] == tgt[:, None]
    same[torch.arange(B), torch.arange(B)] = False
    return F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(B))


@torch.no_grad()
def score_all(peer: Peer, seq: np.ndarray, chunk: int = 2048):
    """Yield ``[b, N + 1]`` scores (column 0 = -inf) of the queries in chunks (eval mode)."""
    peer.model.eval()
    S = peer.streams(torch.arange(peer.n + 1))                         # [N + 1, d]
    for a in range(0, len(seq), chunk):
        u = peer.users(seq[a:a + chunk])                               # [b, K, d]
        sc = torch.einsum("bkd,nd->bkn", u, S).amax(1).double().numpy()
        sc[:, 0] = -np.inf
        yield sc


def valid_mrr(peer: Peer, batch: QueryBatch) -> float:
    rr, a = [], 0
    for sc in score_all(peer, batch.seq):
        tgt = batch.target[a:a + len(sc)]
        ts = sc[np.arange(len(sc)), tgt]
        rr.append(1.0 / (sc >= ts[:, None]).sum(1))                   # ties against the target
        a += len(sc)
    return float(np.concatenate(rr).mean())


def fit(peer: Peer, train: QueryBatch, *, seed: int, epochs: int, patience: int, batch_size: int,
        loss: str) -> dict:
    order = np.argsort(train.t, kind="stable")
    n_valid = int(len(order) * 0.1) if len(order) >= 200 else 0
    valid = train.take(order[len(order) - n_valid:]) if n_valid else None
    fit_idx = order[: len(order) - n_valid]
    n = peer.n
    logq = None
    B = min(batch_size, len(fit_idx))
    if loss == "logq":
        p = np.bincount(train.target[fit_idx], minlength=n + 1)[: n + 1].astype(np.float64)
        p /= max(p.sum(), 1.0)
        logq = torch.as_tensor(np.log(B * p + UNIFORM_NEGATIVES / n + 1e-12), dtype=torch.float32)
    opt = torch.optim.Adam(peer.model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, bad, history = -math.inf, None, 0, []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        peer.model.train()
        perm = rng.permutation(fit_idx)
        total, steps = 0.0, 0
        for a in range(0, len(perm), B):
            idx = perm[a:a + B]
            if len(idx) < 2:                                           # BatchNorm / in-batch need >= 2
                continue
            lo = loss_of(peer, train.seq[idx], train.target[idx], logq, gen)
            opt.zero_grad()
            lo.backward()
            opt.step()
            total += float(lo.detach())
            steps += 1
        t_train = time.perf_counter() - t0
        mrr = valid_mrr(peer, valid) if valid is not None else float("nan")
        row = {"epoch": epoch, "loss": round(total / max(steps, 1), 4), "valid_mrr": round(mrr, 4),
               "train_s": round(t_train, 1), "queries_per_s": round(len(perm) / max(t_train, 1e-9)),
               "seconds": round(time.perf_counter() - t0, 1)}
        history.append(row)
        say(f"  {peer.name} seed {seed} epoch {epoch}: loss {row['loss']:.4f} valid_mrr {row['valid_mrr']:.4f} "
            f"{row['queries_per_s']} q/s, {row['seconds']}s")
        if valid is None:
            continue
        if mrr > best:
            best, bad = mrr, 0
            best_state = {k: v.detach().clone() for k, v in peer.model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        peer.model.load_state_dict(best_state)
    best_epoch = max(history, key=lambda r: r["valid_mrr"])["epoch"] if valid is not None else len(history)
    return {"epochs": history, "best_epoch": best_epoch, "best_valid_mrr": round(best, 4),
            "train_queries": int(len(fit_idx)), "valid_queries": int(n_valid)}


def evaluate(peer: Peer, world: World, seed: int) -> list[dict]:
    torch.manual_seed(seed)                                            # MIND's random routing init
    ab, ti, a = [], [], 0
    for sc in score_all(peer, world.q.seq):
        tgt = world.q.target[a:a + len(sc)] - 1
        x, y = rank_stats(sc[:, 1:], tgt)
        ab.append(x)
        ti.append(y)
        a += len(sc)
    ab, ti = np.concatenate(ab), np.concatenate(ti)
    return [{"model": f"rechub_{peer.name}", "subset": subset, **from_ranks(ab[m], ti[m]), "seed": seed}
            for subset, m in (("all", np.ones(len(ab), bool)), ("new", world.is_new))]


def summary(rows: list[dict]) -> list[dict]:
    out = []
    keys = list(dict.fromkeys((r["model"], r["subset"]) for r in rows))
    for model, subset in keys:
        rs = [r for r in rows if r["model"] == model and r["subset"] == subset]
        row = {"model": model, "subset": subset}
        for k in METRICS:
            v = np.array([r[k] for r in rs], np.float64)
            row[k] = round(float(v.mean()), 4)
        row["n"] = rs[0]["n"]
        row["seed"] = "mean"
        row["seeds"] = [r["seed"] for r in rs]
        for k in METRICS:
            v = np.array([r[k] for r in rs], np.float64)
            row[f"{k}_std"] = round(float(v.std(ddof=1)), 4) if len(v) > 1 else 0.0
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------

def parse_seeds(s: str) -> list[int]:
    """``"3"`` → seeds 0, 1, 2; ``"0,5"`` or ``"4,"`` → those seeds."""
    s = s.strip()
    seeds = [int(x) for x in s.split(",") if x.strip()] if "," in s else list(range(int(s)))
    if not seeds:
        raise SystemExit(f"--seeds {s!r}: no seed (a count >= 1, or a comma list such as 0, or 0,1,2)")
    return seeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--path", required=True, help="Twitch watches CSV (user_id, streamer_id, slot[, community])")
    ap.add_argument("--split-slot", type=int, required=True, help="train = slot < N, test = slot >= N")
    ap.add_argument("--seeds", default="3", help="a count (3 -> 0,1,2) or a comma list (0,5,7; one seed: 4,)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=6, help="max epochs (early stopping on the valid mrr)")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on the shared 2-core machine 2 threads were no faster)")
    ap.add_argument("--loss", choices=("inbatch", "logq"), default="inbatch")
    ap.add_argument("--smoke", action="store_true", help="self test: 3k training queries, 1 epoch, seed 0")
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {', '.join(MODELS)}")
    seeds = [0] if args.smoke else parse_seeds(args.seeds)
    epochs = 1 if args.smoke else args.epochs
    torch.set_num_threads(args.threads)
    import importlib.metadata as md
    say(f"torch {torch.__version__}, torch-rechub {md.version('torch-rechub')}, threads {args.threads}, "
        f"loss {args.loss}, seeds {seeds}, models {models}")

    t_all = time.perf_counter()
    df = pd.read_csv(args.path)
    if "slot" not in df.columns:
        raise SystemExit(f"{args.path}: no 'slot' column")
    train, test = read_twitch(df[df.slot < args.split_slot]), read_twitch(df[df.slot >= args.split_slot])
    if not len(train) or not len(test):
        raise SystemExit(f"empty split: {len(train)} train rows, {len(test)} test rows")
    world = World(train, test)
    tq = training_queries(world.train_sessions, world.vocab, seq_len=world.seq_len, long_len=world.long_len)
    if args.smoke:
        tq = tq.take(np.sort(np.random.default_rng(0).choice(len(tq), min(3000, len(tq)), replace=False)))
    say(f"world: {world.n_streams} streams, {len(world.train_sessions)} train sessions, {len(tq)} training "
        f"queries, {len(world.q)} test queries ({int(world.is_new.sum())} new) in {time.perf_counter() - t_all:.1f}s")

    rows = []
    for name in models:
        for seed in seeds:
            random.seed(seed)
            np.random.seed(seed)
            torch.manual_seed(seed)
            peer = Peer(name, world.n_streams, world.seq_len, args.dim)
            t0 = time.perf_counter()
            info = fit(peer, tq, seed=seed, epochs=epochs, patience=args.patience, batch_size=args.batch_size,
                       loss=args.loss)
            t1 = time.perf_counter()
            res = evaluate(peer, world, seed)
            t2 = time.perf_counter()
            for r in res:
                print(json.dumps(r), flush=True)
            rows.extend(res)
            print(json.dumps({"train_info": {"model": f"rechub_{name}", "seed": seed, "loss": args.loss,
                                             **{k: v for k, v in info.items() if k != "epochs"},
                                             "epochs_run": len(info["epochs"]), "train_s": round(t1 - t0, 1),
                                             "eval_s": round(t2 - t1, 1),
                                             "n_params": sum(p.numel() for p in peer.model.parameters()),
                                             "hparams": peer.hparams}}), file=sys.stderr, flush=True)
            say(f"{name} seed {seed}: best epoch {info['best_epoch']}, train {t1 - t0:.1f}s, eval {t2 - t1:.1f}s; "
                + ", ".join(f"{r['subset']} recall@50 {r['recall@50']:.4f}" for r in res))
    for r in summary(rows):
        print(json.dumps(r), flush=True)
    say(f"total {time.perf_counter() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
