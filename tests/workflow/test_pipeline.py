"""The whole DAG, tiny: generator -> data stage -> flat + own-backbone TDC (both readings) -> evaluate -> plots.

A copy of the session's tiny run (fixture ``tiny_run``: generator, data stage, flat CNN, shared-backbone TDC) is
switched to tests/pipeline_config.yaml on top of config/config.yaml (4 classes, 2 levels, 16 px, resnet18, 1 epoch,
1 rank, one ResNet per TDC level, a CNN-XGBoost flat head), which trains the levels and reruns no data job and no flat
CNN; then the behaviours a user relies on: a valid summary.json, nothing to do after a complete run, deleting level
2 reruns level 2 and after only, switching the reading retrains only the TDC, and `cbedtdc classify` on new files.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, REPO, SNAKEFILE, copy_run, job_stats, snakemake

# rule all needs only summary.json; tdc (every level) and the plots make a deleted level count as missing
TARGETS = ["all", "tdc", "results/plots/headline.png"]

pytestmark = pytest.mark.slow


def run_dag(workdir, *args, timeout=600):
    # targets first: --config and --configfile take every word up to the next option
    return snakemake("-s", SNAKEFILE, "--cores", "2", *args, "--configfile", "config/config.yaml",
                     REPO / "tests" / "pipeline_config.yaml", cwd=workdir, timeout=timeout)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def check_summary(path, mode):
    s = json.loads(Path(path).read_text())
    for model, keys in {"flat": ["top1", "balanced_accuracy", "macro_f1"],
                        "tdc": ["top1", "balanced_accuracy", "macro_f1", "estimated_top1"],
                        "chance": ["majority", "prior"]}.items():
        for key in keys:
            assert 0.0 <= s[model][key] <= 1.0, f"summary[{model}][{key}] = {s[model].get(key)}"
    assert s["tdc"]["mode"] == mode
    assert 0.0 <= s["flat"]["top5"] <= 1.0
    assert s["flat"]["model"] == s["best"]["flat"], "the headline flat model is the one the TDC is compared with"
    for model in ("flat", "tdc"):
        lo, hi = s[model]["ci95"]["balanced_accuracy"]
        assert lo <= s[model]["balanced_accuracy"] <= hi
    assert s["tdc"]["friedel"]["n_classes"] == 3  # {1, 2} merged among 14, 225, 1, 2
    # the paper's CNN-XGBoost: a flat head of kind xgboost, scored and ranked on dev like every variant
    xgb = next(v for v in s["variants"] if v["name"] == "flat/ce/cnn_xgb")
    assert xgb["head_spec"]["kind"] == "xgboost" and 0.0 <= xgb["balanced_accuracy"] <= 1.0
    assert xgb["dev_balanced_accuracy"] is not None
    # the TDC is among the variants with the dev score its routing was tuned to
    tdc = next(v for v in s["variants"] if v["family"] == "tdc")
    assert tdc["dev_balanced_accuracy"] is not None and s["best"]["tdc"] == tdc["name"]
    # the levels' kept sets partition the test split
    per_level = s["tdc"]["per_level"]
    assert sum(lv["kept"] for lv in per_level) == s["n_test"]
    assert per_level[0]["reached"] == s["n_test"]
    # equal budget: planned images identical, seen images within one level's rounding
    b = s["budget"]
    assert b["flat_images_planned"] == b["tdc_images_planned"] > 0
    assert b["flat_images_seen"] and b["tdc_images_seen"]
    return s


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A complete tiny run with one ResNet per level in the rest reading (the config default): the session's
    shared-backbone run, copied, then switched to the own backbone."""
    workdir = copy_run(tiny_run, tmp_path_factory.mktemp("pipeline") / "run")
    res = run_dag(workdir, *TARGETS)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    stats = job_stats(res.stdout + res.stderr)
    # the switch trains the levels and their heads and reuses the data and the flat CNN
    assert stats.get("train_level") == 2 and stats.get("head", 0) >= 1, stats  # the levels, the CNN-XGBoost head
    assert not {"synthesize", "index_raw", "manifest", "split", "shard", "train_flat"} & set(stats), stats
    return workdir


def test_tiny_run_writes_a_valid_summary_and_report_files(run):
    s = check_summary(run / "results" / "metrics" / "summary.json", "rest")
    assert [len(lv) for lv in s["tdc"]["levels"]] == [2, 2]
    assert sorted(c for lv in s["tdc"]["levels"] for c in lv) == [1, 2, 14, 225]
    test_keys = [r["key"] for r in read_csv(run / "results" / "shards" / "test.csv")]
    preds = read_csv(run / "results" / "metrics" / "predictions.csv")
    assert sorted(r["key"] for r in preds) == sorted(test_keys), "a test sample lost or counted twice"
    assert {r["tdc_level"] for r in preds} <= {"1", "2"}
    per_class = read_csv(run / "results" / "metrics" / "per_class.csv")
    assert [int(r["space_group"]) for r in per_class] == s["classes"]
    for name in ("headline", "recall", "confusion", "routing"):
        assert (run / "results" / "plots" / f"{name}.png").stat().st_size > 1000
    missed = read_csv(run / "results" / "tdc" / "level_1" / "missed.csv")
    assert missed and {r["reason"] for r in missed} == {"later_level"}
    assert {int(r["space_group"]) for r in missed} <= set(s["tdc"]["levels"][1])


def test_nothing_to_do_after_a_complete_run(run):
    res = run_dag(run, *TARGETS, "-n")
    assert res.returncode == 0, res.stderr
    assert job_stats(res.stdout + res.stderr) == {}, res.stdout


def classify_agrees_with_evaluate(run, tmp_path, broken=False):
    """`cbedtdc classify` on a copy of a test file: the same predictions and levels as evaluate's
    predictions.csv for the same samples (same preprocessing, same calibrated routing). ``broken``: a file that is
    not HDF5 sits beside it."""
    new = tmp_path / "new"
    new.mkdir(exist_ok=True)
    shutil.copy(run / "results" / "raw" / "batch_test_0.h5", new / "batch_test_0.h5")
    if broken:
        (new / "broken.h5").write_bytes(b"not an HDF5 file")
    out = tmp_path / "preds.csv"
    res = subprocess.run([str(BIN / "cbedtdc"), "classify", str(run / "results" / "tdc"), str(new), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    preds = read_csv(out)
    assert len(preds) > 0 and all(r["key"].startswith("batch_test_0.h5/") for r in preds)
    evaluated = {r["key"]: r for r in read_csv(run / "results" / "metrics" / "predictions.csv")}
    compared = 0
    for r in preds:
        if r["key"] in evaluated:
            compared += 1
            assert (r["space_group"], r["level"]) == (evaluated[r["key"]]["tdc_pred"], evaluated[r["key"]]["tdc_level"]), r
        assert r["top1_space_group"] == r["space_group"]
    assert compared == len(preds)
    return new, out


def test_classify_new_files_reports_bad_ones(run, tmp_path):
    new, out = classify_agrees_with_evaluate(run, tmp_path, broken=True)  # the good file is classified all the same
    rejected = read_csv(tmp_path / "preds.rejected.csv")
    assert [r["reason"].split(":")[0] for r in rejected] == ["cannot open"] and "broken.h5" in rejected[0]["file"]
    bad = subprocess.run([str(BIN / "cbedtdc"), "classify", str(tmp_path), str(new), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a trained variant" in bad.stderr


def test_deleting_level_2_reruns_level_2_and_after_only(run):
    shutil.rmtree(run / "results" / "tdc" / "level_2")
    res = run_dag(run, *TARGETS, "-n")
    stats = job_stats(res.stdout + res.stderr)
    assert stats.get("train_level") == 1 and stats.get("level_job") == 1, stats
    assert set(stats) <= {"level_job", "train_level", "features", "tune_routing", "evaluate",
                          "plots", "all", "tdc"}, stats
    res = run_dag(run, *TARGETS)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "rule train_level" in res.stdout + res.stderr
    assert "wildcards: level=1" not in res.stdout + res.stderr
    assert job_stats(run_dag(run, *TARGETS, "-n").stdout) == {}


def test_threshold_routing_retrains_nothing(run):
    thr = ["--config", "tdc={routing: threshold}"]
    stats = job_stats(run_dag(run, *TARGETS, "-n", *thr).stdout)
    assert set(stats) <= {"tune_routing", "evaluate", "plots", "run_config", "all", "tdc"} and stats.get("tune_routing") == 1, stats
    res = run_dag(run, *TARGETS, *thr)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    s = json.loads((run / "results" / "metrics" / "summary_rest_threshold.json").read_text())
    assert s["tdc"]["routing"] == "threshold" and len(s["tdc"]["thresholds"]) == 1
    routing = json.loads((run / "results" / "tdc" / "routing.json").read_text())
    assert routing["dev"]["balanced_accuracy"] >= routing["dev"]["default_0.5"]["balanced_accuracy"]


def test_hard_reading_retrains_only_the_tdc_and_chains_the_levels(run, tmp_path):
    hard = ["--config", "tdc={mode: hard}"]
    dry = run_dag(run, *TARGETS, "-n", *hard)
    stats = job_stats(dry.stdout + dry.stderr)
    assert stats.get("train_level") == 2 and stats.get("collect_missed") == 1, stats
    assert not {"train_flat", "synthesize", "shard", "manifest"} & set(stats), stats
    res = run_dag(run, *TARGETS, *hard)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    s = check_summary(run / "results" / "metrics" / "summary.json", "hard")
    assert len(s["tdc"]["thresholds"]) == 1
    # level 2 trained on exactly what level 1 missed (the keys of its job)
    missed = read_csv(run / "results" / "tdc" / "level_1" / "missed.csv")
    job = read_csv(run / "results" / "tdc" / "level_2" / "job" / "train_keys.csv")
    assert {r["key"] for r in job} == {r["key"] for r in missed if r["split"] == "train"}
    assert {r["reason"] for r in missed} <= {"wrong", "not_in_level"}
    levels = json.loads((run / "results" / "tdc" / "levels.json").read_text())
    assert levels["outputs"][1] == levels["levels"][0] + levels["levels"][1]  # cumulative outputs
    # both readings side by side
    metrics = run / "results" / "metrics"
    table = subprocess.run([str(BIN / "cbedtdc"), "table", str(metrics / "summary_rest.json"),
                            str(metrics / "summary_hard.json")], capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "TDC rest" in table.stdout and "TDC hard" in table.stdout and "*estimated*" in table.stdout
    # classify reads the hard reading's calibrated thresholds like evaluate does
    classify_agrees_with_evaluate(run, tmp_path)
