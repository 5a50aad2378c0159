"""Multi-rank training under the venv's mpiexec (2 ranks, gloo on CPU) and the launcher detection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, kill_driver

from cbedtdc import train as T
from cbedtdc.distributed import init_distributed, launcher_env, local_rank_from_env

ROOT = REPO
CLI = ROOT / "workflow_scripts" / "train.py"
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec next to the Python or on PATH")
ARGS = ["--classes", "14,225,1", "--arch", "resnet18", "--epochs", "2", "--batch-size", "3", "--lr", "0.003",
        "--lr-scaling", "none", "--workers", "1", "--checkpoint-every", "2", "--threads-per-rank", "1", "--seed", "7"]


def mpirun(n: int, script, *args, timeout=240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def accumulated(tiny_shards, tmp_path_factory):
    """1 rank accumulating 2 micro-batches of 3: the yardstick of every 2-rank run with batch 3."""
    out = tmp_path_factory.mktemp("accumulated")
    cfg = {"arch": "resnet18", "epochs": 2, "batch_size": 3, "accum_steps": 2, "lr": 0.003, "lr_scaling": "none",
           "workers": 0, "checkpoint_every": 2, "threads_per_rank": 1, "seed": 7}
    T.fit(cfg, shard_root=tiny_shards, out_dir=out, classes=[14, 225, 1])
    return torch.load(out / "last.pt", weights_only=True)["model"]


def check_two_rank_run(out: Path, reference: dict, launcher: str) -> None:
    info = json.loads((out / "train.json").read_text())
    assert info["world_size"] == 2 and info["backend"] == "gloo" and info["launcher"] == launcher
    assert info["global_batch"] == 6 and info["steps_per_epoch"] == 3
    digests = info["param_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1], "parameters differ between the ranks"
    a = torch.load(out / "last.pt", weights_only=True)["model"]
    worst = max(float((a[k].double() - reference[k].double()).abs().max()) for k in a)
    assert worst <= 1e-5, f"2-rank and accumulated 1-rank weights differ by {worst}"
    from cbedtdc.model import build_model

    torch.manual_seed(7)
    init = build_model("resnet18", 1, 3).state_dict()
    assert not torch.allclose(init["backbone.fc.weight"], a["backbone.fc.weight"]), "training changed nothing"


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
def test_two_ranks_equal_one_rank_with_same_global_batch(tiny_shards, tmp_path, accumulated):
    """2 ranks x batch 3 == 1 rank x 2 accumulated micro-batches of 3 (same sub-batches, see EpochBatches).

    A 1-rank run with a plain batch of 6 is *not* expected to match: BatchNorm normalises with the
    statistics of the batch a process sees (3 samples per rank vs 6), which is why the reference
    run accumulates two micro-batches of 3.
    """
    out = tmp_path / "two"
    proc = mpirun(2, CLI, "--shards", tiny_shards, "--model", out / "best.pt", *ARGS, "--timeout-s", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_two_rank_run(out, accumulated, "mpi")


@pytest.mark.slow
def test_torchrun_two_ranks_equal_the_same(tiny_shards, tmp_path, accumulated):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("no torchrun next to the Python")
    out = tmp_path / "two"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(CLI), "--shards",
                           str(tiny_shards), "--model", str(out / "best.pt"), *ARGS, "--timeout-s", "60"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_two_rank_run(out, accumulated, "torchrun")


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("how", ["raise", "sigkill", "hang"])
def test_one_failing_rank_ends_the_job(tiny_shards, tmp_path, how):
    timeout_s = 10 if how == "hang" else 30  # a hanging rank is found by the collective timeout
    t0 = time.monotonic()
    driver = kill_driver(tmp_path / "failing_rank.py", "job.ctx.rank == 1 and n == 2", how)
    proc = mpirun(2, driver, "--shards", tiny_shards, "--model", tmp_path / "o" / "best.pt",
                  *ARGS, "--timeout-s", timeout_s, timeout=timeout_s + 180)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    # start-up (2 ranks import torch) on a slow machine whose other core runs another test file (make test's 2
    # workers) takes up to a minute; a job that waited for the subprocess timeout instead would fail above
    assert elapsed < timeout_s + 120, f"job took {elapsed:.0f} s to end after a rank failed"
    assert not (tmp_path / "o" / "best.pt").exists()
    if how == "raise":
        assert "injected failure on rank 1" in proc.stderr and "ending all 2 ranks" in proc.stderr
    if how == "hang":
        assert "Timed out" in proc.stderr and "rank 0 failed" in proc.stderr


def test_launcher_detection():
    assert launcher_env({}) == "single"
    assert launcher_env({"OMPI_COMM_WORLD_RANK": "0"}) == "mpi"
    assert launcher_env({"JSM_NAMESPACE_RANK": "3"}) == "mpi"
    assert launcher_env({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "x", "MASTER_PORT": "1"}) == "torchrun"
    assert local_rank_from_env({"JSM_NAMESPACE_LOCAL_RANK": "5"}) == 5
    assert local_rank_from_env({}) is None


def test_single_process_has_no_process_group(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID",
              "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = init_distributed(timeout_s=10, cuda=False)
    assert (ctx.rank, ctx.world_size, ctx.device, ctx.distributed) == (0, 1, "cpu", False)
    assert ctx.all_gather_object(5) == [5] and ctx.broadcast_object("x") == "x"
    ctx.barrier()


def test_launcher_and_mpi_disagreeing_on_the_world_is_an_error():
    """jsrun announcing 3 ranks to a process whose MPI sees only itself must not train alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(JSM_NAMESPACE_RANK="0", JSM_NAMESPACE_SIZE="3")
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from cbedtdc.distributed import init_distributed; " \
           "init_distributed(timeout_s=10, cuda=False)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "the launcher started 3 ranks (JSM_NAMESPACE_SIZE=3) but MPI sees a world of 1" in proc.stderr


@pytest.mark.slow
@pytest.mark.mpi
@needs_mpi
def test_resume_on_another_world_size_with_the_same_global_batch(tiny_shards, tmp_path, accumulated):
    """Killed as 1 rank x 2 accumulated micro-batches, resumed as 2 ranks x 1: same weights as uninterrupted."""
    out = tmp_path / "job"
    driver = kill_driver(tmp_path / "killed.py", "n == 6")  # epoch 2, step 3 of 3; last checkpoint: step 2
    args = ["--shards", str(tiny_shards), "--model", str(out / "best.pt"), *ARGS, "--timeout-s", "60"]
    proc = subprocess.run([sys.executable, str(driver), *args, "--accum-steps", "2"], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == -9, proc.stderr[-2000:]
    proc = mpirun(2, CLI, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "train.json").read_text())
    assert info["resumed_from"] == {"epoch": 1, "step": 2} and info["world_size"] == 2
    check_two_rank_run(out, accumulated, "mpi")
