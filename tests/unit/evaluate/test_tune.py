"""The tuning machine: one grid for the flat head and the TDC's level heads, dev only, every try in a CSV."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from cbedtdc.cascade import LevelPlan
from cbedtdc.errors import InputError
from cbedtdc.evaluate.tune import expand_grid, run_tuning

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "heads"))
from test_jobs import CLASSES, COUNTS, write_features  # noqa: E402

from conftest import REPO  # noqa: E402

GRID = "base: {kind: linear, epochs: 10}\ngrid:\n  lr: [0.00001, 0.1]\n  sampler: [instance, class_balanced]\n"


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "features" / "flat" / "ce"
    for seed, split in enumerate(("train", "dev")):
        scale = 1 if split == "train" else 0.5
        write_features(d / f"{split}.h5", split, {c: max(2, int(n * scale)) for c, n in COUNTS.items()}, seed)
    (d / "test.h5").write_text("not an HDF5 file: the tuning machine must never open it")
    (tmp_path / "run_classes.json").write_text(json.dumps({str(c): {"train": COUNTS[c]} for c in CLASSES}))
    LevelPlan([[14, 225], [1, 2]], counts={14: 60, 225: 40, 1: 15, 2: 10}).save(tmp_path / "levels.json")
    (tmp_path / "grid.yaml").write_text(GRID)
    return tmp_path, d


def test_grid_is_the_product_in_order_and_checked_before_fitting():
    tries = expand_grid({"lr": [0.1, 0.01], "loss": ["ce"]}, base={"epochs": 5})
    assert tries == [{"epochs": 5, "lr": 0.1, "loss": "ce"}, {"epochs": 5, "lr": 0.01, "loss": "ce"}]
    with pytest.raises(InputError, match="unknown head option"):
        expand_grid({"learning_rate": [0.1]})
    with pytest.raises(InputError, match="try 2"):
        expand_grid({"loss": ["ce", "focal"]})


def test_both_sides_get_the_same_tries_on_dev_and_test_is_never_read(run_dir):
    root, feats = run_dir
    out = root / "tuning.csv"
    chosen = run_tuning([feats], root / "run_classes.json", root / "grid.yaml", out, levels_path=root / "levels.json")
    rows = list(csv.DictReader(out.open()))
    by_side = {s: [r for r in rows if r["side"] == s] for s in ("flat", "tdc")}
    assert [r["setting"] for r in by_side["flat"]] == [r["setting"] for r in by_side["tdc"]]
    assert len(by_side["flat"]) == 4
    for side, side_rows in by_side.items():
        scores = [float(r["dev_balanced_accuracy"]) for r in side_rows]
        assert [r["chosen"] for r in side_rows].count("1") == 1
        best = side_rows[[r["chosen"] for r in side_rows].index("1")]
        assert float(best["dev_balanced_accuracy"]) == max(scores) == chosen[side]["dev_balanced_accuracy"]
        # the tries differ: a learning rate of 1e-5 for 10 epochs does not separate the clusters, 0.1 does
        assert max(scores) >= 0.8 and min(scores) < max(scores) - 0.05, (side, scores)
        assert json.loads(best["setting"])["lr"] == 0.1


def test_cli_flat_side_only_and_a_bad_grid_names_the_file(run_dir):
    root, feats = run_dir
    out = root / "flat.csv"
    cmd = [sys.executable, str(REPO / "workflow_scripts" / "tune_heads.py"), "--features", str(feats),
           "--run-classes", str(root / "run_classes.json"), "--grid", str(root / "grid.yaml"), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert {r["side"] for r in csv.DictReader(out.open())} == {"flat"}
    (root / "grid.yaml").write_text("base: {}\n")
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 2 and "grid.yaml" in res.stderr and "grid:" in res.stderr


def test_levels_of_another_run_or_a_bad_routing_stop_before_any_fitting(run_dir):
    root, feats = run_dir
    LevelPlan([[14, 225], [1, 3]], counts={14: 60, 225: 40, 1: 15, 3: 10}).save(root / "other_levels.json")
    with pytest.raises(InputError, match="other_levels.json plans classes"):
        run_tuning([feats], root / "run_classes.json", root / "grid.yaml", root / "t.csv",
                   levels_path=root / "other_levels.json")
    with pytest.raises(InputError):
        run_tuning([feats], root / "run_classes.json", root / "grid.yaml", root / "t.csv",
                   levels_path=root / "levels.json", routing="nearest")
    assert not (root / "t.csv").exists()
