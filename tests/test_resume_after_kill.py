"""A run killed with SIGKILL in the middle of a training job resumes as the README says.

The kill takes Snakemake and every job it started (as a lost terminal or a walltime limit does). The README's
recovery is the one ``make run`` performs: remove the stale lock when no process of the old run is left
(``python -m cbedtdc.runstate unlock-if-stale``), then the same command again; the training job continues from its
checkpoint instead of starting over.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, SNAKEFILE, link_workdir, snakemake

pytestmark = pytest.mark.slow

EPOCHS = 4  # the kill lands at the first checkpoint (step 2 of ~12 a epoch); the rerun trains the rest
ARGS = ["-s", SNAKEFILE, "--profile", "local", "results/flat/ce/best.pt", "--configfile", "config/config.yaml",
        str(REPO / "tests" / "pipeline_config.yaml"), "--config",
        f"train={{epochs: {EPOCHS}, checkpoint_every: 2}}"]


def test_sigkill_mid_training_then_the_documented_rerun_resumes(tmp_path):
    wd = link_workdir(tmp_path)
    (wd / "local").symlink_to(REPO / "profiles" / "local")  # `--profile local` as from the repo root
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
    while subprocess.run(["pgrep", "-s", str(first.pid)], capture_output=True).returncode == 0:
        assert time.time() < deadline, "the killed run's processes did not go away"
        time.sleep(0.2)
    assert not (wd / "results" / "flat" / "ce" / "best.pt").exists()
    assert any((wd / ".snakemake" / "locks").iterdir()), "expected the killed run's lock"

    unlock = subprocess.run([sys.executable, "-m", "cbedtdc.runstate", "unlock-if-stale", "--snakefile", SNAKEFILE], cwd=wd, env=env,
                            capture_output=True, text=True, timeout=120)
    assert unlock.returncode == 0, unlock.stderr
    assert "removed the stale lock" in unlock.stderr
    again = snakemake(*ARGS, cwd=wd, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = (wd / "logs" / "train_flat" / "ce.log").read_text()
    assert "resuming from" in log, log[-2000:]
    with open(wd / "results" / "flat" / "ce" / "metrics.csv", newline="") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == list(range(1, EPOCHS + 1))
    assert not (wd / "results" / "flat" / "ce" / "resume").exists()
