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


# --- the same numbers as scikit-learn ------------------------------------------------------------------------------

def random_case(seed: int):
    """Labels of 12 classes in a shuffled order: 3 never occur in the truth, 2 are never predicted, and some
    predictions fall outside the classes (999)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.arange(1, 60))[:12].tolist()
    y = rng.choice(classes[:9], size=300)
    pred = rng.choice(classes[2:] + [999], size=300)
    right = rng.random(300) < 0.3  # some skill, so that recalls differ
    pred[right] = y[right]
    return classes, y, pred, rng.random((300, 12))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_and_recall_match_scikit_learn(seed):
    from sklearn.metrics import confusion_matrix, recall_score

    classes, y, pred, _ = random_case(seed)
    ours = metrics.confusion_matrix(y, pred, classes)
    np.testing.assert_array_equal(ours[:, :-1], confusion_matrix(y, pred, labels=classes))
    outside = ~np.isin(pred, classes)
    np.testing.assert_array_equal(ours[:, -1], [int((outside & (y == c)).sum()) for c in classes])
    expected = recall_score(y, pred, labels=classes, average=None, zero_division=np.nan)
    assert np.isnan(expected).sum() == 3  # the classes absent from the truth
    np.testing.assert_allclose(metrics.per_class_recall(y, pred, classes), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_and_macro_f1_match_scikit_learn(seed):
    import warnings

    from sklearn.metrics import balanced_accuracy_score, f1_score

    classes, y, pred, _ = random_case(seed)
    with warnings.catch_warnings():  # scikit-learn warns that y_pred holds labels absent from y_true
        warnings.simplefilter("ignore", UserWarning)
        expected_ba = balanced_accuracy_score(y, pred)
    assert metrics.balanced_accuracy(y, pred, classes) == pytest.approx(expected_ba, abs=1e-12)
    # macro-F1 over the classes of the truth: a class that is only predicted does not count
    expected_f1 = f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)
    assert metrics.macro_f1(y, pred, classes) == pytest.approx(expected_f1, abs=1e-12)
    assert metrics.top1(y, pred) == pytest.approx(float((y == pred).mean()))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_matches_scikit_learn_whatever_the_column_order(seed, k):
    from sklearn.metrics import top_k_accuracy_score

    classes, y, _, scores = random_case(seed)
    order = np.argsort(classes)  # scikit-learn wants its labels sorted; ours follow the run's class order
    expected = top_k_accuracy_score(y, scores[:, order], k=k, labels=np.asarray(classes)[order])
    assert metrics.top_k(y, scores, classes, k=k) == pytest.approx(expected)


# --- the crystallographic hierarchy --------------------------------------------------------------------------------

def test_hierarchy_scores_count_a_confusion_right_down_to_the_level_the_groups_share():
    from cbedtdc.classes import TOP20
    from cbedtdc.crystallography import LEVELS

    y = [14, 14, 225, 1, 2]
    pred = [2, 14, 216, 2, 0]  # P2_1/c as P-1, right, Fm-3m as F-43m, P1 as P-1, no prediction
    s = metrics.hierarchy_scores(y, pred, list(TOP20))
    assert list(s) == list(LEVELS)
    top1 = {level: v["top1"] for level, v in s.items()}
    assert top1 == pytest.approx({"crystal_system": 0.6, "bravais_lattice": 0.6, "laue_class": 0.6,
                                  "point_group": 0.2, "extinction_class": 0.6, "space_group": 0.2})
    # crystal systems of the truth: monoclinic 1/2, cubic 1/1, triclinic 1/2
    assert s["crystal_system"]["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert s["space_group"]["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy(y, pred, TOP20))
    n = {level: v["n_classes"] for level, v in s.items()}
    assert n == {"crystal_system": 7, "bravais_lattice": 11, "laue_class": 8, "point_group": 12,
                 "extinction_class": 15, "space_group": 20}


def test_hierarchy_scores_bootstrap_and_errors():
    y = np.array([14, 14, 225, 1, 2, 62])
    pred = np.array([2, 14, 216, 2, 1, 62])
    mats = ["a", "a", "b", "c", "d", "e"]
    s = metrics.hierarchy_scores(y, pred, [14, 225, 1, 2, 216, 62], materials=mats, n_boot=100, seed=4)
    for level, v in s.items():
        lo, hi = v["ci95"]["balanced_accuracy"]
        assert lo <= v["balanced_accuracy"] <= hi, level
    assert s == metrics.hierarchy_scores(y, pred, [14, 225, 1, 2, 216, 62], materials=mats, n_boot=100, seed=4)
    assert "ci95" not in metrics.hierarchy_scores(y, pred, [14, 225, 1, 2, 216, 62])["space_group"]
    with pytest.raises(ValueError, match=r"true labels \[62\] are not among the classes"):
        metrics.hierarchy_scores(y, pred, [14, 225, 1, 2, 216])
    with pytest.raises(ValueError, match="6 true labels but 5 predictions"):
        metrics.hierarchy_scores(y, pred[:5], [14, 225, 1, 2, 216, 62])


# --- calibration ---------------------------------------------------------------------------------------------------

def synthetic_probs(n: int, gap: float, seed: int = 0):
    """Probabilities over 5 classes whose top label is right with probability ``confidence - gap``."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.35, 1.0, size=n)
    top = rng.integers(0, 5, size=n)
    probs = np.repeat(((1 - conf) / 4)[:, None], 5, axis=1)
    probs[np.arange(n), top] = conf
    right = rng.random(n) < np.clip(conf - gap, 0, 1)
    other = (top + rng.integers(1, 5, size=n)) % 5
    return probs, np.where(right, top, other)


def test_ece_is_zero_for_calibrated_and_the_gap_for_overconfident_probabilities():
    probs, y = synthetic_probs(50_000, gap=0.0)
    assert metrics.expected_calibration_error(probs, y) < 0.01
    probs, y = synthetic_probs(50_000, gap=0.3)  # says 0.35..1.0, is right 0.05..0.7 of the time
    assert metrics.expected_calibration_error(probs, y) == pytest.approx(0.3 - 0.05 ** 2 / 2 / 0.65, abs=0.01)


def test_ece_of_a_hand_computed_case():
    # 5 bins (0, 0.2], ..., (0.8, 1]; confidences 0.6 0.6 | 0.8 | 0.9 (0.8 sits in (0.6, 0.8])
    probs = [[0.6, 0.4], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]]
    y = [0, 1, 0, 0]  # one of the two 0.6 right; the 0.8 wrong; the 0.9 right
    bins = metrics.reliability_bins(probs, y, n_bins=5)
    assert [b["count"] for b in bins] == [0, 0, 2, 1, 1]
    assert [b["accuracy"] for b in bins] == [None, None, 0.5, 0.0, 1.0]
    assert bins[2]["confidence"] == pytest.approx(0.6) and bins[4]["upper"] == 1.0
    expected = 2 / 4 * 0.1 + 1 / 4 * 0.8 + 1 / 4 * 0.1
    assert metrics.expected_calibration_error(probs, y, n_bins=5) == pytest.approx(expected)


def test_reliability_bins_match_scikit_learns_calibration_curve():
    from sklearn.calibration import calibration_curve

    probs, y = synthetic_probs(2_000, gap=0.1, seed=3)
    bins = [b for b in metrics.reliability_bins(probs, y, n_bins=10) if b["count"]]
    correct = probs.argmax(axis=1) == y
    prob_true, prob_pred = calibration_curve(correct, probs.max(axis=1), n_bins=10, strategy="uniform")
    np.testing.assert_allclose([b["accuracy"] for b in bins], prob_true)
    np.testing.assert_allclose([b["confidence"] for b in bins], prob_pred)
    assert sum(b["count"] for b in bins) == 2_000


@pytest.mark.parametrize("probs, y, n_bins, message", [
    ([0.5, 0.5], [0], 15, r"probs must be a 2-D array \(samples, classes\), got shape \(2,\)"),
    ([[0.5, 0.5]], [0, 1], 15, r"one entry per row of probs \(1\)"),
    ([[0.5, 0.5]], [14], 15, r"column indices 0\.\.1 of probs \(not space-group numbers\), got values \[14\]"),
    ([[2.0, -1.0]], [0], 15, r"probabilities in \[0, 1\] \(apply a softmax to logits first\)"),
    ([[0.5, 0.5]], [0], 0, r"n_bins=0: give a positive integer number of bins"),
    (np.zeros((0, 3)), np.zeros(0, dtype=int), 15, "calibration of no samples"),
])
def test_calibration_rejects_bad_input_with_a_clear_message(probs, y, n_bins, message):
    with pytest.raises(ValueError, match=message):
        metrics.expected_calibration_error(probs, y, n_bins=n_bins)


def test_selective_prediction_answers_the_most_confident_first():
    from cbedtdc.metrics import selective_prediction

    rng = np.random.default_rng(0)
    conf = rng.random(200)
    correct = (rng.random(200) < conf).astype(float)  # confident samples are right more often
    s = selective_prediction(conf, correct, coverages=(0.5, 0.8, 1.0))
    order = np.argsort(-conf)
    assert s["at"]["0.5"] == pytest.approx(correct[order[:100]].mean())
    assert s["at"]["0.8"] == pytest.approx(correct[order[:160]].mean())
    assert s["at"]["1.0"] == pytest.approx(correct.mean())
    assert s["at"]["0.5"] > s["at"]["1.0"]
    assert s["curve"][-1]["coverage"] == 1.0 and s["curve"][-1]["threshold"] == pytest.approx(conf.min())
    with pytest.raises(ValueError, match="coverage"):
        selective_prediction(conf, correct, coverages=(0.0,))
