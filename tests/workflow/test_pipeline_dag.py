"""The TDC part of the static DAG, from the config alone (dry runs, seconds): which level waits for which."""

from __future__ import annotations

import pytest
from conftest import SNAKEFILE, job_stats, link_workdir, snakemake



@pytest.fixture
def workdir(tmp_path):
    return link_workdir(tmp_path)


def dry_run(workdir, *args):
    return snakemake("-s", SNAKEFILE, "-n", "--cores", "2", *args, cwd=workdir, timeout=120)


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


def test_shared_backbone_trains_no_level_resnet(workdir):
    res = dry_run(workdir, "--config", "tdc={backbone: shared, routing: posterior}")
    stats = job_stats(res.stdout)
    assert stats["tdc_heads"] == 1 and stats["tune_routing_shared"] == 1, stats
    assert not {"train_level", "level_job", "collect_missed", "tune_routing"} & set(stats), stats
    assert stats["features"] == 6  # train, dev, test of the flat ce model and of the symmetry descriptors


def test_ratio_levels_need_the_shared_backbone(workdir):
    res = dry_run(workdir, "--config", "tdc={levels: ratio, backbone: own}")
    assert res.returncode != 0
    assert "config error at tdc.levels: ratio plans the number of levels" in res.stdout + res.stderr
    res = dry_run(workdir, "--config", "tdc={levels: ratio, backbone: shared}")
    assert res.returncode == 0 and job_stats(res.stdout)["tdc_heads"] == 1, res.stdout + res.stderr


def job_files(output: str) -> dict[str, tuple[str, set[str]]]:
    """``{first output: (rule, input files)}`` of every job a dry run lists."""
    jobs = {}
    for block in output.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        fields = {ln.strip().split(":", 1)[0]: ln.split(":", 1)[1].strip() for ln in block.splitlines()[1:]
                  if ln.startswith("    ") and ":" in ln}
        if "output" in fields:
            inputs = {f.strip() for f in fields.get("input", "").split(",") if f.strip()}
            jobs[fields["output"].split(",")[0].strip()] = (rule, inputs)
    return jobs


def test_the_cnn_xgboost_head_is_a_flat_head_on_the_features_files(workdir):
    """The paper's CNN-XGBoost goes through the heads package like every head: rule head, one file format."""
    res = dry_run(workdir, "results/metrics/summary.json",
                  "--config", "heads={variants: [{name: cnn_xgb, backbone: ce, kind: xgboost}]}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = job_files(res.stdout)
    assert jobs["results/heads/flat/cnn_xgb/head.json"] == ("head", {
        "results/features/flat/ce/train.h5", "results/features/flat/ce/dev.h5", "results/data/run_classes.json"})
    assert jobs["results/features/flat/ce/dev.h5"] == ("features", {
        "results/flat/ce/best.pt", "results/shards/dev.csv"})
    rule, evaluated = jobs["results/metrics/summary.json"]
    assert rule == "evaluate" and "results/heads/flat/cnn_xgb/head.json" in evaluated
