"""The slurm profile on a real (single-node) SLURM: a 2-rank training job submitted with sbatch, ranks via srun.

.ci/run starts the cluster (.ci/start_slurm.sh); where no controller answers, the test skips with the reason.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def slurm_up() -> bool:
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "up" in res.stdout


pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not slurm_up(), reason="no SLURM controller answers sinfo (.ci/start_slurm.sh starts one)")]

TINY = ["image_size=16", "classes=[14, 225, 1]", "tdc={level_sizes: [1, 2]}",
        "synth={n_materials: 30, materials_per_file: 30, energies_per_material: 1, image_size: 32, frequency: balanced,"
        " floor: 1, gallery: false}",
        "train={arch: resnet18, epochs: 1, batch_size: 4, ranks: 2, workers: 0, eval_batch_size: 16}"]


def snakemake(cwd, *args, timeout=600):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_slurm_profile_runs_two_rank_training_through_sbatch_and_srun(tmp_path):
    for name in ["workflow_scripts", "config", "profiles", "slurm"]:
        (tmp_path / name).symlink_to(REPO / name)
    # the data stage locally (fast), then the MPI rule through the scheduler
    res = snakemake(tmp_path, "--cores", "2", "shards", "--config", *TINY)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    res = snakemake(tmp_path, "--profile", "slurm", "results/flat/ce/best.pt", "--config", *TINY)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    python = (BIN / "snakemake").read_text().splitlines()[0].removeprefix("#!")  # the interpreter snakemake runs in
    assert f"srun --mpi=pmi2 -n 2 {python} workflow_scripts/train.py" in out
    info = json.loads((tmp_path / "results/flat/ce/train.json").read_text())
    assert info["world_size"] == 2 and info["launcher"] == "mpi"
    assert len(set(info["param_sha256_by_rank"])) == 1  # both ranks ended with the same weights
    assert "SLURM_JOB_ID" in (tmp_path / "logs/train_flat/ce.log").read_text() or info.get("host")
