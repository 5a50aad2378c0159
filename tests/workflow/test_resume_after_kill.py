"""A run killed with SIGKILL in the middle of a training job resumes as the README says.

First test: the kill takes Snakemake and every job it started (as a lost terminal or a walltime limit does). The
README's recovery is the one ``make run`` performs: remove the stale lock when no process of the old run is left
(``python -m cbedtdc.runstate unlock-if-stale``), then the same command again; the training job continues from its
checkpoint instead of starting over.

Second test: the kill takes Snakemake alone (a login node's Snakemake dies); its MPI ranks live on and finish the
training. The rerun finds the job marked incomplete, so Snakemake deletes its outputs and runs it again; the job
puts them back from its finished record in seconds (no epoch retrained, the same bytes).

Both start from a copy of the session's tiny run (fixture ``tiny_run``) with more epochs (and, in the second, 2 ranks):
the changed training command reruns the flat CNN's job alone, on the run's data (no data stage of their own).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, SNAKEFILE, TINY_RUN_CONFIG, copy_run, job_stats, snakemake

from cbedtdc.runstate import live_processes

pytestmark = pytest.mark.slow

EPOCHS = 4  # the kill lands at the first checkpoint (step 2 of ~12 a epoch); the rerun trains the rest
ARGS = ["-s", SNAKEFILE, "--profile", "local", "results/flat/ce/best.pt", "--configfile", *TINY_RUN_CONFIG,
        "--config", f"train={{epochs: {EPOCHS}, checkpoint_every: 2}}"]


def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the session's tiny run: for ``ARGS`` and ``TINY_ARGS`` the flat CNN's training is the only job."""
    return copy_run(tiny_run, tmp_path / "run")


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (zombies included, as ``pgrep -s``), read from /proc: no procps needed."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # gone meanwhile
                if os.getsid(int(entry.name)) == sid:
                    members.append(int(entry.name))
    return members


def test_session_members_lists_a_new_session_until_it_ends():
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert session_members(child.pid) == [child.pid]
    finally:
        child.kill()
        child.wait()
    assert session_members(child.pid) == []


def test_sigkill_mid_training_then_the_documented_rerun_resumes(tiny_run, tmp_path):
    wd = tiny_run_copy(tiny_run, tmp_path)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    first = subprocess.Popen([str(BIN / "snakemake"), *ARGS], cwd=wd, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = wd / "results" / "flat" / "ce" / "resume" / "state.pt"
    deadline = time.time() + 400
    while not state.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert state.exists(), "the training job never wrote a checkpoint"
    os.killpg(first.pid, signal.SIGKILL)  # snakemake and its jobs, at once
    first.wait()
    deadline = time.time() + 30
    while left := session_members(first.pid):
        assert time.time() < deadline, f"the killed run's processes {left} did not go away"
        time.sleep(0.2)
    assert not (wd / "results" / "flat" / "ce" / "best.pt").exists()
    assert any((wd / ".snakemake" / "locks").iterdir()), "expected the killed run's lock"

    unlock = subprocess.run([sys.executable, "-m", "cbedtdc.runstate", "unlock-if-stale", "--snakefile", SNAKEFILE], cwd=wd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert unlock.returncode == 0, unlock.stderr
    assert "removed the stale lock" in unlock.stderr
    again = snakemake(*ARGS, cwd=wd, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert job_stats(again.stdout + again.stderr) == {"train_flat": 1}, again.stdout[-3000:]  # the data stand
    log = (wd / "logs" / "train_flat" / "ce.log").read_text()
    assert "resuming from" in log, log[-2000:]
    with open(wd / "results" / "flat" / "ce" / "metrics.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == list(range(1, EPOCHS + 1))
    assert not (wd / "results" / "flat" / "ce" / "resume").exists()


# 3 epochs of 2-rank training after the kill at the first checkpoint
TINY_ARGS = ["-s", SNAKEFILE, "--profile", "local", "results/flat/ce/best.pt", "--configfile", *TINY_RUN_CONFIG,
             "--config", "train={epochs: 3, ranks: 2, checkpoint_every: 1}"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_snakemake_killed_alone_its_ranks_finish_and_the_rerun_restores_without_training(tiny_run, tmp_path):
    wd = tiny_run_copy(tiny_run, tmp_path)
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    job = wd / "results" / "flat" / "ce"
    first = subprocess.Popen([str(BIN / "snakemake"), *TINY_ARGS], cwd=wd, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 400
        while not (job / "resume" / "state.pt").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert (job / "resume" / "state.pt").exists(), "the training job never wrote a checkpoint"
        os.kill(first.pid, signal.SIGKILL)  # snakemake alone: its job's mpiexec and ranks live on
        first.wait()
        deadline = time.time() + 400
        while live_processes(wd):  # the orphaned ranks train to the end
            assert time.time() < deadline, f"the orphaned ranks did not finish: {live_processes(wd)}"
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):  # what is left of the first run's group, on failure only
            os.killpg(first.pid, signal.SIGKILL)
    log = wd / "logs" / "train_flat" / "ce.log"
    assert "epoch 3/3: train loss" in log.read_text(), "the orphaned ranks did not finish the training"
    assert (job / "finished" / "manifest.json").is_file()
    model_sha = sha256(job / "best.pt")

    unlock = subprocess.run([sys.executable, "-m", "cbedtdc.runstate", "unlock-if-stale", "--snakefile", SNAKEFILE],
                            cwd=wd, env=env, capture_output=True, text=True, timeout=120)
    assert unlock.returncode == 0, unlock.stderr
    t0 = time.time()
    again = snakemake(*TINY_ARGS, cwd=wd, timeout=600)
    rerun_s = time.time() - t0
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "rule train_flat:" in out, "Snakemake did not rerun the job it had marked incomplete: " + out[-2000:]
    assert job_stats(out) == {"train_flat": 1}, out[-3000:]
    text = log.read_text()  # the rerun's log (the redirect truncated the orphans' one)
    assert "restored finished training from" in text and "no epoch retrained" in text, text[-2000:]
    assert "train loss" not in text and "resuming from" not in text, text[-2000:]  # no epoch trained again
    assert sha256(job / "best.pt") == model_sha
    with open(job / "metrics.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]
    print(f"rerun of the finished job: {rerun_s:.1f} s")
