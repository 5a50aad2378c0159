"""rule train_flat as a user drives it: config overrides reach the command line, one job per loss, and each
profile's launcher replaces the local mpiexec (dry runs only)."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import snakemake


def dry_run(*args) -> str:
    res = snakemake("-n", "-p", *args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout + res.stderr


def train_commands(out: str) -> list[list[str]]:
    """Training command lines, without the leading PATH=<env bin>:$PATH that points mpiexec at the venv's."""
    cmds = [shlex.split(line.split("Shell command: ", 1)[-1].split(" > ")[0])
            for line in out.splitlines() if "workflow_scripts/train.py" in line and "flat/" in line]
    return [c[1:] if c and c[0].startswith("PATH=") else c for c in cmds]


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.mark.slow
def test_config_overrides_reach_every_flag_and_one_job_per_loss():
    out = dry_run("flat", "--config", "train={epochs: 3, arch: resnet18, batch_size: 16, ranks: 3}",
                  "flat={losses: [ce, weighted_ce]}", "classes=[2, 225, 1]", "tdc={level_sizes: [1, 2]}")
    cmds = train_commands(out)
    assert sorted(flag(c, "--loss") for c in cmds) == ["ce", "weighted_ce"]
    for c in cmds:
        assert c[:3] == ["mpiexec", "-n", "3"]
        assert flag(c, "--epochs") == "3" and flag(c, "--arch") == "resnet18" and flag(c, "--batch-size") == "16"
        assert flag(c, "--classes") == "225,1,2"  # ordered by real frequency
        assert flag(c, "--model") == f"results/flat/{flag(c, '--loss')}/best.pt"
        # every train key except the launcher's `ranks` is passed, defaults included
        for key in ("orientation", "lr", "lr_scaling", "weight_decay", "schedule", "label_smoothing", "grad_clip",
                    "amp", "accum_steps", "threads_per_rank", "workers", "checkpoint_every", "timeout_s",
                    "eval_batch_size", "la_tau", "weight_cap"):
            assert f"--{key.replace('_', '-')}" in c, key
        assert "--ranks" not in c


@pytest.mark.slow
@pytest.mark.parametrize("profile, launcher", [("local", "mpiexec"), ("slurm", "srun"), ("summit", "jsrun")])
def test_profile_sets_the_launcher(profile, launcher):
    """Rule resources beat a profile's default-resources, so a profile must name the launcher of the training
    rules under set-resources (train_flat: mpi: srun)."""
    (cmd,) = train_commands(dry_run("--profile", profile, "results/flat/ce/best.pt"))
    assert cmd[0] == launcher, f"profile {profile} launches training with {cmd[0]!r}, expected {launcher!r}"
    assert re.fullmatch(r"\d+", cmd[cmd.index("-n") + 1])
