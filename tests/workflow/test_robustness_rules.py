"""The tiny run with robustness curves and the transfer table on (tests/pipeline_robustness.yaml): rule all writes
robustness.csv, its figure and transfer.csv with a row per model, perturbation, strength and rendering. The run is a
copy of the session's tiny run (fixture ``tiny_run``) switched to this configuration: it reuses the data and the flat
CNN and runs the heads, the TDC's heads, the evaluation and the new rules."""

from __future__ import annotations

import csv

import h5py
import pytest
from conftest import REPO, SNAKEFILE, copy_run, job_stats, snakemake

pytestmark = pytest.mark.slow

CONFIGS = ["config/config.yaml", REPO / "tests" / "pipeline_config.yaml", REPO / "tests" / "pipeline_robustness.yaml"]
MODELS = ["flat", "tdc", "descriptors", "cnn"]


def run_dag(workdir, *args, timeout=900):
    return snakemake("-s", SNAKEFILE, "--cores", "2", *args, "--configfile", *CONFIGS, cwd=workdir, timeout=timeout)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    workdir = copy_run(tiny_run, tmp_path_factory.mktemp("robustness") / "run")
    res = run_dag(workdir, "all")
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    stats = job_stats(res.stdout + res.stderr)
    assert {"robustness", "robustness_synthesize", "transfer", "transfer_synthesize"} <= set(stats), stats
    assert not {"synthesize", "index_raw", "shard", "train_flat"} & set(stats), stats  # the shared run's data and CNN
    return workdir


def read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_robustness_csv_has_a_row_per_model_perturbation_and_strength(run):
    rows = read(run / "results" / "metrics" / "robustness.csv")
    points = [("clean", ""), ("dose", "100"), ("dose", "1000000"), ("centre_offset", "0.05"), ("blank_panel", "1")]
    # rendered again: each curve starts at the run's own rendering (synth.mistilt 0.1, thickness up to 500 A)
    rendered = [("mistilt", "0.1"), ("mistilt", "0.3"), ("thickness", "500"), ("thickness", "800")]
    assert [(r["perturbation"], r["strength"], r["model"]) for r in rows] == [
        (p, s, m) for p, s in points + rendered for m in MODELS]
    for r in rows[len(points) * len(MODELS):]:
        assert int(r["n_materials"]) == 2 and int(r["n"]) == 4  # the first 2 test materials x 2 energies
        assert (r["difference"] == "") == (r["strength"] in ("0.1", "500"))
    rows = rows[:len(points) * len(MODELS)]
    variants = {r["model"]: r["variant"] for r in rows}
    assert variants["descriptors"] == "flat/symmetry/sym_crt" and variants["cnn"] == "flat/ce/cnn"
    assert variants["tdc"].startswith("tdc/shared-ce+symmetry/")
    for r in rows:
        assert int(r["n_materials"]) == 4 and int(r["n"]) == 8  # 4 test materials x 2 energies
        assert 0.0 <= float(r["lo"]) <= float(r["balanced_accuracy"]) <= float(r["hi"]) <= 1.0
        assert 0.0 <= float(r["crystal_system"]) <= 1.0
    assert all(float(r["ratio_to_clean"]) == 1.0 for r in rows if r["perturbation"] == "clean")
    png = run / "results" / "plots" / "robustness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_transfer_csv_pairs_the_run_mode_with_multislice(run):
    rows = read(run / "results" / "metrics" / "transfer.csv")
    assert [(r["mode"], r["model"]) for r in rows] == [(m, x) for m in ("kinematic", "multislice") for x in MODELS]
    n = {int(r["n"]) for r in rows}
    assert len(n) == 1 and 1 <= n.pop() <= 3  # one 100 keV sample of each of the first 3 test materials
    for r in rows:
        assert r["own_mode"] == "kinematic" and r["n"] == r["n_materials"]
        if r["mode"] == "kinematic":
            assert r["difference"] == ""
        else:
            assert float(r["difference_lo"]) <= float(r["difference"]) <= float(r["difference_hi"])
    # the run's own mode is not rendered again; the multislice files hold the run's first test materials
    files = sorted((run / "results" / "transfer").rglob("*.h5"))
    assert [f.relative_to(run / "results" / "transfer").as_posix() for f in files] == [
        "multislice/batch_test_0.h5", "multislice/batch_test_1.h5"]
    with h5py.File(files[0]) as f:
        assert sorted(g.attrs["material"].decode() for g in f.values()) == ["synth-test-0", "synth-test-1"]


def test_nothing_reruns_and_turning_them_off_drops_the_rules(run):
    dry = run_dag(run, "-n", "all")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert job_stats(dry.stdout + dry.stderr) == {}, dry.stdout
    off = run_dag(run, "-n", "--forceall", "all", "--config", "robustness={activate: false}",
                  "transfer={activate: false}")
    stats = job_stats(off.stdout + off.stderr)
    assert off.returncode == 0 and "evaluate" in stats, off.stdout + off.stderr
    rules = {"robustness", "robustness_plot", "robustness_synthesize", "transfer", "transfer_synthesize"}
    assert not rules & set(stats)
