"""Shared pytest fixtures and helpers. Real-layout data builders live in tests/fixtures.py.

Helpers (``from conftest import snakemake, job_stats, kill_driver, copy_run``): run Snakemake from the venv,
read its job-stats table, write a driver script that kills a training CLI at a chosen step, and copy the
session's finished tiny run (fixture ``tiny_run``) to a folder a test may change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `from fixtures import ...` from any test file

from filelock import FileLock  # noqa: E402  (installed with Snakemake)
from fixtures import build_tiny_shards  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEFILE = str(REPO / "Snakefile")
collect_ignore = ["shims"]  # fake LSF commands, run as programs (importing one needs $FAKELSF_STATE)


def snakemake(*args, cwd=REPO, timeout=300, env_extra=None) -> subprocess.CompletedProcess:
    """``snakemake *args`` from the venv in ``cwd``, the venv first on PATH (as ``make run`` does)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env_extra or {}))
    return subprocess.run([str(BIN / "snakemake"), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def job_stats(output: str) -> dict[str, int]:
    """``{rule: count}`` from the 'Job stats' table of a (dry) run; ``{}`` when there is nothing to do.

    >>> job_stats("Job stats:\\njob count\\n--- ---\\nall 1\\nshard 2\\ntotal 3\\n")
    {'all': 1, 'shard': 2}
    """
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {ln.split()[0]: int(ln.split()[1]) for ln in table.splitlines() if ln.strip() and ln.split()[-1].isdigit()}


def link_workdir(path: Path) -> Path:
    """A working directory for the repo's Snakefile: ``workflow_scripts`` and ``config`` linked in."""
    (path / "workflow_scripts").symlink_to(REPO / "workflow_scripts")
    (path / "config").symlink_to(REPO / "config")
    return path


#: What a working directory laid out like a clone links to the repository (``make report`` runs there).
CLONE_LINKS = ["Snakefile", "rules", "config", "profiles", "local", "workflow_scripts", "report", "envs", "tests",
               "Makefile", "requirements.txt", "pyproject.toml"]
#: The configuration files of the session's tiny run (paths from the repository root). config/config.yaml comes
#: first, as in the tests that run Snakemake on a copy: the order of the keys sets the order of a training
#: command's flags, and a command that changed reruns its job.
TINY_RUN_CONFIG = ["config/config.yaml", "tests/pipeline_config.yaml", "tests/pipeline_shared.yaml"]


def clone_workdir(path: Path) -> Path:
    """A working directory laid out like a clone: the repository's files and its venv linked in."""
    for name in CLONE_LINKS:
        (path / name).symlink_to(REPO / name)
    (path / ".venv").symlink_to(BIN.parent)
    return path


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of the finished run in ``run`` (results, logs, benchmarks, Snakemake's records; links stay links) at
    ``dest``, with the files' times kept, so that Snakemake sees the copy as complete as the original."""
    shutil.copytree(run, dest, symlinks=True, ignore=shutil.ignore_patterns(".tiny_run_done"))
    return dest


def data_stage_workdir(path: Path) -> Path:
    """A working directory that runs rules/common.smk + rules/data.smk like the main Snakefile (the data stage only)."""
    link_workdir(path)
    (path / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n'
        f'include: "{REPO}/rules/common.smk"\n'
        f'include: "{REPO}/rules/data.smk"\n'
    )
    return path


def kill_driver(path: Path, when: str, action: str = "sigkill", cli: Path = REPO / "workflow_scripts" / "train.py"):
    """Write a script that runs the training ``cli`` (same argv) and fails when an optimizer step begins.

    ``when`` is a Python expression of ``n`` (steps begun so far by this process, from 1) and ``job``
    (:class:`cbedtdc.train.Job`), e.g. ``"n == 5"`` or ``"job.ctx.rank == 1 and n == 2"``; ``action`` is
    ``sigkill`` (the process dies outright), ``raise`` (a RuntimeError) or ``hang`` (sleeps an hour).
    """
    assert action in ("sigkill", "raise", "hang"), action
    path.write_text(textwrap.dedent(f"""
        import os, runpy, signal, sys, time
        sys.path.insert(0, {str(REPO)!r})
        import cbedtdc.train.engine as E
        original, calls = E.train_step, [0]
        def step(job, micro):
            calls[0] += 1
            n = calls[0]
            if {when}:
                if {action!r} == "raise":
                    raise RuntimeError("injected failure on rank " + str(job.ctx.rank))
                if {action!r} == "hang":
                    time.sleep(3600)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(job, micro)
        E.train_step = step
        sys.argv = [{str(cli)!r}] + sys.argv[1:]
        runpy.run_path({str(cli)!r}, run_name="__main__")
    """))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run of the whole DAG, built once per test session and shared by every pytest-xdist worker
    (the first worker to ask builds it under the workers' common temporary folder, the others wait on a file
    lock): ``snakemake --profile local`` with :data:`TINY_RUN_CONFIG` (4 classes, 16 px, resnet18, 1 epoch, the
    shared-backbone TDC with XGBoost level heads, three flat heads, the gallery) in a folder laid out like a clone.
    Read-only: a test that runs Snakemake in it or changes a file works on a :func:`copy_run` copy."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this session's folder, common to its workers (each worker's basetemp is below it)
    workdir, failed = root / "tiny_run", root / "tiny_run.failed"
    with FileLock(str(root / "tiny_run.lock"), timeout=3600):
        if failed.exists():
            pytest.fail(f"the session's tiny run failed in another worker:\n{failed.read_text()}")
        if not (workdir / ".tiny_run_done").exists():
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir()
            try:
                res = snakemake("--profile", "local", "--cores", "2", "--configfile", *TINY_RUN_CONFIG,
                                cwd=clone_workdir(workdir), timeout=1200)
            except subprocess.TimeoutExpired as exc:  # the other workers fail at once rather than build it again
                failed.write_text(f"{exc}\n{(exc.stdout or b'')[-5000:].decode(errors='replace')}")
                raise
            if res.returncode != 0:
                failed.write_text((res.stdout + res.stderr)[-5000:])
                pytest.fail(f"the session's tiny run failed:\n{failed.read_text()}")
            (workdir / ".tiny_run_done").write_text(res.stdout + res.stderr)
    return workdir


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Shard root of a tiny 3-class data set (14, 225, 1): 6 train, 3 dev, 3 test samples per class,
    32 px raw stacks shrunk to 16 px shards. Built once per session; treat it as read-only."""
    return build_tiny_shards(tmp_path_factory.mktemp("tiny_shards"), classes=(14, 225, 1), per_class=6, side=32,
                             image_size=16, seed=0)


#: Test files by cost, the costliest first (their tests' seconds summed, from ``--durations``). pytest-xdist's
#: ``--dist loadfile`` hands each worker one file at a time in collection order, so the long files start first and
#: the many short ones fill the gaps at the end, instead of one long file starting last while the other worker idles.
#: Files of the session's tiny run (fixture ``tiny_run``) alternate with files that do not need it, so the second
#: worker has work of its own while the first builds it. Files not listed keep their order, after these.
COSTLIEST_FIRST = [
    "tests/workflow/test_pipeline_shared.py",  # builds the tiny run
    "tests/workflow/test_slurm.py",
    "tests/workflow/test_pipeline.py",
    "tests/workflow/test_profiles.py",
    "tests/unit/train/test_engine.py",
    "tests/workflow/test_docs_commands.py",
    "tests/unit/test_distributed.py",
    "tests/workflow/test_robustness_rules.py",
    "tests/workflow/test_workflow.py",
    "tests/workflow/test_pipeline_class_order.py",
    "tests/workflow/test_pipeline_dag.py",
    "tests/workflow/test_resume_after_kill.py",
    "tests/workflow/test_mirror.py",
    "tests/workflow/test_config_checks.py",
    "tests/workflow/test_report.py",
    "tests/unit/test_synth.py",
    "tests/unit/test_synth_tail.py",
    "tests/workflow/test_pipeline_physics.py",
    "tests/workflow/test_no_venv_path.py",
    "tests/workflow/test_data_stage.py",
    "tests/workflow/test_train_rule.py",
    "tests/unit/test_synth_multislice.py",
    "tests/unit/evaluate/test_tune.py",
    "tests/unit/features/test_cnn.py",
    "tests/unit/train/test_checkpoint.py",
]


def pytest_configure(config):
    # xdist's default for --dist loadfile orders the files by their number of tests, not by their cost
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(COSTLIEST_FIRST)}
    root = Path(str(config.rootpath))

    def key(item):
        path = Path(str(item.path))
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        return rank.get(rel, len(rank))

    items.sort(key=key)  # stable: within a file, and among the files not listed, the collection order stays
