"""Class sets, file plan, config checks and CLI helpers: the cases users hit (doctests: --doctest-modules)."""

import pytest

from cbedtdc.classes import real_counts, resolve_classes
from cbedtdc.layout import discover_raw, synth_file_plan


def test_real_counts_match_the_challenge_totals():
    counts = real_counts()
    assert len(counts) == 200 and sum(sum(c) for c in counts.values()) == 187_155


def test_resolve_classes_rejects_bad_groups():
    with pytest.raises(ValueError, match=r"1\.\.230, got \[231\]"):
        resolve_classes([1, 231])
    with pytest.raises(ValueError, match="top20"):
        resolve_classes("top30")
    assert len(resolve_classes("all")) == 230


def test_discover_raw_recursive_and_duplicate_names(tmp_path):
    for split in ("train", "dev"):
        (tmp_path / split).mkdir()
        (tmp_path / split / f"batch_{split}_0.h5").write_bytes(b"")
    (tmp_path / "notes_batch_x.h5").write_bytes(b"")
    assert sorted(discover_raw(tmp_path)) == ["batch_dev_0", "batch_train_0"]
    (tmp_path / "batch_dev_0.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="share the file name batch_dev_0.h5"):
        discover_raw(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        discover_raw(tmp_path / "missing")


def test_synth_plan_covers_every_material_once():
    plan = synth_file_plan({"train": 250, "dev": 30, "test": 31}, 100)
    for split, total in {"train": 250, "dev": 30, "test": 31}.items():
        files = [f for f in plan if f.split == split]
        assert sum(f.n_materials for f in files) == total
        assert [f.first_material for f in files] == list(range(0, total, 100))
