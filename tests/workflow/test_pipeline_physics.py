"""The physics-only path: no CNN is trained (flat.losses: []); flat heads, an XGBoost head and the shared-backbone
TDC sit on the symmetry descriptors alone, and `cbedtdc classify` computes the descriptors for new files.

The DAG of a fresh working directory shows what the path runs; the run itself is a copy of the session's tiny run
(fixture ``tiny_run``: same generated data, same descriptors) switched to tests/pipeline_physics.yaml."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest
from conftest import BIN, REPO, SNAKEFILE, copy_run, job_stats, link_workdir, snakemake

pytestmark = pytest.mark.slow


def run_dag(workdir, *args):
    return snakemake("-s", SNAKEFILE, "--cores", "2", "all", *args, "--configfile", "config/config.yaml",
                     REPO / "tests" / "pipeline_config.yaml", REPO / "tests" / "pipeline_physics.yaml", cwd=workdir,
                     timeout=900)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    workdir = copy_run(tiny_run, tmp_path_factory.mktemp("pipeline_physics") / "run")
    res = run_dag(workdir)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    return workdir, res.stdout + res.stderr


def test_no_cnn_is_trained_and_every_model_reads_the_descriptors(run, tmp_path):
    workdir, out = run
    fresh = run_dag(link_workdir(tmp_path), "-n")  # everything the path runs from nothing
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    stats = job_stats(fresh.stdout)
    assert "train_flat" not in stats and stats["features"] == 3, stats  # the symmetry descriptors of each split
    assert stats["synthesize"] and stats["evaluate"] == 1, stats
    assert not {"train_flat", "features"} & set(job_stats(out)), "the run reran a backbone or the descriptors"
    s = json.loads((workdir / "results" / "metrics" / "summary.json").read_text())
    names = {v["name"] for v in s["variants"]}
    assert names == {"flat/symmetry/sym_crt", "flat/symmetry/sym_xgb", "tdc/shared-symmetry/rest/posterior/linear"}
    assert s["flat_by_loss"] == {} and s["flat"]["model"] in names and s["tdc"]["features"] == ["symmetry"]
    assert all(v["backbone_images"] == 0 for v in s["variants"])
    assert set(s["tdc"]["hierarchy"]) >= {"crystal_system", "point_group", "space_group"}


def test_classify_computes_the_descriptors_of_new_files(run, tmp_path):
    workdir, _ = run
    out = tmp_path / "preds.csv"
    res = subprocess.run([str(BIN / "cbedtdc"), "classify", str(workdir / "results" / "heads" / "flat" / "sym_xgb"),
                          str(workdir / "results" / "raw" / "batch_test_0.h5"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    s = json.loads((workdir / "results" / "metrics" / "summary.json").read_text())
    v = next(v for v in s["variants"] if v["name"] == "flat/symmetry/sym_xgb")
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(workdir / "results" / "metrics" / "predictions.csv", newline="") as fh:
        truth = {r["key"]: int(r["space_group"]) for r in csv.DictReader(fh)}
    assert len(rows) == len(truth)
    acc = sum(int(r["space_group"]) == truth[r["key"]] for r in rows) / len(rows)
    assert acc == pytest.approx(v["top1"], abs=1e-9), "classify reproduces the head's test top-1"
    assert all(r["space_group_name"].endswith(f"({r['space_group']})") for r in rows)
