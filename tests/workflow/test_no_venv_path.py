"""The README's commands as printed, from a shell whose PATH holds neither the venv nor an MPI launcher.

The venv's snakemake is called by path (``.venv/bin/snakemake --profile local ...``), as cluster users do; every
rule must then use the venv's python and mpiexec, not whatever ``python``/``mpiexec`` PATH offers.

The bare PATH is one folder built for the test: links to the system's tools (``/usr/bin``, ``/bin``) except any
python, pip, MPI launcher or snakemake, so the premise holds on every machine, one with a system mpiexec included.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_sample, write_challenge_file
from conftest import REPO

BIN = Path(sys.executable).parent
LINKED = ["Snakefile", "rules", "config", "profiles", "local", "slurm", "summit", "workflow_scripts", "report", "envs", "tests"]
# README, "Real data": .venv/bin/snakemake --profile local --config raw_dir=/data/cbed image_size=128
#                      data='{expected_side: 512}'
README_REAL = [".venv/bin/snakemake", "--profile", "local", "--config", "raw_dir={raw}", "image_size=128",
               "data={expected_side: 512}"]
# Makefile `make run` (the README's default command) without the PATH line the Makefile adds
DEFAULT = [".venv/bin/snakemake", "--profile", "local", "--cores", "2"]
# tiny classes, levels and training on top of the printed command (targets and config files come after it)
TINY = ["--configfile", "config/config.yaml", "tests/pipeline_config.yaml"]


SYSTEM = ("/usr/bin", "/bin")
#: Tools left out of the bare PATH: any python or pip, the MPI launchers, snakemake.
HIDDEN = re.compile(r"(python|pip|mpiexec|mpirun|orterun|snakemake)")
#: What the premise test looks for (none may be found) and what the shell needs (all must be found).
ABSENT = ("python", "python3", "pip", "mpiexec", "mpirun", "snakemake")
PRESENT = ("sh", "bash", "cat", "mkdir", "rm", "mv")


@pytest.fixture(scope="module")
def bare_env(tmp_path_factory) -> dict:
    """The caller's environment with PATH one folder of links to the system's tools, less those of ``HIDDEN``."""
    folder = tmp_path_factory.mktemp("bare_bin")
    for system in SYSTEM:
        for tool in sorted(Path(system).iterdir()):
            link = folder / tool.name
            if HIDDEN.match(tool.name) or link.exists() or tool.is_dir() or not os.access(tool, os.X_OK):
                continue
            link.symlink_to(tool)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["PATH"] = str(folder)
    return env


@pytest.fixture
def clone(tmp_path):
    """A working copy laid out like a fresh clone: the repository's files and its .venv."""
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / ".venv").symlink_to(BIN.parent)
    return tmp_path


def run(clone, env, cmd, *extra, timeout=300):
    return subprocess.run([*cmd, *extra], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


def command_v(env, tool) -> str:
    """Where the shell of ``env`` finds ``tool``, or "" (POSIX ``command -v``)."""
    found = subprocess.run(["/bin/sh", "-c", f"command -v {tool}"], env=env, capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else ""


def test_bare_path_has_no_venv_tools(bare_env):
    """The premise: the rules' old bare `python`/`mpiexec` would find neither the venv's nor any other, while the
    shell's own tools are there (so a rule fails only for what it should not need)."""
    found = {tool: command_v(bare_env, tool) for tool in ABSENT}
    assert not any(found.values()), f"the bare PATH still finds {found}"
    missing = [tool for tool in PRESENT if not command_v(bare_env, tool)]
    assert not missing, f"the bare PATH lacks the shell's tools {missing}"
    assert command_v(dict(bare_env, PATH=f"{BIN}{os.pathsep}{bare_env['PATH']}"), "python") == str(BIN / "python")


def test_every_rule_calls_the_environments_python(clone, bare_env):
    """Every rule runs "$CBEDTDC_PYTHON" (set with the venv's bin/ first on PATH by the shell prefix of
    rules/common.smk, cbedtdc.layout.shell_prefix), never a bare python or mpiexec found on the caller's PATH; the
    slow tests below run rules for real without the venv on PATH."""
    res = run(clone, bare_env, DEFAULT, "-n", "-p", "all", *TINY)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    commands = [ln.removeprefix("Shell command: ") for ln in out.splitlines() if "workflow_scripts/" in ln]
    assert len(commands) > 10, out
    for cmd in commands:
        assert '"$CBEDTDC_PYTHON" workflow_scripts/' in cmd, cmd
    launches = [c for c in commands if "train.py" in c]
    assert launches and all(c.startswith('mpiexec -n 1 "$CBEDTDC_PYTHON" ') for c in launches), launches
    python = (BIN / "snakemake").read_text().splitlines()[0].removeprefix("#!")  # the interpreter snakemake runs in
    from cbedtdc.layout import shell_prefix

    prefix = shell_prefix(python, conda=False)
    assert f"CBEDTDC_PYTHON={python}" in prefix and f'PATH={Path(python).parent}:"$PATH"' in prefix, prefix


def tiny_raw(root, classes=(14, 225, 1, 2), side=512):
    """Challenge files of the real layout (512 px stacks): 2 train, 2 dev, 2 test samples per class."""
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        samples = [make_sample(f"sample_{k}_{j}", sg, f"mp-{split}-{sg}", side=side, energy_keV=100 + 10 * j,
                               class_index=k, rng=rng)
                   for k, sg in enumerate(classes) for j in range(2)]
        write_challenge_file(root / f"batch_{split}_0.h5", samples)
    return root


@pytest.mark.slow
def test_readme_real_data_command_runs_without_the_venv_on_path(clone, bare_env, tmp_path_factory):
    """Data stage (python rules) and the flat model (mpiexec rule) really run from the printed command."""
    raw = tiny_raw(tmp_path_factory.mktemp("cbed"))
    cmd = [part.replace("{raw}", str(raw)) for part in README_REAL]
    res = run(clone, bare_env, cmd, *TINY, "--", "results/flat/ce/best.pt", timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-5000:]
    assert (clone / "results" / "flat" / "ce" / "best.pt").stat().st_size > 0
    log = (clone / "logs" / "train_flat" / "ce.log").read_text()
    assert "ModuleNotFoundError" not in log and "not found" not in log, log[-2000:]


@pytest.mark.slow
def test_default_command_generates_data_without_the_venv_on_path(clone, bare_env):
    res = run(clone, bare_env, DEFAULT, *TINY, "--", "results/raw/batch_test_0.h5")
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    assert (clone / "results" / "raw" / "batch_test_0.h5").stat().st_size > 0
