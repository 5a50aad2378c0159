"""Manifest, split, preprocessing, shards and ShardDataset."""

from __future__ import annotations

import hashlib
import pickle
import tracemalloc

import h5py
import numpy as np
import pytest

import cbedtdc.data
import cbedtdc.io
import cbedtdc.preprocess
from cbedtdc.data import (
    DataError,
    ShardDataset,
    assign_splits,
    build_manifest,
    build_shard_index,
    write_manifest,
    write_splits,
)
from cbedtdc.io import index_file, read_csv, write_json
from cbedtdc.preprocess import area_resize, log_scale, preprocess_stack, verify_shard, write_shard
from fixtures import make_sample, write_challenge_file


def sample(i, sg=62, material=None, energy=0, side=16, **attrs):
    return make_sample(f"sample_{i}_{energy}", sg, material or f"mp-{i}", side=side, energy_keV=100 + 10 * energy,
                       class_index=sg % 7, rng=np.random.default_rng([i, energy, sg]), attrs=attrs)


# ---------------------------------------------------------------- manifest
def mixed_indexes(tmp_path):
    """Three files: all good, one with two bad samples, one unreadable."""
    a = write_challenge_file(tmp_path / "batch_train_0.h5", [sample(0), sample(0, energy=1), sample(1, sg=14)])
    b = write_challenge_file(tmp_path / "batch_dev_0.h5", [
        sample(5, sg=225), sample(6, space_group=b"999"), sample(7) | {"stack": None}])
    c = tmp_path / "batch_test_0.h5"
    c.write_bytes(b"\x89HDF\r\n garbage")
    return [index_file(p) for p in (a, b, c)]


def test_manifest_counts_add_up(tmp_path):
    manifest, quarantine, report = build_manifest(mixed_indexes(tmp_path))
    assert report["seen"] == 7 == len(manifest) + len(quarantine)
    assert [(m["file"], m["group"], m["split"], m["space_group"]) for m in manifest] == [
        ("batch_train_0.h5", "sample_0_0", "train", 62), ("batch_train_0.h5", "sample_0_1", "train", 62),
        ("batch_train_0.h5", "sample_1_0", "train", 14), ("batch_dev_0.h5", "sample_5_0", "dev", 225)]
    reasons = {(q["file"], q["group"]): q["reason"] for q in quarantine}
    assert reasons[("batch_dev_0.h5", "sample_6_0")] == "space_group 999 outside 1..230"
    assert reasons[("batch_dev_0.h5", "sample_7_0")] == "missing dataset cbed_stack"
    assert reasons[("batch_test_0.h5", "")].startswith("cannot open: ")
    assert report["reasons"] == {"cannot open": 1, "missing dataset cbed_stack": 1, "space_group 999 outside 1..230": 1}


def test_duplicate_key_is_quarantined_once(tmp_path):
    path = write_challenge_file(tmp_path / "batch_train_0.h5", [sample(0), sample(1)])
    idx = index_file(path)
    write_json(tmp_path / "a.json", idx)
    write_json(tmp_path / "b.json", idx)
    manifest, quarantine, report = build_manifest([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(manifest) == 2 and report["seen"] == 4
    assert [q["group"] for q in quarantine] == ["sample_0_0", "sample_1_0"]
    assert quarantine[0]["reason"] == f"duplicate key (first seen in {tmp_path / 'a.json'})"


def test_material_in_two_splits_and_small_sides_are_reported(tmp_path):
    a = write_challenge_file(tmp_path / "batch_train_0.h5", [sample(0, material="mp-9"), sample(1, side=8)])
    b = write_challenge_file(tmp_path / "batch_test_0.h5", [sample(0, material="mp-9", energy=1)])
    manifest, quarantine, report = build_manifest([index_file(a), index_file(b)], min_side=16)
    assert report["materials_in_several_splits"] == ["mp-9"]
    assert quarantine == [{"file": "batch_train_0.h5", "group": "sample_1_0",
                           "reason": "side 8 smaller than image_size 16"}]


def test_manifest_fails_above_threshold_with_the_quarantine_list_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        write_manifest(mixed_indexes(tmp_path), out / "m.csv", out / "q.csv", out / "r.json", max_fraction=0.2)
    msg = str(err.value)
    assert "3 of 7 samples quarantined (42.9% > data.quarantine_max_fraction=0.2)" in msg and "\n" not in msg
    assert "'cannot open': 1, e.g. 'cannot open: " in msg and "'missing dataset cbed_stack': 1" in msg
    assert f"listed in {out / 'q.csv'} (in a pipeline run: logs/manifest/quarantine.csv" in msg
    assert msg.endswith("fix or remove those files, or raise data.quarantine_max_fraction")
    # the rejected samples can be read although the stage stopped; no manifest or report
    assert sorted(p.name for p in out.iterdir()) == ["q.csv"] and len(read_csv(out / "q.csv")) == 3
    write_manifest(mixed_indexes(tmp_path), out / "m.csv", out / "q.csv", out / "r.json", max_fraction=0.5)
    assert len(read_csv(out / "m.csv")) == 4 and len(read_csv(out / "q.csv")) == 3


def test_every_sample_too_small_or_of_another_side_blames_the_setting(tmp_path):
    small = write_challenge_file(tmp_path / "batch_train_0.h5", [sample(0, side=16), sample(1, side=16)])
    out = tmp_path / "out"
    args = ([index_file(small)], out / "m.csv", out / "q.csv", out / "r.json")
    with pytest.raises(DataError) as err:
        write_manifest(*args, max_fraction=0.05, min_side=32, generated=True)
    msg = str(err.value)
    assert "most common reasons: 'side 16 smaller than image_size 32': 2;" in msg  # in full, not 'side': 2
    assert msg.endswith("every sample is smaller than image_size 32 (largest side 16): the generated data are too "
                        "small, not bad: set synth.image_size to at least 32 or image_size to at most 16")
    with pytest.raises(DataError, match=r"the files are not bad, the setting is: set image_size to at most 16$"):
        write_manifest(*args, max_fraction=0.05, min_side=32, generated=False)
    with pytest.raises(DataError, match=r"at most 16, or for generated data \(no raw_dir\) synth.image_size to at "
                       r"least 32$"):
        write_manifest(*args, max_fraction=0.05, min_side=32)
    # the expected side of real files: the shape is the reason, shown whole
    with pytest.raises(DataError) as err:
        write_manifest([index_file(small, expected_side=512)], *args[1:], max_fraction=0.05, generated=False)
    msg = str(err.value)
    assert "'shape (3, 16, 16) not (3, 512, 512)': 2" in msg
    assert msg.endswith("every sample has a side other than data.expected_side 512 (found 16): "
                        "set data.expected_side to 0 (any square side)")
    # one good sample among them: the files are at fault, the usual advice
    mixed = write_challenge_file(tmp_path / "batch_dev_0.h5", [sample(2, side=32)])
    with pytest.raises(DataError, match="fix or remove those files"):
        write_manifest([index_file(small), index_file(mixed)], *args[1:], max_fraction=0.05, min_side=32)


# ---------------------------------------------------------------- split
def fake_manifest(n_groups=12, seed=0):
    """Rows of many materials: group g has 2 + 3 g materials, 3 energies each."""
    rows = []
    for g in range(1, n_groups + 1):
        for m in range(2 + 3 * g):
            for e in range(3):
                rows.append({"file": f"batch_train_{g}.h5", "group": f"sample_{m}_{e}", "split": "train",
                             "space_group": g, "material": f"mp-{g}-{m}", "energy_keV": 100 + 10 * e})
    return rows


def test_file_given_split_is_kept():
    rows = fake_manifest()
    rows[0]["split"] = "dev"
    out = assign_splits(rows)
    assert [r["split"] for r in out] == [r["split"] for r in rows]
    assert out[0]["key"] == "batch_train_1.h5/sample_0_0"


def test_resplit_by_material_is_stratified_seeded_and_leak_free():
    rows = fake_manifest()
    out = assign_splits(rows, resplit=True, fractions=(0.6, 0.2, 0.2), seed=3)
    splits_of = {}
    for r in out:
        splits_of.setdefault(r["material"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values()), "a material in two splits"
    for g in range(1, 13):
        mats = [m for m in splits_of if m.startswith(f"mp-{g}-")]
        per = {s: sum(splits_of[m] == {s} for m in mats) for s in ("train", "dev", "test")}
        assert per["train"] == round(0.6 * len(mats)) or abs(per["train"] - 0.6 * len(mats)) < 1, (g, per)
    assert out == assign_splits(rows, resplit=True, fractions=(0.6, 0.2, 0.2), seed=3)
    assert out != assign_splits(rows, resplit=True, fractions=(0.6, 0.2, 0.2), seed=4)


def test_resplit_rare_class_goes_to_train_first():
    rows = [r for r in fake_manifest(1)][:3]  # one material of group 1
    out = assign_splits(rows, resplit=True)
    assert {r["split"] for r in out} == {"train"}


def test_split_writes_class_counts(tmp_path):
    from cbedtdc.io import write_csv

    write_csv(tmp_path / "m.csv", fake_manifest(3), ("file", "group", "split", "space_group", "material",
                                                       "energy_keV"))
    write_splits(tmp_path / "m.csv", tmp_path / "s.csv", tmp_path / "c.csv", resplit=True, seed=0)
    counts = read_csv(tmp_path / "c.csv")
    assert [int(c["space_group"]) for c in counts] == [3, 2, 1]  # by train count
    assert sum(int(c["total"]) for c in counts) == len(read_csv(tmp_path / "s.csv")) == 3 * (5 + 8 + 11)


# ---------------------------------------------------------------- preprocessing
def reference(stack, size):
    """The standard formula written plainly: clip(10*(max(log I, -17)+17), 0, 255), block mean, round."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(stack.astype(np.float64))
    logs = np.where(stack > 0, logs, -np.inf)
    x = np.clip(10 * (np.maximum(logs, -17) + 17), 0, 255)
    f = stack.shape[-1] // size
    x = x.reshape(3, size, f, size, f).mean(axis=(2, 4))
    return np.rint(x).astype(np.uint8)


def test_preprocess_matches_the_standard_formula():
    rng = np.random.default_rng(0)
    stack = (10.0 ** rng.uniform(-12, 5, size=(3, 32, 32))).astype(np.float32)
    stack[0, :4, :4] = 0.0
    stack[1, :2, :2] = -3.0
    got = preprocess_stack(stack, 8)
    diff = np.abs(got.astype(int) - reference(stack, 8))
    assert got.dtype == np.uint8 and got.shape == (3, 8, 8)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95  # float32 vs float64 rounding at .5 boundaries only


def test_area_resize_non_integer_factor_preserves_mean_and_constants():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, size=(3, 30, 30)).astype(np.float32)
    small = area_resize(img, 12)
    assert small.shape == (3, 12, 12)
    np.testing.assert_allclose(small.mean(axis=(1, 2)), img.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(area_resize(np.full((3, 30, 30), 7.0, np.float32), 12), 7.0, rtol=1e-6)
    with pytest.raises(ValueError, match="only shrinks"):
        area_resize(img, 40)


def test_fast_path_equals_log_scale_then_resize():
    rng = np.random.default_rng(2)
    stack = (10.0 ** rng.uniform(-12, 6, size=(3, 48, 48))).astype(np.float32)
    stack[0, 0, :5] = [0, -1, np.exp(-30), 1e30, np.exp(8.5)]
    for size in (48, 16, 20):
        slow = np.rint(area_resize(log_scale(stack), size)).astype(np.uint8)
        fast = preprocess_stack(stack, size)
        assert np.abs(fast.astype(int) - slow).max() <= 1 and (fast == slow).mean() > 0.97, size
    before = stack.copy()
    preprocess_stack(stack, 16)
    np.testing.assert_array_equal(stack, before)  # no overwrite unless asked


def test_log_scale_floors_non_positive():
    x = log_scale(np.array([0, -1, np.exp(-20), np.exp(-17), 1], dtype=np.float32))
    np.testing.assert_allclose(x, [0, 0, 0, 0, 170], atol=1e-4)


# ---------------------------------------------------------------- shards
def raw_file(tmp_path, n=6, side=32):
    samples = [sample(i // 2, sg=[14, 225, 1][i % 3], energy=i % 2, side=side) for i in range(n)]
    return write_challenge_file(tmp_path / "batch_train_0.h5", samples)


def test_shard_layout_checksums_and_identical_bytes(tmp_path):
    raw = raw_file(tmp_path)
    idx = index_file(raw)
    meta = write_shard(raw, idx, tmp_path / "a" / "batch_train_0.h5", image_size=16)
    write_shard(raw, idx, tmp_path / "b" / "batch_train_0.h5", image_size=16)
    a, b = (tmp_path / d / "batch_train_0.h5" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "batch_train_0.json").read_bytes() == (tmp_path / "b" / "batch_train_0.json").read_bytes()
    with h5py.File(a) as fh:
        assert fh["images"].shape == (6, 3, 16, 16) and fh["images"].dtype == np.uint8
        assert fh["images"].chunks == (1, 3, 16, 16) and fh["images"].compression is None
        assert fh["labels"][()].tolist() == [r["space_group"] for r in idx["samples"]]
        assert fh["keys"][0].decode() == "batch_train_0.h5/" + idx["samples"][0]["group"]
        with h5py.File(raw) as src:
            first = preprocess_stack(src[idx["samples"][0]["group"]]["cbed_stack"][()], 16)
        np.testing.assert_array_equal(fh["images"][0], first)
        assert meta["samples"][0]["sha256"] == hashlib.sha256(first.tobytes()).hexdigest()
    assert verify_shard(a) == []


def test_verify_shard_detects_a_changed_image(tmp_path):
    raw = raw_file(tmp_path)
    out = tmp_path / "s" / "batch_train_0.h5"
    write_shard(raw, index_file(raw), out, image_size=16)
    with h5py.File(out, "r+") as fh:
        fh["images"][2, 0, 0, 0] ^= 0xFF
    problems = verify_shard(out)
    assert any("file SHA-256" in p for p in problems) and any("(row 2) fails its SHA-256" in p for p in problems)


def test_killed_shard_job_leaves_no_file(tmp_path, monkeypatch):
    raw = raw_file(tmp_path)
    idx = index_file(raw)
    calls = {"n": 0}
    real = cbedtdc.preprocess.preprocess_stack

    def dying(stack, size, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # what SIGINT from Snakemake raises mid-job
        return real(stack, size, **kw)

    monkeypatch.setattr(cbedtdc.preprocess, "preprocess_stack", dying)
    with pytest.raises(KeyboardInterrupt):
        write_shard(raw, idx, tmp_path / "s" / "batch_train_0.h5", image_size=16)
    assert list((tmp_path / "s").iterdir()) == []


def test_shard_memory_is_bounded_by_a_few_stacks(tmp_path):
    """Peak Python memory of a shard job does not grow with the number of stacks in the file."""
    side = 128
    stack_bytes = 3 * side * side * 4
    peaks = {}
    for n in (6, 30):
        raw = raw_file(tmp_path / str(n), n=n, side=side)
        idx = index_file(raw)
        tracemalloc.start()
        write_shard(raw, idx, tmp_path / str(n) / "s" / "batch_train_0.h5", image_size=32)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # 24 more stacks would add 24 * stack_bytes if the file were held; metadata adds a few kB per sample.
    assert peaks[30] - peaks[6] < stack_bytes, peaks
    assert peaks[6] < 4 * stack_bytes + (1 << 20), peaks  # + the 1 MiB read buffer of the checksum


def test_shard_index_names_a_missing_sample(tmp_path):
    raw = raw_file(tmp_path)
    idx = index_file(raw)
    idx_short = dict(idx, samples=idx["samples"][:-1])
    write_shard(raw, idx_short, tmp_path / "shards" / "files" / "batch_train_0.h5", image_size=16)
    write_json(tmp_path / "i.json", idx)
    write_manifest([tmp_path / "i.json"], tmp_path / "m.csv", tmp_path / "q.csv", tmp_path / "r.json",
                   max_fraction=0)
    write_splits(tmp_path / "m.csv", tmp_path / "s.csv", tmp_path / "c.csv")
    missing = f"batch_train_0.h5/{idx['samples'][-1]['group']}"
    with pytest.raises(DataError, match=f"sample {missing} of .* is in no shard; rerun the shard rule"):
        build_shard_index(tmp_path / "s.csv", [tmp_path / "shards" / "files" / "batch_train_0.json"],
                          tmp_path / "shards")


# ---------------------------------------------------------------- ShardDataset
def test_dataset_items_labels_and_keys(tiny_shards):
    ds = ShardDataset(tiny_shards, "train")
    rows = read_csv(tiny_shards / "train.csv")
    assert len(ds) == 18 == len(rows)
    assert ds.keys == [r["key"] for r in rows] and ds.keys[0] == "batch_train_0.h5/sample_0_0"
    assert sorted(set(ds.labels.tolist())) == [1, 14, 225] and ds.labels.dtype.kind == "i"
    assert ds.materials[0] == "mp-train-14-0"
    x, y = ds[5]
    assert x.dtype.is_floating_point is False and str(x.dtype) == "torch.uint8" and tuple(x.shape) == (3, 16, 16)
    assert y == int(ds.labels[5]) and isinstance(y, int)
    with h5py.File(tiny_shards / "files" / "batch_train_0.h5") as fh:
        row = int(rows[5]["row"])
        np.testing.assert_array_equal(x.numpy(), fh["images"][row])
        assert fh["keys"][row].decode() == ds.keys[5]
    assert len(ShardDataset(tiny_shards, "dev")) == len(ShardDataset(tiny_shards, "test")) == 9


def test_dataset_orientations(tiny_shards):
    stack = ShardDataset(tiny_shards, "train")[3][0]
    for p in range(3):
        x, _ = ShardDataset(tiny_shards, "train", orientation=p)[3]
        assert tuple(x.shape) == (1, 16, 16) and (x[0] == stack[p]).all()
    ds = ShardDataset(tiny_shards, "train", orientation="random", seed=7)
    again = ShardDataset(tiny_shards, "train", orientation="random", seed=7)

    def panels(d):
        return [next(p for p in range(3) if (d[i][0][0] == d.image(i)[p]).all()) for i in range(len(d))]

    first = panels(ds)
    assert first == panels(again), "same seed and epoch -> same panels"
    assert set(first) == {0, 1, 2}
    ds.set_epoch(1)
    assert panels(ds) != first, "a new epoch draws new panels"


def test_dataset_restrictions_and_subset(tiny_shards):
    full = ShardDataset(tiny_shards, "train")
    only = ShardDataset(tiny_shards, "train", classes=[225, 1])
    assert set(only.labels.tolist()) == {225, 1} and len(only) == 12
    keys = [full.keys[i] for i in (7, 2, 11)]
    by_key = ShardDataset(tiny_shards, "train", keys=keys)
    assert by_key.keys == [full.keys[i] for i in (2, 7, 11)]  # split order, not argument order
    both = ShardDataset(tiny_shards, "train", keys=keys, classes=[14])
    assert all(int(label) == 14 for label in both.labels)
    sub = full.subset([4, 0])
    assert sub.keys == [full.keys[4], full.keys[0]] and len(full) == 18
    assert (sub[0][0] == full[4][0]).all() and sub[0][1] == full[4][1]
    with pytest.raises(KeyError, match="1 keys not in split train"):
        ShardDataset(tiny_shards, "train", keys=["batch_dev_0.h5/sample_0_0"])
    with pytest.raises(ValueError, match="orientation='side'"):
        ShardDataset(tiny_shards, "train", orientation="side")
    with pytest.raises(FileNotFoundError, match="build the data stage first"):
        ShardDataset(tiny_shards.parent, "train")


def test_dataset_with_dataloader_workers_matches_direct_reads(tiny_shards):
    import torch

    ds = ShardDataset(tiny_shards, "train", orientation="random", seed=1)
    ds[0]  # the parent opens its files; workers must open their own
    assert pickle.loads(pickle.dumps(ds))._handles is None
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (18, 1, 16, 16) and y.tolist() == ds.labels.tolist()
    assert all((x[i] == ds[i][0]).all() for i in range(len(ds)))


def test_dataset_keeps_few_files_open(tmp_path, monkeypatch):
    from fixtures import build_tiny_shards

    root = build_tiny_shards(tmp_path, classes=(14, 225, 1), per_class=4, side=16, files_per_split=3)
    ds = ShardDataset(root, "train")
    assert len(ds.shards) == 3
    monkeypatch.setattr(ShardDataset, "MAX_OPEN", 1)
    order = np.random.default_rng(0).permutation(len(ds))
    with h5py.File(root / "files" / "batch_train_1.h5") as fh:
        expected = {k.decode(): img for k, img in zip(fh["keys"][()], fh["images"][()])}
    for i in order:
        x, _ = ds[int(i)]
        if ds.keys[i] in expected:
            np.testing.assert_array_equal(x.numpy(), expected[ds.keys[i]])
        assert len(ds._handles[1]) == 1


def test_every_bad_input_reaches_quarantine_csv_and_no_good_sample_is_lost(tmp_path):
    nan = sample(3)
    nan["stack"] = nan["stack"].copy()
    nan["stack"][1, 2, 3] = np.nan
    zero = sample(6) | {"stack": np.zeros((3, 16, 16), np.float32)}
    no_sg = sample(8)
    del no_sg["attrs"]["space_group"]
    entries = [
        (sample(0), None),
        (sample(1) | {"stack": None}, "missing dataset cbed_stack"),
        (sample(2) | {"stack": np.ones((3, 16), np.float32)}, "shape (3, 16) not (3, N, N)"),
        (nan, "non-finite values (1 NaN, 0 inf)"),
        (sample(4) | {"stack": np.ones((3, 16, 16), np.float64)}, "dtype float64 not float32"),
        (sample(5), None),
        (zero, "all-zero stack"),
        (sample(7, space_group=b"abc"), "space_group b'abc' not an integer"),
        (no_sg, "space_group missing"),
        (sample(9, space_group=b"231"), "space_group 231 outside 1..230"),
        (sample(10), None),
    ]
    path = write_challenge_file(tmp_path / "batch_train_0.h5", [e[0] for e in entries])
    broken = write_challenge_file(tmp_path / "batch_dev_0.h5", [sample(20)])
    broken.write_bytes(broken.read_bytes()[:900])
    idx = index_file(path)
    write_json(tmp_path / "a.json", idx)
    write_json(tmp_path / "again.json", idx)  # the same file indexed twice: duplicate keys
    write_json(tmp_path / "b.json", index_file(broken))
    out = tmp_path / "out"
    report = write_manifest([tmp_path / "a.json", tmp_path / "b.json", tmp_path / "again.json"], out / "m.csv",
                            out / "q.csv", out / "r.json", max_fraction=1.0)
    manifest, quarantine = read_csv(out / "m.csv"), read_csv(out / "q.csv")
    assert [m["group"] for m in manifest] == ["sample_0_0", "sample_5_0", "sample_10_0"]
    got = {(q["file"], q["group"]): q["reason"] for q in quarantine if not q["reason"].startswith("duplicate")}
    for s, reason in entries:
        if reason:
            assert got.pop(("batch_train_0.h5", s["group"])) == reason
    (((file, group), reason),) = got.items()
    assert (file, group) == ("batch_dev_0.h5", "") and reason.startswith("cannot open: ")
    duplicates = [q for q in quarantine if q["reason"].startswith("duplicate key")]
    assert len(duplicates) == len(entries)  # every entry of the second copy, good or bad
    assert report["seen"] == 2 * len(entries) + 1 == len(manifest) + len(quarantine)


def test_sigkill_mid_shard_then_rerun_gives_the_same_shard(tmp_path):
    import subprocess
    import sys

    raw = raw_file(tmp_path, n=6)
    idx = index_file(raw)
    write_json(tmp_path / "i.json", idx)
    out = tmp_path / "s" / "batch_train_0.h5"
    kill_at_third_stack = (
        "import os, signal, sys\n"
        "import cbedtdc.preprocess as P\n"
        "from cbedtdc.io import read_json\n"
        "real, n = P.preprocess_stack, [0]\n"
        "def dying(*a, **k):\n"
        "    n[0] += 1\n"
        "    if n[0] == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(*a, **k)\n"
        "P.preprocess_stack = dying\n"
        "P.write_shard(sys.argv[1], read_json(sys.argv[2]), sys.argv[3], image_size=16)\n"
    )
    res = subprocess.run([sys.executable, "-c", kill_at_third_stack, str(raw), str(tmp_path / "i.json"), str(out)])
    assert res.returncode == -9
    leftovers = list(out.parent.iterdir())
    assert not out.exists() and len(leftovers) == 1 and leftovers[0].name.startswith(".batch_train_0.h5.")
    write_shard(raw, idx, out, image_size=16)
    write_shard(raw, idx, tmp_path / "ref" / "batch_train_0.h5", image_size=16)
    assert sorted(p.name for p in out.parent.iterdir()) == ["batch_train_0.h5", "batch_train_0.json"]
    assert out.read_bytes() == (tmp_path / "ref" / "batch_train_0.h5").read_bytes() and verify_shard(out) == []


def test_truncated_shard_error_names_the_file(tiny_shards, tmp_path):
    import shutil

    root = tmp_path / "shards"
    shutil.copytree(tiny_shards, root)
    victim = root / "files" / "batch_train_0.h5"
    victim.write_bytes(victim.read_bytes()[:1000])
    ds = ShardDataset(root, "train")
    with pytest.raises(cbedtdc.data.DataError, match=r"batch_train_0\.h5: cannot open shard .*rerun the shard rule"):
        ds[0]
