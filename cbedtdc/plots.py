"""Figures of the evaluation, drawn from the tables of ``results/metrics`` (no model needed).

Each function reads what :func:`cbedtdc.evaluate.evaluate_run` wrote and saves one PNG
atomically; matplotlib is imported lazily with the Agg backend. :func:`plot_hierarchy` and
:func:`plot_reliability` draw the dicts of :func:`cbedtdc.metrics.hierarchy_scores` and
:func:`cbedtdc.metrics.reliability_bins`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cbedtdc.crystallography import sg_name
from cbedtdc.errors import InputError

__all__ = ["plot_all", "headline", "recall", "confusion", "routing", "headline_table", "headline_rows",
           "headline_figure", "recall_figure", "confusion_figure", "routing_figure", "hierarchy_figure",
           "plot_hierarchy", "reliability_figure", "plot_reliability"]

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


TICK_PT = 8  # smallest font of any figure (tick labels, legends)
METRICS = {"top1": "top-1", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}


def _legend_below(fig, ax_or_axes, ncol: int = 2) -> None:
    """One legend under the axes, outside the data area (``bbox_inches="tight"`` keeps it in the PNG)."""
    axes = np.atleast_1d(ax_or_axes)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=ncol, fontsize=TICK_PT,
               frameon=False)


def _models(summary: dict) -> list[tuple[str, dict]]:
    """Every flat CNN, the headline flat model when it is a head on their features, then the TDC.

    >>> s = {"flat_by_loss": {"ce": {}}, "flat": {"loss": "ce", "head": "crt"}, "tdc": {"mode": "rest"}}
    >>> [name for name, _ in _models(s)]
    ['flat ce', 'flat ce + crt head (best flat on dev)', 'TDC rest']
    """
    models = [(f"flat {lo}", s) for lo, s in summary["flat_by_loss"].items()]
    head = summary.get("flat", {}).get("head")
    if head and head != "cnn":
        models.append((f"flat {summary['flat']['loss']} + {head} head (best flat on dev)", summary["flat"]))
    models.append((f"TDC {summary['tdc']['mode']}", summary["tdc"]))
    return models


def _estimated(summary: dict) -> dict:
    """The paper-style TDC estimate (perfect routing) as a model row; metrics it lacks are None."""
    tdc = summary["tdc"]
    return {"top1": tdc.get("estimated_top1"), "balanced_accuracy": tdc.get("estimated_balanced_accuracy"),
            "macro_f1": tdc.get("estimated_macro_f1"), "ci95": tdc.get("estimated_ci95", {})}


ESTIMATE_LABEL = "TDC under perfect routing (the paper's 'estimated'; a reference, not a result)"


def headline_figure(summary: dict):
    """Bar chart: top-1, balanced accuracy, macro-F1 of every flat model and the TDC end to end, with 95 %
    material-bootstrap intervals; each chance rate is drawn over its own metric only, and a metric a model lacks
    is marked "n/a", never drawn as a zero bar. The paper-style estimate (perfect routing) is a hollow marker
    with its interval beside the TDC's bar, labelled as a reference: it is not something the cascade delivers."""
    plt = _plt()
    metrics = list(METRICS)
    models = _models(summary)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / len(models)
    x = np.arange(len(metrics))
    for i, (name, s) in enumerate(models):
        ci = s.get("ci95") or {}
        labelled = False
        for j, m in enumerate(metrics):
            v = s.get(m)
            pos = x[j] - 0.4 + (i + 0.5) * width
            if v is None:  # no such number: say so, no zero bar
                ax.text(pos, 0.01, "n/a", ha="center", va="bottom", fontsize=TICK_PT, color="grey")
                continue
            lo, hi = ci.get(m) or (None, None)
            err = [[v - lo], [hi - v]] if lo is not None and hi is not None else None
            ax.bar(pos, v, width, yerr=err, capsize=3, label=None if labelled else name, color=f"C{i}")
            labelled = True
    est, labelled = _estimated(summary), False
    for j, m in enumerate(metrics):
        v = est.get(m)
        if v is None:
            continue
        lo, hi = (est.get("ci95") or {}).get(m) or (None, None)
        err = [[v - lo], [hi - v]] if lo is not None and hi is not None else None
        pos = x[j] - 0.4 + (len(models) - 0.5) * width
        ax.errorbar(pos + width * 0.35, v, yerr=err, fmt="D", mfc="none", mec="C3", ecolor="C3", ms=5, capsize=2,
                    lw=0.8, label=None if labelled else ESTIMATE_LABEL)
        labelled = True
    ch = summary["chance"]
    # chance rates, each over its own metric group: majority class and prior guessing for top-1,
    # one over the number of classes for balanced accuracy
    lines = [(0, ch.get("majority"), "k", "--", "majority class (top-1)"),
             (0, ch.get("prior"), "grey", ":", "prior guessing (top-1)"),
             (1, ch.get("balanced"), "k", "-.", "chance (balanced accuracy)")]
    for j, y, color, ls, label in lines:
        if y is not None:
            ax.hlines(y, x[j] - 0.45, x[j] + 0.45, colors=color, linestyles=ls, lw=1.2,
                      label=f"{label}: {y:.2f}")
    ax.set_xticks(x, [METRICS[m] for m in metrics], fontsize=TICK_PT + 1)
    ax.tick_params(axis="y", labelsize=TICK_PT)
    ax.set_xlim(-0.5, len(metrics) - 0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("metric (bars: 95 % bootstrap interval over test materials)", fontsize=TICK_PT + 1)
    ax.set_ylabel(f"test score (n = {summary['n_test']}, {summary['n_test_materials']} materials)",
                  fontsize=TICK_PT + 1)
    ax.set_title(f"Flat baseline vs TDC on the test split ({len(summary['classes'])} classes)")
    _legend_below(fig, ax, ncol=2)
    return fig


def headline(summary: dict, out) -> None:
    """Write :func:`headline_figure` to ``out``."""
    _save(headline_figure(summary), out)


def recall_figure(per_class: list[dict]):
    """Per-class test recall of the flat baselines and the TDC, classes in frequency order, TDC level boundaries
    dashed."""
    plt = _plt()
    cols = [c for c in per_class[0] if c.startswith("recall_")]
    classes = [r["space_group"] for r in per_class]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(classes) + 2), 4))
    width = 0.8 / len(cols)
    x = np.arange(len(classes))
    for i, c in enumerate(cols):
        vals = [float(r[c]) if r[c] != "" else np.nan for r in per_class]
        ax.bar(x - 0.4 + (i + 0.5) * width, vals, width, label=c.removeprefix("recall_").replace("_", " "),
               fill="estimated" not in c, hatch="//" if "estimated" in c else None)
    levels = [int(r["level"]) for r in per_class]
    for k in sorted(set(levels))[1:]:
        ax.axvline(levels.index(k) - 0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{sg_name(int(c))}\n{r['n_test']}" for c, r in zip(classes, per_class)], fontsize=TICK_PT,
                  rotation=90 if len(classes) > 12 else 0)
    ax.tick_params(axis="y", labelsize=TICK_PT)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("test recall")
    ax.set_xlabel("space group and its test samples, most frequent first (dashed: TDC level boundaries)")
    ax.set_title("Per-class test recall")
    _legend_below(fig, ax, ncol=len(cols))
    return fig


def recall(per_class: list[dict], out) -> None:
    """Write :func:`recall_figure` to ``out``."""
    _save(recall_figure(per_class), out)


def _confusion_array(rows):
    classes = [r["true\\pred"] for r in rows]
    m = np.array([[int(r[c]) for c in classes] + [int(r["other"])] for r in rows], dtype=float)
    return classes, m


def confusion_figure(flat_rows: list[dict], tdc_rows: list[dict]):
    """Row-normalised confusion matrices of the selected flat baseline and the TDC side by side."""
    plt = _plt()
    n = len(flat_rows)
    side = max(4.5, 0.3 * n + 2)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.5, side), layout="constrained")
    for ax, rows, title in zip(axes, (flat_rows, tdc_rows), ("flat", "TDC")):
        classes, m = _confusion_array(rows)
        m = m[:, : len(classes)] / np.maximum(m.sum(axis=1, keepdims=True), 1)
        im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        names = [sg_name(int(c)) for c in classes]
        ax.set_xticks(range(len(classes)), names, rotation=90, fontsize=TICK_PT)
        ax.set_yticks(range(len(classes)), names, fontsize=TICK_PT)
        ax.set_xlabel("predicted space group")
        ax.set_ylabel("true space group")
        ax.set_title(f"{title}: diagonal mean {np.nanmean(np.diag(m)):.2f}")
    cbar = fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of the true class")
    cbar.ax.tick_params(labelsize=TICK_PT)
    fig.suptitle("Row-normalised test confusion")
    return fig


def confusion(flat_rows: list[dict], tdc_rows: list[dict], out) -> None:
    """Write :func:`confusion_figure` to ``out``."""
    _save(confusion_figure(flat_rows, tdc_rows), out)


def routing_figure(levels: list[dict]):
    """Where the test samples ended: per level, kept samples that belong there vs misrouted ones, the
    samples of its own classes, and its accuracy on the kept samples vs with perfect routing."""
    plt = _plt()
    k = [int(r["level"]) for r in levels]
    kept = np.array([int(r["kept"]) for r in levels])
    belongs = np.array([int(r["belongs"]) for r in levels])
    own = np.array([int(r["own_total"]) for r in levels])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    a1.bar(k, belongs, label="kept, class of this level")
    a1.bar(k, kept - belongs, bottom=belongs, label="kept, class of another level")
    a1.plot(k, own, "k_", ms=30, mew=2, label="test samples of this level's classes")
    a1.set_xticks(k)
    a1.set_xlabel("TDC level")
    a1.set_ylabel("test samples")
    a1.set_ylim(0, 1.1 * max(int(kept.max()), int(own.max()), 1))
    a1.set_title("Test samples kept by each level")

    def _f(r, key):
        return float(r[key]) if r[key] not in ("", None) else np.nan

    acc = [_f(r, "accuracy") for r in levels]
    oracle = [_f(r, "oracle_accuracy") for r in levels]
    w = 0.35
    a2.bar(np.array(k) - w / 2, acc, w, label="accuracy on the samples it kept (end to end)")
    a2.bar(np.array(k) + w / 2, oracle, w, label="accuracy on its own classes (perfect routing)", fill=False,
           hatch="//")
    a2.set_xticks(k)
    a2.set_ylim(0, 1)
    a2.set_xlabel("TDC level")
    a2.set_ylabel("accuracy")
    a2.set_title("Level accuracy: end to end vs perfect routing")
    for ax in (a1, a2):
        ax.tick_params(labelsize=TICK_PT)
    _legend_below(fig, (a1, a2), ncol=2)
    return fig


def routing(levels: list[dict], out) -> None:
    """Write :func:`routing_figure` to ``out``."""
    _save(routing_figure(levels), out)


TABLE_FIELDS = ["model", "top-1", "balanced accuracy", "macro-F1"]


def _cell(s: dict, metric: str) -> str:
    v = s.get(metric)
    if v is None:
        return "n/a"
    lo, hi = (s.get("ci95") or {}).get(metric) or (None, None)
    return f"{v:.3f} [{lo:.3f}–{hi:.3f}]" if lo is not None and hi is not None else f"{v:.3f}"


def headline_rows(summary: dict) -> list[dict]:
    """Rows of the headline table: every flat loss, the TDC end to end, its perfect-routing estimate and the
    chance rates, each metric as ``value [95 % interval]`` (``n/a`` where the model has no such number).

    >>> s = {"flat_by_loss": {"ce": {"top1": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.3,
    ...                              "ci95": {"top1": [0.4, 0.6]}}},
    ...      "tdc": {"mode": "rest", "top1": 0.55, "estimated_top1": 0.7},
    ...      "chance": {"majority": 0.1, "prior": 0.05, "balanced": 0.05}}
    >>> [r["top-1"] for r in headline_rows(s)]
    ['0.500 [0.400–0.600]', '0.550', '0.700', '0.100', '0.050']
    >>> headline_rows(s)[2]["macro-F1"]
    'n/a'
    """
    rows = []
    for name, s in _models(summary) + [(ESTIMATE_LABEL, _estimated(summary))]:
        rows.append({"model": name, **{METRICS[m]: _cell(s, m) for m in METRICS}})
    ch = summary["chance"]
    rows.append({"model": "chance: majority class", "top-1": _cell({"v": ch.get("majority")}, "v"),
                 "balanced accuracy": _cell({"v": ch.get("balanced")}, "v"), "macro-F1": "n/a"})
    rows.append({"model": "chance: guessing with the training priors", "top-1": _cell({"v": ch.get("prior")}, "v"),
                 "balanced accuracy": _cell({"v": ch.get("balanced")}, "v"), "macro-F1": "n/a"})
    return rows


VARIANT_FIELDS = ["variant", "feature sources", "balanced accuracy", "top-1", "dev balanced accuracy",
                  "crystal system top-1", "chosen on dev"]


def variants_rows(summary: dict) -> list[dict]:
    """Rows of the variants table: every flat model and cascade with its feature sources, test balanced accuracy
    [95 % interval], top-1, the dev score it was chosen by, and its crystal-system top-1.

    >>> s = {"variants": [{"name": "flat/ce/cnn", "family": "flat", "features": ["cnn"], "balanced_accuracy": 0.3,
    ...       "top1": 0.4, "dev_balanced_accuracy": 0.31, "ci95": {"balanced_accuracy": [0.25, 0.35]},
    ...       "hierarchy": {"crystal_system": {"top1": 0.6}}}], "best": {"flat": "flat/ce/cnn"}}
    >>> variants_rows(s)[0]["balanced accuracy"], variants_rows(s)[0]["chosen on dev"]
    ('0.300 [0.250–0.350]', 'best flat')
    """
    best = summary.get("best") or {}
    rows = []
    for v in summary.get("variants", []):
        chosen = "best flat" if v["name"] == best.get("flat") else "best TDC" if v["name"] == best.get("tdc") else ""
        cs = (v.get("hierarchy") or {}).get("crystal_system", {}).get("top1")
        rows.append({"variant": v["name"], "feature sources": " + ".join(v.get("features") or ["cnn"]),
                     "balanced accuracy": _cell(v, "balanced_accuracy"), "top-1": _cell({"v": v["top1"]}, "v"),
                     "dev balanced accuracy": _cell({"v": v.get("dev_balanced_accuracy")}, "v"),
                     "crystal system top-1": _cell({"v": cs}, "v"), "chosen on dev": chosen})
    return rows


def headline_table(summary: dict, out) -> None:
    """Write :func:`headline_rows` as a CSV (the report's first table)."""
    from cbedtdc.io import write_csv

    write_csv(out, headline_rows(summary), TABLE_FIELDS)


def _check_fraction(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 <= float(v) <= 1:
        raise InputError(f"{where} = {v!r}: give a fraction in [0, 1]")
    return float(v)


def _check_hierarchy(scores_by_model) -> None:
    """Raise ``ValueError`` naming the model and level when the input is not ``{model: hierarchy_scores()}``."""
    from cbedtdc.crystallography import LEVELS

    if not isinstance(scores_by_model, dict) or not scores_by_model:
        raise InputError("scores_by_model: give {model name: metrics.hierarchy_scores(...)} with at least one model")
    for model, scores in scores_by_model.items():
        missing = [lv for lv in LEVELS if not isinstance(scores, dict) or lv not in scores]
        if missing:
            raise InputError(f"scores_by_model[{model!r}] lacks the levels {missing}; give the dict of "
                             f"metrics.hierarchy_scores (levels {', '.join(LEVELS)})")
        for lv in LEVELS:
            for m in ("top1", "balanced_accuracy"):
                _check_fraction(scores[lv].get(m), f"scores_by_model[{model!r}][{lv!r}][{m!r}]")


def hierarchy_figure(scores_by_model: dict):
    """Top-1 and balanced accuracy at every level of the crystallographic hierarchy (crystal system ... space
    group), one bar per model (e.g. flat vs TDC), with the 95 % interval where the scores carry ``ci95``.

    ``scores_by_model``: ``{model name: metrics.hierarchy_scores(...)}``, drawn in the dict's order.
    """
    from cbedtdc.crystallography import LEVELS

    _check_hierarchy(scores_by_model)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    x = np.arange(len(LEVELS))
    width = 0.8 / len(scores_by_model)
    first = next(iter(scores_by_model.values()))
    ticks = [lv.replace("_", "\n") + (f"\n({first[lv]['n_classes']})" if "n_classes" in first[lv] else "")
             for lv in LEVELS]
    for ax, metric in zip(axes, ("top1", "balanced_accuracy")):
        for i, (model, scores) in enumerate(scores_by_model.items()):
            vals = np.array([scores[lv][metric] for lv in LEVELS], dtype=float)
            cis = [(scores[lv].get("ci95") or {}).get(metric) for lv in LEVELS]
            err = None
            if all(ci is not None and None not in ci for ci in cis):
                err = np.array([[v - lo for v, (lo, _) in zip(vals, cis)], [hi - v for v, (_, hi) in zip(vals, cis)]])
            ax.bar(x - 0.4 + (i + 0.5) * width, vals, width, yerr=err, capsize=2, label=model, color=f"C{i}")
        ax.set_xticks(x, ticks, fontsize=TICK_PT)
        ax.tick_params(axis="y", labelsize=TICK_PT)
        ax.set_ylim(0, 1)
        ax.set_xlabel("hierarchy level (classes of the run), coarse to fine", fontsize=TICK_PT + 1)
        ax.set_ylabel(f"test {METRICS[metric]}", fontsize=TICK_PT + 1)
        ax.set_title(f"{METRICS[metric].capitalize()} by crystallographic level")
    # under the three-line level names and the axis labels (constrained layout makes room)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(len(scores_by_model), 3),
               fontsize=TICK_PT, frameon=False)
    return fig


def plot_hierarchy(scores_by_model: dict, out) -> None:
    """Write :func:`hierarchy_figure` to ``out`` (PNG)."""
    _save(hierarchy_figure(scores_by_model), out)


def _check_reliability(bins_by_model) -> None:
    """Raise ``ValueError`` naming the model and reading when the input is not ``{model: {reading: bins}}``."""
    example = "{'flat': {'before temperature scaling': bins, 'after temperature scaling': bins}}"
    if not isinstance(bins_by_model, dict) or not bins_by_model:
        raise InputError(f"bins_by_model: give {{model: {{reading: metrics.reliability_bins(...)}}}}, e.g. {example}")
    for model, readings in bins_by_model.items():
        if not isinstance(readings, dict) or not readings:
            raise InputError(f"bins_by_model[{model!r}] is a {type(readings).__name__}: give {{reading: bins}}, "
                             f"e.g. {example}")
        for reading, bins in readings.items():
            where = f"bins_by_model[{model!r}][{reading!r}]"
            if not isinstance(bins, (list, tuple)) or not all(isinstance(b, dict) for b in bins):
                raise InputError(f"{where}: give the list of bin dicts of metrics.reliability_bins")
            full = [b for b in bins if b.get("count")]
            if not full:
                raise InputError(f"{where}: every bin is empty (no samples)")
            for k, b in enumerate(full):
                for key in ("confidence", "accuracy"):
                    _check_fraction(b.get(key), f"{where}[{k}][{key!r}]")


def reliability_figure(bins_by_model: dict):
    """Reliability diagram: accuracy against mean confidence of the top label per confidence bin, one panel per
    model, one curve per reading (e.g. before and after temperature scaling, ECE in the legend), and the
    diagonal of perfect calibration.

    ``bins_by_model``: ``{model: {reading: metrics.reliability_bins(...)}}``; empty bins are left out.
    """
    from cbedtdc.metrics import ece_from_bins

    _check_reliability(bins_by_model)
    plt = _plt()
    n = len(bins_by_model)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 0.8, 4.2), squeeze=False)
    styles = ["o-", "s--", "^-.", "d:"]
    for ax, (model, readings) in zip(axes[0], bins_by_model.items()):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="perfect calibration")
        for i, (reading, bins) in enumerate(readings.items()):
            full = [b for b in bins if b["count"]]
            ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], styles[i % len(styles)],
                    color=f"C{i}", ms=4, label=f"{reading} (ECE {ece_from_bins(bins):.3f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=TICK_PT)
        ax.set_xlabel("mean confidence of the top label in the bin", fontsize=TICK_PT + 1)
        ax.set_ylabel("accuracy in the bin", fontsize=TICK_PT + 1)
        ax.set_title(f"Calibration: {model}")
        # each panel its own legend, under its axes: the ECE belongs to that model
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=TICK_PT, frameon=False)
    return fig


def plot_reliability(bins_by_model: dict, out) -> None:
    """Write :func:`reliability_figure` to ``out`` (PNG)."""
    _save(reliability_figure(bins_by_model), out)


def selective_figure(curves_by_model: dict):
    """Selective prediction: accuracy against coverage (the fraction of test samples answered, most confident
    first), one curve per model; ``curves_by_model``: ``{model: metrics.selective_prediction(...)["curve"]}``."""
    if not isinstance(curves_by_model, dict) or not curves_by_model:
        raise InputError("curves_by_model: give {model: metrics.selective_prediction(...)['curve']}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    for i, (model, curve) in enumerate(curves_by_model.items()):
        if not isinstance(curve, (list, tuple)) or not curve:
            raise InputError(f"curves_by_model[{model!r}]: give the 'curve' list of metrics.selective_prediction")
        cov = [_check_fraction(p.get("coverage"), f"curves_by_model[{model!r}] coverage") for p in curve]
        acc = [_check_fraction(p.get("accuracy"), f"curves_by_model[{model!r}] accuracy") for p in curve]
        ax.plot(cov, acc, ["o-", "s--", "^-.", "d:"][i % 4], color=f"C{i}", ms=3, label=model)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.tick_params(labelsize=TICK_PT)
    ax.set_xlabel("coverage (fraction of test samples answered, most confident first)", fontsize=TICK_PT + 1)
    ax.set_ylabel("top-1 accuracy of the answered samples", fontsize=TICK_PT + 1)
    ax.set_title("Selective prediction")
    _legend_below(fig, ax, ncol=1)
    return fig


def _crystal_figures(summary: dict, out_dir: Path) -> dict:
    """hierarchy.png (flat vs TDC at every hierarchy level) and calibration.png (reliability before and after
    temperature scaling), from ``summary["flat"/"tdc"]["hierarchy"]`` and ``summary["calibration"]``."""
    out = {"hierarchy": out_dir / "hierarchy.png", "calibration": out_dir / "calibration.png"}
    scores = {f"flat ({summary['flat'].get('model', 'flat')})": summary["flat"].get("hierarchy"),
              f"TDC ({summary['best'].get('tdc') or 'tdc'})": summary["tdc"].get("hierarchy")}
    scores = {k: v for k, v in scores.items() if v}
    if not scores:
        raise InputError("summary.json has no hierarchy scores: rerun rule evaluate")
    plot_hierarchy(scores, out["hierarchy"])
    cal = summary.get("calibration") or {}
    if not cal:
        raise InputError("summary.json has no calibration: rerun rule evaluate")
    plot_reliability({f"{key}: {c['model']}": {"before temperature scaling": c["before"]["bins"],
                                               "after temperature scaling": c["after"]["bins"]}
                      for key, c in cal.items()}, out["calibration"])
    curves = {f"{key}: {c['model']}": c["selective"]["curve"] for key, c in cal.items() if c.get("selective")}
    if not curves:  # a summary.json written before selective prediction existed: rerun rule evaluate to get it
        raise InputError("summary.json has no selective prediction (calibration.<model>.selective): it was written "
                         "by an older cbedtdc; rerun rule evaluate (snakemake -R evaluate)")
    out["selective"] = out_dir / "selective.png"
    _save(selective_figure(curves), out["selective"])
    return out


def plot_all(metrics_dir, out_dir) -> list[Path]:
    """Draw every figure and the headline table (``headline.csv``) from ``metrics_dir`` into ``out_dir``;
    return the written paths."""
    metrics_dir, out_dir = Path(metrics_dir), Path(out_dir)
    summary = json.loads((metrics_dir / "summary.json").read_text())
    paths = {name: out_dir / f"{name}.png" for name in ("headline", "recall", "confusion", "routing")}
    paths["table"] = out_dir / "headline.csv"
    headline_table(summary, paths["table"])
    paths["variants"] = out_dir / "variants.csv"
    from cbedtdc.io import write_csv

    write_csv(paths["variants"], variants_rows(summary), VARIANT_FIELDS)
    headline(summary, paths["headline"])
    recall(_read_table(metrics_dir / "per_class.csv"), paths["recall"])
    confusion(_read_table(metrics_dir / "confusion_flat.csv"), _read_table(metrics_dir / "confusion_tdc.csv"),
              paths["confusion"])
    routing(_read_table(metrics_dir / "levels.csv"), paths["routing"])
    paths.update(_crystal_figures(summary, out_dir))
    for p in paths.values():
        log.info("wrote %s", p)
    return list(paths.values())
