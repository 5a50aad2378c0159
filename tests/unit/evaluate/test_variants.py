"""The headline flat model of summary.json: the best flat variant on dev, a flat CNN or a head on its features."""

from __future__ import annotations

import numpy as np

from cbedtdc import metrics
from cbedtdc.evaluate import TestSet, Variants, headline_flat

CLASSES = [1, 2, 3]
Y = np.array([1, 1, 2, 2, 3, 3])


def _variants():
    ts = TestSet(keys=[f"k{i}" for i in range(6)], labels=Y, materials=np.arange(6), dev=[],
                  train_labels=np.array([1] * 50 + [2] * 30 + [3] * 5), n_excluded=0, kw={})
    return Variants(ts, CLASSES, {1: 50, 2: 30, 3: 5})


def _score(pred):
    return metrics.score(Y, np.asarray(pred), CLASSES)


def _setup(cnn_dev, head_dev):
    v = _variants()
    cnn_pred, head_pred = [1, 1, 2, 1, 1, 1], [1, 1, 2, 2, 3, 1]
    cnn = {**_score(cnn_pred), "dev_balanced_accuracy": cnn_dev, "images_seen": 1000, "loss": "ce"}
    v.add("flat/ce/cnn", "flat", cnn, cnn_pred, dev_ba=cnn_dev, backbone="ce", head="cnn")
    head = {**_score(head_pred), "dev_balanced_accuracy": head_dev, "images_seen": 1000, "loss": "ce",
            "head": "crt", "head_images": 7}
    v.add("flat/ce/crt", "flat", head, head_pred, dev_ba=head_dev, backbone="ce", head="crt")
    return v, {"ce": cnn}, {"ce": np.asarray(cnn_pred)}, {"flat/ce/crt": head}


def test_a_head_that_wins_on_dev_is_the_headline_flat_model():
    v, by_loss, preds, heads = _setup(cnn_dev=0.30, head_dev=0.40)
    flat, recall = headline_flat(v, by_loss, preds, "ce", heads)
    assert flat["model"] == "flat/ce/crt" and flat["head"] == "crt" and flat["loss"] == "ce"
    assert flat["balanced_accuracy"] == heads["flat/ce/crt"]["balanced_accuracy"]
    assert flat["images_seen"] == 1000, "the budget of a head is its backbone's images"
    assert set(recall) == {"ce", "ce_crt"} and list(recall["ce_crt"]) == [1, 1, 2, 2, 3, 1]
    assert "heads.variants" in flat["selected_by"]


def test_the_cnn_wins_ties_and_is_the_headline_without_heads():
    v, by_loss, preds, heads = _setup(cnn_dev=0.40, head_dev=0.40)
    flat, recall = headline_flat(v, by_loss, preds, "ce", heads)
    assert flat["model"] == "flat/ce/cnn" and flat["head"] == "cnn" and set(recall) == {"ce"}
    v = _variants()
    cnn = {**_score([1] * 6), "dev_balanced_accuracy": 0.2, "images_seen": 10, "loss": "ce"}
    v.add("flat/ce/cnn", "flat", cnn, [1] * 6, dev_ba=0.2)
    flat, _ = headline_flat(v, {"ce": cnn}, {"ce": np.ones(6)}, "ce", {})
    assert flat["model"] == "flat/ce/cnn" and flat["selected_by"] == "dev balanced_accuracy among flat.losses"


def test_results_table_names_a_headline_head():
    v, by_loss, preds, heads = _setup(cnn_dev=0.30, head_dev=0.40)
    flat, _ = headline_flat(v, by_loss, preds, "ce", heads)
    tdc = {"mode": "rest", "levels": [[1], [2, 3]], "routing": "posterior", **_score([1] * 6),
           "estimated_top1": 0.5, "images_seen": 1000}
    text = metrics.results_table([{"chance": {"majority": 0.3, "prior": 0.3, "balanced": 1 / 3}, "flat": flat,
                                   "flat_by_loss": by_loss, "tdc": tdc, "n_test": 6, "n_test_materials": 6,
                                   "bootstrap": {"resamples": 0}, "data": "generated"}])
    assert "| flat, ce |" in text and "| flat, ce + crt head (best flat on dev) | 1000 |" in text
