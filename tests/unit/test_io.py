"""Defensive reading of challenge files: every bad input ends in quarantine with a reason naming it."""

from __future__ import annotations

import numpy as np
import pytest

from cbedtdc.io import atomic_path, index_file, parse_floats, parse_space_group, stack_extent, to_text
from fixtures import make_sample, write_challenge_file


def good(i=0, sg=62, **kw):
    return make_sample(f"sample_{i}_0", sg, f"mp-{i}", side=16, rng=np.random.default_rng(i), attrs=kw)


def index_with_bad(tmp_path, bad, **kw):
    """A file holding one good sample and ``bad``; returns its index."""
    path = write_challenge_file(tmp_path / "batch_train_0.h5", [good(0), bad])
    return index_file(path, **kw)


def assert_one_rejected(idx, group, reason):
    assert [r["group"] for r in idx["samples"]] == ["sample_0_0"], "the good sample must survive"
    assert len(idx["quarantine"]) == 1, idx["quarantine"]
    q = idx["quarantine"][0]
    assert q["file"] == "batch_train_0.h5" and q["group"] == group
    assert reason in q["reason"], q["reason"]
    assert idx["seen"] == len(idx["samples"]) + len(idx["quarantine"]) == 2


# ---------------------------------------------------------------- attribute parsing
@pytest.mark.parametrize("value", [b"62", "62", np.bytes_(b"62"), np.int64(62), np.int32(62), 62.0,
                                   np.array([b"62"]), b" 62\x00", np.array(62, dtype=np.uint8), b"62.0"])
def test_space_group_any_writer_type(value):
    assert parse_space_group(value) == 62


@pytest.mark.parametrize("value, message", [
    (None, "space_group missing"),
    (b"abc", "space_group b'abc' not an integer"),
    (b"", "space_group b'' not an integer"),
    (62.5, "space_group 62.5 not an integer"),
    (b"62.5", "space_group b'62.5' not an integer"),
    (b"231", "space_group 231 outside 1..230"),
    (np.int64(0), "space_group 0 outside 1..230"),
    (np.array([1, 2]), "not an integer"),
])
def test_space_group_errors_name_the_problem(value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_space_group(value)


def test_text_and_float_attributes_of_odd_types():
    assert to_text(np.array([b"mp-1"])) == "mp-1" and to_text("mvc-4910") == "mvc-4910"
    vals, warn = parse_floats(np.array([[5.0, 1e300, np.nan]], dtype=np.longdouble), 3)
    assert vals[0] == 5.0 and np.isnan(vals[1]) and np.isnan(vals[2]) and len(warn) == 2
    vals, warn = parse_floats([1.0, 2.0], 3)
    assert warn == ["2 values not 3"]


# ---------------------------------------------------------------- whole files
def test_good_file_with_odd_attribute_types_is_accepted(tmp_path):
    samples = [
        good(0),
        good(1, space_group="225", material=np.bytes_(b"mvc-4910"), energy_keV=np.float32(110)),
        good(2, space_group=np.int64(14), abc_angstrom=np.array([5.284, 6.711, 2.5e-314], dtype=np.longdouble)),
    ]
    idx = index_file(write_challenge_file(tmp_path / "batch_dev_3.h5", samples))
    assert idx["quarantine"] == [] and idx["split"] == "dev"
    recs = {r["group"]: r for r in idx["samples"]}
    assert recs["sample_1_0"]["space_group"] == 225 and recs["sample_1_0"]["material"] == "mvc-4910"
    assert recs["sample_1_0"]["energy_keV"] == 110.0
    garbage = recs["sample_2_0"]
    assert garbage["space_group"] == 14 and np.isnan(garbage["abc_angstrom"][2])
    assert "abc_angstrom [2]=2.5e-314 implausible" in garbage["warnings"]


def test_groups_in_material_then_energy_order(tmp_path):
    names = ["sample_10_0", "sample_2_1", "sample_2_0"]
    path = write_challenge_file(tmp_path / "batch_train_0.h5", [good(i) | {"group": n} for i, n in enumerate(names)])
    assert [r["group"] for r in index_file(path)["samples"]] == ["sample_2_0", "sample_2_1", "sample_10_0"]


def test_truncated_file_is_quarantined_whole(tmp_path):
    path = write_challenge_file(tmp_path / "batch_train_1.h5", [good(0), good(1)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    idx = index_file(path)
    assert idx["samples"] == [] and idx["seen"] == 1
    (q,) = idx["quarantine"]
    assert q["group"] == "" and q["reason"].startswith("cannot open: ") and "truncated" in q["reason"]


def test_not_hdf5_is_quarantined_whole(tmp_path):
    path = tmp_path / "batch_test_0.h5"
    path.write_text("this is not HDF5\n")
    (q,) = index_file(path)["quarantine"]
    assert q == {"file": "batch_test_0.h5", "group": "", "reason": q["reason"]}
    assert q["reason"].startswith("cannot open: ")


def test_empty_file_is_reported(tmp_path):
    (q,) = index_file(write_challenge_file(tmp_path / "batch_test_1.h5", []))["quarantine"]
    assert q["group"] == "" and q["reason"] == "no sample groups"


def test_missing_cbed_stack(tmp_path):
    bad = good(1) | {"stack": None}
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", "missing dataset cbed_stack")


@pytest.mark.parametrize("shape, reason", [
    ((3, 16), "shape (3, 16) not (3, N, N)"),
    ((2, 16, 16), "shape (2, 16, 16) not (3, N, N)"),
    ((3, 16, 8), "shape (3, 16, 8) not (3, N, N)"),
    ((1, 3, 16, 16), "shape (1, 3, 16, 16) not (3, N, N)"),
])
def test_wrong_shape(tmp_path, shape, reason):
    bad = good(1) | {"stack": np.ones(shape, dtype=np.float32)}
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", reason)


def test_expected_side(tmp_path):
    bad = good(1) | {"stack": np.ones((3, 8, 8), dtype=np.float32)}
    idx = index_with_bad(tmp_path, bad, expected_side=16)
    assert_one_rejected(idx, "sample_1_0", "shape (3, 8, 8) not (3, 16, 16)")


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.uint16])
def test_wrong_dtype(tmp_path, dtype):
    bad = good(1) | {"stack": np.ones((3, 16, 16), dtype=dtype)}
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", f"dtype {np.dtype(dtype)} not float32")


@pytest.mark.parametrize("value, reason", [(np.nan, "non-finite values (1 NaN, 0 inf)"),
                                           (np.inf, "non-finite values (0 NaN, 1 inf)"),
                                           (-np.inf, "non-finite values (0 NaN, 1 inf)")])
def test_non_finite_values(tmp_path, value, reason):
    stack = good(1)["stack"].copy()
    stack[2, 3, 4] = value
    assert_one_rejected(index_with_bad(tmp_path, good(1) | {"stack": stack}), "sample_1_0", reason)


def test_all_zero_stack_and_panel(tmp_path):
    bad = good(1) | {"stack": np.zeros((3, 16, 16), dtype=np.float32)}
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", "all-zero stack")
    stack = good(1)["stack"].copy()
    stack[1] = 0
    assert_one_rejected(index_with_bad(tmp_path, good(1) | {"stack": stack}), "sample_1_0", "all-zero panel 1 of 3")


def test_missing_space_group(tmp_path):
    bad = good(1)
    del bad["attrs"]["space_group"]
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", "space_group missing")


def test_unparseable_space_group(tmp_path):
    bad = good(1, space_group=b"abc")
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", "space_group b'abc' not an integer")


@pytest.mark.parametrize("sg", [b"231", b"0", b"-5"])
def test_space_group_outside_range(tmp_path, sg):
    number = int(sg)
    bad = good(1, space_group=sg)
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", f"space_group {number} outside 1..230")


def test_missing_material(tmp_path):
    bad = good(1)
    del bad["attrs"]["material"]
    assert_one_rejected(index_with_bad(tmp_path, bad), "sample_1_0", "material missing")


def test_dataset_at_file_root(tmp_path):
    import h5py

    path = write_challenge_file(tmp_path / "batch_train_0.h5", [good(0)])
    with h5py.File(path, "a") as fh:
        fh["stray"] = np.zeros(3)
    idx = index_file(path)
    assert_one_rejected(idx, "stray", "not a sample group (Dataset at file root)")


# ---------------------------------------------------------------- atomic writes
def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and list(tmp_path.iterdir()) == [target]


def test_stack_extent_points_at_the_stack_bytes(tmp_path):
    import h5py

    path = write_challenge_file(tmp_path / "batch_train_0.h5", [good(0), good(1)])
    with h5py.File(path) as fh:
        dset = fh["sample_1_0"]["cbed_stack"]
        offset, size = stack_extent(dset)
        expected = dset[()].tobytes()
    assert size == len(expected) and path.read_bytes()[offset: offset + size] == expected
