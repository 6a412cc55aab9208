"""``streamrank report``: the ranker's evolution, V1 → V4 and the ablations, on one task, ≥ 3 seeds.

Runs ranking.versions' harness — V1 (LightGBM), V2 (+ DIN target attention over the user's
streams, GBDT leaves), V3 (+ Metapath2vec vectors), V4 (+ the live-stream transformer: the served
ranker) and the chosen ablations — on the Twitch protocol or the built-in simulator, every model ×
seed, and writes:

* ``<out>`` (default ``docs/evolution.md``): a markdown section per task, the version table (mean ±
  std over seeds, with each version's change against the one before) and the ablation table; the
  section of another task already in the file is kept, so the two sources can run as two commands;
* ``<out dir>/evolution_<task>_<metric>.png``: the headline metric by version with error bars;
* ``<out dir>/evolution_<task>_loss.png``: training and validation loss by epoch (seed 0);
* ``<out dir>/evolution_<task>_calibration.png``: V4's predicted click probability against the
  observed click rate (twitch) or the planted relevance (simulator), in deciles;
* ``<out>.json``: every raw result row (what the tables are computed from).

Progress: a log line per model and seed (seconds, metrics) as each finishes.
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

VERSIONS = [("V1", "lightgbm", "LightGBM point-wise (dense statistics)"),
            ("V2", "v2", "+ ids, GBDT leaves, DIN target attention"),
            ("V3", "v3", "+ Metapath2vec vectors (point in time)"),
            ("V4", "full", "+ live-stream transformer, MMoE (the served ranker)")]
ABLATIONS = {"twitch": ["full_shared_bottom", "full_no_leaves", "full_dcn"],
             "simulator": ["full_shared_bottom", "full_no_leaves", "full_dcn", "full_no_biasnet",
                           "full_position_feature"]}
HEADLINE = {"twitch": ["auc", "mrr", "hr@1"], "simulator": ["ndcg@10_true", "auc", "cvr_auc"]}


def run(source: str, *, path: Optional[str] = None, split_slot: int = 4000, sim_seed: int = 1,
        sim_days: float = 7, seeds: Sequence[int] = (0, 1, 2), ablations: Optional[Sequence[str]] = None,
        out: str = "docs/evolution.md", epochs: Optional[int] = None, max_train_rows: int = 100_000) -> dict:
    """Train and score every version and ablation (``source`` ``twitch`` with ``path``, or
    ``simulator``), write the report; returns ``{"rows": [...], "markdown": path, "plots": [...]}``."""
    from .versions import EPOCHS, OURS, SimulatorTask, TwitchTask, seed_inputs, set_graph_cut, run_ours
    if source not in ("twitch", "simulator"):
        raise ValueError(f"source must be twitch or simulator, got {source!r}")
    if source == "twitch" and not path:
        raise ValueError("--source twitch needs --path (the watches CSV)")
    if len(seeds) < 1:
        raise ValueError("give at least one seed")
    ablations = list(ABLATIONS[source] if ablations is None else ablations)
    unknown = [a for a in ablations if a not in OURS]
    if unknown:
        raise ValueError(f"unknown ablations {unknown}; choose from {sorted(OURS)}")
    epochs = epochs or EPOCHS
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="streamrank-report-"))
    t0 = time.perf_counter()
    task = (TwitchTask(path, split_slot, work / "twitch", max_train_rows=max_train_rows) if source == "twitch"
            else SimulatorTask(work / "sim", sim_seed=sim_seed, days=sim_days))
    set_graph_cut(task)
    log.info("report %s: task prepared (fit %d / stop %d / test %d rows) in %.0fs", source, len(task.fit),
             len(task.stop), len(task.test), time.perf_counter() - t0)
    rows, curves, calib = [], {}, None
    raw = out.with_suffix(".json")
    models = [m for _, m, _ in VERSIONS if m != "lightgbm"] + ablations
    for seed in seeds:
        t1 = time.perf_counter()
        gbdt, o_gbdt, emb = seed_inputs(task, seed)
        rows.append({"task": source, "model": "lightgbm", "seed": seed, **task.metrics(o_gbdt),
                     "train_seconds": round(time.perf_counter() - t1, 1)})
        log.info("report %s seed %d: lightgbm %s", source, seed, _brief(rows[-1]))
        for m in models:
            _, inputs, o, extra, hist = run_ours(task, m, seed, gbdt, emb, epochs)
            rows.append({"task": source, "model": m, "seed": seed, **task.metrics(o), **extra})
            log.info("report %s seed %d: %s %s (%.0fs)", source, seed, m, _brief(rows[-1]), extra["train_seconds"])
            if seed == seeds[0] and m in {v for _, v, _ in VERSIONS}:
                curves[m] = [(e["epoch"], e["train"]["total"], (e.get("valid") or {}).get("total"))
                             for e in hist["epochs"]]
            if seed == seeds[0] and m == "full":
                calib = _calibration(task, o)
        _save_raw(raw, source, rows)
    plots = _plots(source, rows, curves, calib, out.parent)
    extra = (f" --path {path} --split-slot {split_slot}" if source == "twitch" else "") + \
        (f" --epochs {epochs}" if epochs != EPOCHS else "") + \
        (f" --max-train-rows {max_train_rows}" if source == "twitch" and max_train_rows != 100_000 else "") + \
        (f" --sim-seed {sim_seed} --sim-days {sim_days:g}" if source == "simulator" and (sim_seed, sim_days) != (1, 7) else "") + \
        (f" --ablations {','.join(ablations)}" if ablations != ABLATIONS[source] else "")
    md = _merge_markdown(out, source, section(source, rows, plots, out.parent, seeds, task_info(task, source) +
                                              f", {epochs} epochs at most", extra))
    log.info("report %s: %d results in %.0fs -> %s", source, len(rows), time.perf_counter() - t0, md)
    return {"rows": rows, "markdown": str(md), "plots": [str(p) for p in plots]}


def _brief(row: dict) -> str:
    keys = [k for k in ("auc", "mrr", "ndcg@10_true", "cvr_auc") if row.get(k) is not None]
    return " ".join(f"{k} {row[k]:.4f}" for k in keys)


def _save_raw(path: Path, source: str, rows: list) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    data[source] = rows
    path.write_text(json.dumps(data, indent=1, default=str))


def task_info(task, source: str) -> str:
    if source == "twitch":
        return (f"Twitch watches (the `streamrank evaluate` protocol), {len(task.fit):,} fit / {len(task.stop):,} "
                f"early-stopping / {len(task.test):,} test candidate rows")
    return (f"the simulator (planted truth), {len(task.fit):,} fit / {len(task.stop):,} early-stopping / "
            f"{len(task.test):,} test impressions")


def _calibration(task, o) -> Optional[dict]:
    """Deciles of V4's debiased click probability against the observed click rate (twitch) or the
    planted relevance (simulator) of the test rows."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(o["score"], dtype=float)))
    if task.truth is not None:
        tr = task.truth.drop_duplicates("event_id").set_index("event_id")
        ids = task.test["event_id"].astype(str)
        hit = ids.isin(tr.index).to_numpy()
        y = tr.loc[ids[hit], "relevance"].to_numpy(float)
        p = p[hit]
        target = "planted relevance"
    else:
        y = task.test["click"].to_numpy(float)
        target = "observed click rate"
    if len(p) < 20:
        return None
    edges = np.unique(np.quantile(p, np.linspace(0, 1, 11)))
    b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    pred = [float(p[b == i].mean()) for i in range(len(edges) - 1) if (b == i).any()]
    obs = [float(y[b == i].mean()) for i in range(len(edges) - 1) if (b == i).any()]
    return {"pred": pred, "obs": obs, "target": target}


def _summary(rows: list, model: str, metric: str) -> Optional[tuple]:
    v = [r[metric] for r in rows if r["model"] == model and r.get(metric) is not None]
    if not v:
        return None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def _plots(source: str, rows: list, curves: dict, calib: Optional[dict], folder: Path) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []
    for metric in HEADLINE[source][:2]:
        stats = [_summary(rows, m, metric) for _, m, _ in VERSIONS]
        if not any(stats):
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        xs = [i for i, s in enumerate(stats) if s]
        ax.errorbar(xs, [stats[i][0] for i in xs], yerr=[stats[i][1] for i in xs], fmt="o-", capsize=4)
        ax.set_xticks(range(len(VERSIONS)), [v for v, _, _ in VERSIONS])
        ax.set_ylabel(f"{metric} (mean ± std over seeds)")
        ax.set_title(f"{source}: {metric} by version")
        made.append(_save(plt, fig, folder / f"evolution_{source}_{metric.replace('@', '_at_')}.png"))
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        for m, pts in curves.items():
            ep = [e for e, _, _ in pts]
            line, = ax.plot(ep, [t for _, t, _ in pts], "o-", ms=3, label=f"{m} train")
            if any(v is not None for _, _, v in pts):
                ax.plot(ep, [v for _, _, v in pts], "s--", ms=3, color=line.get_color(), label=f"{m} valid")
        ax.set_xlabel("epoch")
        ax.set_ylabel("weighted loss")
        ax.set_title(f"{source}: training curves (seed 0)")
        ax.legend(fontsize=7)
        made.append(_save(plt, fig, folder / f"evolution_{source}_loss.png"))
    if calib:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(calib["pred"], calib["obs"], "o-", label="V4, test deciles")
        lim = [0, max(max(calib["pred"]), max(calib["obs"])) * 1.05]
        ax.plot(lim, lim, ":", color="grey", label="perfect")
        ax.set_xlabel("predicted click probability (debiased)")
        ax.set_ylabel(calib["target"])
        ax.set_title(f"{source}: calibration")
        ax.legend(fontsize=8)
        made.append(_save(plt, fig, folder / f"evolution_{source}_calibration.png"))
    return made


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(s) -> str:
    return "–" if s is None else f"{s[0]:.4f} ± {s[1]:.4f}"


def section(source: str, rows: list, plots: list, folder: Path, seeds, info: str, extra_args: str = "") -> str:
    """The markdown section of one task: versions (with the step from the previous one) and ablations."""
    metrics = [m for m in HEADLINE[source] if any(r.get(m) is not None for r in rows)]
    lines = [f"<!-- evolution:{source} -->", f"## {source}", "",
             f"{info}; seeds {', '.join(map(str, seeds))}; mean ± std over seeds. Reproduce: "
             f"`streamrank report --source {source} "
             f"{extra_args.strip()} --seeds {','.join(map(str, seeds))}`.".replace("  ", " "), "",
             "| version | what it adds | " + " | ".join(metrics) + " | step in " + metrics[0] + " |",
             "|---|---|" + "---|" * (len(metrics) + 1)]
    prev = None
    for v, m, what in VERSIONS:
        s = [_summary(rows, m, k) for k in metrics]
        step = "–" if prev is None or s[0] is None else f"{s[0][0] - prev:+.4f}"
        lines.append(f"| {v} (`{m}`) | {what} | " + " | ".join(_cell(x) for x in s) + f" | {step} |")
        prev = s[0][0] if s[0] else prev
    abl = [m for m in dict.fromkeys(r["model"] for r in rows) if m not in {x for _, x, _ in VERSIONS}]
    if abl:
        full = _summary(rows, "full", metrics[0])
        lines += ["", f"Ablations and options of V4 (`full`); the last column is the difference from V4 in {metrics[0]}:",
                  "", "| model | " + " | ".join(metrics) + " | vs V4 |", "|---|" + "---|" * (len(metrics) + 1)]
        for m in abl:
            s = [_summary(rows, m, k) for k in metrics]
            d = "–" if not (s[0] and full) else f"{s[0][0] - full[0]:+.4f}"
            lines.append(f"| `{m}` | " + " | ".join(_cell(x) for x in s) + f" | {d} |")
    if plots:
        lines += [""] + [f"![{p.stem}]({Path(p).relative_to(folder)})" for p in plots]
    lines += [f"<!-- /evolution:{source} -->", ""]
    return "\n".join(lines)


def _merge_markdown(path: Path, source: str, text: str) -> Path:
    """Replace this task's section in ``path`` (kept: the other task's)."""
    head = ("# The ranker's evolution\n\nWritten by `streamrank report` (ranking/report.py): each version adds one "
            "part of the ranker, trained and scored on the same split with the same features "
            "(ranking/versions.py). Nothing here is edited by hand.\n\n")
    old = path.read_text() if path.exists() else head
    start, end = f"<!-- evolution:{source} -->", f"<!-- /evolution:{source} -->"
    if start in old and end in old:
        i, j = old.index(start), old.index(end) + len(end)
        new = old[:i] + text.rstrip("\n") + old[j:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)
    return path


__all__ = ["run", "section", "VERSIONS", "ABLATIONS"]
