"""TDC levels, training sets, routing and the two accuracies on hand-made probabilities."""

import logging

import numpy as np
import pytest

from cbedtdc import cascade
from cbedtdc.cascade import LevelPlan
from cbedtdc.cascade.plan import plan_levels, plan_levels_ratio
from cbedtdc.cascade.routing import (ArgmaxRule, PosteriorRule, ThresholdRule, calibrate, fit_temperatures, posterior,
                                     posterior_matrix)


def thresholds(*t):
    """The threshold rule with these (already tuned) thresholds."""
    return ThresholdRule(thresholds=tuple(t))


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
                   "epochs": 10}  # 20 planned images over 2 samples
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
    r = ArgmaxRule().route(plan, probs)
    assert r.kept.tolist() == [0, 0, 1, 2, 2]
    assert r.pred.tolist() == [1, 2, 3, 5, 4]
    assert r.reached.tolist() == [[True, False, False]] * 2 + [[True, True, False]] + [[True, True, True]] * 2


def test_threshold_routing_equals_a_per_sample_walk_down_the_levels():
    """The threshold rule against a plain loop: each sample goes down until a level does not forward it."""
    rng = np.random.default_rng(0)
    th = [0.7, 0.5]
    for mode in ("rest", "hard"):
        plan = LevelPlan([[1, 2], [3, 4], [5, 6, 7]], mode=mode)
        n = 200
        probs = [rng.dirichlet(np.ones(len(plan.outputs(k)) + plan.has_rest(k)), size=n) for k in range(3)]
        r = thresholds(*th).route(plan, probs)
        for i in range(n):
            for k in range(3):
                p = probs[k][i]
                outs = plan.outputs(k)
                forward = k < 2 and (p[-1] > th[k] if mode == "rest" else p[: len(outs)].max() < th[k])
                if not forward:
                    assert r.kept[i] == k and r.pred[i] == outs[int(np.argmax(p[: len(outs)]))], (mode, i)
                    assert r.reached[i].tolist() == [j <= k for j in range(3)], (mode, i)
                    break
        assert all(len(s) for s in r.kept_sets()), "every level should keep something on random probabilities"


def test_hard_routing_uses_the_thresholds():
    plan = LevelPlan([[1], [2]], mode="hard", hard_outputs="own")
    p1 = np.array([[1.0], [1.0]])
    p2 = np.array([[1.0], [1.0]])
    # a one-class level is always sure: it keeps everything at any threshold <= 1
    assert thresholds(1.0).route(plan, [p1, p2]).kept.tolist() == [0, 0]
    plan2 = LevelPlan([[1, 2], [3]], mode="hard")
    p1 = np.array([[0.95, 0.05], [0.55, 0.45], [0.7, 0.3]])
    p2 = np.array([[0.1, 0.1, 0.8], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    r = thresholds(0.6).route(plan2, [p1, p2])
    assert r.kept.tolist() == [0, 1, 0]
    assert r.pred.tolist() == [1, 2, 1]
    with pytest.raises(ValueError, match="0 thresholds for 2 levels"):
        ThresholdRule().route(plan2, [p1, p2])
    # the hard reading has no "rest" output: the rule of tdc.routing becomes the threshold rule
    assert cascade.rule_for("posterior", "hard") == ThresholdRule()
    with pytest.raises(ValueError, match="routing rule argmax for a hard-reading cascade, which routes with threshold"):
        ArgmaxRule().route(plan2, [p1, p2])


def test_route_rejects_probabilities_of_the_wrong_shape():
    plan, probs, _ = _rest_case()
    with pytest.raises(ValueError, match=r"level 2: probabilities of shape \(5, 3\), expected \(N, 2\)"):
        ArgmaxRule().route(plan, [probs[0], probs[0], probs[2]])


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
    assert (thresholds(*th).route(plan, [p1, p2]).pred == labels).all()
    assert (thresholds(0.5).route(plan, [p1, p2]).pred == labels).mean() < 0.5


def test_rest_threshold_routing_is_tuned_on_p_rest():
    plan = LevelPlan([[1], [2]])
    labels = np.array([1, 1, 2, 2])
    p1 = np.array([[0.6, 0.4], [0.7, 0.3], [0.55, 0.45], [0.58, 0.42]])  # "rest" never wins the argmax
    p2 = np.ones((4, 1))
    assert (ArgmaxRule().route(plan, [p1, p2]).pred == 1).all()
    th = cascade.tune_thresholds(plan, [p1, p2], labels)
    assert (thresholds(*th).route(plan, [p1, p2]).pred == labels).all()
    # tuned on dev by the rule itself (temperatures, then thresholds), and the plan never holds a routing
    tuned = cascade.rule_for("threshold").tune(plan, [p1, p2], labels)
    assert (tuned.route(plan, [p1, p2]).pred == labels).all() and tuned.dev["balanced_accuracy"] == 1.0
    assert "routing" not in plan.to_json()


# ------------------------------------------------------------------ the two accuracies
def test_estimated_vs_end_to_end_accuracy():
    plan, probs, labels = _rest_case()
    r = ArgmaxRule().route(plan, probs)
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
    r = ArgmaxRule().route(plan, [p1, p2])
    assert (r.pred == labels).mean() == 0.5  # all predicted 2
    assert cascade.estimated_accuracy(plan, [p1, p2], labels)["top1"] == 1.0


def test_level_report_counts_add_up():
    plan, probs, labels = _rest_case()
    r = ArgmaxRule().route(plan, probs)
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
    epochs = [cascade.level_job(plan, k, keys, labels, [], [])["epochs"] for k in (1, 2, 3)]
    sizes = [100, 50, 25]
    assert all(isinstance(e, int) and e >= 1 for e in epochs), "a level's budget is whole epochs"
    budgets = [e * n for e, n in zip(epochs, sizes)]
    assert abs(sum(budgets) - 400) <= max(sizes) / 2
    # without the carry each level would round 400/175*n the same way: 2 epochs each = 350
    assert sum(budgets) != 350


def test_level_job_without_budgets_asks_to_rerun_the_plan():
    plan = LevelPlan([[1], [2, 3]])
    with pytest.raises(ValueError, match=r"budgets \[\] for 2 levels; rerun rule plan_levels"):
        cascade.level_job(plan, 1, ["a", "b", "c"], [1, 2, 3], [], [])


def test_write_level_job_gives_the_budget_once_as_epochs(tmp_path):
    """args.txt holds the level's budget once, as --epochs (no --budget-images for the engine to convert)."""
    from cbedtdc.io import write_csv

    rows = [{"key": f"k{i}", "space_group": g} for i, g in enumerate([1] * 6 + [2] * 3 + [3] * 3)]
    write_csv(tmp_path / "train.csv", rows, ["key", "space_group"])
    write_csv(tmp_path / "dev.csv", rows[:2], ["key", "space_group"])
    plan = cascade.write_plan(tmp_path / "train.csv", [1, 2, 3], tmp_path / "levels.json", level_sizes=[1, 2],
                              epochs=4)
    assert plan.flat_images == 48 and sum(plan.budgets) == 48
    job = cascade.write_level_job(tmp_path / "levels.json", 1, tmp_path / "train.csv", tmp_path / "dev.csv",
                                  tmp_path / "job")
    args = (tmp_path / "job" / "args.txt").read_text().split()
    assert args == ["--classes", "1", "--rest", "--epochs", str(job["epochs"])]
    assert job["epochs"] == round(plan.budgets[0] / 12)
    # train.images > 0: the flat baseline's budget is that many images, whatever the training set's size
    plan = cascade.write_plan(tmp_path / "train.csv", [1, 2, 3], tmp_path / "levels.json", level_sizes=[1, 2],
                              epochs=4, images=30)
    assert plan.flat_images == 30 and sum(plan.budgets) == 30


def test_hard_reading_carries_what_earlier_levels_actually_saw():
    plan = LevelPlan([[1], [2]], mode="hard", budgets=[200, 100])
    keys, labels = ["a", "b", "c", "d"], [1, 2, 2, 2]
    job = cascade.level_job(plan, 2, keys, labels, [], [], missed={"train": ["b", "c", "d"]}, seen_before=[260])
    assert job["epochs"] == 13  # 100 planned - 60 overspent by level 1 = 40 images -> 13 epochs of 3


# posterior routing and ratio levels
POST_LEVELS = [[14, 225], [1, 2], [62, 15, 12]]


def dirichlet_levels(rng, n, levels=POST_LEVELS):
    """Random probabilities for each level (own classes + rest, last level without rest)."""
    return [rng.dirichlet(np.ones(len(lv) + (k < len(levels) - 1)), size=n) for k, lv in enumerate(levels)]


def test_known_answer_three_levels():
    p1 = np.array([[0.50, 0.10, 0.40],   # keeps 14 at level 1 (0.50)
                   [0.30, 0.10, 0.60],   # rest wins at level 1, and level 2 is sure of 2
                   [0.35, 0.05, 0.60],   # rest wins at levels 1 and 2, yet 14 (0.35) beats all later classes
                   [0.05, 0.05, 0.90]])
    p2 = np.array([[0.30, 0.30, 0.40],
                   [0.10, 0.80, 0.10],   # P(2) = 0.6 * 0.8 = 0.48 > P(14) = 0.30
                   [0.10, 0.10, 0.80],   # P(1) = 0.06, P(rest2) = 0.48 -> P(62) = 0.48 * 0.6 = 0.288 < 0.35
                   [0.10, 0.10, 0.80]])  # rest2 = 0.72
    p3 = np.array([[1 / 3, 1 / 3, 1 / 3],
                   [0.20, 0.20, 0.60],
                   [0.60, 0.20, 0.20],
                   [0.10, 0.10, 0.80]])  # P(12) = 0.9 * 0.8 * 0.8 = 0.576
    r = posterior(POST_LEVELS, [p1, p2, p3])
    assert r.pred.tolist() == [14, 2, 14, 12]
    assert r.kept.tolist() == [0, 1, 0, 2]
    np.testing.assert_allclose(r.conf, [0.50, 0.48, 0.35, 0.576])
    assert r.reached.tolist() == [[True, False, False], [True, True, False], [True, False, False],
                                  [True, True, True]]
    np.testing.assert_allclose(r.joint[3], [0.05, 0.05, 0.09, 0.09, 0.072, 0.072, 0.576])
    assert r.joint.shape == (4, 7)  # columns in level order: 14, 225, 1, 2, 62, 15, 12


def test_prior_correction_favours_rare_classes():
    levels = [[14], [8]]
    p1 = np.array([[0.6, 0.4]])
    p2 = np.array([[1.0]])
    assert posterior(levels, [p1, p2]).pred.tolist() == [14]
    # training prior 9:1 -> the Bayes rule for balanced accuracy compares 0.6 / 0.9 with 0.4 / 0.1
    assert posterior(levels, [p1, p2], prior={14: 900, 8: 100}).pred.tolist() == [8]
    assert posterior(levels, [p1, p2], prior=[0.9, 0.1]).pred.tolist() == [8]
    rng = np.random.default_rng(0)
    probs = dirichlet_levels(rng, 200)
    uniform = {c: 5 for lv in POST_LEVELS for c in lv}
    assert posterior(POST_LEVELS, probs, prior=uniform).pred.tolist() == posterior(POST_LEVELS, probs).pred.tolist()


def test_one_level_is_the_flat_argmax():
    rng = np.random.default_rng(1)
    classes = [3, 7, 9, 11, 20]
    p = rng.dirichlet(np.ones(5), size=500)
    r = posterior([classes], [p])
    assert r.pred.tolist() == np.asarray(classes)[p.argmax(1)].tolist()
    assert (r.kept == 0).all() and r.reached.all()
    np.testing.assert_array_equal(r.joint, p)


def test_kept_sets_partition_and_mass_is_kept():
    rng = np.random.default_rng(2)
    probs = dirichlet_levels(rng, 1000)
    r = posterior(POST_LEVELS, probs)
    sets = r.kept_sets()
    assert sorted(np.concatenate(sets).tolist()) == list(range(1000))
    assert sum(len(s) for s in sets) == 1000 and all(len(s) for s in sets)
    owner = {c: k for k, lv in enumerate(POST_LEVELS) for c in lv}
    assert r.kept.tolist() == [owner[int(c)] for c in r.pred]
    np.testing.assert_allclose(posterior_matrix(POST_LEVELS, probs).sum(1), 1.0)  # the P(c) form a distribution


def test_bad_probabilities_are_reported():
    rng = np.random.default_rng(3)
    probs = dirichlet_levels(rng, 4)
    with pytest.raises(ValueError, match=r"level 2: probabilities of shape \(4, 2\), expected \(N, 3\)"):
        posterior(POST_LEVELS, [probs[0], probs[1][:, :2], probs[2]])
    with pytest.raises(ValueError, match="level 3: 3 samples, level 1 has 4"):
        posterior(POST_LEVELS, [probs[0], probs[1], probs[2][:3]])
    with pytest.raises(ValueError, match="got probabilities of 2 levels, the plan has 3"):
        posterior(POST_LEVELS, probs[:2])
    with pytest.raises(ValueError, match="a class appears in two levels"):
        posterior([[1, 2], [2]], [np.ones((1, 3)) / 3, np.ones((1, 1))])
    with pytest.raises(ValueError, match="prior has 2 entries, the levels have 7 classes"):
        posterior(POST_LEVELS, probs, prior=[1, 2])


def test_ratio_levels_respect_the_bound_and_the_order(caplog):
    rng = np.random.default_rng(4)
    for trial in range(50):
        n = int(rng.integers(2, 40))
        counts = {int(c): int(v) for c, v in zip(rng.permutation(230)[:n], rng.lognormal(4, 1.5, n).astype(int) + 1)}
        ratio = float(rng.uniform(1.5, 20))
        with caplog.at_level(logging.WARNING, logger="cbedtdc.cascade.plan"):
            caplog.clear()
            levels = plan_levels_ratio(counts, ratio)
        flat = [c for lv in levels for c in lv]
        assert sorted(flat) == sorted(counts) and len(set(flat)) == n
        assert [counts[c] for c in flat] == sorted(counts.values(), reverse=True), "levels follow frequency"
        assert all(len(lv) >= 2 for lv in levels), levels
        over = [lv for lv in levels if counts[lv[0]] / counts[lv[-1]] > ratio]
        assert len(over) <= len(caplog.records), "a level over the bound only after a logged merge"
        if not caplog.records:
            # greedy: no level could have taken the next level's first class
            for a, b in zip(levels, levels[1:]):
                assert counts[a[0]] > ratio * counts[b[0]]


def test_ratio_levels_edge_cases():
    assert plan_levels_ratio({1: 10, 2: 9, 3: 8}, 1e9) == [[1, 2, 3]]
    assert plan_levels_ratio({5: 3}, 2) == [[5]]
    assert plan_levels_ratio({1: 0, 2: 0, 3: 100, 4: 90}, 2) == [[3, 4], [1, 2]]  # no sample counts as 1
    assert plan_levels_ratio({1: 4, 2: 4, 3: 4, 4: 4}, 1, classes=[3, 1, 4, 2]) == [[3, 1, 4, 2]]
    with pytest.raises(ValueError, match=r"tdc.max_ratio=0.5: must be >= 1"):
        plan_levels_ratio({1: 4, 2: 2}, 0.5)
    with pytest.raises(ValueError, match="no class to plan"):
        plan_levels_ratio({}, 2)


def test_the_posterior_rule_routes_by_the_posterior():
    rng = np.random.default_rng(5)
    probs = dirichlet_levels(rng, 300)
    prior = {c: 10 * (i + 1) for i, c in enumerate(LevelPlan(POST_LEVELS).classes)}
    plan = LevelPlan(POST_LEVELS, counts=prior)
    r = PosteriorRule().route(plan, probs)
    direct = posterior(POST_LEVELS, probs)
    assert r.pred.tolist() == direct.pred.tolist() and r.kept.tolist() == direct.kept.tolist()
    assert (r.kept == plan.level_of(r.pred)).all(), "the level that keeps a sample owns its predicted class"
    assert ArgmaxRule().route(plan, probs).pred.tolist() != r.pred.tolist(), "argmax routing is another rule"
    assert PosteriorRule(prior=True).route(plan, probs).pred.tolist() == posterior(
        POST_LEVELS, probs, prior=prior).pred.tolist()


def test_calibration_fits_one_temperature_per_level_on_dev():
    # level 1 is over-confident: 0.99 on its argmax but right only 3 times in 4
    plan = LevelPlan([[1, 2], [3, 4]])
    y = np.array([1, 1, 1, 3] * 50)
    p1 = np.tile([[0.99, 0.005, 0.005]], (200, 1))  # always says class 1
    p2 = np.tile([[0.5, 0.5]], (200, 1))
    t = fit_temperatures(plan, [p1, p2], y)
    cal = calibrate([p1, p2], t)
    assert t[0] > 1.5, t  # softened
    np.testing.assert_allclose(cal[0][0, 0], 0.75, atol=0.01)
    np.testing.assert_allclose(cal[1], p2)  # uniform stays uniform
    assert np.array_equal(calibrate([p1], None)[0], p1)
    with pytest.raises(ValueError, match="2 temperatures for 1 levels"):
        calibrate([p1], [1.0, 2.0])


def test_ratio_is_a_planning_mode():
    counts = {14: 500, 225: 400, 1: 300, 2: 120, 62: 100, 5: 30, 8: 20}
    assert plan_levels(counts, list(counts), how="ratio", max_ratio=3) == [[14, 225, 1], [2, 62], [5, 8]]
    with pytest.raises(ValueError, match="tdc.levels=ratio needs tdc.max_ratio"):
        plan_levels(counts, list(counts), how="ratio")
