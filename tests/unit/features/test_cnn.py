"""Features of a trained backbone: deterministic on CPU, equal to the model's own pooled activations,
streamed in batches with their keys, written atomically. Tiny resnet18 jobs on the 16 px shards."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from cbedtdc import train as T
from cbedtdc.data import ShardDataset
from cbedtdc.features import FeaturesError, pooled_features, read_features
from cbedtdc.features import extract_to_file as _extract

CLASSES = [14, 225, 1]
CFG = {"arch": "resnet18", "epochs": 1, "batch_size": 6, "lr": 0.002, "lr_scaling": "none", "workers": 0,
       "threads_per_rank": 1, "timeout_s": 60, "seed": 1, "loss": "ce"}


def extract_to_file(*args, **kw):
    """The library call with one torch thread (the test machine is shared) and no progress bar."""
    return _extract(*args, **{"threads": 1, "progress": False, **kw})


@pytest.fixture(scope="module", params=["random", "stack"])
def job(request, tiny_shards, tmp_path_factory):
    """``best.pt`` of a one-epoch job reading one panel (``random``) or the stack."""
    out = tmp_path_factory.mktemp(f"job_{request.param}")
    T.fit({**CFG, "orientation": request.param}, shard_root=tiny_shards, out_dir=out, classes=CLASSES)
    return out / "best.pt"


def test_features_are_the_models_pooled_activations(job, tiny_shards, tmp_path):
    info = extract_to_file(job, tiny_shards, "test", tmp_path / "test.h5", batch_size=4)
    fs = read_features(tmp_path / "test.h5", split="test")
    ds = ShardDataset(tiny_shards, "test")
    assert info["n"] == len(fs) == 9 and info["dim"] == 512 and fs.features.shape == (9, 512)
    assert fs.keys == ds.keys and fs.labels.tolist() == ds.labels.tolist()
    assert fs.model_meta["classes"] == CLASSES and fs.model_sha256 and fs.split == "test"

    model, meta = T.load_model(job)
    pooled = []  # what the model's own avgpool layer emits, one call per panel or per stack
    hook = model.backbone.avgpool.register_forward_hook(lambda m, i, o: pooled.append(torch.flatten(o, 1)))
    _, logits = T.predict(model, meta, tiny_shards, "test", batch_size=9)
    hook.remove()
    own = torch.stack(pooled).mean(0).numpy()  # random: mean over the 3 panels; stack: the one call
    np.testing.assert_allclose(fs.features, own, rtol=1e-5, atol=1e-6)
    fc = model.backbone.fc  # the features are what the classifier layer reads: same logits as predict
    np.testing.assert_allclose(fc(torch.from_numpy(fs.features)).detach().numpy(), logits, rtol=1e-4, atol=1e-5)
    _, ref = T.extract_features(model, meta, tiny_shards, "test")
    np.testing.assert_allclose(fs.features, ref, rtol=1e-5, atol=1e-6)


def test_features_deterministic_and_batch_size_free(job, tiny_shards, tmp_path):
    extract_to_file(job, tiny_shards, "train", tmp_path / "a.h5", batch_size=5)
    extract_to_file(job, tiny_shards, "train", tmp_path / "b.h5", batch_size=5)
    extract_to_file(job, tiny_shards, "train", tmp_path / "c.h5", batch_size=18)
    a, b, c = (read_features(tmp_path / f"{n}.h5") for n in "abc")
    assert len(a) == 18  # 4 batches of 5, the last one partial
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_allclose(a.features, c.features, rtol=1e-5, atol=1e-6)
    with h5py.File(tmp_path / "a.h5") as fh:
        assert fh["features"].chunks[0] == 5 and fh["features"].maxshape == (None, 512)


def test_keys_subset_keeps_split_order(job, tiny_shards, tmp_path):
    keys = ShardDataset(tiny_shards, "dev").keys
    full = extract_to_file(job, tiny_shards, "dev", tmp_path / "dev.h5")
    part = extract_to_file(job, tiny_shards, "dev", tmp_path / "part.h5", keys=[keys[5], keys[1]])
    assert (full["n"], part["n"]) == (9, 2)
    f, p = read_features(tmp_path / "dev.h5"), read_features(tmp_path / "part.h5")
    assert p.keys == [keys[1], keys[5]]
    np.testing.assert_allclose(p.features, f.features[[1, 5]], rtol=1e-5, atol=1e-6)


def test_failed_extraction_leaves_no_file_and_rerun_replaces_stale(job, tiny_shards, tmp_path, monkeypatch):
    import cbedtdc.features.cnn as F

    out = tmp_path / "train.h5"
    (tmp_path / ".train.h5.4242.h5").write_bytes(b"left by a killed run")
    calls = [0]
    original = F.pooled_features

    def failing(model, x, orientation):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt("interrupted")
        return original(model, x, orientation)

    monkeypatch.setattr(F, "pooled_features", failing)
    with pytest.raises(KeyboardInterrupt):
        extract_to_file(job, tiny_shards, "train", out, batch_size=4)
    assert not out.exists() and list(tmp_path.iterdir()) == [], "no partial file may be left"
    monkeypatch.setattr(F, "pooled_features", original)
    out.write_bytes(b"an old output")
    extract_to_file(job, tiny_shards, "train", out, batch_size=4)
    assert len(read_features(out)) == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finished", "train.h5"], "the file and its finished record"


def test_bad_files_are_named(job, tiny_shards, tmp_path):
    with pytest.raises(FeaturesError, match="not found"):
        read_features(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(FeaturesError, match=r"junk\.h5: not a readable features file"):
        read_features(tmp_path / "junk.h5")
    extract_to_file(job, tiny_shards, "dev", tmp_path / "dev.h5")
    with pytest.raises(FeaturesError, match="holds the dev split, expected test"):
        read_features(tmp_path / "dev.h5", split="test")
    with h5py.File(tmp_path / "dev.h5", "a") as fh:  # as if the writer stopped half-way
        fh["features"].resize(3, axis=0)
    with pytest.raises(FeaturesError, match=r"dev\.h5: incomplete \(3 feature rows, 9 keys, 9 expected\)"):
        read_features(tmp_path / "dev.h5")
    with pytest.raises(T.CheckpointError, match="not found"):
        extract_to_file(tmp_path / "no_model.pt", tiny_shards, "dev", tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_pooled_features_rejects_unknown_orientation():
    with pytest.raises(ValueError, match="orientation='side'"):
        pooled_features(None, torch.zeros(1, 3, 4, 4), "side")


def test_a_finished_extraction_is_restored_not_recomputed(job, tiny_shards, tmp_path, monkeypatch):
    """A dead Snakemake reruns the features job after deleting its output: the finished file comes back from its
    record (same bytes, nothing recomputed); other inputs (another sample list) compute again."""
    import cbedtdc.features.cnn as F

    out = tmp_path / "features" / "dev.h5"
    extract_to_file(job, tiny_shards, "dev", out)
    digest = out.read_bytes()
    out.unlink()  # what Snakemake does to an incomplete job's outputs

    def never(*args, **kwargs):
        raise AssertionError("recomputed a finished extraction")

    monkeypatch.setattr(F, "pooled_features", never)
    info = extract_to_file(job, tiny_shards, "dev", out)
    assert info["restored"] and out.read_bytes() == digest
    keys = ShardDataset(tiny_shards, "dev").keys[:3]
    with pytest.raises(AssertionError, match="recomputed"):
        extract_to_file(job, tiny_shards, "dev", tmp_path / "features" / "part.h5", keys=keys)
