"""What crystallographers and long-tail researchers read beside the space-group scores: accuracy at every level
of the crystallographic hierarchy (:mod:`cbedtdc.crystallography`) and calibration (reliability before and
after temperature scaling), and selective prediction: the accuracy when only the most confident answers are given
(a coverage-accuracy curve on the calibrated confidence)."""

from __future__ import annotations

import numpy as np

from cbedtdc.metrics import confidence_bins, ece_from_bins, hierarchy_scores, selective_prediction

__all__ = ["hierarchy", "calibration", "N_BINS", "SELECTIVE_COVERAGES"]

#: Equal-width confidence bins of the reliability diagrams and the expected calibration error.
N_BINS = 15
#: Coverages whose accuracy summary.json reports (the fraction of test samples answered, most confident first).
SELECTIVE_COVERAGES = (0.5, 0.8, 1.0)


def hierarchy(y, pred, classes, *, materials=None, n_boot: int = 0, seed: int = 0) -> dict:
    """Top-1 and balanced accuracy (with bootstrap intervals over materials when ``n_boot``) per hierarchy level."""
    return hierarchy_scores(y, pred, classes, materials=materials, n_boot=n_boot, seed=seed)


def calibration(y, before: tuple, after: tuple) -> dict:
    """Reliability of a model's top label before and after temperature scaling.

    ``before``/``after``: ``(pred, conf)``, the predicted space groups and the probability the model gives them.
    Returns ``{"before": {"ece", "bins"}, "after": {...}, "selective": {"curve", "at"}}``
    (:func:`cbedtdc.metrics.confidence_bins`, :func:`cbedtdc.metrics.selective_prediction` on the ``after`` reading).
    """
    out = {}
    for name, (pred, conf) in (("before", before), ("after", after)):
        bins = confidence_bins(np.clip(np.asarray(conf, dtype=float), 0.0, 1.0),
                               (np.asarray(pred) == np.asarray(y)).astype(float), N_BINS)
        out[name] = {"ece": ece_from_bins(bins), "bins": bins}
    pred, conf = after
    # selective prediction on the calibrated confidence: answer only the most confident fraction
    out["selective"] = selective_prediction(np.asarray(conf, dtype=float),
                                            (np.asarray(pred) == np.asarray(y)).astype(float), SELECTIVE_COVERAGES)
    return out
