"""Figures of the evaluation, drawn from the tables of ``results/metrics`` (no model needed).

Each function reads what :func:`cbedtdc.metrics.evaluate_run` wrote and saves one PNG
atomically; matplotlib is imported lazily with the Agg backend.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

__all__ = ["plot_all", "headline", "recall", "confusion", "routing"]

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    from cbedtdc.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _plt().close(fig)


def _read_table(path):
    from cbedtdc.io import read_csv

    return read_csv(path)


def headline(summary: dict, out) -> None:
    """Bar chart: top-1, balanced accuracy, macro-F1 of every flat loss and the TDC (end to end and
    estimated), with 95 % material-bootstrap intervals and the chance rates as lines."""
    plt = _plt()
    metrics = ["top1", "balanced_accuracy", "macro_f1"]
    models = [(f"flat {lo}", s) for lo, s in summary["flat_by_loss"].items()]
    models.append((f"TDC {summary['tdc']['mode']}", summary["tdc"]))
    est = {"top1": summary["tdc"].get("estimated_top1"),
           "balanced_accuracy": summary["tdc"].get("estimated_balanced_accuracy")}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / (len(models) + 1)
    x = np.arange(len(metrics))
    for i, (name, s) in enumerate(models):
        vals = [s.get(m) or 0.0 for m in metrics]
        ci = s.get("ci95", {})
        err = np.array([[v - ci[m][0], ci[m][1] - v] if m in ci and None not in ci[m] else [0, 0]
                        for m, v in zip(metrics, vals)]).T
        ax.bar(x + i * width, vals, width, yerr=err, capsize=3, label=name)
    ax.bar(x + len(models) * width, [est.get(m) or 0.0 for m in metrics], width, hatch="//", fill=False,
           label="TDC estimated (perfect routing)")
    ch = summary["chance"]
    ax.axhline(ch["majority"], color="k", ls="--", lw=1, label=f"majority class ({ch['majority']:.2f})")
    ax.axhline(ch["prior"], color="grey", ls=":", lw=1, label=f"prior guessing ({ch['prior']:.2f})")
    ax.set_xticks(x + width * len(models) / 2, ["top-1", "balanced accuracy", "macro-F1"])
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"test score (n = {summary['n_test']}, {summary['n_test_materials']} materials)")
    ax.legend(fontsize=7, loc="upper right")
    _save(fig, out)


def recall(per_class: list[dict], out) -> None:
    """Per-class test recall of the flat baselines and the TDC, classes in frequency order, coloured by level."""
    plt = _plt()
    cols = [c for c in per_class[0] if c.startswith("recall_")]
    classes = [r["space_group"] for r in per_class]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(classes) + 2), 3.8))
    width = 0.8 / len(cols)
    x = np.arange(len(classes))
    for i, c in enumerate(cols):
        vals = [float(r[c]) if r[c] != "" else np.nan for r in per_class]
        ax.bar(x + i * width, vals, width, label=c.removeprefix("recall_").replace("_", " "),
               fill="estimated" not in c, hatch="//" if "estimated" in c else None)
    levels = [int(r["level"]) for r in per_class]
    for k in sorted(set(levels))[1:]:
        ax.axvline(levels.index(k) - 0.1, color="k", lw=0.8, ls="--")
    ax.set_xticks(x + 0.4 - width / 2, [f"{c}\n(n={r['n_test']})" for c, r in zip(classes, per_class)], fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test recall")
    ax.set_xlabel("space group, most frequent first (dashed: TDC level boundaries)")
    ax.legend(fontsize=7)
    _save(fig, out)


def _confusion_array(rows):
    classes = [r["true\\pred"] for r in rows]
    m = np.array([[int(r[c]) for c in classes] + [int(r["other"])] for r in rows], dtype=float)
    return classes, m


def confusion(flat_rows: list[dict], tdc_rows: list[dict], out) -> None:
    """Row-normalised confusion matrices of the selected flat baseline and the TDC side by side."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, rows, title in zip(axes, (flat_rows, tdc_rows), ("flat", "TDC")):
        classes, m = _confusion_array(rows)
        m = m[:, : len(classes)] / np.maximum(m.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: diagonal mean {np.nanmean(np.diag(m)):.2f}")
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of the true class")
    _save(fig, out)


def routing(levels: list[dict], out) -> None:
    """Where the test samples ended: per level, kept samples that belong there vs misrouted ones, the
    samples of its own classes, and its accuracy on the kept samples vs with perfect routing."""
    plt = _plt()
    k = [int(r["level"]) for r in levels]
    kept = np.array([int(r["kept"]) for r in levels])
    belongs = np.array([int(r["belongs"]) for r in levels])
    own = np.array([int(r["own_total"]) for r in levels])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.bar(k, belongs, label="kept, class of this level")
    a1.bar(k, kept - belongs, bottom=belongs, label="kept, class of another level")
    a1.plot(k, own, "k_", ms=30, mew=2, label="test samples of this level's classes")
    a1.set_xticks(k)
    a1.set_xlabel("level")
    a1.set_ylabel("test samples")
    a1.legend(fontsize=7)

    def _f(r, key):
        return float(r[key]) if r[key] not in ("", None) else np.nan

    acc = [_f(r, "accuracy") for r in levels]
    oracle = [_f(r, "oracle_accuracy") for r in levels]
    w = 0.35
    a2.bar(np.array(k) - w / 2, acc, w, label="on the samples it kept (end to end)")
    a2.bar(np.array(k) + w / 2, oracle, w, label="on its own classes (perfect routing)", fill=False, hatch="//")
    a2.set_xticks(k)
    a2.set_ylim(0, 1)
    a2.set_xlabel("level")
    a2.set_ylabel("accuracy")
    a2.legend(fontsize=7)
    _save(fig, out)


def plot_all(metrics_dir, out_dir) -> list[Path]:
    """Draw every figure from ``metrics_dir`` into ``out_dir``; return the written paths."""
    metrics_dir, out_dir = Path(metrics_dir), Path(out_dir)
    summary = json.loads((metrics_dir / "summary.json").read_text())
    paths = {name: out_dir / f"{name}.png" for name in ("headline", "recall", "confusion", "routing")}
    headline(summary, paths["headline"])
    recall(_read_table(metrics_dir / "per_class.csv"), paths["recall"])
    confusion(_read_table(metrics_dir / "confusion_flat.csv"), _read_table(metrics_dir / "confusion_tdc.csv"),
              paths["confusion"])
    routing(_read_table(metrics_dir / "levels.csv"), paths["routing"])
    for p in paths.values():
        log.info("wrote %s", p)
    return list(paths.values())
