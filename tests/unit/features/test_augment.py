"""Training-time augmentation of the descriptor source (config ``features.augment``, cbedtdc.features.augment): the
train file gains seeded perturbed copies after its clean rows, dev and test stay clean, the same seed gives the same
rows, and a head joining sources reads the copies only where every source has them."""

from __future__ import annotations

import json
from importlib import util

import numpy as np
import pytest

from cbedtdc.config import schema_defaults
from cbedtdc.errors import InputError
from cbedtdc.features import load_sources, read_features
from cbedtdc.features.augment import (Augment, augment_arg, augment_batch, augment_from_json, augmented_keys,
                                      shard_intensities)
from cbedtdc.features.registry import get_source
from cbedtdc.features.spec import write_descriptors
from cbedtdc.features.symmetry import extract_symmetry_to_file
from cbedtdc.preprocess import preprocess_stack
from conftest import REPO

ON = Augment(copies=2, p=0.5, blank_panel=0.5)


def cli(name: str):
    spec = util.spec_from_file_location(f"cli_{name}", REPO / "workflow_scripts" / f"{name}.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_defaults_are_the_schemas():
    assert Augment().settings() == schema_defaults("features", "augment")


def test_shard_intensities_invert_the_shard_encoding():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(3, 8, 8)).astype(np.uint8)
    assert np.array_equal(preprocess_stack(shard_intensities(x), 8), x)


def test_a_copy_depends_on_the_seed_and_the_stack_alone():
    rng = np.random.default_rng(1)
    x = rng.integers(60, 200, size=(5, 3, 16, 16)).astype(np.uint8)
    a = augment_batch(x, 0, 0, ON, seed=7)
    assert np.array_equal(a, augment_batch(x, 0, 0, ON, seed=7))
    assert np.array_equal(a[3:], augment_batch(x[3:], 3, 0, ON, seed=7))  # batch boundaries change nothing
    assert not np.array_equal(a, augment_batch(x, 0, 0, ON, seed=8))
    assert not np.array_equal(a, augment_batch(x, 0, 1, ON, seed=7))  # another copy, other draws
    assert a.dtype == np.uint8 and a.shape == x.shape


def test_every_perturbation_acts_at_full_probability():
    rng = np.random.default_rng(2)
    x = rng.integers(60, 200, size=(4, 3, 16, 16)).astype(np.uint8)
    blank = augment_batch(x, 0, 0, Augment(copies=1, p=0.0, blank_panel=1.0), seed=0)
    assert all(int((s.reshape(3, -1).max(1) == 0).sum()) == 1 for s in blank)  # exactly one panel all zeros
    same = augment_batch(x, 0, 0, Augment(copies=1, p=0.0, blank_panel=0.0), seed=0)
    assert np.array_equal(same, x)  # nothing drawn: the shard round trip is exact
    noisy = augment_batch(x, 0, 0, Augment(copies=1, p=1.0, dose=(100, 100), blank_panel=0.0), seed=0)
    assert not np.array_equal(noisy, x)


def test_train_file_holds_the_clean_rows_then_the_copies(tiny_shards, tmp_path):
    clean = extract_symmetry_to_file(tiny_shards, "train", tmp_path / "clean.h5", progress=False)
    src = get_source("symmetry")
    info = src.extract(tiny_shards, "train", tmp_path / "aug.h5", augment=ON, seed=3, batch_size=5, progress=False)
    fc, fa = read_features(tmp_path / "clean.h5"), read_features(tmp_path / "aug.h5")
    n = clean["n"]
    assert info["n"] == 3 * n and info["augmented"] == 2 * n
    assert fa.keys == fc.keys + augmented_keys(fc.keys, 2)
    assert np.array_equal(fa.labels, np.tile(fc.labels, 3))
    assert np.array_equal(fa.features[:n], fc.features)  # the clean rows are the clean file's
    assert not np.array_equal(fa.features[n:2 * n], fc.features)
    assert fa.model_sha256 == fc.model_sha256  # the descriptors are the same kind: classify reads clean stacks
    assert fa.model_meta["augment"] == {**ON.settings(), "seed": 3}
    src.extract(tiny_shards, "train", tmp_path / "again.h5", augment=ON, seed=3, batch_size=7, progress=False)
    assert np.array_equal(read_features(tmp_path / "again.h5").features, fa.features)  # same seed, same rows
    src.extract(tiny_shards, "train", tmp_path / "other.h5", augment=ON, seed=4, progress=False)
    assert not np.array_equal(read_features(tmp_path / "other.h5").features[n:], fa.features[n:])


@pytest.mark.parametrize("split", ["dev", "test"])
def test_dev_and_test_stay_clean(tiny_shards, tmp_path, split):
    with pytest.raises(InputError, match="train split only"):
        get_source("symmetry").extract(tiny_shards, split, tmp_path / "x.h5", augment=ON, progress=False)
    assert not (tmp_path / "x.h5").exists()
    # the rule passes no augmentation for them, nor for a source without copies
    assert augment_arg(ON.settings(), get_source("symmetry"), split) == "{}"
    assert augment_arg(ON.settings(), get_source("cnn"), "train") == "{}"
    assert json.loads(augment_arg(ON.settings(), get_source("symmetry"), "train")) == ON.settings()


def test_cli_writes_the_copies_and_refuses_them_for_a_backbone_source(tiny_shards, tmp_path):
    features = cli("features")
    out = tmp_path / "train.h5"
    rc = features.main(["--source", "symmetry", "--shards", str(tiny_shards), "--split", "train", "--out", str(out),
                        "--augment", json.dumps({"copies": 1}), "--seed", "5"])
    assert rc == 0
    fs, n = read_features(out), len(np.loadtxt(tiny_shards / "train.csv", dtype=str, delimiter=",", skiprows=1))
    assert len(fs) == 2 * n and fs.keys[-1].endswith("@aug0")
    assert features.main(["--source", "cnn", "--model", "m.pt", "--shards", str(tiny_shards), "--split", "train",
                          "--out", str(tmp_path / "c.h5"), "--augment", '{"copies": 1}']) == 2
    assert augment_from_json('{"copies": 0}') is None
    with pytest.raises(InputError, match="unknown key"):
        augment_from_json('{"copiez": 1}')
    with pytest.raises(InputError, match="probability"):
        augment_from_json('{"copies": 1, "p": 2}')


def _toy(path, keys, labels, dim, value, split="train"):
    from cbedtdc.features.store import FeatureWriter

    with FeatureWriter(path, keys, labels, dim=dim, split=split, source="toy", model="toy/1") as w:
        w.append(np.full((len(keys), dim), value, dtype=np.float32))


def test_a_join_keeps_the_copies_only_where_every_source_has_them(tmp_path):
    keys, labels = ["a/1", "a/2"], [14, 2]
    _toy(tmp_path / "sym.h5", keys + augmented_keys(keys, 1), labels * 2, 3, 1.0)
    _toy(tmp_path / "cnn.h5", keys, labels, 2, 2.0)
    alone = load_sources([tmp_path / "sym.h5"], "train")
    assert alone.keys == ["a/1", "a/2", "a/1@aug0", "a/2@aug0"]
    assert load_sources([tmp_path / "cnn.h5", tmp_path / "sym.h5"], "train").keys == keys
    joined = load_sources([tmp_path / "sym.h5", tmp_path / "cnn.h5"], "train")
    assert joined.keys == keys and joined.X.shape == (2, 5)


def test_write_descriptors_refuses_copies_of_dev(tiny_shards, tmp_path):
    with pytest.raises(InputError, match="train split only"):
        write_descriptors(tiny_shards, "dev", tmp_path / "d.h5", name="toy", settings={"version": "1"},
                          describe=lambda x: (np.zeros((len(x), 1), np.float32), [""] * len(x)), names=["z"],
                          augment=ON)
