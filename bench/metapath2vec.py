"""Metapath2vec training loops side by side: PyG's reference loop vs ours, plus a >= 1 M-edge run.

    python bench/metapath2vec.py [--source simulator|twitch] [--path FILE] [--epochs 5]
                                 [--threads 2] [--no-scale] [--scale-users 200000] [--json]

Part 1 (comparison). One graph and one set of hyper-parameters (``graph.metapath2vec.M2VConfig``
defaults: dim 64, walk length 20, context 5, 5 walks per node, 5 negatives, the graph's default
metapaths) — only the loop differs:

  reference   PyG's documented loop: MetaPath2Vec(sparse=True) + loader(batch_size=128) + SparseAdam
              (lr 0.01, nn.Embedding's N(0, 1) init)
  fast        ours (graph/metapath2vec.py): vectorised walk sampling, batches of 512 whole walks
              (positives = one bmm per batch), uniform negative pairs from per-type pools of 256
              (one small GEMM per type pair), hand-written gradients, lazy row-wise Adam
              (lr 0.01, N(0, 1/d) init)

Each loop runs in its OWN subprocess (peak RSS = that process's ``ru_maxrss``; ``rss_base`` = its RSS
after the imports and the graph, before training). The graph is the TRAINING part of the held-out
split of graph/evaluate.py (the last 20 % of the user–stream interactions held out), so the same run
gives the held-out link-prediction AUC / HR@10 of each loop's embeddings (user·stream dot product).
"positive walks/s" = (walks_per_node x start nodes of every metapath) per epoch / epoch seconds —
the same numerator for both loops (PyG's definition: one walk per start node per walks_per_node).

Part 2 (scale). A generated planted-community graph with >= 1 M forward edges (users, streams,
items, categories; every relation of the schema), built through ``graph.build.build_graph`` from a
generated event frame; the fast loop trains one epoch with ``walks_per_node=1`` over the 9 default
metapaths. The reference loop runs ``--ref-steps`` steps on the same graph and its epoch time is
extrapolated (a full reference epoch would take over an hour here).

Nothing is asserted; a table and (with --json) one JSON line per row are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: KiB


# ----------------------------------------------------------------------------- children
def child_compare(args: dict) -> dict:
    import numpy as np
    import torch

    from graph.build import build_graph
    from graph.evaluate import make_task, score_task, time_cut
    from graph.metapath2vec import M2VConfig, train_metapath2vec

    torch.set_num_threads(args["threads"])
    events, catalog = load_source(args["source"], args.get("path"))
    cut = time_cut(events, 0.2)
    graph = build_graph(events, catalog, end=cut)
    task = make_task(events, graph, cut, num_negatives=100, seed=0)
    rss_base = _rss_mb()
    loop = "reference" if args["loop"].startswith("reference") else args["loop"]
    extra = {"init_std": 1.0 / 8} if args["loop"] == "reference-init" else {}      # dim 64: N(0, 1/d)
    cfg = M2VConfig(loop=loop, epochs=args["epochs"], seed=0, **extra)
    t0 = time.perf_counter()
    emb = train_metapath2vec(graph, cfg)
    wall = time.perf_counter() - t0
    zu, zs = emb.tables["user"], emb.tables["stream"]
    m = score_task(task, lambda u, s: np.einsum("nd,nd->n", zu[u], zs[s]))
    tr = emb.meta["train"]
    c = emb.meta["config"]
    return {"part": "compare", "source": args["source"], "loop": args["loop"],
            "walks_per_s": round(tr["walks_per_s"], 1), "epoch_s": round(tr["epoch_seconds"], 3),
            "epochs": len(tr["epochs"]), "train_s": round(wall, 2), "final_loss": round(tr["final_loss"], 4),
            "auc": m["auc"], "hr@10": m["hr@10"], "mrr": m["mrr"], "test_positives": m["n"],
            "peak_rss_mb": round(_peak_mb(), 1), "rss_base_mb": round(rss_base, 1),
            "nodes": sum(graph.num_nodes.values()), "edges": graph.counts["num_edges"],
            "walks_per_epoch": tr["epochs"][0]["walks"], "batch_size": c["batch_size"], "lr": c["lr"],
            "metapaths": len(c["metapaths"]), "threads": torch.get_num_threads()}


def child_scale(args: dict) -> dict:
    import torch

    from graph.build import build_graph
    from graph.metapath2vec import M2VConfig, train_metapath2vec

    torch.set_num_threads(args["threads"])
    t0 = time.perf_counter()
    events, catalog = generated_world(args["scale_users"], seed=0)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = build_graph(events, catalog)
    t_build = time.perf_counter() - t0
    del events
    rss_base = _rss_mb()
    loop = args["loop"]
    cfg = M2VConfig(loop=loop, epochs=1, walks_per_node=1, seed=0,
                    max_steps=args["ref_steps"] if loop == "reference" else None)
    t0 = time.perf_counter()
    emb = train_metapath2vec(graph, cfg)
    wall = time.perf_counter() - t0
    tr = emb.meta["train"]
    ep = tr["epochs"][0]
    full_walks = sum(graph.num_nodes[mp[0][0]] for mp in emb.meta["config"]["metapaths"]) * cfg.walks_per_node
    wps = ep["walks"] / max(ep["seconds"], 1e-9)
    return {"part": "scale", "loop": loop, "nodes": sum(graph.num_nodes.values()),
            "edges": graph.counts["num_edges"], "edges_with_reverse": 2 * graph.counts["num_edges"],
            "events": graph.counts["events"], "generate_s": round(t_gen, 2), "build_s": round(t_build, 2),
            "walks_per_epoch": full_walks, "walks_run": ep["walks"], "steps": ep["steps"],
            "epoch_s": round(full_walks / wps, 1), "extrapolated": loop == "reference",
            "walks_per_s": round(wps, 1), "train_s": round(wall, 2), "final_loss": round(tr["final_loss"], 4),
            "peak_rss_mb": round(_peak_mb(), 1), "rss_base_mb": round(rss_base, 1),
            "finite": bool(all(__import__("numpy").isfinite(t).all() for t in emb.tables.values())),
            "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- data
def load_source(source: str, path=None):
    if source == "simulator":
        from store.sources.simulator import SimConfig, simulate
        from datetime import datetime, timezone
        # 1,000 users (half the default world): the reference loop needs ~3 min for 5 epochs
        d = simulate(SimConfig(seed=0, n_users=1000, end=datetime(2024, 6, 1, tzinfo=timezone.utc)))
        return d.events, d.catalog()
    if source == "twitch":
        from store.sources.twitch import load_twitch
        if not path:
            raise SystemExit("--path is required for --source twitch")
        d = load_twitch(path)
        return d.events, d.catalog()
    raise SystemExit(f"unknown source {source!r}")


def generated_world(n_users: int, seed: int = 0):
    """A planted-community live-commerce graph as events + catalog (see the module docstring).

    ``n_users`` users, n/10 streams, n/2 items, 50 categories; per user ~3 distinct watched streams,
    ~2 clicked items, ~0.25 bought items (mostly in the user's category, Zipf-like popularity);
    10 items sold per stream. 200 k users → ~1.4 M forward edges (2.8 M with reverses)."""
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(seed)
    U, S, I, K = n_users, max(n_users // 10, 10), max(n_users // 2, 10), 50
    s_cat, i_cat, u_cat = rng.integers(0, K, S), rng.integers(0, K, I), rng.integers(0, K, U)
    def members(cat, k):                     # ids grouped by category: (ids, first index, size)
        order = np.argsort(cat, kind="stable")
        size = np.bincount(cat, minlength=k)
        return order, np.r_[0, np.cumsum(size)[:-1]], size

    s_by, i_by = members(s_cat, K), members(i_cat, K)

    def pick(n_per_user, by, total):
        users = np.repeat(np.arange(U), rng.poisson(n_per_user, U))
        out = rng.integers(0, total, len(users))                     # off-category: uniform
        order, first, size = by
        cats = u_cat[users]
        own = (rng.random(len(users)) < 0.8) & (size[cats] > 0)
        # in-category (80 %): a Zipf-like rank within the user's category
        r = np.minimum((rng.pareto(1.2, int(own.sum())) * 2).astype(np.int64), size[cats[own]] - 1)
        out[own] = order[first[cats[own]] + r]
        return users, out

    base = pd.Timestamp("2024-01-01", tz="UTC")
    frames = []
    for typ, n, by, total, col in (("watch", 3.0, s_by, S, "stream_id"), ("item_click", 2.0, i_by, I, "item_id"),
                                   ("purchase", 0.25, i_by, I, "item_id")):
        u, x = pick(n, by, total)
        f = pd.DataFrame({"user_id": u, "type": typ,
                          "ts": base + pd.to_timedelta(rng.integers(0, 86400 * 7, len(u)), unit="s")})
        f["stream_id"] = pd.array(x if col == "stream_id" else [pd.NA] * len(u), dtype="Int64")
        f["item_id"] = pd.array(x if col == "item_id" else [pd.NA] * len(u), dtype="Int64")
        frames.append(f)
    events = pd.concat(frames, ignore_index=True)
    si_s = np.repeat(np.arange(S), 10)
    order, first, size = i_by
    c = s_cat[si_s]
    si_i = np.where(size[c] > 0, order[first[c] + (rng.random(len(si_s)) * np.maximum(size[c], 1)).astype(np.int64)],
                    rng.integers(0, I, len(si_s)))
    catalog = {"users": pd.DataFrame({"user_id": np.arange(U)}),
               "streams": pd.DataFrame({"stream_id": np.arange(S), "category": s_cat}),
               "items": pd.DataFrame({"item_id": np.arange(I), "category": i_cat}),
               "stream_items": pd.DataFrame({"stream_id": si_s, "item_id": si_i}).drop_duplicates()}
    return events, catalog


# ----------------------------------------------------------------------------- parent
def run_child(kind: str, args: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(args)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{kind} {args} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = round(time.perf_counter() - t0, 1)
    return row


def table(rows: list, cols: list) -> str:
    head = [c for c, _ in cols]
    lines = [head] + [[fmt.format(r[c]) if r.get(c) is not None else "-" for c, fmt in cols] for r in rows]
    w = [max(len(x[i]) for x in lines) for i in range(len(head))]
    return "\n".join("  ".join(x[i].rjust(w[i]) for i in range(len(head))) for x in lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="simulator", choices=["simulator", "twitch"])
    ap.add_argument("--path", help="the Twitch watches CSV (--source twitch)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loops", default="reference,reference-init,fast",
                    help="reference-init: the reference loop with our N(0, 1/d) init instead of N(0, 1)")
    ap.add_argument("--no-scale", action="store_true", help="skip the >= 1 M-edge run")
    ap.add_argument("--scale-users", type=int, default=200_000)
    ap.add_argument("--ref-steps", type=int, default=40, help="reference loop steps timed on the scale graph")
    ap.add_argument("--json", action="store_true", help="also print one JSON line per row")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        kind, payload = a.child
        import logging
        logging.basicConfig(level=logging.WARNING)
        row = (child_compare if kind == "compare" else child_scale)(json.loads(payload))
        print(json.dumps(row))
        return 0

    t_all = time.perf_counter()
    load0 = os.getloadavg()[0]
    rows = []
    for loop in a.loops.split(","):
        r = run_child("compare", {"source": a.source, "path": a.path, "loop": loop, "epochs": a.epochs,
                                  "threads": a.threads}, timeout=1800)
        rows.append(r)
        print(f"  {a.source} {loop}: {r['walks_per_s']:.0f} walks/s, auc {r['auc']}", file=sys.stderr, flush=True)
    by = {r["loop"]: r for r in rows}
    if "reference" in by:
        for r in rows:
            r["speedup"] = round(r["walks_per_s"] / by["reference"]["walks_per_s"], 2)
    g = rows[0]
    print(f"\n{a.source}: {g['nodes']} nodes, {g['edges']} edges (+ reverses), {g['metapaths']} metapaths, "
          f"{g['walks_per_epoch']} positive walks per epoch, {a.epochs} epochs, {a.threads} threads; "
          f"held-out new user-stream links: {g['test_positives']} positives x 100 negatives")
    print(table(rows, [("loop", "{}"), ("batch_size", "{}"), ("walks_per_s", "{:.0f}"), ("speedup", "{:.2f}x"),
                       ("epoch_s", "{:.2f}"), ("train_s", "{:.1f}"), ("peak_rss_mb", "{:.0f}"),
                       ("rss_base_mb", "{:.0f}"), ("final_loss", "{:.3f}"), ("auc", "{:.4f}"),
                       ("hr@10", "{:.4f}"), ("mrr", "{:.4f}")]))
    if not a.no_scale:
        scale = []
        for loop in ("fast", "reference"):
            if loop not in a.loops.split(","):
                continue
            r = run_child("scale", {"scale_users": a.scale_users, "loop": loop, "threads": a.threads,
                                    "ref_steps": a.ref_steps}, timeout=1800)
            scale.append(r)
            print(f"  scale {loop}: {r['walks_per_s']:.0f} walks/s", file=sys.stderr, flush=True)
        s = scale[0]
        print(f"\nscale: generated graph, {s['nodes']} nodes, {s['edges']} edges ({s['edges_with_reverse']} with "
              f"reverses), {s['events']} events; generate {s['generate_s']}s, build_graph {s['build_s']}s; "
              f"1 epoch, walks_per_node=1, {s['walks_per_epoch']} walks per epoch "
              f"(reference: {a.ref_steps} steps timed, epoch time extrapolated)")
        print(table(scale, [("loop", "{}"), ("walks_run", "{}"), ("walks_per_s", "{:.0f}"), ("epoch_s", "{:.1f}"),
                            ("extrapolated", "{}"), ("train_s", "{:.1f}"), ("peak_rss_mb", "{:.0f}"),
                            ("rss_base_mb", "{:.0f}"), ("finite", "{}")]))
        rows += scale
    print(f"\ntotal {time.perf_counter() - t_all:.0f}s; load average (1 min) {load0:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end on {os.cpu_count()} cores (other processes skew every figure)")
    if a.json:
        for r in rows:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
