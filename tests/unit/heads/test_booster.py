"""CNN-XGBoost head on hand-made features: targets of a job, learning, absent classes, early stopping, and
heads fitted from features files (the job's keys selected, missing keys and stale files refused)."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cbedtdc.features import FEATURES_FORMAT, FeaturesError
from cbedtdc.heads import fit_head
from cbedtdc.heads.booster import booster_probs, fit_booster
from cbedtdc.heads.jobs import fit_job_head, job_head_probs
from cbedtdc.train.sampling import job_targets
from cbedtdc.train import read_keys
from conftest import REPO

CLI = REPO / "workflow_scripts" / "xgboost_head.py"

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


def write_features(path, split, labels, *, classes, rest, sha="a" * 64, seed=0):
    """A complete features file of separable clusters (one per space group), as extract_to_file writes it."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    groups = sorted(set(labels.tolist()))
    feats = np.stack([5.0 * np.eye(8)[groups.index(int(c))] + rng.normal(0, 0.5, 8) for c in labels])
    keys = [f"{split}.h5/{i}" for i in range(len(labels))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "x") as fh:
        fh.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("labels", data=labels)
        fh.create_dataset("features", data=feats.astype(np.float32))
        fh.attrs.update({"format": FEATURES_FORMAT, "split": split, "model": "results/tdc/level_1/best.pt",
                         "model_sha256": sha, "model_meta": json.dumps({"classes": classes, "rest": rest}),
                         "dim": 8, "n": len(labels), "complete": True})
    return keys, feats.astype(np.float32), labels


@pytest.fixture
def level_features(tmp_path):
    """train.h5 / dev.h5 of every sample of the split, through a rest-reading level of classes [225, 14]."""
    d = tmp_path / "features" / "level_1"
    train = write_features(d / "train.h5", "train", np.repeat([14, 225, 62, 1], 20), classes=[225, 14], rest=True)
    dev = write_features(d / "dev.h5", "dev", np.repeat([14, 225, 62, 1], 6), classes=[225, 14], rest=True, seed=1)
    return d, train, dev


def test_head_from_features_selects_exactly_the_jobs_keys(level_features, tmp_path):
    d, (keys, feats, labels), (dkeys, dfeats, dlabels) = level_features
    rng = np.random.default_rng(3)
    job = sorted(rng.choice(len(keys), 37, replace=False).tolist())  # the level's subset of the split
    shuffled = [keys[i] for i in rng.permutation(job)]  # key order of the CSV does not matter, the split's does
    dev_job = list(range(0, len(dkeys), 2))
    params = {"n_estimators": 15, "subsample": 1.0}
    meta = fit_job_head(d / "train.h5", d / "dev.h5", tmp_path / "head.json", train_keys=shuffled,
                        dev_keys=[dkeys[i] for i in dev_job], params=params, seed=0, threads=1)
    info = meta["info"]
    assert info["classes"] == [225, 14] and info["rest"] and meta["n_classes"] == 3
    assert info["n_train"] == 37 and info["n_dev"] == len(dev_job)  # rest reading: every sample is a target
    # the same head fitted by hand on exactly those rows: same predictions (any other row would change them)
    t, _ = job_targets(labels[job], [225, 14], True)
    td, _ = job_targets(dlabels[dev_job], [225, 14], True)
    ref = fit_head(feats[job], t, 3, spec={"kind": "xgboost", "xgboost": params, "threads": 1, "temperature": False},
                   dev=(dfeats[dev_job], td), seed=0)
    got_keys, p = job_head_probs(tmp_path / "head.json", d / "train.h5", "train")
    assert got_keys == keys
    np.testing.assert_array_equal(p, ref.predict_proba(feats))


def test_flat_head_from_features_keeps_the_samples_of_its_classes(tmp_path):
    d = tmp_path / "features" / "flat" / "ce"
    write_features(d / "train.h5", "train", np.repeat([14, 225, 99], 15), classes=[225, 14], rest=False)
    write_features(d / "dev.h5", "dev", np.repeat([14, 225, 99], 5), classes=[225, 14], rest=False, seed=1)
    meta = fit_job_head(d / "train.h5", d / "dev.h5", tmp_path / "head.json", params={"n_estimators": 50},
                        threads=1)
    info = meta["info"]
    assert (info["n_train"], info["n_dev"], meta["n_classes"]) == (30, 10, 2)  # group 99: not an output
    _, p = job_head_probs(tmp_path / "head.json", d / "dev.h5", "dev")
    assert p.shape == (15, 2)  # every row of the file; rows of group 99 are the caller's to drop
    assert (p[:10].argmax(1) == [1] * 5 + [0] * 5).mean() >= 0.9  # 14 is output 1 of [225, 14]


def test_a_key_missing_from_the_features_fails_naming_file_and_key(level_features, tmp_path):
    d, (keys, _, _), _ = level_features
    csv = tmp_path / "train_keys.csv"
    csv.write_text("key\n" + "\n".join(keys[:5] + ["other.h5/7"]) + "\n")
    with pytest.raises(FeaturesError, match=r"level_1/train\.h5: 1 of the 6 keys asked for are not in it "
                                            r"\(e\.g\. other\.h5/7\).*rerun its features rule.*train_keys\.csv"):
        fit_job_head(d / "train.h5", d / "dev.h5", tmp_path / "head.json", train_keys=read_keys(csv),
                         train_keys_source=str(csv), threads=1)
    assert not (tmp_path / "head.json").exists()
    # the CLI: one line naming the file and the key, exit status 2
    res = subprocess.run([sys.executable, str(CLI), "--train", str(d / "train.h5"), "--dev", str(d / "dev.h5"),
                          "--train-keys", str(csv), "--out", str(tmp_path / "cli.json"), "--threads", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "FeaturesError" in errors[0] and "other.h5/7" in errors[0], res.stderr
    assert not (tmp_path / "cli.json").exists()


def test_head_refuses_features_of_another_checkpoint(level_features, tmp_path):
    d, _, _ = level_features
    fit_job_head(d / "train.h5", d / "dev.h5", tmp_path / "head.json", params={"n_estimators": 5}, threads=1)
    other = tmp_path / "other" / "test.h5"
    write_features(other, "test", np.repeat([14, 225], 3), classes=[225, 14], rest=True, sha="b" * 64)
    with pytest.raises(ValueError, match=r"test\.h5 was extracted through another checkpoint.*rerun its features"):
        job_head_probs(tmp_path / "head.json", other, "test")
    stale = tmp_path / "stale" / "test.h5"
    write_features(stale, "test", np.repeat([14, 225], 3), classes=[14, 225, 1], rest=False)
    with pytest.raises(ValueError, match=r"fitted for outputs \[225, 14\] rest=True.*rerun its xgboost rule"):
        job_head_probs(tmp_path / "head.json", stale, "test")
