"""Flat heads and the shared-backbone cascade on hand-made features files."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cbedtdc.cascade import LevelPlan
from cbedtdc.cascade.routing import PosteriorRule, ThresholdRule, load_rule, tune_thresholds
from cbedtdc.features import FEATURES_FORMAT
from cbedtdc.cascade.shared import (fit_level_heads, load_tdc_heads, tdc_head_probs, train_tdc_heads,
                                    tune_shared_routing)
from cbedtdc.heads.jobs import flat_head_probs, run_features, train_flat_head
from cbedtdc.metrics import balanced_accuracy

CLASSES = [14, 225, 1, 2]
COUNTS = {14: 60, 225: 40, 1: 15, 2: 10, 99: 5}  # 99: not a class of the run


def write_features(path, split, counts, seed):
    """A complete features file of separable clusters, one per class (class 99 is outside the run)."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    centres = {c: 8.0 * np.eye(8)[i] for i, c in enumerate(counts)}
    feats = np.stack([centres[int(c)] + rng.normal(0, 0.5, 8) for c in labels]).astype(np.float32)
    keys = [f"{split}_{i}" for i in range(len(labels))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "x") as fh:
        fh.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("labels", data=labels.astype(np.int64))
        fh.create_dataset("features", data=feats)
        fh.attrs.update({"format": FEATURES_FORMAT, "split": split, "model": "flat/ce/best.pt", "model_sha256": "0",
                         "model_meta": json.dumps({"classes": CLASSES}), "dim": 8, "n": len(labels),
                         "complete": True})


@pytest.fixture
def features(tmp_path):
    d = tmp_path / "features" / "flat" / "ce"
    for seed, split in enumerate(("train", "dev", "test")):
        scale = 1 if split == "train" else 0.5
        write_features(d / f"{split}.h5", split, {c: max(2, int(n * scale)) for c, n in COUNTS.items()}, seed)
    return d


def test_flat_head_beats_chance_and_reloads(features, tmp_path):
    out = tmp_path / "heads" / "crt" / "head.pt"
    meta = train_flat_head(features, out, CLASSES, spec={"sampler": "class_balanced", "epochs": 50, "lr": 0.1}, seed=0)
    assert meta["info"]["classes"] == CLASSES and meta["info"]["head_images"] == 50 * meta["info"]["n_fit"]
    keys, p, _ = flat_head_probs(out, features, "test", CLASSES)
    _, _, y = run_features(features, "test", CLASSES)
    assert len(keys) == len(y) and 99 not in y
    assert balanced_accuracy(y, np.asarray(CLASSES)[p.argmax(1)], CLASSES) > 0.9
    with pytest.raises(ValueError, match="fitted on classes"):
        flat_head_probs(out, features, "test", [14, 225, 1])
    # another class order (the data's count order, say): the same probabilities, columns in that order
    order = [2, 1, 225, 14]
    keys2, p2, _ = flat_head_probs(out, features, "test", order)
    assert keys2 == keys
    np.testing.assert_array_equal(p2, p[:, [CLASSES.index(c) for c in order]])


@pytest.mark.parametrize("mode", ["rest", "hard"])
def test_shared_backbone_levels_route_to_the_right_class(features, mode):
    plan = LevelPlan([[14, 225], [1, 2]], mode=mode)
    _, X, y = run_features(features, "train", CLASSES)
    _, Xd, yd = run_features(features, "dev", CLASSES)
    heads = fit_level_heads(plan, (X, y), (Xd, yd), spec={"epochs": 50, "lr": 0.1}, seed=0)
    assert [h.n_classes for h in heads] == [len(plan.outputs(k)) + plan.has_rest(k) for k in range(2)]
    _, Xt, yt = run_features(features, "test", CLASSES)
    # uncalibrated, the heads alone: the rest reading's posterior, the hard reading's thresholds tuned on dev
    pd = tdc_head_probs(heads, Xd)
    rule = PosteriorRule() if mode == "rest" else ThresholdRule(thresholds=tuple(tune_thresholds(plan, pd, yd)))
    r = rule.route(plan, tdc_head_probs(heads, Xt))
    assert sorted(np.concatenate(r.kept_sets()).tolist()) == list(range(len(yt)))
    assert balanced_accuracy(yt, r.pred, CLASSES) > 0.8  # chance: 0.25


def test_shared_tdc_files_round_trip(features, tmp_path):
    from cbedtdc.cascade.plan import LevelPlan as LP

    levels = tmp_path / "levels.json"
    LP([[14, 225], [1, 2]], counts={c: n for c, n in COUNTS.items() if c in CLASSES}).save(levels)
    heads_dir = tmp_path / "tdc_shared" / "heads"
    manifest = train_tdc_heads(levels, features, heads_dir, spec={"kind": "xgboost", "resample": "smote",
                                                                  "xgboost": {"n_estimators": 10}}, seed=0)
    assert manifest["files"] == ["level_1.json", "level_2.json"] and all(n > 0 for n in manifest["head_images"])
    routing = tmp_path / "tdc_shared" / "routing.json"
    out = tune_shared_routing(levels, heads_dir, features, routing, routing="posterior")
    assert out.name == "posterior" and len(out.temperatures) == 2
    plan = LP.load(levels)
    tuned = load_rule(routing, plan, redo="tune_routing_shared")
    assert tuned == out and tuned.dev == out.dev
    _, heads = load_tdc_heads(heads_dir, plan)
    _, Xt, yt = run_features(features, "test", CLASSES)
    r = tuned.route(plan, tdc_head_probs(heads, Xt))
    assert balanced_accuracy(yt, r.pred, CLASSES) > 0.8
    LP([[14], [225, 1, 2]]).save(levels)
    with pytest.raises(ValueError, match="rerun rule tdc_heads"):
        load_tdc_heads(heads_dir, LP.load(levels))
