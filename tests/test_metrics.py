"""Metrics on hand-made labels where the right answer is known."""

import numpy as np
import pytest

from cbedtdc import metrics


def test_balanced_accuracy_and_macro_f1_weigh_classes_equally():
    y = [1] * 8 + [2] * 2
    pred = [1] * 10  # majority guess
    assert metrics.top1(y, pred) == pytest.approx(0.8)
    assert metrics.balanced_accuracy(y, pred, [1, 2]) == pytest.approx(0.5)
    # F1(1) = 2*8/(8+10) = 0.889, F1(2) = 0 -> 0.444
    assert metrics.macro_f1(y, pred, [1, 2]) == pytest.approx((16 / 18) / 2)


def test_classes_absent_from_the_test_split_do_not_count():
    assert metrics.balanced_accuracy([1, 1], [1, 2], [1, 2, 3]) == pytest.approx(0.5)
    assert np.isnan(metrics.per_class_recall([1], [1], [1, 3])[1])


def test_confusion_counts_predictions_outside_the_classes():
    cm = metrics.confusion_matrix([1, 2, 2], [1, 99, 2], [1, 2])
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match=r"true labels \[7\] are not among the classes"):
        metrics.confusion_matrix([7], [1], [1, 2])


def test_top5():
    scores = np.tile(np.arange(6, dtype=float), (2, 1))  # class order by score: 6 5 4 3 2 1
    classes = [1, 2, 3, 4, 5, 6]
    assert metrics.top_k([2, 1], scores, classes, k=5) == pytest.approx(0.5)


def test_chance_rates_match_the_hand_computation():
    train = [14] * 6 + [225] * 3 + [1]
    test = [14] * 2 + [225] * 2 + [1] * 1
    rates = metrics.chance_rates(train, test, [14, 225, 1])
    assert rates["majority"] == pytest.approx(2 / 5)
    assert rates["prior"] == pytest.approx(0.6 * 0.4 + 0.3 * 0.4 + 0.1 * 0.2)
    assert rates["balanced"] == pytest.approx(1 / 3)


def test_friedel_merge_counts_indistinguishable_groups_as_one():
    groups = [[1, 2], [216, 225]]
    y = [1, 2, 216, 225, 14]
    pred = [2, 1, 225, 216, 14]
    s = metrics.score(y, pred, [14, 225, 1, 2, 216], friedel_groups=groups)
    assert s["top1"] == pytest.approx(0.2)
    assert s["friedel"]["top1"] == 1.0 and s["friedel"]["n_classes"] == 3
    with pytest.raises(ValueError, match="space group 2 is in two groups"):
        metrics.merge_labels([1], [[1, 2], [2, 3]])


def test_bootstrap_resamples_whole_materials():
    # material A: 3 right samples, material B: 1 wrong sample. A resample of 2 materials is
    # AA, AB or BB: top-1 can only be 1, 0.75 or 0, never e.g. 0.5 (which sample-wise draws give).
    y = np.array([1, 1, 1, 2])
    pred = np.array([1, 1, 1, 1])
    values = []

    def fn(idx):
        values.append(metrics.top1(y[idx], pred[idx]))
        return values[-1]

    metrics.bootstrap_materials(fn, ["A", "A", "A", "B"], n_boot=200, seed=1)
    assert set(values) == {1.0, 0.75, 0.0}
    s = metrics.score(y, pred, [1, 2], materials=["A", "A", "A", "B"], n_boot=200)
    lo, hi = s["ci95"]["top1"]
    assert lo <= s["top1"] <= hi


def test_bootstrap_is_seeded():
    y = np.arange(40) % 4
    pred = (np.arange(40) * 7) % 4
    mats = np.arange(40) // 2
    a = metrics.score(y, pred, [0, 1, 2, 3], materials=mats, n_boot=50, seed=3)["ci95"]
    b = metrics.score(y, pred, [0, 1, 2, 3], materials=mats, n_boot=50, seed=3)["ci95"]
    assert a == b


def test_results_table_lists_every_model_and_both_accuracies():
    ci = {"top1": [0.4, 0.6], "balanced_accuracy": [0.3, 0.5], "macro_f1": [0.2, 0.4]}
    flat = {"top1": 0.5, "balanced_accuracy": 0.4, "macro_f1": 0.3, "top5": 0.9, "ci95": ci, "images_seen": 400}
    def tdc(mode):
        return {"mode": mode, "levels": [[1, 2], [3]], "routing": "argmax", "top1": 0.45, "balanced_accuracy": 0.35,
                "macro_f1": 0.25, "ci95": ci, "estimated_top1": 0.6, "estimated_balanced_accuracy": 0.5,
                "images_seen": 410}
    base = {"chance": {"majority": 0.2, "prior": 0.1, "balanced": 1 / 3, "majority_class": 1}, "flat": flat,
            "flat_by_loss": {"ce": flat, "weighted_ce": flat}, "n_test": 30, "n_test_materials": 10,
            "bootstrap": {"resamples": 100}, "data": "generated (kinematic)"}
    text = metrics.results_table([{**base, "tdc": tdc("rest")}, {**base, "tdc": tdc("hard")}])
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| model")]
    assert len(rows) == 2 + 2 + 2 * 2  # chance x2, flat x2, (end to end + estimated) per reading
    assert "| flat, weighted_ce | 400 | 50.0 [40.0, 60.0] | 40.0 [30.0, 50.0] | 30.0 [20.0, 40.0] | 90.0 |" in text
    assert "TDC hard (2+1, argmax), *estimated* (perfect routing) | same | 60.0 | 50.0" in text
