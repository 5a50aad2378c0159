"""What crystallographers and long-tail researchers read beside the space-group scores: accuracy at every level
of the crystallographic hierarchy (:mod:`cbedtdc.crystallography`) and calibration (reliability before and
after temperature scaling)."""

from __future__ import annotations

import numpy as np

from cbedtdc.metrics import confidence_bins, ece_from_bins, hierarchy_scores

__all__ = ["hierarchy", "calibration", "N_BINS"]

#: Equal-width confidence bins of the reliability diagrams and the expected calibration error.
N_BINS = 15


def hierarchy(y, pred, classes, *, materials=None, n_boot: int = 0, seed: int = 0) -> dict:
    """Top-1 and balanced accuracy (with bootstrap intervals over materials when ``n_boot``) per hierarchy level."""
    return hierarchy_scores(y, pred, classes, materials=materials, n_boot=n_boot, seed=seed)


def calibration(y, before: tuple, after: tuple) -> dict:
    """Reliability of a model's top label before and after temperature scaling.

    ``before``/``after``: ``(pred, conf)``, the predicted space groups and the probability the model gives them.
    Returns ``{"before": {"ece", "bins"}, "after": {...}}`` (:func:`cbedtdc.metrics.confidence_bins`).
    """
    out = {}
    for name, (pred, conf) in (("before", before), ("after", after)):
        bins = confidence_bins(np.clip(np.asarray(conf, dtype=float), 0.0, 1.0),
                               (np.asarray(pred) == np.asarray(y)).astype(float), N_BINS)
        out[name] = {"ece": ece_from_bins(bins), "bins": bins}
    return out
