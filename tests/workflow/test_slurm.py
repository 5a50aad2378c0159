"""The slurm-cpu profile on a real (single-node) SLURM: the tiny data stage and the flat CNN through sbatch (the
generator, the index_raw + shard group jobs, the light rules between them), the 2-rank training job's ranks via srun,
every job followed with squeue; and the submission check that refuses, before any sbatch, a job no node holds.
The jobs after the training (features, heads, evaluation, plots) are sbatch jobs of the same kind as the light ones
here; their sbatch lines (no GPU, one task) are checked in the dry runs of tests/workflow/test_profiles.py.

.ci/run starts the cluster (.ci/start_slurm.sh); where no controller answers, the test skips with the reason.
This machine has no GPU, so the GPU profile (profiles/slurm) is checked in dry runs and through the plugin's own
sbatch builder in tests/workflow/test_profiles.py; here the CPU variant runs for real.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

BIN = Path(sys.executable).parent


def slurm_up() -> bool:
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and "up" in res.stdout


pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(not slurm_up(), reason="no SLURM controller answers sinfo (.ci/start_slurm.sh starts one)")]

TINY = ["image_size=16", "classes=[14, 225, 1]", "tdc={level_sizes: [1, 2], head: {features: [cnn]}}",
        "heads={variants: []}",  # the heads are local-DAG business (test_pipeline*); here: data, srun training, TDC
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


def workdir(tmp_path: Path) -> Path:
    for name in ["workflow_scripts", "config", "profiles", "slurm-cpu"]:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def submitted(workdir: Path) -> list[str]:
    """SLURM jobs (any state, kept for MinJobAge) whose working directory is ``workdir``."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if f"WorkDir={workdir} " in line + " "]


def test_slurm_cpu_profile_runs_the_data_stage_and_the_training_through_sbatch_and_srun(tmp_path):
    """The shipped profile plus the one option the submission check names on a 2-core node (--cores 2: a group job
    runs at most 2 index_raw/shard jobs side by side); training CPUs follow the config (workers: 0 -> 1 a rank).
    Target: the flat CNN, i.e. every job up to and including the MPI training rule (test time: the rest of the DAG
    would add a chain of sbatch jobs of the kind already run here)."""
    wd = workdir(tmp_path)
    # first status check 2 s after a submission instead of the profile's 5 (the plugin then waits 10 s more per
    # check that sees nothing finish): the DAG is a chain of 5-10 s jobs here (test time only)
    res = snakemake(wd, "--profile", "slurm-cpu", "--cores", "2", "--slurm-init-seconds-before-status-checks", "2",
                    "--config", *TINY, "--", "results/flat/ce/best.pt", timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert (wd / "results/flat/ce/best.pt").stat().st_size > 0
    assert re.search(r'srun --mpi=pmi2 -n 2 "\$CBEDTDC_PYTHON" workflow_scripts/train\.py', out), out[-3000:]
    info = json.loads((wd / "results/flat/ce/train.json").read_text())
    assert info["world_size"] == 2 and info["launcher"] == "mpi" and info["backend"] == "gloo"
    assert len(set(info["param_sha256_by_rank"])) == 1  # both ranks ended with the same weights
    # what SLURM really granted: 2 tasks x 1 CPU, the profile's memory and runtime at attempt 1, no GPU
    job = slurm_job(wd, "rule_train_flat_wildcards_ce")
    assert job["NumTasks"] == "2" and job["CPUs/Task"] == "1", job
    assert job["TimeLimit"] == "02:00:00", job  # runtime "120 * attempt" minutes
    assert job["MinMemoryCPU"] == "2000M", job  # mem_mb_per_cpu "2000 * attempt"
    assert "gpu" not in job.get("TRES", "") and job["JobState"] == "COMPLETED", job
    # the data stage went through SLURM too, index_raw + shard as group jobs of at most 2 CPUs
    jobs = submitted(wd)
    assert any("Comment=rule_synthesize" in j for j in jobs), jobs
    groups = [j for j in jobs if "JobName=" in j and "rawfile" in j]
    assert groups and all("NumCPUs=1 " in j or "NumCPUs=2 " in j for j in groups), groups


def test_a_job_wider_than_any_node_stops_the_run_before_submission(tmp_path):
    """Without --cores the data stage's group job asks for 3 CPUs (3 raw files side by side) on a 2-CPU node:
    one line naming it, the request and the node; nothing is submitted, instead of a job pending forever."""
    largest = max(int(n.rstrip("+")) for n in subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True,
                                                                 text=True, timeout=30).stdout.split())
    if largest >= 3:
        pytest.skip(f"a node has {largest} CPUs: the 3-file group job fits (the CI node has 2)")
    wd = workdir(tmp_path)
    res = snakemake(wd, "--profile", "slurm-cpu", "--config", *TINY, timeout=300)
    err = res.stdout + res.stderr
    assert res.returncode != 0
    line = next(ln for ln in err.splitlines() if "config error at SLURM resources" in ln)
    assert "rule index_raw+shard (group rawfile, 6 jobs) asks for 1 task x 3 CPUs" in line, line
    assert "largest node: " in line and "set --cores to the CPUs of a node" in line, line
    assert submitted(wd) == []


def test_set_resources_on_the_command_line_is_refused_not_run_with_mpiexec(tmp_path):
    """--set-resources replaces the profile's whole block: training would run `mpiexec -n 2` inside one sbatch job."""
    wd = workdir(tmp_path)
    res = snakemake(wd, "--profile", "slurm-cpu", "--cores", "2", "--set-resources", "train_flat:cpus_per_task=1",
                    "--config", *TINY, timeout=300)
    err = res.stdout + res.stderr
    assert res.returncode != 0
    assert "rule train_flat would start its 2 ranks with `mpiexec` inside one sbatch job" in err, err[-3000:]
    assert submitted(wd) == []
