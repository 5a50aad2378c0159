"""Posterior routing on hand-made probabilities, and levels planned by a count-ratio bound."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cbedtdc.routing_posterior import plan_levels_ratio, posterior, posterior_matrix

LEVELS = [[14, 225], [1, 2], [62, 15, 12]]


def dirichlet_levels(rng, n, levels=LEVELS):
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
    r = posterior(LEVELS, [p1, p2, p3])
    assert r.pred.tolist() == [14, 2, 14, 12]
    assert r.kept.tolist() == [0, 1, 0, 2]
    np.testing.assert_allclose(r.conf, [0.50, 0.48, 0.35, 0.576])
    assert r.reached.tolist() == [[True, False, False], [True, True, False], [True, False, False],
                                  [True, True, True]]
    np.testing.assert_allclose(r.joint[3], [0.05, 0.05, 0.09, 0.09, 0.072, 0.072, 0.576])
    assert r.classes.tolist() == [14, 225, 1, 2, 62, 15, 12]


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
    uniform = {c: 5 for lv in LEVELS for c in lv}
    assert posterior(LEVELS, probs, prior=uniform).pred.tolist() == posterior(LEVELS, probs).pred.tolist()


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
    r = posterior(LEVELS, probs)
    sets = r.kept_sets()
    assert sorted(np.concatenate(sets).tolist()) == list(range(1000))
    assert sum(len(s) for s in sets) == 1000 and all(len(s) for s in sets)
    owner = {c: k for k, lv in enumerate(LEVELS) for c in lv}
    assert r.kept.tolist() == [owner[int(c)] for c in r.pred]
    np.testing.assert_allclose(posterior_matrix(LEVELS, probs).sum(1), 1.0)  # the P(c) form a distribution


def test_bad_probabilities_are_reported():
    rng = np.random.default_rng(3)
    probs = dirichlet_levels(rng, 4)
    with pytest.raises(ValueError, match=r"level 2: probabilities of shape \(4, 2\), expected \(N, 3\)"):
        posterior(LEVELS, [probs[0], probs[1][:, :2], probs[2]])
    with pytest.raises(ValueError, match="level 3: 3 samples, level 1 has 4"):
        posterior(LEVELS, [probs[0], probs[1], probs[2][:3]])
    with pytest.raises(ValueError, match="got probabilities of 2 levels, the plan has 3"):
        posterior(LEVELS, probs[:2])
    with pytest.raises(ValueError, match="a class appears in two levels"):
        posterior([[1, 2], [2]], [np.ones((1, 3)) / 3, np.ones((1, 1))])
    with pytest.raises(ValueError, match="prior has 2 entries, the levels have 7 classes"):
        posterior(LEVELS, probs, prior=[1, 2])


def test_ratio_levels_respect_the_bound_and_the_order(caplog):
    rng = np.random.default_rng(4)
    for trial in range(50):
        n = int(rng.integers(2, 40))
        counts = {int(c): int(v) for c, v in zip(rng.permutation(230)[:n], rng.lognormal(4, 1.5, n).astype(int) + 1)}
        ratio = float(rng.uniform(1.5, 20))
        with caplog.at_level(logging.WARNING, logger="cbedtdc.routing_posterior"):
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
