"""Adding a feature source as a newcomer would (docs/architecture.md, "Adding a feature source"): a module defining
``SOURCE``, one entry in ``cbedtdc.features.registry.SOURCES`` and the name in config/schema.yaml's enum. Nothing
else changes, yet rule ``features``' CLI writes the new source's ``{split}.h5``, a head trains and predicts on it
(alone and joined with ``symmetry``), and ``cbedtdc classify`` computes it for new patterns."""

from __future__ import annotations

import json
import re
from importlib import util

import numpy as np
import pytest
import yaml

from cbedtdc import dag
from cbedtdc.config import ConfigError, check_config, schema_path
from cbedtdc.errors import InputError
from cbedtdc.features import read_features, registry
from cbedtdc.features.spec import descriptor_source
from cbedtdc.metrics import balanced_accuracy
from conftest import REPO
from test_registry import schema_sources

CLASSES = [14, 225, 1]  # the classes of the tiny_shards fixture, in the run's order


def cli(name: str):
    """``workflow_scripts/<name>.py`` as a module (what rule ``features`` / ``head`` runs)."""
    spec = util.spec_from_file_location(f"cli_{name}", REPO / "workflow_scripts" / f"{name}.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the newcomer's module: cbedtdc/features/toy.py
GRID = 4


def describe(stacks):
    """Mean and spread of every panel and the means of a GRID x GRID grid of blocks: ``(B, 3 * (2 + GRID**2))``."""
    x = np.asarray(stacks, dtype=np.float32)
    b, p, s, _ = x.shape
    blocks = x[:, :, : s - s % GRID, : s - s % GRID].reshape(b, p, GRID, s // GRID, GRID, s // GRID).mean((3, 5))
    feats = np.concatenate([x.mean((2, 3))[..., None], x.std((2, 3))[..., None], blocks.reshape(b, p, -1)], -1)
    return feats.reshape(b, -1).astype(np.float32), [""] * b


NAMES = [f"p{p}.{n}" for p in range(3) for n in ["mean", "std", *[f"block{i}" for i in range(GRID * GRID)]]]
SOURCE = descriptor_source("toy", "block means of every panel (a test source)", describe, NAMES,
                           {"version": "1", "grid": GRID})
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """The registry line (``SOURCES = {... toy.SOURCE}``) and the schema's enum, in a copy of the schema."""
    monkeypatch.setitem(registry.SOURCES, "toy", SOURCE)
    text = schema_path().read_text()
    assert text.count("enum: [cnn, symmetry]") == 1  # one enum, shared by tdc.head and heads.variants (an anchor)
    schema = tmp_path / "schema.yaml"
    schema.write_text(text.replace("enum: [cnn, symmetry]", "enum: [cnn, symmetry, toy]"))
    return schema


def test_the_schema_and_the_rules_take_the_new_source(toy):
    config = yaml.safe_load((schema_path().parent / "config.yaml").read_text())
    config["heads"]["variants"] = [{"name": "toy_crt", "features": ["toy", "symmetry"]}]
    assert schema_sources(toy) == list(registry.SOURCES)
    check_config(config, toy)
    with pytest.raises(ConfigError, match="'toy' is not one of"):
        check_config(config, schema_path())  # the enum line is what the schema needs
    assert dag.head_feature_dirs(config["heads"]["variants"][0], root="results/replicates/seed_1") == [
        "results/features/toy", "results/features/symmetry"]
    assert re.fullmatch(dag.features_folders(), "toy") and dag.features_job("toy") == {
        "source": "toy", "model": "", "threads": False}


def test_a_head_trains_and_predicts_on_the_new_source(toy, tiny_shards, tmp_path, monkeypatch):
    features_cli, head_cli = cli("features"), cli("head")
    from cbedtdc.classify import source_extractor
    from cbedtdc.data import ShardDataset
    from cbedtdc.heads.jobs import flat_head_probs

    monkeypatch.chdir(tmp_path)
    dirs = dag.head_feature_dirs({"features": ["toy", "symmetry"]})
    for d, name in zip(dirs, ("toy", "symmetry")):
        for split in ("train", "dev", "test"):
            assert features_cli.main(["--source", name, "--shards", str(tiny_shards), "--split", split,
                                      "--out", f"{d}/{split}.h5"]) == 0
    fs = read_features(f"{dirs[0]}/test.h5", split="test")
    assert fs.source == "toy" and fs.model == "toy/1" and fs.features.shape == (9, len(NAMES))
    assert fs.model_meta["names"] == NAMES and fs.model_meta["image_size"] == 16

    (tmp_path / "run_classes.json").write_text(json.dumps({str(c): {"train": 6} for c in CLASSES}))
    for name, heads_dirs in (("toy", dirs[:1]), ("toy_sym", dirs)):
        out = tmp_path / "heads" / name / "head.pt"
        assert head_cli.main(["--features", *heads_dirs, "--out", str(out), "--run-classes", "run_classes.json",
                              "--spec", json.dumps({"sampler": "class_balanced", "epochs": 60, "lr": 0.1})]) == 0
        keys, probs, head = flat_head_probs(out, heads_dirs, "test", CLASSES)
        labels = np.array([CLASSES.index(int(k)) for k in read_features(f"{dirs[0]}/test.h5").labels])
        assert probs.shape == (9, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
        assert balanced_accuracy(labels, probs.argmax(1), range(3)) > 0.5, name  # chance: 1/3
        assert [s["source"] for s in head.info["sources"]] == ["toy", "symmetry"][: len(heads_dirs)]

    # classify: the registered source computes the same numbers from the patterns, in the recorded order
    extract, size = source_extractor(head.info["sources"], tmp_path, "cpu")
    ds = ShardDataset(tiny_shards, "test", orientation="stack")
    batch = np.stack([ds.image(i) for i in range(len(ds))])
    joined = np.concatenate([read_features(f"{d}/test.h5").features for d in dirs], axis=1)
    assert size == 16 and np.allclose(extract(batch), joined, atol=1e-4)
    assert np.allclose(head.predict_proba(extract(batch)), flat_head_probs(out, dirs, "test", CLASSES)[1], atol=1e-5)

    # a head fitted on other settings of the source is refused, naming the source
    monkeypatch.setitem(registry.SOURCES, "toy", descriptor_source("toy", "x", describe, NAMES,
                                                                   {"version": "2", "grid": GRID}))
    with pytest.raises(InputError, match="fitted on toy features toy/1 of other settings"):
        source_extractor(head.info["sources"], tmp_path, "cpu")
