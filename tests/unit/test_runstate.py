"""Run state: a training job's progress read from its real log, and the stale-lock rule of ``make run``."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbedtdc import runstate
from cbedtdc.train import fit

CFG = {"arch": "resnet18", "epochs": 2, "batch_size": 4, "lr": 0.002, "lr_scaling": "none", "workers": 0,
       "checkpoint_every": 2, "threads_per_rank": 1, "timeout_s": 60, "seed": 3, "loss": "ce"}


@pytest.fixture(scope="module")
def engine_log(tiny_shards, tmp_path_factory):
    """The log a real 2-epoch training job writes (the engine's own lines, as the rule's log: file gets them)."""
    work = tmp_path_factory.mktemp("work")
    path = work / "logs" / "train_flat" / "ce.log"
    path.parent.mkdir(parents=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        fit(CFG, shard_root=tiny_shards, out_dir=work / "out", classes=[14, 225, 1])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    return path


def test_finished_job_reads_done_with_its_epochs_and_rate(engine_log):
    status = runstate.job_status(engine_log)
    assert status.name == "train_flat/ce"
    assert (status.state, status.epoch, status.epochs) == ("done", 2, 2)
    assert status.rate > 0
    assert status.line().startswith("train_flat/ce: done, epoch 2/2, ")


def test_running_job_shows_epoch_rate_and_eta(engine_log, tmp_path):
    """Cut the real log after its first epoch line: the job is running, one epoch left, with an ETA."""
    lines = engine_log.read_text().splitlines(keepends=True)
    first_epoch = next(i for i, line in enumerate(lines) if runstate.parse_epoch_line(line))
    partial = tmp_path / "logs" / "train_level" / "2.log"
    partial.parent.mkdir(parents=True)
    partial.write_text("".join(lines[: first_epoch + 1]))
    status = runstate.job_status(partial)
    assert (status.state, status.epoch, status.epochs) == ("running", 1, 2)
    assert status.eta_s is not None and status.eta_s >= 0
    assert "ETA" in status.line() and "img/s" in status.line()
    jobs = runstate.run_status(tmp_path)
    assert [j.name for j in jobs] == ["train_level/2"]


def test_failed_job_is_reported(tmp_path):
    log = tmp_path / "logs" / "train_flat" / "ce.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01 00:00:00,000 INFO cbedtdc.train: job: 3 outputs (a b c), 18 train / 9 dev samples, "
                   "0 excluded; resnet18, stack, 2 epochs x 5 steps, global batch 4\nTraceback (most recent call last):\n")
    assert runstate.job_status(log).state == "failed"


def test_lock_with_no_live_process_is_stale_and_a_live_job_blocks_unlocking(tmp_path):
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    assert not runstate.stale_lock(tmp_path)  # no lock yet
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("x")
    assert runstate.stale_lock(tmp_path)
    # an orphaned job of the killed run, still working in the directory
    script = tmp_path / "workflow_scripts" / "train.py"
    script.parent.mkdir()
    script.write_text("import time\ntime.sleep(60)\n")
    job = subprocess.Popen([sys.executable, "workflow_scripts/train.py"], cwd=tmp_path)
    try:
        deadline = time.time() + 10
        while not runstate.live_processes(tmp_path) and time.time() < deadline:
            time.sleep(0.1)
        assert [pid for pid, _ in runstate.live_processes(tmp_path)] == [job.pid]
        assert not runstate.stale_lock(tmp_path)
        with pytest.raises(RuntimeError, match=rf"pid {job.pid}: .*workflow_scripts/train.py.*wait for them"):
            runstate.unlock_if_stale(tmp_path)
    finally:
        job.kill()
        job.wait()
    assert runstate.stale_lock(tmp_path)


def test_status_says_what_runs_in_every_stage(tmp_path):
    """`make status` during the data stage: finished jobs per rule and the ones writing their log now."""
    import os

    for rule, names in (("synthesize", ["batch_train_0", "batch_dev_0"]), ("shard", ["batch_train_0"])):
        for name in names:
            (tmp_path / "logs" / rule).mkdir(parents=True, exist_ok=True)
            (tmp_path / "logs" / rule / f"{name}.log").write_text("x")
    for rule, name in (("synthesize", "batch_train_0"), ("synthesize", "batch_dev_0")):
        (tmp_path / "benchmarks" / rule).mkdir(parents=True, exist_ok=True)
        (tmp_path / "benchmarks" / rule / f"{name}.tsv").write_text("s\n1\n")
    old = tmp_path / "logs" / "shard" / "batch_dev_0.log"  # a log untouched for an hour: not running, not done
    old.write_text("x")
    os.utime(old, (old.stat().st_mtime - 3600, old.stat().st_mtime - 3600))
    lines = runstate.stage_status(tmp_path)
    assert lines == ["data: 2 jobs done (synthesize 2); running now: shard (1)"], lines
    assert runstate.stage_status(tmp_path / "nothing") == []


def test_follow_prints_a_stage_line_when_its_jobs_change(tmp_path):
    """`make run`'s terminal: a [stage] line per stage whose job counts changed, besides the [progress] lines."""
    import io
    import subprocess
    import sys

    (tmp_path / "logs" / "synthesize").mkdir(parents=True)
    (tmp_path / "logs" / "synthesize" / "batch_train_0.log").write_text("x")
    (tmp_path / "benchmarks" / "synthesize").mkdir(parents=True)
    (tmp_path / "benchmarks" / "synthesize" / "batch_train_0.tsv").write_text("s\n1\n")
    out = io.StringIO()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # an ended process: follow looks once and stops
    proc.wait()
    runstate.follow(tmp_path, pid=proc.pid, interval=0.01, out=out)
    assert out.getvalue().splitlines() == ["[stage] data: 1 jobs done (synthesize 1)"], out.getvalue()
