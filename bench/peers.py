"""Peer ranking models from public libraries, trained on a bench dataset for comparison.

Runs in the separate bench environment (``bash bench/peer_env.sh`` creates ``.bench-venv/``),
never in the product's one; imports only numpy/torch/scikit-learn, the peer libraries and
``bench/peer_dataset.py`` (nothing from the product)::

    .bench-venv/bin/python bench/peers.py DATASET_DIR OUT_DIR \\
        --models rechub_mmoe,rechub_din,rechub_bst,deepctr_mmoe,deepctr_din --seeds 0,1,2 \\
        [--epochs 10] [--batch-size 1024] [--threads 2] [--embed-dim 32] [--max-train-rows N]
    .bench-venv/bin/python bench/peers.py --smoke            # 5k-row planted data, all models
    .bench-venv/bin/python bench/peers.py --make-dataset DIR --rows 400000 --dense 85 --hist-len 20

For every (model, seed) it writes ``OUT_DIR/<model>__seed<k>.npz`` (``click`` probabilities for
the split-2 rows in their original order, plus ``purchase`` / ``stay`` when the model predicts
them) and ``OUT_DIR/<model>__seed<k>.json`` ({model, seed, library, version, epochs_run,
best_epoch, train_seconds, valid_auc, n_params} and more: per-epoch timings, hyper-parameters).

Models (all built from the library's own classes; embedding dim ``--embed-dim`` for every id
feature; inputs: user_id, stream_id, category embeddings + the ``dense`` block; history
``hist_streams`` shares the stream_id embedding table):

- ``rechub_mmoe`` torch_rechub.models.multi_task.MMOE, one task per ``meta["tasks"]``
  (classification for click/purchase, regression for stay); history as a mean-pooled
  SequenceFeature. Expert/tower sizes: the library's MMOE example (8 experts, dims [16],
  towers [8]). Trained with MTLTrainer.train_one_epoch (Adam lr 1e-3, weight_decay 1e-5: the
  trainer's defaults; loss = mean of BCE/MSE over tasks).
- ``rechub_din`` torch_rechub.models.ranking.DIN, click only; history = concat-pooled
  SequenceFeature, target = stream_id. mlp [256, 128] (the library's DIN example; Dice),
  attention unit = ActivationUnit's own default (dims [36], Dice; the example's [256, 128]
  made an epoch ~6x slower on 2 cores). CTRTrainer.train_one_epoch (Adam lr 1e-3, wd 1e-5).
- ``rechub_bst`` torch_rechub.models.ranking.BST, click only; same history/target as DIN,
  mlp [256, 128], library defaults nhead=8, dropout=0.2, one encoder layer (torch's
  TransformerEncoderLayer default dim_feedforward=2048, which BST does not expose). CTRTrainer.
- ``deepctr_mmoe`` deepctr_torch.models.multitask.MMOE with the library defaults (3 experts
  (256, 128), gate (64,), tower (64,), l2 1e-5); history as a mean-pooled VarLenSparseFeat;
  ``compile("adam", [binary_crossentropy | mse per task])`` (torch Adam, lr 1e-3).
- ``deepctr_din`` deepctr_torch.models.DIN with the library defaults (dnn (256, 128),
  attention (64, 16), Dice); history ``hist_stream_id`` (VarLenSparseFeat with
  embedding_name="stream_id", length feature ``seq_length``); ``compile("adam",
  "binary_crossentropy")``.

Protocol, identical for every model: train on split 0, after each epoch score split 1 and
compute the click AUC; keep the best state; stop after ``--patience`` (2) epochs without
improvement or at ``--epochs`` (10); restore the best epoch; predict split 2. Seeds:
``random``, ``numpy`` and ``torch.manual_seed`` per run (DeepCTR models also get ``seed=``,
which they pass to torch.manual_seed). ``torch.set_num_threads(--threads)``.

Adaptations (where a library cannot express the setup as-is), all using the library's API:

1. The epoch loop is ours, not ``Trainer.fit`` / ``BaseModel.fit(epochs=N)``: each epoch runs
   the library's own step (rechub ``CTRTrainer/MTLTrainer.train_one_epoch``, DeepCTR
   ``model.fit(..., epochs=1)`` with the optimizer from ``compile``, so Adam's state carries
   over), so loss, optimizer and regularisation are the libraries'. Reasons: one early-stopping
   rule for all (rechub's ``fit`` does not restore the best weights when it reaches n_epoch;
   DeepCTR's ``auc`` metric flattens all task outputs, so it cannot early-stop a multi-task
   model on click AUC), and per-epoch timings.
2. rechub batches come from an in-memory iterator yielding the same ``(x_dict, y)`` pairs as
   its ``DataGenerator`` DataLoaders (shuffled each epoch), without per-sample collation.
   A trailing training batch of one row is dropped (BatchNorm in train mode cannot take it).
3. rechub DIN 0.9.0 sizes its MLP for dense features but its forward drops them
   (``EmbeddingLayer(..., squeeze_dim=False)`` returns only the sparse part, so the MLP input
   is short -> shape error). ``_RechubDINDense`` overrides ``forward`` only, reading the
   context features with ``squeeze_dim=True`` as BST does; layers and parameters are DIN's.
4. rechub dense block: one ``DenseFeature("dense", embed_dim=D)`` fed a [B, D] tensor (the
   documented vector form). ``padding_idx=0`` on every rechub id feature (0 = unknown /
   padding in our data; BST's padding mask and the mean pooling read it).
5. DeepCTR's MMOE refuses one task (``num_tasks must be greater than 1``). On a click-only
   dataset ``deepctr_mmoe`` trains two heads on the same click label and reports head 0.
6. DeepCTR feeds every input through one float tensor: ids are cast to float32 (exact below
   2**24; checked). ``seq_length`` = index of the last non-zero history slot + 1.
7. ``import deepctr_torch`` starts a non-daemon thread that queries PyPI (no timeout) for a
   newer version; ``_import_deepctr`` pre-registers a stub ``deepctr_torch.utils`` (that module
   only defines ``check_version``) so the import has no network side effect.
8. ``--bst-ffn-dim N`` (off by default): rechub's BST does not expose the encoder's feed-forward
   width, so it gets torch's default 2048 even for d=32 -- most of BST's cost (~20x the other
   peers per epoch on 2 cores). With the flag the encoder is rebuilt exactly as ``BST.__init__``
   builds it (LeakyReLU, batch_first, same nhead/dropout/layers) but with dim_feedforward=N.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import io
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
import types

os.environ.setdefault("TQDM_DISABLE", "1")  # the libraries' per-batch progress bars
# OpenMP threads that sleep instead of spinning at barriers. On the shared 2-core machine, with
# any other process busy, torch's default spinning made a 2-thread epoch 10-25x slower than a
# 1-thread one (measured: rechub_mmoe 100k rows 51-101 s vs 4-5 s with PASSIVE). Must be set
# before torch loads libgomp; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import warnings  # noqa: E402

# rechub BST's encoder (LeakyReLU) cannot use torch's nested-tensor fast path; torch says so once.
warnings.filterwarnings("ignore", message="enable_nested_tensor is True")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, load_dataset, save_dataset  # noqa: E402

ALL_MODELS = ["rechub_mmoe", "rechub_din", "rechub_bst", "deepctr_mmoe", "deepctr_din"]
LIBRARY = {"rechub": "torch-rechub", "deepctr": "deepctr-torch"}
RECHUB_TASK_TYPE = {"click": "classification", "purchase": "classification", "stay": "regression"}
DEEPCTR_TASK = {"click": ("binary", "binary_crossentropy"), "purchase": ("binary", "binary_crossentropy"),
                "stay": ("regression", "mse")}

HPARAMS = {
    "rechub_mmoe": {"n_expert": 8, "expert_params": {"dims": [16]}, "tower_params": {"dims": [8]},
                    "history": "mean", "optimizer": "Adam lr=1e-3 weight_decay=1e-5 (MTLTrainer default)"},
    "rechub_din": {"mlp_params": {"dims": [256, 128]}, "attention_mlp_params": {"dims": [36], "activation": "dice"},
                   "optimizer": "Adam lr=1e-3 weight_decay=1e-5 (CTRTrainer default)"},
    "rechub_bst": {"mlp_params": {"dims": [256, 128]}, "nhead": 8, "dropout": 0.2, "num_layers": 1,
                   "optimizer": "Adam lr=1e-3 weight_decay=1e-5 (CTRTrainer default)"},
    "deepctr_mmoe": {"num_experts": 3, "expert_dnn_hidden_units": [256, 128], "gate_dnn_hidden_units": [64],
                     "tower_dnn_hidden_units": [64], "history": "mean",
                     "optimizer": "compile('adam'): torch Adam lr=1e-3"},
    "deepctr_din": {"dnn_hidden_units": [256, 128], "att_hidden_size": [64, 16], "att_activation": "Dice",
                    "optimizer": "compile('adam'): torch Adam lr=1e-3"},
}


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def hist_lengths(hist: np.ndarray) -> np.ndarray:
    """Index of the last non-zero slot + 1 per row (0 for an empty history)."""
    nz = hist != 0
    if hist.shape[1] == 0:
        return np.zeros(len(hist), dtype=np.int64)
    last = hist.shape[1] - 1 - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(axis=1), last + 1, 0).astype(np.int64)


class Splits:
    """The dataset cut into train / valid / test views (row order kept within a split)."""

    def __init__(self, arrays: dict, meta: dict, max_train_rows: int = 0):
        self.meta = meta
        self.tasks = list(meta["tasks"])
        self.vocab = {k: int(v) for k, v in meta["vocab"].items()}
        self.n_dense = int(arrays["dense"].shape[1])
        self.hist_len = int(arrays["hist_streams"].shape[1])
        split = arrays["split"]
        self.parts = {}
        for name, code in (("train", SPLIT_TRAIN), ("valid", SPLIT_VALID), ("test", SPLIT_TEST)):
            idx = np.flatnonzero(split == code)
            if name == "train" and 0 < max_train_rows < len(idx):
                # fixed subset (same for every model and seed), original order kept
                idx = np.sort(np.random.default_rng(12345).choice(idx, max_train_rows, replace=False))
            part = {k: arrays[k][idx] for k in ("user_id", "stream_id", "category", "dense", "hist_streams")}
            part["seq_length"] = hist_lengths(part["hist_streams"])
            for t in self.tasks:
                part[t] = arrays[t][idx].astype(np.float32)
            self.parts[name] = part
        for name in ("train", "valid", "test"):
            if len(self.parts[name]["click"]) == 0:
                raise ValueError(f"dataset has no {name} rows")
        if len(np.unique(self.parts["valid"]["click"])) < 2:
            raise ValueError("valid split has a single click class: AUC undefined")

    def n(self, name: str) -> int:
        return len(self.parts[name]["click"])


def auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    if not np.isfinite(p).all() or len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


# --------------------------------------------------------------------------------------------
# torch-rechub
# --------------------------------------------------------------------------------------------

class _Batches:
    """Iterable of ``(x_dict, y)`` batches like rechub's DataGenerator loaders, from tensors."""

    def __init__(self, x: dict, y: torch.Tensor | None, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None = None, drop_singleton: bool = False):
        self.x, self.y = x, y
        self.n = len(next(iter(x.values())))
        self.batch_size, self.shuffle, self.generator = batch_size, shuffle, generator
        self.drop_singleton = drop_singleton

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else None
        for start in range(0, self.n, self.batch_size):
            stop = min(start + self.batch_size, self.n)
            if self.drop_singleton and stop - start == 1 and self.n > 1:
                break
            idx = order[start:stop] if order is not None else slice(start, stop)
            xb = {k: v[idx] for k, v in self.x.items()}
            yield (xb, self.y[idx]) if self.y is not None else xb


def _make_rechub_din_dense():
    from torch_rechub.models.ranking import DIN

    class _RechubDINDense(DIN):
        """torch_rechub DIN whose forward keeps the dense context features (see adaptation 3).

        Same computation as ``DIN.forward`` except ``squeeze_dim=True`` for ``self.features``;
        the MLP was already sized for them by ``DIN.__init__`` (``all_dims``)."""

        def forward(self, x):
            embed_x_features = self.embedding(x, self.features, squeeze_dim=True)  # [B, sum dims]
            embed_x_history = self.embedding(x, self.history_features)  # [B, H, L, E]
            embed_x_target = self.embedding(x, self.target_features)  # [B, H, E]
            attention_pooling = []
            for i in range(self.num_history_features):
                attention_seq = self.attention_layers[i](embed_x_history[:, i, :, :], embed_x_target[:, i, :])
                attention_pooling.append(attention_seq.unsqueeze(1))  # [B, 1, E]
            attention_pooling = torch.cat(attention_pooling, dim=1)  # [B, H, E]
            mlp_in = torch.cat([attention_pooling.flatten(start_dim=1), embed_x_target.flatten(start_dim=1),
                                embed_x_features], dim=1)
            y = self.mlp(mlp_in)
            return torch.sigmoid(y.squeeze(1))

    return _RechubDINDense


class RechubRunner:
    def __init__(self, kind: str, data: Splits, args, seed: int):
        from torch_rechub.basic.features import DenseFeature, SequenceFeature, SparseFeature
        from torch_rechub.trainers import CTRTrainer, MTLTrainer

        E, V, hp = args.embed_dim, data.vocab, HPARAMS[f"rechub_{kind}"]
        # Feature objects cache their nn.Embedding: build fresh ones for every run.
        user = SparseFeature("user_id", V["user_id"], embed_dim=E, padding_idx=0)
        stream = SparseFeature("stream_id", V["stream_id"], embed_dim=E, padding_idx=0)
        cat = SparseFeature("category", V["category"], embed_dim=E, padding_idx=0)
        dense = DenseFeature("dense", embed_dim=data.n_dense)
        self.kind = kind
        if kind == "mmoe":
            from torch_rechub.models.multi_task import MMOE
            hist = SequenceFeature("hist_streams", V["stream_id"], embed_dim=E, pooling="mean",
                                   shared_with="stream_id", padding_idx=0)
            self.task_names = list(data.tasks)
            task_types = [RECHUB_TASK_TYPE[t] for t in self.task_names]
            self.model = MMOE([user, stream, cat, hist, dense], task_types, hp["n_expert"],
                              expert_params=copy.deepcopy(hp["expert_params"]),
                              tower_params_list=[copy.deepcopy(hp["tower_params"]) for _ in task_types])
            self.trainer = MTLTrainer(self.model, task_types=task_types, n_epoch=args.epochs,
                                      earlystop_patience=args.patience, device="cpu", model_path=args.tmp)
        else:
            hist = SequenceFeature("hist_streams", V["stream_id"], embed_dim=E, pooling="concat",
                                   shared_with="stream_id", padding_idx=0)
            self.task_names = ["click"]
            if kind == "din":
                cls = _make_rechub_din_dense()
                self.model = cls(features=[user, cat, dense], history_features=[hist], target_features=[stream],
                                 mlp_params=copy.deepcopy(hp["mlp_params"]),
                                 attention_mlp_params=copy.deepcopy(hp["attention_mlp_params"]))
            elif kind == "bst":
                from torch_rechub.models.ranking import BST
                self.model = BST(features=[user, cat, dense], history_features=[hist], target_features=[stream],
                                 mlp_params=copy.deepcopy(hp["mlp_params"]), nhead=hp["nhead"],
                                 dropout=hp["dropout"], num_layers=hp["num_layers"],
                                 max_seq_len=max(51, data.hist_len + 1))
                if args.bst_ffn_dim:
                    # Adaptation 8: the same encoder BST.__init__ builds, with only dim_feedforward set.
                    layer = torch.nn.TransformerEncoderLayer(
                        d_model=self.model.item_dim, nhead=hp["nhead"], dim_feedforward=args.bst_ffn_dim,
                        dropout=hp["dropout"], activation=torch.nn.LeakyReLU(), batch_first=True)
                    self.model.transformer_layers = torch.nn.TransformerEncoder(
                        layer, num_layers=hp["num_layers"], enable_nested_tensor=False)
            else:
                raise ValueError(kind)
            self.trainer = CTRTrainer(self.model, n_epoch=args.epochs, earlystop_patience=args.patience,
                                      device="cpu", model_path=args.tmp)
        self.x = {name: self._tensors(data.parts[name]) for name in ("train", "valid", "test")}
        tr = data.parts["train"]
        if kind == "mmoe":
            self.y_train = torch.from_numpy(np.stack([tr[t] for t in self.task_names], axis=1))
        else:
            self.y_train = torch.from_numpy(tr["click"])
        self.batch_size, self.eval_batch_size = args.batch_size, args.eval_batch_size
        self.gen = torch.Generator().manual_seed(seed)

    @staticmethod
    def _tensors(part: dict) -> dict:
        return {"user_id": torch.from_numpy(part["user_id"]), "stream_id": torch.from_numpy(part["stream_id"]),
                "category": torch.from_numpy(part["category"]),
                "hist_streams": torch.from_numpy(part["hist_streams"]),
                "dense": torch.from_numpy(np.ascontiguousarray(part["dense"], dtype=np.float32))}

    def train_epoch(self) -> float:
        batches = _Batches(self.x["train"], self.y_train, self.batch_size, shuffle=True, generator=self.gen,
                           drop_singleton=True)
        with contextlib.redirect_stdout(io.StringIO()):  # MTLTrainer prints its loss dict
            loss = self.trainer.train_one_epoch(batches)
        return float(np.mean(loss))

    def predict(self, split: str) -> np.ndarray:
        self.model.eval()
        out = []
        with torch.no_grad():
            for xb in _Batches(self.x[split], None, self.eval_batch_size, shuffle=False):
                y = self.model(xb)
                out.append(y.reshape(len(y), -1).float().numpy())
        return np.concatenate(out).astype(np.float64)


# --------------------------------------------------------------------------------------------
# DeepCTR-Torch
# --------------------------------------------------------------------------------------------

def _import_deepctr():
    """Import deepctr_torch without its PyPI version-check thread (adaptation 7)."""
    if "deepctr_torch" not in sys.modules and "deepctr_torch.utils" not in sys.modules:
        # SHIM (bench only): deepctr_torch/__init__.py runs utils.check_version(), which starts a
        # thread doing requests.get("https://pypi.python.org/pypi/deepctr-torch/json") with no
        # timeout. deepctr_torch/utils.py defines nothing but check_version, so a stub of that
        # one module is all it takes; every model/layer module is the library's own.
        stub = types.ModuleType("deepctr_torch.utils")
        stub.check_version = lambda version: None
        sys.modules["deepctr_torch.utils"] = stub
    import deepctr_torch  # noqa: F401
    return deepctr_torch


class DeepCTRRunner:
    def __init__(self, kind: str, data: Splits, args, seed: int):
        _import_deepctr()
        from deepctr_torch.inputs import DenseFeat, SparseFeat, VarLenSparseFeat

        E, V, hp = args.embed_dim, data.vocab, HPARAMS[f"deepctr_{kind}"]
        if max(V.values()) >= 2 ** 24:
            raise ValueError("DeepCTR carries ids in float32: vocab must stay below 2**24")
        feats = [SparseFeat("user_id", V["user_id"], embedding_dim=E),
                 SparseFeat("stream_id", V["stream_id"], embedding_dim=E),
                 SparseFeat("category", V["category"], embedding_dim=E),
                 DenseFeat("dense", data.n_dense)]
        hist = VarLenSparseFeat(SparseFeat("hist_stream_id", V["stream_id"], embedding_dim=E,
                                           embedding_name="stream_id"),
                                maxlen=data.hist_len, combiner="mean", length_name="seq_length")
        self.kind = kind
        if kind == "mmoe":
            from deepctr_torch.models.multitask import MMOE
            self.task_names = list(data.tasks)
            label_names = list(self.task_names)
            if len(label_names) == 1:  # adaptation 5: DeepCTR's MMOE needs >= 2 tasks
                label_names = label_names + [label_names[0]]
            task_types = [DEEPCTR_TASK[t][0] for t in label_names]
            losses = [DEEPCTR_TASK[t][1] for t in label_names]
            names = [f"{t}_{i}" for i, t in enumerate(label_names)]
            self.model = MMOE(feats + [hist], num_experts=hp["num_experts"],
                              expert_dnn_hidden_units=tuple(hp["expert_dnn_hidden_units"]),
                              gate_dnn_hidden_units=tuple(hp["gate_dnn_hidden_units"]),
                              tower_dnn_hidden_units=tuple(hp["tower_dnn_hidden_units"]),
                              task_types=task_types, task_names=names, seed=seed, device="cpu")
            self.model.compile("adam", loss=losses)
            self.label_names = label_names
        elif kind == "din":
            from deepctr_torch.models import DIN
            self.task_names = ["click"]
            self.label_names = ["click"]
            self.model = DIN(feats + [hist], history_feature_list=["stream_id"],
                             dnn_hidden_units=tuple(hp["dnn_hidden_units"]),
                             att_hidden_size=tuple(hp["att_hidden_size"]), att_activation=hp["att_activation"],
                             seed=seed, device="cpu")
            self.model.compile("adam", "binary_crossentropy")
        else:
            raise ValueError(kind)
        self.x = {name: self._inputs(data.parts[name]) for name in ("train", "valid", "test")}
        tr = data.parts["train"]
        if len(self.label_names) > 1:
            self.y_train = np.stack([tr[t] for t in self.label_names], axis=1).astype(np.float32)
        else:
            self.y_train = tr["click"].astype(np.float32)
        self.batch_size, self.eval_batch_size = args.batch_size, args.eval_batch_size

    @staticmethod
    def _inputs(part: dict) -> dict:
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        return {"user_id": f32(part["user_id"]), "stream_id": f32(part["stream_id"]),
                "category": f32(part["category"]), "dense": f32(part["dense"]),
                "hist_stream_id": f32(part["hist_streams"]), "seq_length": f32(part["seq_length"])}

    def train_epoch(self) -> float:
        with contextlib.redirect_stdout(io.StringIO()):  # fit prints the device and sample counts
            hist = self.model.fit(dict(self.x["train"]), self.y_train, batch_size=self.batch_size, epochs=1,
                                  verbose=0, shuffle=True)
        return float(hist.history["loss"][-1])

    def predict(self, split: str) -> np.ndarray:
        p = self.model.predict(dict(self.x[split]), batch_size=self.eval_batch_size)
        return np.asarray(p, dtype=np.float64).reshape(len(p), -1)


# --------------------------------------------------------------------------------------------
# one run
# --------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_one(model_name: str, seed: int, data: Splits, args) -> dict:
    lib_key, kind = model_name.split("_", 1)
    library = LIBRARY[lib_key]
    tag = f"[{model_name} seed {seed}]"
    seed_everything(seed)
    runner = (RechubRunner if lib_key == "rechub" else DeepCTRRunner)(kind, data, args, seed)
    model = runner.model
    n_params = int(sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()))
    n_train = data.n("train")
    y_valid = data.parts["valid"]["click"]
    click_col = runner.task_names.index("click")
    log(f"{tag} {library} {importlib.metadata.version(library)}: {n_params:,} params, "
        f"{n_train:,} train rows, tasks {runner.task_names}")

    best_auc, best_epoch, best_state, wait = -math.inf, 0, None, 0
    epoch_train_s, epoch_valid_s, valid_aucs, losses = [], [], [], []
    t_fit = time.perf_counter()
    epochs_run = 0
    epoch_train_cpu_s = []
    for epoch in range(1, args.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = runner.train_epoch()
        t1, c1 = time.perf_counter(), time.process_time()
        pv = runner.predict("valid")
        a = auc(y_valid, pv[:, click_col])
        t2 = time.perf_counter()
        epochs_run = epoch
        epoch_train_s.append(round(t1 - t0, 3))
        epoch_train_cpu_s.append(round(c1 - c0, 3))
        epoch_valid_s.append(round(t2 - t1, 3))
        valid_aucs.append(a)
        losses.append(loss)
        improved = not math.isnan(a) and a > best_auc
        log(f"{tag} epoch {epoch}/{args.epochs}: train {t1 - t0:.1f}s ({n_train / max(t1 - t0, 1e-9):,.0f} rows/s,"
            f" cpu {c1 - c0:.1f}s) loss {loss:.4f}, valid click AUC {a:.4f}{' *' if improved else ''}"
            f" (eval {t2 - t1:.1f}s)")
        if improved:
            best_auc, best_epoch, wait = a, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
            if wait >= args.patience:
                log(f"{tag} early stop: no improvement for {wait} epochs")
                break
    train_seconds = time.perf_counter() - t_fit
    if best_state is None:
        raise RuntimeError(f"{tag} no epoch produced a finite valid AUC")
    model.load_state_dict(best_state)

    t0 = time.perf_counter()
    pt = runner.predict("test")
    predict_seconds = time.perf_counter() - t0
    out = {"click": pt[:, click_col].astype(np.float32)}
    for t in ("purchase", "stay"):
        if t in runner.task_names:
            out[t] = pt[:, runner.task_names.index(t)].astype(np.float32)
    test_auc = auc(data.parts["test"]["click"], out["click"])
    info = {
        "model": model_name, "seed": seed, "library": library, "version": importlib.metadata.version(library),
        "epochs_run": epochs_run, "best_epoch": best_epoch, "train_seconds": round(train_seconds, 3),
        "valid_auc": best_auc, "n_params": n_params,
        "dataset": data.meta.get("name"), "tasks": runner.task_names, "n_train": n_train,
        "n_valid": data.n("valid"), "n_test": data.n("test"), "test_click_auc": test_auc,
        "predict_seconds": round(predict_seconds, 3), "epoch_train_seconds": epoch_train_s,
        "epoch_train_cpu_seconds": epoch_train_cpu_s, "epoch_valid_seconds": epoch_valid_s, "valid_auc_per_epoch": valid_aucs, "train_loss_per_epoch": losses,
        "embed_dim": args.embed_dim, "batch_size": args.batch_size, "max_epochs": args.epochs,
        "patience": args.patience, "max_train_rows": args.max_train_rows, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "hparams": dict(HPARAMS[model_name], **({"dim_feedforward": args.bst_ffn_dim or 2048}
                                                  if model_name == "rechub_bst" else {})),
    }
    log(f"{tag} best epoch {best_epoch} valid AUC {best_auc:.4f}, test click AUC {test_auc:.4f}, "
        f"{train_seconds:.1f}s")
    return out, info


def _json_safe(obj):
    """NaN/inf -> None so the files stay strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def run_all(dataset_dir: str, out_dir: str, models: list[str], seeds: list[int], args) -> list[str]:
    arrays, meta = load_dataset(dataset_dir)
    data = Splits(arrays, meta, max_train_rows=args.max_train_rows)
    del arrays
    os.makedirs(out_dir, exist_ok=True)
    log(f"dataset {meta.get('name')}: train/valid/test {data.n('train'):,}/{data.n('valid'):,}/{data.n('test'):,},"
        f" D={data.n_dense}, L={data.hist_len}, tasks {data.tasks}, vocab {data.vocab}")
    failed = []
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        args.tmp = tmp
        for model_name in models:
            for seed in seeds:
                stem = os.path.join(out_dir, f"{model_name}__seed{seed}")
                if args.skip_existing and os.path.exists(stem + ".json") and os.path.exists(stem + ".npz"):
                    log(f"[{model_name} seed {seed}] exists, skipped")
                    continue
                try:
                    out, info = run_one(model_name, seed, data, args)
                except Exception:
                    traceback.print_exc()
                    log(f"[{model_name} seed {seed}] FAILED")
                    failed.append(f"{model_name}__seed{seed}")
                    continue
                np.savez(stem + ".npz", **out)
                with open(stem + ".json", "w") as f:
                    json.dump(_json_safe(info), f, indent=2)
    return failed


# --------------------------------------------------------------------------------------------
# planted synthetic data (smoke test, timing)
# --------------------------------------------------------------------------------------------

def make_planted_dataset(path: str, n_rows: int = 5000, n_dense: int = 8, hist_len: int = 10,
                         n_users: int = 400, n_streams: int = 300, n_categories: int = 10,
                         tasks=("click", "purchase", "stay"), split_frac=(0.8, 0.1), seed: int = 0,
                         name: str = "planted") -> None:
    """A dataset with a known signal: click depends on the dense block, on whether the target's
    category is the user's favourite (visible through user_id and through the history, which is
    drawn mostly from that category) and on a per-stream popularity."""
    rng = np.random.default_rng(seed)
    stream_cat = np.concatenate([[0], rng.integers(1, n_categories + 1, n_streams)])
    by_cat = np.argsort(stream_cat[1:], kind="stable") + 1  # stream ids sorted by category
    counts = np.bincount(stream_cat[1:], minlength=n_categories + 1)
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1]
    fav = rng.integers(1, n_categories + 1, n_users + 1)
    while (counts[fav] == 0).any():  # every favourite category must own a stream
        bad = counts[fav] == 0
        fav[bad] = rng.integers(1, n_categories + 1, bad.sum())
    pop = rng.normal(0, 0.5, n_streams + 1)

    user = rng.integers(1, n_users + 1, n_rows)
    stream = rng.integers(1, n_streams + 1, n_rows)
    category = stream_cat[stream]
    pref = fav[user]
    lengths = rng.integers(0, hist_len + 1, n_rows)
    hist = np.zeros((n_rows, hist_len), dtype=np.int64)
    for j in range(hist_len):
        from_fav = by_cat[starts[pref] + (rng.random(n_rows) * counts[pref]).astype(np.int64)]
        anywhere = rng.integers(1, n_streams + 1, n_rows)
        pick = np.where(rng.random(n_rows) < 0.8, from_fav, anywhere)
        hist[:, j] = np.where(j < lengths, pick, 0)
    dense = rng.normal(0, 1, (n_rows, n_dense)).astype(np.float32)
    match = (category == pref).astype(np.float32)
    logit = -1.0 + 1.5 * match + 1.0 * dense[:, 0] - 0.8 * dense[:, 1 % n_dense] + pop[stream]
    click = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    buy_logit = -1.0 + 1.5 * dense[:, 2 % n_dense] + 1.0 * match
    purchase = click * (rng.random(n_rows) < 1 / (1 + np.exp(-buy_logit)))
    stay = click * (3.0 + 0.5 * dense[:, 3 % n_dense] + 0.5 * match + rng.normal(0, 0.3, n_rows)).clip(0)
    split = np.full(n_rows, 2, dtype=np.int8)
    n_tr, n_va = int(n_rows * split_frac[0]), int(n_rows * split_frac[1])
    split[:n_tr], split[n_tr:n_tr + n_va] = 0, 1
    arrays = {"user_id": user, "stream_id": stream, "category": category, "dense": dense, "hist_streams": hist,
              "click": click, "split": split}
    if "purchase" in tasks:
        arrays["purchase"] = purchase.astype(np.float32)
    if "stay" in tasks:
        arrays["stay"] = stay.astype(np.float32)
    meta = {"name": name, "tasks": list(tasks),
            "vocab": {"user_id": n_users + 1, "stream_id": n_streams + 1, "category": n_categories + 1},
            "dense_names": [f"d{i}" for i in range(n_dense)]}
    save_dataset(path, arrays, meta)


def smoke(args) -> int:
    """5k planted rows, every model, 1 seed, 2 epochs: test click AUC must beat 0.6."""
    ok = True
    with tempfile.TemporaryDirectory(prefix="peers-smoke-") as tmp:
        runs = [("multi", ("click", "purchase", "stay"), ALL_MODELS),
                ("click_only", ("click",), ["rechub_mmoe", "deepctr_mmoe"])]
        for name, tasks, models in runs:
            ds, out = os.path.join(tmp, name), os.path.join(tmp, name + "_out")
            make_planted_dataset(ds, n_rows=5000, tasks=tasks, name=name)
            failed = run_all(ds, out, models, [0], args)
            ok &= not failed
            _, meta = load_dataset(ds)
            n_test = meta["split_counts"]["2"]
            for m in models:
                stem = os.path.join(out, f"{m}__seed0")
                if not os.path.exists(stem + ".json"):
                    log(f"SMOKE {name} {m}: no output")
                    ok = False
                    continue
                info = json.load(open(stem + ".json"))
                pred = np.load(stem + ".npz")
                want = {"click"} | ({"purchase", "stay"} & set(tasks) if m.endswith("mmoe") else set())
                shapes_ok = set(pred.files) == want and all(len(pred[k]) == n_test for k in pred.files)
                passed = shapes_ok and info["test_click_auc"] > 0.6 and info["epochs_run"] == args.epochs
                ok &= passed
                log(f"SMOKE {name:10s} {m:13s} test click AUC {info['test_click_auc']:.3f} valid {info['valid_auc']:.3f}"
                    f" arrays {sorted(pred.files)} epochs {info['epochs_run']} "
                    f"{info['train_seconds']:.1f}s -> {'ok' if passed else 'FAIL'}")
    log("SMOKE " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset_dir", nargs="?")
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--models", default=",".join(ALL_MODELS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=10, help="max epochs (early stopping on valid click AUC)")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--eval-batch-size", type=int, default=8192)
    ap.add_argument("--embed-dim", type=int, default=32, help="embedding dim of every id feature (16 or 32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bst-ffn-dim", type=int, default=0,
                    help="rechub_bst feed-forward width (0 = as shipped: torch's default 2048)")
    ap.add_argument("--max-train-rows", type=int, default=0,
                    help="train on a fixed random subset of split 0 of this size (0 = all)")
    ap.add_argument("--skip-existing", action="store_true", help="keep runs whose .json/.npz already exist")
    ap.add_argument("--smoke", action="store_true", help="planted 5k-row self test (2 epochs, batch 128)")
    ap.add_argument("--make-dataset", metavar="DIR", help="write a planted dataset and exit")
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dense", type=int, default=85)
    ap.add_argument("--hist-len", type=int, default=20)
    ap.add_argument("--train-frac", type=float, default=0.75)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.make_dataset:
        valid_frac = (1 - args.train_frac) / 2
        make_planted_dataset(args.make_dataset, n_rows=args.rows, n_dense=args.dense, hist_len=args.hist_len,
                             n_users=max(400, args.rows // 8), n_streams=max(300, args.rows // 80),
                             n_categories=50 if args.rows > 50_000 else 10,
                             split_frac=(args.train_frac, valid_frac), name=os.path.basename(args.make_dataset))
        log(f"wrote {args.make_dataset}")
        return 0
    if args.smoke:
        if "--epochs" not in (argv if argv is not None else sys.argv):
            args.epochs = 2
        if "--batch-size" not in (argv if argv is not None else sys.argv):
            args.batch_size = 128
        args.skip_existing = False
        return smoke(args)
    if not args.dataset_dir or not args.out_dir:
        ap.error("DATASET_DIR and OUT_DIR are required (or --smoke / --make-dataset)")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {ALL_MODELS}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    failed = run_all(args.dataset_dir, args.out_dir, models, seeds, args)
    if failed:
        log(f"FAILED runs: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
