"""The mlp head: it learns what a linear head cannot, with the linear head's losses and samplers; the same seed
gives the same head; it saves, reloads and predicts identically; bad options are named. And the nonlinear heads
(mlp, XGBoost with class weights) on a head rule's join of two feature sources."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cbedtdc.config import schema_property
from cbedtdc.heads import KINDS, HeadError, fit_head, load_head, resolve_spec
from cbedtdc.heads.jobs import flat_head_probs, run_features, train_flat_head
from cbedtdc.heads.mlp import hidden_features
from cbedtdc.metrics import balanced_accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_jobs import CLASSES, COUNTS, write_features  # noqa: E402

MLP = {"kind": "mlp", "hidden": 32, "batch_size": 64, "epochs": 40, "threads": 1}


def xor(counts, *, seed, dim=6):
    """Four Gaussian clusters at (+-3, +-3) in the first two of ``dim`` features, class = the XOR of the signs
    (``counts[c]`` samples of class c, half in each of its clusters): no hyperplane separates the classes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    side = rng.integers(0, 2, len(y)) * 2 - 1
    X = rng.normal(0.0, 0.6, size=(len(y), dim))
    X[:, 0] += 3.0 * side
    X[:, 1] += 3.0 * side * np.where(y == 0, 1, -1)
    return (X + 2.0).astype(np.float32), y


TRAIN, DEV, TEST = xor([200, 200], seed=0), xor([60, 60], seed=1), xor([200, 200], seed=2)


def test_an_mlp_separates_what_a_linear_head_cannot():
    linear = fit_head(*TRAIN, 2, spec={**MLP, "kind": "linear"}, seed=0)
    mlp = fit_head(*TRAIN, 2, spec=MLP, seed=0)
    lin_acc = np.mean(linear.predict(TEST[0]) == TEST[1])
    mlp_acc = np.mean(mlp.predict(TEST[0]) == TEST[1])
    assert lin_acc < 0.7, f"XOR is not linearly separable, yet the linear head scored {lin_acc}"
    assert mlp_acc > 0.97, mlp_acc
    assert [w.shape for w, _ in mlp.hidden] == [(32, 6)] and mlp.weight.shape == (2, 32)
    assert linear.hidden == [] and linear.weight.shape == (2, 6)


def test_the_long_tail_losses_and_samplers_raise_the_tail_recall_of_an_mlp():
    """Imbalance 15: plain ce misses the tail cluster pair; each loss, the class-balanced sampler (with ce and
    with logit adjustment) and the post-hoc adjustment recover it, through the linear head's code path."""
    X, y = xor([300, 20], seed=3)
    tries = {"ce": {}, "weighted_ce": {"loss": "weighted_ce"}, "drw": {"loss": "drw"},
             "logit_adjusted": {"loss": "logit_adjusted"}, "balanced_softmax": {"loss": "balanced_softmax"},
             "crt": {"sampler": "class_balanced"}, "crt_la": {"sampler": "class_balanced", "loss": "logit_adjusted"},
             "posthoc": {"posthoc_tau": 1.0}}
    recall = {}
    for name, extra in tries.items():
        head = fit_head(X, y, 2, spec={**MLP, "layers": 2, **extra}, dev=DEV, seed=0)
        assert len(head.hidden) == 2 and head.temperature > 0 and np.isfinite(head.info["train_loss"])
        pred = head.predict(TEST[0])
        recall[name] = [float(np.mean(pred[TEST[1] == c] == c)) for c in (0, 1)]
    for name, (head_class, tail) in recall.items():
        assert head_class > 0.95, recall
        if name != "ce":
            assert tail >= recall["ce"][1] + 0.08, recall


def test_same_seed_same_mlp_other_seed_differs():
    spec = {**MLP, "dropout": 0.3, "sampler": "class_balanced", "layers": 2}
    a, b, c = (fit_head(*TRAIN, 2, spec=spec, seed=s) for s in (0, 0, 1))
    for (wa, ba), (wb, bb) in zip(a.hidden + [(a.weight, a.bias)], b.hidden + [(b.weight, b.bias)]):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ba, bb)
    np.testing.assert_array_equal(a.predict_proba(TEST[0]), b.predict_proba(TEST[0]))
    assert not np.array_equal(a.hidden[0][0], c.hidden[0][0])
    before = torch.random.get_rng_state()
    fit_head(*TRAIN, 2, spec=spec, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before), "fitting leaves torch's global generator alone"


@pytest.mark.parametrize("extra", [{}, {"tau_norm": 1.0, "posthoc_tau": 1.0}])
def test_an_mlp_saves_reloads_and_predicts_identically(extra, tmp_path):
    head = fit_head(*TRAIN, 2, spec={**MLP, "layers": 2, **extra}, dev=DEV, seed=0, info={"classes": [14, 225]})
    assert head.temperature != 1.0, "fitted on dev"
    path = head.save(tmp_path / "head.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["head.pt"], "no temporary file left"
    back = load_head(path)
    np.testing.assert_array_equal(back.predict_proba(TEST[0]), head.predict_proba(TEST[0]))
    np.testing.assert_array_equal(back.predict_proba(TEST[0], calibrated=False),
                                  head.predict_proba(TEST[0], calibrated=False))
    np.testing.assert_array_equal(back.raw_scores(TEST[0]), head.raw_scores(TEST[0]))
    assert back.spec == head.spec and back.temperature == head.temperature and back.info == head.info
    obj = torch.load(path, weights_only=True)
    assert [w.shape for w in obj["hidden_weights"]] == [(32, 6), (32, 32)] and obj["weight"].shape == (2, 32)
    del obj["hidden_weights"][1], obj["hidden_biases"][1]
    torch.save(obj, tmp_path / "cut.pt")
    with pytest.raises(HeadError, match=r"cut\.pt: the head's options ask for 2 hidden layer\(s\), the file holds 1"):
        load_head(tmp_path / "cut.pt")


def test_tau_norm_rescales_the_output_layer_of_an_mlp():
    head = fit_head(*TRAIN, 2, spec={**MLP, "tau_norm": 1.0}, seed=0)
    h = hidden_features(head.hidden, (TEST[0] - head.mean) / head.std)
    w = head.weight / np.linalg.norm(head.weight, axis=1, keepdims=True)
    np.testing.assert_allclose(head.raw_scores(TEST[0]), h @ w.T, rtol=1e-5, atol=1e-5)
    plain = fit_head(*TRAIN, 2, spec=MLP, seed=0)
    np.testing.assert_array_equal(plain.weight, head.weight)  # tau_norm acts at prediction only


@pytest.mark.parametrize("option,value,match", [
    ("hidden", 0, r"head hidden=0: must be >= 1"), ("layers", 0, r"head layers=0: must be >= 1"),
    ("dropout", 1.0, r"head dropout=1.0: must be a probability in \[0, 1\)"),
    ("dropout", -0.1, r"head dropout=-0.1: must be a probability in \[0, 1\)"),
    ("loss", "focal", r"head loss='focal': must be one of ce, weighted_ce, drw, .* for a mlp head")])
def test_bad_mlp_options_are_named(option, value, match):
    with pytest.raises(HeadError, match=match):
        resolve_spec({"kind": "mlp", option: value})


def test_the_schema_offers_every_kind():
    assert tuple(schema_property("tdc", "head", "kind")["enum"]) == KINDS
    assert tuple(schema_property("heads", "variants")["items"]["properties"]["kind"]["enum"]) == KINDS


@pytest.mark.parametrize("spec", [{"kind": "xgboost", "loss": "weighted_ce", "xgboost": {"n_estimators": 20}},
                                  {**MLP, "loss": "logit_adjusted", "sampler": "class_balanced"}],
                         ids=["xgboost_weighted_ce", "mlp"])
def test_nonlinear_heads_fit_on_two_joined_sources(spec, tmp_path):
    """A head rule's [cnn, symmetry]: two features files joined by key, their columns concatenated."""
    dirs = [tmp_path / "features" / "flat" / "ce", tmp_path / "features" / "symmetry"]
    for s, d in enumerate(dirs):
        for seed, split in enumerate(("train", "dev", "test")):
            scale = 1 if split == "train" else 0.5
            write_features(d / f"{split}.h5", split, {c: max(2, int(n * scale)) for c, n in COUNTS.items()},
                           10 * s + seed)
    out = tmp_path / "head" / ("head.json" if spec["kind"] == "xgboost" else "head.pt")
    meta = train_flat_head(dirs, out, CLASSES, spec=spec, seed=0)
    assert [p["path"] for p in meta["info"]["sources"]] == [str(d / "train.h5") for d in dirs]
    keys, p, head = flat_head_probs(out, dirs, "test", CLASSES)
    assert head.dim == 16 and head.spec["loss"] == spec["loss"]
    _, _, y = run_features(dirs, "test", CLASSES)
    assert len(keys) == len(y) and balanced_accuracy(y, np.asarray(CLASSES)[p.argmax(1)], CLASSES) > 0.9
    if spec["kind"] == "mlp":  # a torch head's compute: epochs x fitted samples (not boosting rounds)
        assert meta["info"]["head_images"] == int(head.spec["epochs"]) * meta["info"]["n_fit"]
