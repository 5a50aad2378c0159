"""The tiny DAG with the shared-backbone TDC: XGBoost level heads on SMOTE-resampled flat features, posterior
routing, flat heads beside the flat CNN; then changing a head or the routing reruns no backbone.

The run is the session's tiny run (fixture ``tiny_run``, tests/pipeline_shared.yaml), copied to this module's
folder because the replicate test adds to it."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
from conftest import BIN, REPO, SNAKEFILE, copy_run, job_stats, snakemake

pytestmark = pytest.mark.slow

BACKBONE_RULES = {"synthesize", "shard", "manifest", "train_flat", "train_level", "features"}


def run_dag(workdir, *args, timeout=900):
    return snakemake("-s", SNAKEFILE, "--cores", "2", *args, "--configfile", "config/config.yaml",
                     REPO / "tests" / "pipeline_config.yaml", REPO / "tests" / "pipeline_shared.yaml", cwd=workdir,
                     timeout=timeout)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    return copy_run(tiny_run, tmp_path_factory.mktemp("pipeline_shared") / "run")


def test_shared_backbone_run_writes_a_valid_summary(run):
    s = json.loads((run / "results" / "metrics" / "summary.json").read_text())
    t = s["tdc"]
    assert t["backbone"] == "shared" and t["routing"] == "posterior" and t["shared_loss"] == "ce"
    assert t["head"]["kind"] == "xgboost" and t["head"]["resample"] == "smote"
    assert t["features"] == ["cnn", "symmetry"]
    assert sum(lv["kept"] for lv in t["per_level"]) == s["n_test"]
    for key in ("top1", "balanced_accuracy", "macro_f1", "estimated_top1"):
        assert 0.0 <= t[key] <= 1.0
    assert not (run / "results" / "tdc" / "level_1").exists(), "a shared-backbone run trains no level ResNet"
    # equal backbone compute: the cascade's backbone is the flat model
    assert s["budget"]["tdc_images_seen"] == s["budget"]["flat_images_seen"] > 0
    assert s["budget"]["tdc_head_images"] > 0
    names = {v["name"] for v in s["variants"]}
    assert names == {"flat/ce/cnn", "flat/ce/crt", "flat/ce/smote_la", "flat/ce+symmetry/cnn_sym_xgb",
                     "tdc/shared-ce+symmetry/rest/posterior/xgboost"}
    for v in s["variants"]:
        assert 0.0 <= v["balanced_accuracy"] <= 1.0 and v["dev_balanced_accuracy"] is not None
        assert set(v["shots"]) == {"many", "medium", "few"}
    best = s["best"]
    assert best["flat"] in names and best["tdc"].startswith("tdc/")
    # the headline flat model is the flat variant the TDC is compared with (a head may beat the CNN on dev)
    chosen = next(v for v in s["variants"] if v["name"] == best["flat"])
    assert s["flat"]["model"] == best["flat"] and s["flat"]["balanced_accuracy"] == chosen["balanced_accuracy"]
    assert s["flat"]["images_seen"] == s["flat_by_loss"]["ce"]["images_seen"]
    lo, hi = best["difference_ci95"]
    assert lo <= best["balanced_accuracy_difference"] <= hi
    table = subprocess.run([str(BIN / "cbedtdc"), "table", str(run / "results" / "metrics" / "summary.json")],
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "tdc/shared-ce+symmetry/rest/posterior/xgboost" in table.stdout and "paired 95 % interval" in table.stdout


def test_classify_a_shared_backbone_run_agrees_with_the_evaluation(run, tmp_path):
    """`cbedtdc classify results ...` on a shared-backbone run: backbone features, level heads, tuned routing."""
    out = tmp_path / "preds.csv"
    res = subprocess.run([str(BIN / "cbedtdc"), "classify", str(run / "results"),
                          str(run / "results" / "raw" / "batch_test_0.h5"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    with open(out, newline="") as fh:
        preds = list(csv.DictReader(fh))
    with open(run / "results" / "metrics" / "predictions.csv", newline="") as fh:
        evaluated = {r["key"]: r for r in csv.DictReader(fh)}
    common = [r for r in preds if r["key"] in evaluated]
    assert common, "no classified sample is in the evaluated test split"
    for r in common:
        assert (r["space_group"], r["level"]) == (evaluated[r["key"]]["tdc_pred"], evaluated[r["key"]]["tdc_level"])
        # one scale: the best candidate is the prediction, with its probability
        assert r["top1_space_group"] == r["space_group"] and r["top1_prob"] == r["prob"], r
    assert "shared-backbone TDC" in res.stderr, "classify says which variant it used"


def test_classify_the_headline_flat_head_agrees_with_the_evaluation(run, tmp_path):
    """`cbedtdc classify results/heads/flat/<name>`: the flat head the report headlines, through its backbone."""
    summary = json.loads((run / "results" / "metrics" / "summary.json").read_text())
    head = next(v for v in summary["variants"] if v["family"] == "flat" and v["head"] != "cnn")
    out = tmp_path / "preds.csv"
    res = subprocess.run([str(BIN / "cbedtdc"), "classify", str(run / "results" / "heads" / "flat" / head["head"]),
                          str(run / "results" / "raw" / "batch_test_0.h5"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "flat head" in res.stderr
    with open(out, newline="") as fh:
        preds = {r["key"]: int(r["space_group"]) for r in csv.DictReader(fh)}
    with open(run / "results" / "metrics" / "predictions.csv", newline="") as fh:
        keys = [r["key"] for r in csv.DictReader(fh)]
    common = [k for k in keys if k in preds]
    assert len(common) == len(keys), "the raw test file holds every evaluated test sample"
    with open(run / "results" / "metrics" / "predictions.csv", newline="") as fh:
        truth = {r["key"]: int(r["space_group"]) for r in csv.DictReader(fh)}
    acc = np.mean([preds[k] == truth[k] for k in common])
    assert acc == pytest.approx(head["top1"], abs=1e-9), "classify reproduces the head's test top-1"


@pytest.mark.parametrize("override, reruns", [
    ("tdc={routing: threshold}", "tune_routing_shared"),
    ("tdc={head: {kind: linear, loss: logit_adjusted}}", "tdc_heads"),
    ("heads={variants: [{name: crt, backbone: ce, sampler: class_balanced, epochs: 5}]}", "head"),
    # another feature set of a head or of the TDC's levels: the symmetry source joins, no backbone retrains
    ("heads={variants: [{name: crt, backbone: ce, features: [cnn, symmetry], sampler: class_balanced}]}", "head"),
    ("tdc={head: {features: [symmetry], kind: xgboost, resample: smote}}", "tdc_heads"),
])
def test_changing_a_head_or_the_routing_retrains_no_backbone(run, override, reruns):
    dry = run_dag(run, "all", "-n", "--config", override)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    stats = job_stats(dry.stdout + dry.stderr)
    assert stats.get(reruns) and stats.get("evaluate") == 1, stats
    assert not BACKBONE_RULES & set(stats), stats


def test_replicate_seeds_retrain_only_the_training_and_report_the_spread(run):
    """replicates: 2 adds one training seed: no data job and none of the run's own jobs reruns; every variant gets
    its mean and spread over the two seeds, and the TDC - best flat difference per seed."""
    dry = run_dag(run, "all", "-n", "--config", "replicates=2")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    stats = job_stats(dry.stdout + dry.stderr)
    assert stats.get("train_flat_replicate") == 1 and stats.get("replicates") == 1, stats
    assert not {"synthesize", "index_raw", "manifest", "split", "shard", "train_flat", "evaluate",
                "plan_levels"} & set(stats), stats
    res = run_dag(run, "all", "--config", "replicates=2")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    agg = json.loads((run / "results" / "metrics" / "replicates.json").read_text())
    assert agg["seeds"] == [0, 1]
    main = json.loads((run / "results" / "metrics" / "summary.json").read_text())
    rep = json.loads((run / "results" / "replicates" / "seed_1" / "metrics" / "summary.json").read_text())
    info = json.loads((run / "results" / "replicates" / "seed_1" / "flat" / "ce" / "train.json").read_text())
    assert info["config"]["seed"] == 1, "the replicate's backbone is trained with its own seed"
    assert rep["variants"] != main["variants"], "another training seed, other scores"
    for row in agg["variants"]:
        a = next(v for v in main["variants"] if v["name"] == row["variant"])["balanced_accuracy"]
        b = next(v for v in rep["variants"] if v["name"] == row["variant"])["balanced_accuracy"]
        assert row["seeds"] == [0, 1] and abs(row["balanced_accuracy"]["mean"] - (a + b) / 2) < 1e-12
    assert set(agg["difference"]["per_seed"]) == {"0", "1"}
    assert (run / "results" / "metrics" / "replicates.csv").read_text().count("\n") == len(agg["variants"]) + 2


def test_hierarchy_in_the_summary_is_what_predictions_csv_gives(run):
    """Every hierarchy level's top-1 of the headline flat model and the TDC, recomputed from predictions.csv with the
    space-group tables, equals summary.json's; the crystal system is never worse than the space group."""
    from cbedtdc.crystallography import LEVELS, hierarchy_labels

    s = json.loads((run / "results" / "metrics" / "summary.json").read_text())
    with open(run / "results" / "metrics" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    y = [int(r["space_group"]) for r in rows]
    for key, col in (("flat", "flat_pred"), ("tdc", "tdc_pred")):
        pred = [int(r[col]) for r in rows]
        for level in LEVELS:
            t, p = np.asarray(hierarchy_labels(y, level)), np.asarray(hierarchy_labels(pred, level))
            assert s[key]["hierarchy"][level]["top1"] == pytest.approx(float(np.mean(t == p))), (key, level)
        h = s[key]["hierarchy"]
        assert h["crystal_system"]["top1"] >= h["point_group"]["top1"] >= h["space_group"]["top1"]
    for key in ("flat", "tdc"):
        cal = s["calibration"][key]
        assert 0 <= cal["after"]["ece"] <= 1 and sum(b["count"] for b in cal["after"]["bins"]) == s["n_test"]
