"""`make report` after a finished tiny run: it redraws missing figures from the saved results (plot rules only),
then writes a report that describes the run it shows, headline table first.

The run uses its own configuration file (60 generated materials, resnet18, 1 epoch, not the defaults), and
`make report` is then called without it, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

BIN = Path(sys.executable).parent
LINKED = ["Snakefile", "rules", "config", "profiles", "local", "workflow_scripts", "report", "envs", "tests",
          "Makefile", "requirements.txt", "pyproject.toml"]
PLOT_FILES = ["headline.png", "recall.png", "confusion.png", "routing.png", "hierarchy.png", "calibration.png",
              "gallery.png", "headline.csv", "variants.csv"]

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


def job_stats(output: str) -> dict[str, int]:
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {ln.split()[0]: int(ln.split()[1]) for ln in table.splitlines() if ln.strip() and ln.split()[-1].isdigit()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run with its own configuration file, in a folder laid out like a clone."""
    workdir = tmp_path_factory.mktemp("report_run")
    for name in LINKED:
        (workdir / name).symlink_to(REPO / name)
    (workdir / ".venv").symlink_to(BIN.parent)
    # the cheapest run that fills every part of the report: one CNN and a shared-backbone TDC (no level trainings);
    # test_pipeline.py runs the own-backbone TDC
    (workdir / "my.yaml").write_text((REPO / "tests" / "pipeline_config.yaml").read_text()
                                     + "\n# this run: the gallery on, a shared backbone\n")
    res = snakemake(workdir, "--profile", "local", "--cores", "2", "--configfile", "my.yaml", "--config",
                    "synth={gallery: true}",
                    "tdc={backbone: shared, routing: posterior, level_sizes: [2, 2]}")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    return workdir


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
