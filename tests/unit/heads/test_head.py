"""Heads on features: they learn, the long-tail corrections do what they are for, and every head type
saves, reloads and predicts identically. Synthetic Gaussian features (no backbone needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cbedtdc.calibration import fit_temperature
from cbedtdc.heads import HeadError, fit_head, load_head, resample, resolve_spec

FAST_XGB = {"n_estimators": 40, "max_depth": 3}
SPECS = {
    "linear_ce": {},
    "weighted_ce": {"loss": "weighted_ce"},
    "drw": {"loss": "drw"},
    "logit_adjusted": {"loss": "logit_adjusted"},
    "balanced_softmax": {"loss": "balanced_softmax"},
    "crt": {"sampler": "class_balanced"},
    "tau_norm": {"tau_norm": 1.0},
    "posthoc": {"posthoc_tau": 1.0},
    "smote": {"resample": "smote"},
    "borderline_smote": {"resample": "borderline_smote"},
    "cluster_centroids": {"resample": "cluster_centroids"},
    "xgboost": {"kind": "xgboost", "xgboost": FAST_XGB},
    "xgboost_weighted": {"kind": "xgboost", "loss": "weighted_ce", "xgboost": FAST_XGB},
}
COMMON = {"batch_size": 64, "threads": 1}


def blobs(counts, *, spread, seed, dim=16, centre_seed=0):
    """Gaussian blobs: class ``c`` has ``counts[c]`` samples around a fixed random centre."""
    centres = np.random.default_rng(centre_seed).normal(size=(len(counts), dim)) * spread
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    X = centres[y] + rng.normal(size=(len(y), dim)) + 3.0  # offset: the head standardises
    return X.astype(np.float32), y


def balanced_accuracy(y, pred) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


TRAIN = blobs([120, 60, 30, 15, 8], spread=1.5, seed=1)
DEV = blobs([20] * 5, spread=1.5, seed=2)
TEST = blobs([40] * 5, spread=1.5, seed=3)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_head_beats_chance_widely(name):
    head = fit_head(*TRAIN, 5, spec={**COMMON, **SPECS[name]}, dev=DEV, seed=0)
    proba = head.predict_proba(TEST[0])
    assert proba.shape == (200, 5)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert balanced_accuracy(TEST[1], head.predict(TEST[0])) >= 0.85, "chance is 0.20"
    assert head.info["n_train"] == 233 and head.info["n_dev"] == 100 and head.temperature > 0


@pytest.mark.parametrize("name,suffix", [("linear_ce", ".pt"), ("tau_norm", ".pt"), ("posthoc", ".pt"),
                                         ("smote", ".pt"), ("xgboost", ".json"), ("xgboost_weighted", ".json")])
def test_every_head_type_saves_reloads_and_predicts_identically(name, suffix, tmp_path):
    head = fit_head(*TRAIN, 5, spec={**COMMON, **SPECS[name]}, dev=DEV, seed=0, info={"classes": [14, 225, 1, 2, 5]})
    path = head.save(tmp_path / f"head{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [f"head{suffix}"], "no temporary file left"
    back = load_head(path)
    np.testing.assert_array_equal(back.predict_proba(TEST[0]), head.predict_proba(TEST[0]))
    np.testing.assert_array_equal(back.predict(TEST[0]), head.predict(TEST[0]))
    assert back.spec == head.spec and back.temperature == head.temperature
    assert back.info == head.info and back.info["classes"] == [14, 225, 1, 2, 5]
    if suffix == ".pt":  # a plain dict of tensors and metadata: loads with weights_only=True
        obj = torch.load(path, weights_only=True)
        assert obj["format"] == "cbedtdc-head/1" and obj["weight"].shape == (5, 16)


def test_same_seed_same_head_other_seed_differs():
    spec = {**COMMON, "sampler": "class_balanced", "resample": "smote"}
    a = fit_head(*TRAIN, 5, spec=spec, seed=0)
    b = fit_head(*TRAIN, 5, spec=spec, seed=0)
    c = fit_head(*TRAIN, 5, spec=spec, seed=1)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)
    xa = fit_head(*TRAIN, 5, spec={**COMMON, **SPECS["xgboost"]}, seed=0)
    xb = fit_head(*TRAIN, 5, spec={**COMMON, **SPECS["xgboost"]}, seed=0)
    np.testing.assert_array_equal(xa.predict_proba(TEST[0]), xb.predict_proba(TEST[0]))


def test_long_tail_corrections_raise_balanced_accuracy():
    """Overlapping classes, imbalance 50: plain ce favours the head classes; the corrections recover the tail."""
    counts = [400, 200, 100, 50, 25, 8]
    train = blobs(counts, spread=0.7, seed=5, centre_seed=7)
    test = blobs([200] * 6, spread=0.7, seed=6, centre_seed=7)
    score = {}
    for name in ("linear_ce", "weighted_ce", "drw", "logit_adjusted", "balanced_softmax", "crt", "tau_norm",
                 "posthoc"):
        head = fit_head(*train, 6, spec={**COMMON, **SPECS[name]}, seed=0)
        score[name] = balanced_accuracy(test[1], head.predict(test[0]))
    for name in ("logit_adjusted", "balanced_softmax", "posthoc", "crt", "drw", "tau_norm"):
        assert score[name] >= score["linear_ce"] + 0.03, score


def test_temperature_is_fitted_on_dev_and_keeps_the_argmax():
    plain = fit_head(*TRAIN, 5, spec={**COMMON, "temperature": False}, dev=DEV, seed=0)
    calib = fit_head(*TRAIN, 5, spec=COMMON, dev=DEV, seed=0)
    assert plain.temperature == 1.0 and calib.temperature != 1.0

    def nll(head):
        p = head.predict_proba(DEV[0])
        return -np.mean(np.log(p[np.arange(len(DEV[1])), DEV[1]]))

    assert nll(calib) < nll(plain)
    np.testing.assert_array_equal(calib.predict(TEST[0]), plain.predict(TEST[0]))
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int)) == 1.0


def test_resamplers_balance_the_classes(caplog):
    X, y = blobs([50, 20, 6, 1], spread=2.0, seed=8)
    with caplog.at_level(logging.WARNING, logger="cbedtdc.heads.resample"):
        Xs, ys = resample(X, y, "smote", n_classes=4, seed=0)
    assert np.bincount(ys).tolist() == [50, 50, 50, 1]
    assert "classes [3] have one training sample" in caplog.text
    np.testing.assert_array_equal(Xs[: len(X)], X)  # the originals are kept, synthetic samples appended
    Xc, yc = resample(X, y, "cluster_centroids", n_classes=4, seed=0)
    assert np.bincount(yc).tolist() == [1, 1, 1, 1] and Xc.dtype == np.float32
    _, yt = resample(X, y, "smote", n_classes=4, seed=0, target=30)  # a long tail: grow the small classes only
    assert np.bincount(yt).tolist() == [50, 30, 30, 1]
    _, yt = resample(X, y, "cluster_centroids", n_classes=4, seed=0, target=10)  # shrink the large ones only
    assert np.bincount(yt).tolist() == [10, 10, 6, 1]
    a = resample(X, y, "borderline_smote", n_classes=4, seed=0)
    b = resample(X, y, "borderline_smote", n_classes=4, seed=0)
    np.testing.assert_array_equal(a[0], b[0])
    head = fit_head(X, y, 5, spec={**COMMON, "resample": "smote"}, seed=0)  # class 4 absent from training
    assert head.fit_counts.tolist() == [50, 50, 50, 1, 0] and head.info["counts"] == [50, 20, 6, 1, 0]


def test_bad_inputs_and_files_are_named(tmp_path):
    X, y = TRAIN
    with pytest.raises(HeadError, match=r"feats\.h5: sample 3 has a NaN or infinite feature"):
        fit_head(np.where(np.arange(len(X))[:, None] == 3, np.nan, X), y, 5, source="feats.h5")
    with pytest.raises(HeadError, match=r"labels must be integers in \[0, 4\)"):
        fit_head(X, y, 4)
    with pytest.raises(HeadError, match="unknown head option"):
        resolve_spec({"los": "ce"})
    with pytest.raises(HeadError, match="loss='drw': must be one of ce, weighted_ce for a xgboost head"):
        resolve_spec({"kind": "xgboost", "loss": "drw"})
    with pytest.raises(HeadError, match="neither sampler: class_balanced nor tau_norm"):
        resolve_spec({"kind": "xgboost", "sampler": "class_balanced"})
    head = fit_head(X, y, 5, spec=COMMON, seed=0)
    with pytest.raises(HeadError, match="features have 3 columns, the head was fitted on 16"):
        head.predict(X[:, :3])
    with pytest.raises(HeadError, match="not found"):
        load_head(tmp_path / "none.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(HeadError, match=r"other\.pt: not a cbedtdc-head/1 file"):
        load_head(tmp_path / "other.pt")
    path = head.save(tmp_path / "head.pt")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:300])
    with pytest.raises(HeadError, match=r"cut\.pt: not a readable head file"):
        load_head(tmp_path / "cut.pt")
    xgb_head = fit_head(X, y, 5, spec={**COMMON, **SPECS["xgboost"]}, seed=0)
    with pytest.raises(HeadError, match="give a path ending in .json"):
        xgb_head.save(tmp_path / "head.ubj")
    xgb_head.booster.set_attr(cbedtdc_head=None)
    xgb_head.booster.save_model(str(tmp_path / "bare.json"))
    with pytest.raises(HeadError, match=r"bare\.json: an XGBoost model without cbedtdc-head/1 metadata"):
        load_head(tmp_path / "bare.json")


def test_prior_follows_what_the_head_was_fitted_on():
    X, y = blobs([30, 10, 0, 5], spread=2.0, seed=9)
    natural = fit_head(X, y, 4, spec=COMMON, seed=0)
    np.testing.assert_allclose(natural.prior, np.array([30, 10, 1, 5]) / 46)
    balanced = fit_head(X, y, 4, spec={**COMMON, "sampler": "class_balanced"}, seed=0)
    np.testing.assert_allclose(balanced.prior, np.array([1, 1, 1 / 30, 1]) / (3 + 1 / 30))
    with pytest.raises(HeadError, match="head info must hold JSON types only"):
        fit_head(X, y, 4, spec=COMMON, info={"path": object()})
