"""TDC levels, training sets, routing and the two accuracies on hand-made probabilities."""

import numpy as np
import pytest

from cbedtdc import cascade
from cbedtdc.cascade import LevelPlan


# ------------------------------------------------------------------ planning
def test_explicit_levels_follow_training_frequency():
    counts = {14: 100, 225: 90, 1: 80, 2: 70, 62: 60, 15: 50}
    levels = cascade.plan_levels(counts, [2, 1, 62, 14, 15, 225], level_sizes=[2, 1, 3])
    assert levels == [[14, 225], [1], [2, 62, 15]]


def test_explicit_sizes_must_cover_the_classes():
    with pytest.raises(ValueError, match=r"tdc.level_sizes=\[2, 2\] must .* add up to the 5 classes"):
        cascade.plan_levels({c: 1 for c in range(1, 6)}, [1, 2, 3, 4, 5], level_sizes=[2, 2])


def test_auto_levels_have_equal_sample_mass():
    # masses 40 | 20 20 | 10 10 10 10: three levels of 40 samples each.
    counts = dict(zip(range(1, 8), [40, 20, 20, 10, 10, 10, 10]))
    levels = cascade.plan_levels(counts, list(range(1, 8)), how="auto", n_levels=3)
    assert levels == [[1], [2, 3], [4, 5, 6, 7]]
    assert [sum(counts[c] for c in lv) for lv in levels] == [40, 40, 40]


def test_plan_round_trips_through_json(tmp_path):
    plan = LevelPlan([[14, 225], [1, 2]], mode="hard", counts={14: 3, 225: 2, 1: 1, 2: 1}, budgets=[10, 5])
    plan.save(tmp_path / "levels.json")
    back = LevelPlan.load(tmp_path / "levels.json")
    assert back == plan
    assert back.outputs(1) == [14, 225, 1, 2] and not back.has_rest(0)


def test_budgets_add_up_to_the_flat_budget():
    plan = LevelPlan([[1], [2], [3]])
    labels = [1] * 6 + [2] * 3 + [3] * 1  # levels see 10, 4, 1 samples in the rest reading
    budgets = cascade.level_budgets(plan, labels, 1001)
    assert sum(budgets) == 1001
    assert budgets[0] > budgets[1] > budgets[2]


# ------------------------------------------------------------------ training sets
def test_rest_mode_training_sets_shrink_level_by_level():
    plan = LevelPlan([[1, 2], [3], [4]])
    labels = np.array([1, 2, 3, 4, 4, 3])
    assert cascade.level_training_mask(plan, 0, labels).all()
    assert cascade.level_training_mask(plan, 1, labels).tolist() == [False, False, True, True, True, True]
    assert cascade.level_training_mask(plan, 2, labels).tolist() == [False, False, False, True, True, False]
    # the later levels' samples are the ones labelled "rest" and trickle
    mask, why = cascade.trickle(plan, 0, labels, None)
    assert mask.tolist() == [False, False, True, True, True, True] and set(why[mask]) == {"later_level"}


def test_hard_mode_trickles_wrong_and_foreign_samples():
    plan = LevelPlan([[1, 2], [3]], mode="hard")
    labels = np.array([1, 2, 1, 3])
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.9, 0.1]])
    mask, why = cascade.trickle(plan, 0, labels, probs)
    assert mask.tolist() == [False, False, True, True]
    assert why.tolist() == ["", "", "wrong", "not_in_level"]
    # level 2 (cumulative outputs 1, 2, 3) trains on exactly what trickled
    assert cascade.level_training_mask(plan, 1, labels, reached=mask).tolist() == mask.tolist()


def test_level_job_uses_the_previous_levels_misses_in_hard_mode():
    plan = LevelPlan([[1], [2]], mode="hard", budgets=[30, 20])
    keys = ["a", "b", "c", "d"]
    job = cascade.level_job(plan, 2, keys, [1, 2, 1, 2], ["e", "f"], [1, 2],
                            missed={"train": ["c", "d"], "dev": ["e"]})
    assert job == {"classes": [1, 2], "rest": False, "train_keys": ["c", "d"], "dev_keys": ["e"],
                   "budget_images": 20}
    with pytest.raises(ValueError, match="needs missed.csv of level 1"):
        cascade.level_job(plan, 2, keys, [1, 2, 1, 2], [], [])


def test_level_job_in_rest_mode_labels_later_levels_rest():
    plan = LevelPlan([[1], [2], [3]], budgets=[5, 3, 2])
    job = cascade.level_job(plan, 2, ["a", "b", "c"], [1, 2, 3], ["d"], [1])
    assert job["classes"] == [2] and job["rest"] is True
    assert job["train_keys"] == ["b", "c"] and job["dev_keys"] == []
    last = cascade.level_job(plan, 3, ["a", "b", "c"], [1, 2, 3], ["d"], [1])
    assert last["rest"] is False and last["train_keys"] == ["c"]


def test_missed_csv_round_trip(tmp_path):
    rows = [{"key": "f.h5/sample_0_0", "split": "train", "space_group": 2, "reason": "wrong"},
            {"key": "f.h5/sample_1_0", "split": "dev", "space_group": 3, "reason": "not_in_level"}]
    cascade.write_missed(tmp_path / "missed.csv", rows)
    assert cascade.read_missed(tmp_path / "missed.csv") == {"train": ["f.h5/sample_0_0"], "dev": ["f.h5/sample_1_0"]}
    (tmp_path / "bad.csv").write_text("nothing here\n")
    with pytest.raises(ValueError, match="bad.csv: not a readable missed.csv"):
        cascade.read_missed(tmp_path / "bad.csv")


# ------------------------------------------------------------------ routing
def _rest_case():
    """3 levels, rest mode; each row's fate is known by construction."""
    plan = LevelPlan([[1, 2], [3], [4, 5]])
    p1 = np.array([
        [0.6, 0.1, 0.3],  # kept by level 1 as 1
        [0.2, 0.5, 0.3],  # kept by level 1 as 2
        [0.1, 0.1, 0.8],  # rest -> level 2
        [0.2, 0.2, 0.6],  # rest -> level 2
        [0.3, 0.3, 0.4],  # rest -> level 2
    ])
    p2 = np.array([
        [0.9, 0.1], [0.9, 0.1],
        [0.7, 0.3],  # kept by level 2 as 3
        [0.2, 0.8],  # rest -> level 3
        [0.4, 0.6],  # rest -> level 3
    ])
    p3 = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.1, 0.9], [0.8, 0.2]])
    labels = np.array([1, 1, 3, 5, 2])
    return plan, [p1, p2, p3], labels


def test_rest_routing_follows_the_argmax():
    plan, probs, labels = _rest_case()
    r = cascade.route(plan, probs)
    assert r.kept.tolist() == [0, 0, 1, 2, 2]
    assert r.pred.tolist() == [1, 2, 3, 5, 4]
    assert r.reached.tolist() == [[True, False, False]] * 2 + [[True, True, False]] + [[True, True, True]] * 2


def test_kept_sets_partition_the_samples():
    rng = np.random.default_rng(0)
    for mode in ("rest", "hard"):
        plan = LevelPlan([[1, 2], [3, 4], [5, 6, 7]], mode=mode)
        n = 200
        probs = [rng.dirichlet(np.ones(len(plan.outputs(k)) + plan.has_rest(k)), size=n) for k in range(3)]
        r = cascade.route(plan, probs, thresholds=[0.7, 0.5])
        sets = r.kept_sets()
        joined = np.concatenate(sets)
        assert len(joined) == n and sorted(joined.tolist()) == list(range(n)), "a sample lost or counted twice"
        assert all(len(s) for s in sets), "every level should keep something on random probabilities"


def test_hard_routing_uses_the_thresholds():
    plan = LevelPlan([[1], [2]], mode="hard", hard_outputs="own")
    p1 = np.array([[1.0], [1.0]])
    p2 = np.array([[1.0], [1.0]])
    # a one-class level is always sure: it keeps everything at any threshold <= 1
    assert cascade.route(plan, [p1, p2], [1.0]).kept.tolist() == [0, 0]
    plan2 = LevelPlan([[1, 2], [3]], mode="hard")
    p1 = np.array([[0.95, 0.05], [0.55, 0.45], [0.7, 0.3]])
    p2 = np.array([[0.1, 0.1, 0.8], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    r = cascade.route(plan2, [p1, p2], [0.6])
    assert r.kept.tolist() == [0, 1, 0]
    assert r.pred.tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="threshold routing needs a threshold"):
        cascade.route(plan2, [p1, p2])


def test_route_rejects_probabilities_of_the_wrong_shape():
    plan, probs, _ = _rest_case()
    with pytest.raises(ValueError, match=r"level 2: probabilities of shape \(5, 3\), expected \(N, 2\)"):
        cascade.route(plan, [probs[0], probs[0], probs[2]])


def test_threshold_tuning_finds_the_known_best_cut():
    # level 1 is right when it is sure (>= 0.9) and wrong or foreign below 0.7; level 2 is right
    # exactly on the samples level 1 gets wrong: any threshold in (0.7, 0.9] is perfect.
    plan = LevelPlan([[1, 2], [3, 4]], mode="hard")
    labels = np.array([1, 2, 1, 2, 3, 4])
    p1 = np.array([[0.9, 0.1], [0.05, 0.95], [0.4, 0.6], [0.6, 0.4], [0.7, 0.3], [0.35, 0.65]])
    p2 = np.zeros((6, 4))
    p2[np.arange(6), [2, 2, 0, 1, 2, 3]] = 1.0
    th = cascade.tune_thresholds(plan, [p1, p2], labels)
    assert 0.7 < th[0] <= 0.9
    assert (cascade.route(plan, [p1, p2], th).pred == labels).all()
    assert (cascade.route(plan, [p1, p2], [0.5]).pred == labels).mean() < 0.5


def test_rest_threshold_routing_is_tuned_on_p_rest():
    plan = LevelPlan([[1], [2]], routing="threshold")
    labels = np.array([1, 1, 2, 2])
    p1 = np.array([[0.6, 0.4], [0.7, 0.3], [0.55, 0.45], [0.58, 0.42]])  # "rest" never wins the argmax
    p2 = np.ones((4, 1))
    assert (cascade.route(LevelPlan([[1], [2]]), [p1, p2]).pred == 1).all()
    th = cascade.tune_thresholds(plan, [p1, p2], labels)
    assert (cascade.route(plan, [p1, p2], th).pred == labels).all()


# ------------------------------------------------------------------ the two accuracies
def test_estimated_vs_end_to_end_accuracy():
    plan, probs, labels = _rest_case()
    r = cascade.route(plan, probs)
    # end to end: row 0 right (1), row 1 wrong (2 for 1), row 2 right (3), row 3 right (5), row 4 wrong (4 for 2)
    assert (r.pred == labels).mean() == pytest.approx(3 / 5)
    est = cascade.estimated_accuracy(plan, probs, labels)
    # perfect routing: level 1 on labels {1, 1, 2} predicts 1, 2, 1 -> 1/3; level 2 on {3}: 1/1; level 3 on {5}: 1/1
    assert [lv["accuracy"] for lv in est["per_level"]] == pytest.approx([1 / 3, 1.0, 1.0])
    assert [lv["share"] for lv in est["per_level"]] == pytest.approx([3 / 5, 1 / 5, 1 / 5])
    assert est["top1"] == pytest.approx(3 / 5 * 1 / 3 + 1 / 5 + 1 / 5)


def test_estimate_ignores_routing_errors():
    """Level 1 sends every sample to "rest": end to end is 0, the estimate is perfect."""
    plan = LevelPlan([[1], [2]])
    labels = np.array([1, 1, 2, 2])
    p1 = np.array([[0.4, 0.6]] * 4)
    p2 = np.ones((4, 1))
    r = cascade.route(plan, [p1, p2])
    assert (r.pred == labels).mean() == 0.5  # all predicted 2
    assert cascade.estimated_accuracy(plan, [p1, p2], labels)["top1"] == 1.0


def test_level_report_counts_add_up():
    plan, probs, labels = _rest_case()
    r = cascade.route(plan, probs)
    rep = cascade.level_report(plan, r, labels)
    assert [d["kept"] for d in rep] == [2, 1, 2]
    assert sum(d["kept"] for d in rep) == len(labels)
    assert [d["belongs"] for d in rep] == [2, 1, 1]  # row 4 (class 2) ended in level 3
    assert [d["reached"] for d in rep] == [5, 3, 2]
    assert [d["own_total"] for d in rep] == [3, 1, 1]


def test_level_budgets_in_whole_epochs_stay_close_to_the_flat_budget():
    """Rest reading, flat = 4 epochs x 100 samples: levels of 100, 50, 25 samples share 400 images;
    whole epochs with the rounding carried keep the total within one level's epoch of 400."""
    plan = LevelPlan([[1], [2], [3]])
    labels = np.array([1] * 50 + [2] * 25 + [3] * 25)
    plan.budgets = cascade.level_budgets(plan, labels, 400)
    keys = [f"k{i}" for i in range(100)]
    budgets = [cascade.level_job(plan, k, keys, labels, [], [])["budget_images"] for k in (1, 2, 3)]
    sizes = [100, 50, 25]
    assert all(b % n == 0 for b, n in zip(budgets, sizes)), "budgets must be whole epochs"
    assert abs(sum(budgets) - 400) <= max(sizes) / 2
    # without the carry each level would round 400/175*n the same way: 2 epochs each = 350
    assert sum(budgets) != 350


def test_hard_reading_carries_what_earlier_levels_actually_saw():
    plan = LevelPlan([[1], [2]], mode="hard", budgets=[200, 100])
    keys, labels = ["a", "b", "c", "d"], [1, 2, 2, 2]
    job = cascade.level_job(plan, 2, keys, labels, [], [], missed={"train": ["b", "c", "d"]}, seen_before=[260])
    assert job["budget_images"] == 3 * 13  # 100 planned - 60 overspent by level 1 = 40 -> 13 epochs of 3
