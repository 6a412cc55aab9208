"""Quality side by side: our ranker (and its ablations) against LightGBM and the peer libraries.

    python bench/quality.py --twitch ../shared/data/twitch/watches.csv --split-slot 4000 \
        [--simulator] [--seeds 0,1,2] [--peers rechub_mmoe,...] [--out var/bench/quality]

Two tasks, the same split and the same features for every model:

* **twitch** (click = "watched"): the protocol of ``streamrank evaluate --source twitch``
  (ranking.twitch_eval): candidates = the streamers live in the test slot, metrics per query
  (auc, hr@k, mrr) and gauc, the reference's tie-break noise. Train rows = the train file's
  candidate rows (subsampled by (user, slot)), the last 15 % of the train period for early
  stopping; Metapath2vec on the train file's graph only.
* **simulator** (click, conversion, stay): the built-in world (``--sim-seed``, ``--sim-days``)
  ingested through the product path into a temporary home (SQLite + Feast), point-in-time
  features, the last 20 % of the impressions by time = test, the last 15 % of the rest = early
  stopping. Metrics on test: click auc/gauc of the debiased score, click auc on the test
  impressions of the exploration (uniformly random) slates only, cvr auc on all impressions
  (pCTCVR), stay rmse (log1p s, clicked), and ndcg@10 against the planted TRUE relevance.

Metapath2vec vectors are point in time: trained on the events of the first 30 % of the fit period
(``ranking.graph_vectors.GRAPH_FRAC``), and the variants that use them train on the fit rows after that.

Models: ``lightgbm`` (V1, the product's GBDT), ours = ``v2`` (dense + ids + GBDT leaves + DIN target
attention), ``v3`` (+ Metapath2vec), ``full`` (+ the live-stream transformer: V4), ablations
``full_shared_bottom`` (no MMoE), ``full_no_leaves``, ``full_no_biasnet``, ``full_pal`` (Biasnet
multiplied in as an examination probability, PAL), ``full_mlp_biasnet`` (a free per-slot MLP
tower instead of the monotone one), ``full_harvested`` (PAL with the curve harvested from
repeated user–stream pairs of the training period, fixed during training:
``ranking.position_bias``), ``full_randomised`` (PAL with the curve read off the randomised
requests of the training period by ``streamrank position-curve``'s estimator, fixed; set the
world's share of them with ``--sim-explore-rate``), ``full_slot_ips`` (no Biasnet; that curve as
slot IPS weights on the click loss: ``TrainConfig.slot_ips``), ``full_position_feature`` (no
Biasnet; the slot as an input in training, zeroed at serving: seed 004) and ``full_no_refit`` (the learned tower as
early stopping left it, not refitted alone afterwards) — the last eight on the simulator only
(Twitch has no positions) — and ``full_dcn`` (+ DCN-mix, seed 000) on both. The models, tasks and
hyper-parameters are ranking/versions.py's (``streamrank report`` runs the same); peers (run in ``.bench-venv`` by bench/peers.py on an exported copy of the same rows:
ids, normalised dense statistics, the user's recent streams): torch-rechub MMoE / DIN / BST,
DeepCTR-Torch MMoE / DIN. Every model × seed; mean ± std printed as one table per task, written to
``OUT/quality.json`` and ``OUT/quality.md`` (the raw rows per task in ``OUT/results_<task>.json``:
the two tasks can run as two processes, one core each, and ``--table`` prints the merged table).
Nothing is chosen on the test rows.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# torch's OpenMP threads spin at barriers; beside another busy process that made epochs 12-25x
# slower here (bench/peers.py measured it). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))     # peer_dataset
sys.path.insert(0, str(ROOT))               # first: the product's packages (ope, retrieval) before bench/ope.py, bench/retrieval.py

log = logging.getLogger("bench.quality")

from ranking.versions import (BATCH, EPOCHS, OURS, SIMULATOR_ONLY, THREADS, SimulatorTask, Task,  # noqa: E402
                              TwitchTask, markdown, run_ours, seed_inputs, set_graph_cut, summarise)


PEERS = ["rechub_mmoe", "rechub_din", "rechub_bst", "deepctr_mmoe", "deepctr_din"]


def export_peers(task: Task, inputs, out_dir: Path) -> Path:
    from peer_dataset import save_dataset
    parts = [task.fit, task.stop, task.test]
    xs = [inputs.transform(p, with_position=False) for p in parts]
    arrays = {k: np.concatenate([x[k] for x in xs]) for k in ("user_id", "stream_id", "category", "dense")}
    arrays["hist_streams"] = np.concatenate([x["user_streams"] for x in xs])
    arrays["dense"] = arrays["dense"].astype(np.float32)
    from ranking.dataset import labels
    ls = [labels(p) for p in parts]
    arrays["click"] = np.concatenate([lab["click"] for lab in ls])
    tasks = ["click"]
    if task.name != "twitch":
        arrays["purchase"] = np.concatenate([lab["purchase"] for lab in ls])
        arrays["stay"] = np.concatenate([lab["stay"] for lab in ls])
        tasks += ["purchase", "stay"]
    arrays["split"] = np.concatenate([np.full(len(p), i, np.int8) for i, p in enumerate(parts)])
    meta = {"name": task.name, "tasks": tasks, "dense_names": list(inputs.dense_cols),
            "vocab": {"user_id": len(inputs.users), "stream_id": len(inputs.streams),
                      "category": len(inputs.categories)}}
    d = out_dir / f"peer_data_{task.name}"
    save_dataset(str(d), arrays, meta)
    return d


def run_peers(data_dir: Path, out_dir: Path, models, seeds, epochs: int) -> dict:
    py = ROOT / ".bench-venv" / "bin" / "python"
    if not py.exists():
        subprocess.run(["bash", str(ROOT / "bench" / "peer_env.sh")], check=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(py), str(ROOT / "bench" / "peers.py"), str(data_dir), str(out_dir), "--models", ",".join(models),
           "--seeds", ",".join(map(str, seeds)), "--epochs", str(epochs), "--batch-size", str(BATCH),
           "--threads", str(THREADS), "--bst-ffn-dim", "128"]
    print("peers: " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=str(ROOT))
    if done.returncode:                  # peers.py writes every run that succeeded: keep those
        print(f"peers: exit {done.returncode}; some peer runs failed (see above)", flush=True)
    res = {}
    for m in models:
        for s in seeds:
            f = out_dir / f"{m}__seed{s}.npz"
            if f.exists():
                z = np.load(f)
                info = json.loads((out_dir / f"{m}__seed{s}.json").read_text())
                # a peer MMoE's purchase task is P(purchase | impression): the same target as our pCTCVR
                res[(m, s)] = ({"score": z["click"], "ctcvr": z["purchase"] if "purchase" in z else None,
                                "stay": z["stay"] if "stay" in z else None}, info)
    return res


def print_table(out: Path) -> None:
    """One table from every ``results_<task>.json`` in ``out`` (tasks may run as separate processes)."""
    results = []
    for f in sorted(out.glob("results_*.json")):
        results += json.loads(f.read_text())["results"]
    rows = summarise(results)
    md = markdown(rows)
    print(md)
    (out / "quality.json").write_text(json.dumps({"summary": rows, "results": results}, indent=1, default=str))
    (out / "quality.md").write_text(md + "\n")
    print(f"\nwritten {out / 'quality.md'} and quality.json", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--twitch", help="Twitch watches CSV (user_id, streamer_id, slot, community)")
    ap.add_argument("--split-slot", type=int, default=4000)
    ap.add_argument("--simulator", action="store_true", help="also the built-in simulated world")
    ap.add_argument("--sim-seed", type=int, default=1, help="world seed (make run's world is seed 0)")
    ap.add_argument("--sim-days", type=float, default=7)
    ap.add_argument("--sim-explore-rate", type=float, default=0.2,
                    help="share of the world's requests with a randomised slate (the position curve's source)")
    ap.add_argument("--sim-requests-per-day", type=int, default=1500, help="the world's traffic")
    ap.add_argument("--max-train-rows", type=int, default=100_000,
                    help="Twitch: train-file candidate rows (subsampled by (user, slot) group)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--models", default="lightgbm," + ",".join(OURS))
    ap.add_argument("--peers", default=",".join(PEERS), help="peer models ('' = none)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--out", default=str(ROOT / "var" / "bench" / "quality"))
    ap.add_argument("--table", action="store_true", help="only print the table of the results in --out")
    args = ap.parse_args(argv)
    if args.table:
        print_table(Path(args.out))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    import torch
    torch.set_num_threads(THREADS)
    os.environ.setdefault("STREAMRANK_HOME", tempfile.mkdtemp(prefix="streamrank-quality-"))
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    models = [m for m in args.models.split(",") if m]
    peers = [m for m in args.peers.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.twitch and not args.simulator:
        ap.error("give --twitch PATH and/or --simulator (or --table)")
    results = []
    work = Path(tempfile.mkdtemp(prefix="streamrank-quality-"))
    tasks = []
    if args.twitch:
        tasks.append(("twitch", lambda: TwitchTask(args.twitch, args.split_slot, work / "twitch",
                                                   max_train_rows=args.max_train_rows)))
    if args.simulator:
        tasks.append(("simulator", lambda: SimulatorTask(work / "sim", sim_seed=args.sim_seed, days=args.sim_days,
                                                              explore_rate=args.sim_explore_rate,
                                                              requests_per_day=args.sim_requests_per_day)))
    def record(row: dict) -> None:             # every result is saved as soon as it exists
        results.append(row)
        print(json.dumps(row), flush=True)
        (out / f"results_{row['task']}.json").write_text(json.dumps(
            {"results": [r for r in results if r["task"] == row["task"]], "args": vars(args),
             "at": datetime.now(timezone.utc).isoformat()}, indent=1, default=str))

    for name, make in tasks:
        t0 = time.perf_counter()
        task = make()
        set_graph_cut(task)
        print(f"[{name}] prepared: fit {len(task.fit):,} / stop {len(task.stop):,} / test {len(task.test):,} rows "
              f"in {time.perf_counter() - t0:.0f}s", flush=True)
        if isinstance(task, SimulatorTask):
            print(f"[{name}] position-curve max error of reference estimators on this world: {task.curve_floor()}",
                  flush=True)
        export_inputs = None
        for seed in seeds:
            gbdt, o, emb = seed_inputs(task, seed)
            if "lightgbm" in models:
                record({"task": name, "model": "lightgbm", "seed": seed, **task.metrics(o)})
            for variant in [m for m in models if m in OURS]:
                if variant in SIMULATOR_ONLY and name == "twitch":
                    continue
                _, inputs, o, extra, _ = run_ours(task, variant, seed, gbdt, emb, args.epochs)
                if export_inputs is None:
                    export_inputs = inputs
                record({"task": name, "model": variant, "seed": seed, **task.metrics(o), **extra})
        if peers and export_inputs is not None:
            d = export_peers(task, export_inputs, work)
            got = run_peers(d, out / f"peers_{name}", peers, seeds, args.epochs)
            for (m, s), (o, info) in got.items():
                record({"task": name, "model": m, "seed": s, **task.metrics(o),
                        "train_seconds": info.get("train_seconds")})
    print_table(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
