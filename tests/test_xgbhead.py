"""CNN-XGBoost head on hand-made features: targets of a job, learning, absent classes, early stopping."""

import numpy as np
import pytest

from cbedtdc import xgbhead

pytest.importorskip("xgboost")


def test_targets_follow_the_job_outputs():
    t, keep = xgbhead.job_targets([14, 225, 62, 1], [225, 14], rest=True)
    assert t.tolist() == [1, 0, 2, 2] and keep.all()
    t, keep = xgbhead.job_targets([14, 225, 62], [225, 14], rest=False)
    assert keep.tolist() == [True, True, False]


def test_booster_learns_separable_features_with_an_absent_class():
    rng = np.random.default_rng(0)
    centers = np.eye(4, 8) * 5
    y = np.repeat([0, 1, 3], 30)  # output 2 never occurs in training (e.g. a class without samples)
    x = centers[y] + rng.normal(size=(len(y), 8))
    booster = xgbhead.fit_booster(x, y, 4, params={"n_estimators": 30}, seed=0, dev=(x[::3], y[::3]), threads=1)
    p = xgbhead.predict_booster(booster, x)
    assert p.shape == (90, 4)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert (p.argmax(1) == y).mean() > 0.95
    again = xgbhead.predict_booster(xgbhead.fit_booster(x, y, 4, params={"n_estimators": 30}, seed=0,
                                                        dev=(x[::3], y[::3]), threads=1), x)
    assert np.array_equal(p, again), "same seed, same head"
