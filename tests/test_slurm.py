"""The slurm-cpu profile on a real (single-node) SLURM: a 2-rank training job submitted with sbatch, ranks via srun.

.ci/run starts the cluster (.ci/start_slurm.sh); where no controller answers, the test skips with the reason.
This machine has no GPU, so the GPU profile (profiles/slurm) is checked in dry runs and through the plugin's own
sbatch builder in tests/test_profiles.py; here the CPU variant runs for real.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def slurm_up() -> bool:
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "up" in res.stdout


pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(not slurm_up(), reason="no SLURM controller answers sinfo (.ci/start_slurm.sh starts one)")]

TINY = ["image_size=16", "classes=[14, 225, 1]", "tdc={level_sizes: [1, 2]}",
        "synth={n_materials: 30, materials_per_file: 30, energies_per_material: 1, image_size: 32, frequency: balanced,"
        " floor: 1, gallery: false}",
        "train={arch: resnet18, epochs: 1, batch_size: 4, ranks: 2, workers: 0, eval_batch_size: 16}"]


def snakemake(cwd, *args, timeout=600):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def slurm_job(workdir: Path, comment: str) -> dict:
    """``scontrol show job`` fields of the (finished, kept for MinJobAge) job of ``workdir`` with ``comment``."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("Comment") == comment and fields.get("WorkDir") == str(workdir):
            return fields
    raise AssertionError(f"no SLURM job with comment {comment!r} in {workdir}:\n{out[-2000:]}")


def test_slurm_cpu_profile_runs_two_rank_training_through_sbatch_and_srun(tmp_path):
    for name in ["workflow_scripts", "config", "profiles"]:
        (tmp_path / name).symlink_to(REPO / name)
    # the shipped slurm-cpu profile with one override: cpus_per_task = threads_per_rank 1 + workers 0 of TINY
    # (the profile's 2 is for the default config's 1 worker; 2 ranks x 2 CPUs would not fit this 2-core node)
    profile = yaml.safe_load((REPO / "profiles/slurm-cpu/config.yaml").read_text())
    profile["set-resources"]["train_flat"]["cpus_per_task"] = 1
    (tmp_path / "slurm-test").mkdir()
    (tmp_path / "slurm-test/config.yaml").write_text(yaml.safe_dump(profile))
    # the data stage locally (fast), then the MPI rule through the scheduler
    res = snakemake(tmp_path, "--cores", "2", "shards", "--config", *TINY)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = snakemake(tmp_path, "--profile", "slurm-test", "results/flat/ce/best.pt", "--config", *TINY)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert re.search(r"srun --mpi=pmi2 -n 2 \S*python\S* workflow_scripts/train\.py", out), out[-3000:]
    info = json.loads((tmp_path / "results/flat/ce/train.json").read_text())
    assert info["world_size"] == 2 and info["launcher"] == "mpi" and info["backend"] == "gloo"
    assert len(set(info["param_sha256_by_rank"])) == 1  # both ranks ended with the same weights
    # what SLURM really granted: 2 tasks x 1 CPU, the profile's memory and runtime at attempt 1, no GPU
    job = slurm_job(tmp_path, "rule_train_flat_wildcards_ce")
    assert job["NumTasks"] == "2" and job["CPUs/Task"] == "1", job
    assert job["TimeLimit"] == "02:00:00", job  # runtime "120 * attempt" minutes
    assert job["MinMemoryCPU"] == "2000M", job  # mem_mb_per_cpu "2000 * attempt"
    assert "gpu" not in job.get("TRES", "") and job["JobState"] == "COMPLETED", job
