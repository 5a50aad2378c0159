"""The TDC part of the static DAG, from the config alone (dry runs, seconds): which level waits for which."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "workflow_scripts").symlink_to(REPO / "workflow_scripts")
    (tmp_path / "config").symlink_to(REPO / "config")
    return tmp_path


def dry_run(workdir, *args):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-n", "--cores", "2", *args],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=120)


def job_stats(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("total")[0]
    return {ln.split()[0]: int(ln.split()[1]) for ln in table.splitlines() if ln.strip() and ln.split()[-1].isdigit()}


def test_rest_levels_train_independently(workdir):
    res = dry_run(workdir, "results/tdc/level_3/best.pt", "--config", "tdc={mode: rest}")
    stats = job_stats(res.stdout)
    assert stats["train_level"] == 1 and "collect_missed" not in stats, stats


def test_hard_levels_wait_for_the_previous_levels_misses(workdir):
    res = dry_run(workdir, "results/tdc/level_3/best.pt", "--config", "tdc={mode: hard}")
    stats = job_stats(res.stdout)
    assert stats["train_level"] == 3 and stats["collect_missed"] == 2, stats


def test_auto_levels_set_the_number_of_level_jobs(workdir):
    res = dry_run(workdir, "tdc", "--config", "tdc={levels: auto, n_levels: 4}")
    stats = job_stats(res.stdout)
    assert stats["train_level"] == 4 and stats["collect_missed"] == 3, stats


@pytest.mark.parametrize("override, message", [
    ("tdc={level_sizes: [5, 5, 5]}", "tdc.level_sizes: [5, 5, 5] add up to 15, the run has 20 classes"),
    ("tdc={level_sizes: [5, 14, 1]}", "tdc.level_sizes: [5, 14, 1] leaves a level with one output"),
    ("tdc={mode: hard, level_sizes: [1, 10, 9]}", "leaves a level with one output"),
])
def test_impossible_levels_fail_at_parse_time_in_one_line(workdir, override, message):
    res = dry_run(workdir, "--config", override)
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "config error" in ln]
    assert len(lines) == 1 and message in lines[0], res.stdout + res.stderr
