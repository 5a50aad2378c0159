"""`make report` after a finished tiny run: it redraws missing figures from the saved results (plot rules only),
then writes a report that describes the run it shows, headline table first.

The run is a copy of the session's tiny run (fixture ``tiny_run``: a folder laid out like a clone, its own
configuration files with 60 generated materials, resnet18, 1 epoch, not the defaults), and `make report` is then
called without them, as a user would.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import copy_run, job_stats
PLOT_FILES = ["headline.png", "recall.png", "confusion.png", "routing.png", "hierarchy.png", "calibration.png",
              "selective.png", "gallery.png", "headline.csv", "variants.csv"]

pytestmark = pytest.mark.slow


def env():
    return {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}


def snakemake(workdir, *args, timeout=900):
    return subprocess.run([".venv/bin/snakemake", *args], cwd=workdir, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def make_report(workdir):
    # STAMP= : the venv exists; never let make (re)install it from a test
    return subprocess.run(["make", "report", "STAMP="], cwd=workdir, env=env(), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A finished tiny run with its own configuration files, in a folder laid out like a clone: a copy of the
    session's (these tests delete files and write the report)."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("report_run") / "run")


def test_run_saves_its_configuration(run):
    import yaml

    saved = yaml.safe_load((run / "results" / "run_config.yaml").read_text())
    assert saved["synth"]["n_materials"] == 60 and saved["synth"]["gallery"] is True
    assert saved["train"]["arch"] == "resnet18" and saved["xgboost"]["n_estimators"] == 20


def test_missing_figures_are_redrawn_by_plot_rules_only(run):
    plots = run / "results" / "plots"
    for name in PLOT_FILES:
        (plots / name).unlink()
    dry = snakemake(run, "--profile", "local", "--configfile", "results/run_config.yaml", "--allowed-rules",
                    "run_config", "plots", "gallery", "report_files", "-n", "--", "report_files")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert job_stats(dry.stdout + dry.stderr) == {"gallery": 1, "plots": 1, "report_files": 1}, dry.stdout
    logs = [run / "logs" / "train_flat" / "ce.log", run / "logs" / "evaluate" / "evaluate.log"]
    before = [p.stat().st_mtime_ns for p in logs]
    res = make_report(run)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    for name in PLOT_FILES:
        assert (plots / name).stat().st_size > 100, name
    assert [p.stat().st_mtime_ns for p in logs] == before, "make report ran a training or evaluation job"


def test_report_describes_the_run_it_shows(run):
    res = make_report(run)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    html = (run / "results" / "report.html").read_text()
    assert "resnet18, 1 epoch for" in html and "1 epochs" not in html and "resnet50" not in html
    assert "60\\nmaterials" in html or "60 materials" in html, "the description gives the run's 60 materials"
    # the headline table opens the front page
    estimate = "a reference, not a result)"  # the row of the perfect-routing estimate, labelled as no result
    assert html.index("Headline numbers") < html.index(estimate) < html.index("This run."), "the headline table first"
    # tables a person reads in the page, with space-group names; every variant with its feature sources
    for text in ("Every variant", "chosen on dev", "P2_1/c (14)", "Per-class recall", "TDC levels"):
        assert text in html, text
    # the page starts at its top (Snakemake's report centres its content vertically otherwise)
    assert "align-items: flex-start" in html


def test_report_never_retrains_a_missing_result(run):
    (run / "results" / "metrics" / "per_class.csv").unlink()
    res = make_report(run)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "rule evaluate" not in out and "per_class.csv" in out, out[-3000:]
