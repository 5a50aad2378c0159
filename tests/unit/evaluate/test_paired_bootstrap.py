"""The TDC-minus-flat interval of summary.json is *paired*: both models are scored on the same resample of whole test
materials in every bootstrap round, so what the two share (the test set's luck) cancels. An unpaired interval (each
model on its own resamples) would be much wider and would fail these tests."""

from __future__ import annotations

import numpy as np
import pytest

from cbedtdc import metrics
from cbedtdc.evaluate import TestSet, Variants

CLASSES = [1, 2, 3]
#: 12 test samples of 6 materials (two samples each), four per class
Y = np.array([1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
MATERIALS = np.array(["m0", "m0", "m1", "m1", "m2", "m2", "m3", "m3", "m4", "m4", "m5", "m5"])
FLAT = np.array([1, 2, 1, 1, 2, 3, 2, 1, 3, 3, 1, 3])
TDC = np.array([1, 1, 1, 1, 2, 3, 2, 2, 3, 3, 1, 3])  # the flat model's, with samples 1 and 7 put right


def best_difference(flat_pred, tdc_pred, n_boot=200, seed=7):
    ts = TestSet(keys=[f"k{i}" for i in range(len(Y))], labels=Y, materials=MATERIALS, dev=[],
                 train_labels=np.array([1, 2, 3] * 50), n_excluded=0, kw={})
    v = Variants(ts, CLASSES, {1: 50, 2: 50, 3: 50})
    for name, family, pred in (("flat/ce/cnn", "flat", flat_pred), ("tdc_shared/rest", "tdc", tdc_pred)):
        v.add(name, family, metrics.score(Y, pred, CLASSES), pred, dev_ba=0.5)
    return v.best_difference(n_boot, seed)


def balanced_accuracy(y, p):
    """Mean recall over the classes present in ``y``, written out again (not the library's)."""
    return float(np.mean([np.mean(p[y == c] == c) for c in np.unique(y)]))


def resample_indices(n_boot, seed):
    """Whole-material resamples: as many materials as there are, drawn with replacement from the sorted names by
    ``numpy.random.default_rng(seed).integers``, each bringing all of its samples."""
    names = sorted(set(MATERIALS))
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = rng.integers(0, len(names), size=len(names))
        yield np.concatenate([np.flatnonzero(MATERIALS == names[m]) for m in drawn])


def percentile_interval(values):
    return tuple(np.nanquantile(values, [0.025, 0.975]))


def test_identical_predictions_give_a_difference_of_exactly_zero_in_every_resample():
    """Computed by hand: the same predictions under two names differ by 0 on any resample, paired; unpaired
    resamples would give a wide interval around 0."""
    out = best_difference(FLAT, FLAT.copy())
    assert out["balanced_accuracy_difference"] == 0.0
    assert out["difference_ci95"] == [0.0, 0.0]


def test_the_interval_is_the_percentiles_of_the_paired_differences_of_an_independent_resampler():
    n_boot, seed = 200, 7
    out = best_difference(FLAT, TDC, n_boot, seed)
    whole = balanced_accuracy(Y, TDC) - balanced_accuracy(Y, FLAT)
    assert out["balanced_accuracy_difference"] == pytest.approx(whole)
    paired = [balanced_accuracy(Y[i], TDC[i]) - balanced_accuracy(Y[i], FLAT[i])
              for i in resample_indices(n_boot, seed)]
    assert out["difference_ci95"] == pytest.approx(percentile_interval(paired), abs=1e-12)
    # the unpaired interval from the same generator (the TDC on one resample, the flat model on the next) differs:
    # the test above tells a paired implementation from an unpaired one
    draws = list(resample_indices(2 * n_boot, seed))
    unpaired = [balanced_accuracy(Y[a], TDC[a]) - balanced_accuracy(Y[b], FLAT[b])
                for a, b in zip(draws[::2], draws[1::2])]
    lo, hi = percentile_interval(unpaired)  # a TDC worse than the flat model inside the interval
    assert out["difference_ci95"][0] >= 0.0 > lo, "paired, fixing two errors never makes the TDC worse"
    assert (lo, hi) != pytest.approx(tuple(out["difference_ci95"]))
