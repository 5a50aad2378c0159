"""Cluster profiles: what the summit (LSF + jsrun) and slurm profiles submit and launch.

The summit profile is exercised end to end through fake bsub/bjobs shims (tests/shims/) that record the
submitted command lines and run the job scripts; the training launchers are checked in dry runs.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["synth={n_materials: 3, materials_per_file: 3, energies_per_material: 1, image_size: 32, gallery: false}",
        "image_size=16", "train={ranks: 3}"]


def workdir_like_repo(tmp_path):
    for name in ["workflow_scripts", "config", "profiles", "summit", "slurm", "local"]:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def snakemake(cwd, *args, env_extra=None, timeout=300):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(env_extra or {})
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_summit_profile_submits_bsub_lines_and_runs_jobs(tmp_path):
    wd = workdir_like_repo(tmp_path)
    state = tmp_path / "lsf"
    env = {"PATH": f"{REPO / 'tests' / 'shims'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "FAKELSF_STATE": str(state), "LSF_PROJECT": "MAT123"}
    res = snakemake(wd, "--profile", "summit", "results/raw/batch_train_0.h5", "results/raw/batch_dev_0.h5",
                    "--latency-wait", "1", "--config", *TINY, env_extra=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (wd / "results/raw/batch_train_0.h5").stat().st_size > 0
    lines = [json.loads(ln) for ln in (state / "submitted.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for argv in lines:
        text = " ".join(argv)
        assert argv[argv.index("-P") + 1] == "MAT123"  # $LSF_PROJECT expanded by the submitting shell
        assert argv[argv.index("-nnodes") + 1] == "1"
        assert argv[argv.index("-alloc_flags") + 1] == "gpumps"
        assert argv[argv.index("-W") + 1].isdigit()
        assert "-J smk_synthesize" in text and "logs/synthesize/lsf_%J.out" in text
        # Summit's CSM LSF takes whole nodes: no per-slot -n / -R rusage lines
        assert "-n" not in argv and "-R" not in argv


def test_training_launchers_per_profile(tmp_path):
    wd = workdir_like_repo(tmp_path)
    python = (BIN / "snakemake").read_text().splitlines()[0].removeprefix("#!")  # the interpreter snakemake runs in
    expected = {"summit": f"jsrun -a 1 -c 7 -g 1 -r 6 --bind packed:7 -n 3 {python} workflow_scripts/train.py",
                "slurm": f"srun --mpi=pmi2 -n 3 {python} workflow_scripts/train.py",
                "local": f"mpiexec -n 3 {python} workflow_scripts/train.py"}
    for profile, launcher in expected.items():
        res = snakemake(wd, "--profile", profile, "-n", "-p", "--config", *TINY, env_extra={"LSF_PROJECT": "X"})
        out = res.stdout + res.stderr
        assert res.returncode == 0, out
        assert launcher in out, f"{profile}: {launcher!r} not in the training commands:\n{out[-3000:]}"
