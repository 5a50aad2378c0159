"""The variants of a run and the choice among them: every flat model (a CNN, or a head on feature
sources) and every cascade, scored on test, chosen on dev, compared with a paired bootstrap.

Nothing here reads a file: :mod:`cbedtdc.evaluate.run` fills a :class:`Variants` with scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbedtdc.metrics import hierarchy_scores, paired_difference, per_class_recall
from cbedtdc.errors import InputError

__all__ = ["TestSet", "Variants", "SHOTS", "shot_accuracy", "headline_flat"]


@dataclass
class TestSet:
    """The test split of the run's classes (and what the scores need beside it)."""

    __test__ = False  # a dataclass, not a pytest test class

    keys: list
    labels: np.ndarray
    materials: np.ndarray
    dev: object  # ShardDataset of the dev split (keys, labels)
    train_labels: np.ndarray
    n_excluded: int
    kw: dict  # score() keywords: materials, bootstrap, Friedel groups


#: Class groups by training samples, as the long-tail literature reports them.
SHOTS = (("many", 101, None), ("medium", 20, 100), ("few", 0, 19))


def shot_accuracy(y_true, y_pred, classes, train_counts) -> dict:
    """Balanced accuracy within the many- (>100), medium- (20-100) and few-shot (<20) classes.

    >>> shot_accuracy([1, 1, 2, 3], [1, 2, 2, 1], [1, 2, 3], {1: 500, 2: 50, 3: 5})["few"]
    {'classes': 1, 'n_test': 1, 'balanced_accuracy': 0.0}
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recall = per_class_recall(y_true, y_pred, classes)
    out = {}
    for name, lo, hi in SHOTS:
        idx = [i for i, c in enumerate(classes)
               if train_counts.get(int(c), 0) >= lo and (hi is None or train_counts.get(int(c), 0) <= hi)]
        vals = [recall[i] for i in idx if np.isfinite(recall[i])]
        out[name] = {"classes": len(idx), "n_test": int(np.isin(y_true, [classes[i] for i in idx]).sum()),
                     "balanced_accuracy": float(np.mean(vals)) if vals else float("nan")}
    return out


class Variants:
    """Rows of ``summary["variants"]`` and the test predictions behind them (for the paired bootstrap)."""

    def __init__(self, ts: TestSet, classes, train_counts):
        self.ts, self.classes, self.counts = ts, list(classes), train_counts
        self.rows, self.pred = [], {}
        self.conf = {}  # name -> {"before": conf, "after": conf} of the predicted class (temperature scaling)

    def add(self, name, family, s, pred, *, dev_ba, **extra):
        levels = hierarchy_scores(self.ts.labels, pred, self.classes)
        row = {"name": name, "family": family, **extra,
               "top1": s["top1"], "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
               "ci95": s.get("ci95", {}), "dev_balanced_accuracy": dev_ba,
               "shots": shot_accuracy(self.ts.labels, pred, self.classes, self.counts),
               "hierarchy": {lv: {"top1": v["top1"], "balanced_accuracy": v["balanced_accuracy"]}
                             for lv, v in levels.items()}}
        self.rows.append(row)
        self.pred[name] = np.asarray(pred)
        return row

    def best(self, family):
        """The row of ``family`` with the best dev balanced accuracy (the first one wins ties), or None."""
        rows = [r for r in self.rows if r["family"] == family and r["dev_balanced_accuracy"] is not None]
        return max(rows, key=lambda r: r["dev_balanced_accuracy"]) if rows else None

    def best_difference(self, n_boot: int, seed: int) -> dict:
        """Best flat and best TDC variant by dev balanced accuracy; paired bootstrap of TDC minus flat."""
        f, t = self.best("flat"), self.best("tdc")
        out = {"selected_by": "dev balanced_accuracy", "flat": f and f["name"], "tdc": t and t["name"]}
        if f is None or t is None:
            return out
        d = paired_difference(self.ts.labels, self.pred[t["name"]], self.pred[f["name"]], self.classes,
                              self.ts.materials, n_boot, seed)
        out["balanced_accuracy_difference"], out["difference_ci95"] = d["difference"], d["ci95"]
        out["paired"] = "same bootstrap resamples of whole test materials for both models"
        return out


def headline_flat(variants: Variants, flat_by_loss: dict, flat_pred: dict, best_cnn: str, flat_heads: dict):
    """``(summary["flat"], per-class recall columns)``: the flat model the TDC is compared with.

    It is the best flat variant on dev balanced accuracy, the flat CNNs (``flat.losses``) and the heads on
    feature sources (``heads.variants``) alike: with ``tdc.backbone: shared`` the cascade's levels are heads
    on the same features, so a flat head (cRT, logit adjustment) is the flat model of equal backbone budget.
    A CNN wins ties; without dev scores the headline is the CNN chosen by ``best_cnn``.
    """
    chosen = variants.best("flat")
    if chosen is None and best_cnn is None:
        chosen = next((r for r in variants.rows if r["family"] == "flat"), None)
        if chosen is None:
            raise InputError("no flat model to compare the TDC with: give flat.losses or heads.variants")
    name = chosen["name"] if chosen is not None else f"flat/{best_cnn}/cnn"
    recall = dict(flat_pred)
    if name in flat_heads:
        s = flat_heads[name]
        recall[f"{s['loss']}_{s['head']}"] = variants.pred[name]
    else:
        s = {**flat_by_loss[name.split("/")[1]], "head": "cnn", "head_images": 0}
    what = "the flat CNNs (flat.losses) and their heads (heads.variants)" if flat_heads else "flat.losses"
    return {**s, "model": name, "selected_by": f"dev balanced_accuracy among {what}"}, recall
