"""The one XGBoost implementation on hand-made features: targets of a job, learning, absent classes, the same
head for the same seed."""

import numpy as np
import pytest

from cbedtdc.heads.booster import booster_probs, fit_booster
from cbedtdc.train.sampling import job_targets

pytest.importorskip("xgboost")


def test_targets_follow_the_job_outputs():
    t, keep = job_targets([14, 225, 62, 1], [225, 14], rest=True)
    assert t.tolist() == [1, 0, 2, 2] and keep.all()
    t, keep = job_targets([14, 225, 62], [225, 14], rest=False)
    assert keep.tolist() == [True, True, False]


def test_booster_learns_separable_features_with_an_absent_class():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 8) * 5
    y = np.repeat([0, 1, 3], 30)  # output 2 never occurs in training (e.g. a class without samples)
    x = centers[y] + rng.normal(size=(len(y), 8))
    booster = fit_booster(x, y, 4, params={"n_estimators": 30}, seed=0, dev=(x[::3], y[::3]), threads=1)
    p = booster_probs(booster, x)
    assert p.shape == (90, 4)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(1) == y).mean() > 0.95
    again = booster_probs(fit_booster(x, y, 4, params={"n_estimators": 30}, seed=0,
                                                        dev=(x[::3], y[::3]), threads=1), x)
    assert np.array_equal(p, again), "same seed, same head"
