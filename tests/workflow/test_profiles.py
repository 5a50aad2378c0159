"""Cluster profiles: what the summit, summit-batch (LSF + jsrun) and slurm profiles submit, launch and request.

The LSF profiles run end to end through fake bsub/bjobs/jsrun shims (tests/shims/) that record the submitted
command lines, check the jsrun geometry against the allocation and run the jobs; the SLURM profiles are checked in
dry runs and through the slurm plugin's own sbatch builder (tests/workflow/test_slurm.py runs slurm-cpu on a real SLURM).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO

BIN = Path(sys.executable).parent
SHIMS = REPO / "tests" / "shims"
TINY = ["synth={n_materials: 3, materials_per_file: 3, energies_per_material: 1, image_size: 32, gallery: false}",
        "image_size=16", "train={ranks: 3}", "tdc={backbone: own}"]  # own: the train_level launcher too
# the interpreter of a rule's command: bare `python` or an absolute (possibly quoted) path to it
PY = r'"\$CBEDTDC_PYTHON"'  # the rules' interpreter, set by the shell prefix (rules/common.smk)


def workdir_like_repo(tmp_path, *extra):
    for name in ["workflow_scripts", "config", "profiles", "summit", "summit-batch", "slurm", "slurm-cpu", "local",
                 *extra]:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def snakemake(cwd, *args, env_extra=None, timeout=300):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(env_extra or {})
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def planned_jobs(text: str) -> dict[str, dict]:
    """Resources of the first job of every rule in a dry run's output: {rule: {resource: value}}."""
    jobs, rule = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*rule (\w+):$", line)
        if m:
            rule = m.group(1)
        m = re.match(r"\s*resources: (.*)$", line)
        if m and rule and rule not in jobs:
            res = {}
            for item in m.group(1).split(", "):
                key, _, value = item.partition("=")
                res[key] = int(value) if value.isdigit() else value
            jobs[rule] = res
    return jobs


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """``dry_run(profile, attempt=1)``: what `snakemake --profile PROFILE -n -p --attempt ATTEMPT --config TINY`
    prints in a folder laid out like the repository, run once per module for each pair (the launcher, resource and
    sbatch tests below read the same plans)."""
    wd = workdir_like_repo(tmp_path_factory.mktemp("dry_runs"))
    plans = {}

    def run(profile: str, attempt: int = 1) -> str:
        if (profile, attempt) not in plans:
            res = snakemake(wd, "--profile", profile, "-n", "-p", "--attempt", str(attempt), "--config", *TINY,
                            env_extra={"LSF_PROJECT": "X"})
            assert res.returncode == 0, f"{profile}, attempt {attempt}:\n{res.stdout}{res.stderr}"
            plans[profile, attempt] = res.stdout + res.stderr
        return plans[profile, attempt]

    return run


class _Resources(dict):
    __getattr__ = dict.__getitem__


class _Job:
    """The two attributes of a Snakemake job that the slurm plugin's sbatch builder reads."""

    def __init__(self, resources: dict, threads: int):
        self.resources, self.threads = _Resources(resources), threads


def sbatch_line(resources: dict, threads: int = 1) -> str:
    """The sbatch command line plugin 2.8.0 builds for a job with these resources (GPU flags included)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = _Job(resources, threads)
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": "rule", "account": "",
              "partition": f"-p {resources['slurm_partition']}" if "slurm_partition" in resources else "",
              "workdir": "."}
    return get_submit_command(job, params) + set_gres_string(job)


# ---------------------------------------------------------------------------------------------- per-rule LSF
def test_summit_profile_submits_bsub_lines_and_runs_jobs(tmp_path):
    wd = workdir_like_repo(tmp_path)
    state = tmp_path / "lsf"
    env = {"PATH": f"{SHIMS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "FAKELSF_STATE": str(state), "LSF_PROJECT": "MAT123"}
    res = snakemake(wd, "--profile", "summit", "results/raw/batch_train_0.h5", "results/raw/batch_dev_0.h5",
                    "--latency-wait", "1", "--config", *TINY, env_extra=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (wd / "results/raw/batch_train_0.h5").stat().st_size > 0
    lines = [json.loads(ln) for ln in (state / "submitted.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for argv in lines:
        text = " ".join(argv)
        assert argv[argv.index("-P") + 1] == "MAT123"  # $LSF_PROJECT expanded
        assert argv[argv.index("-nnodes") + 1] == "1"
        assert argv[argv.index("-alloc_flags") + 1] == "gpumps"
        assert argv[argv.index("-W") + 1] == "30"  # synthesize: the rule's 30 x attempt minutes
        assert "-J smk_synthesize" in text and "logs/synthesize/lsf_%J.out" in text
        # Summit's CSM LSF takes whole nodes: no per-slot -n / -R rusage lines
        assert "-n" not in argv and "-R" not in argv


def test_summit_status_command_runs_without_python_on_path(tmp_path):
    """cluster-generic runs the status command through the shell in the workdir; with only the LSF commands and
    the system's /usr/bin:/bin on PATH (no venv, no `python`) it still answers for a finished and a running job."""
    cmd = yaml.safe_load((REPO / "profiles" / "summit" / "config.yaml").read_text())["cluster-generic-status-cmd"]
    assert not cmd.split()[0].startswith("python"), cmd
    state = tmp_path / "lsf"
    state.mkdir()
    for jobid, rc in (("1000", "0\n"), ("1001", None)):
        (state / f"{jobid}.job").write_text("[]")
        if rc is not None:
            (state / f"{jobid}.rc").write_text(rc)
    env = {"PATH": f"{SHIMS}{os.pathsep}/usr/bin{os.pathsep}/bin", "FAKELSF_STATE": str(state)}
    for jobid, expected in (("1000", "success"), ("1001", "running")):
        res = subprocess.run(f"{cmd} 'Job <{jobid}> is submitted to queue <batch>.'", shell=True, cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
        assert (res.returncode, res.stdout.strip()) == (0, expected), res.stderr


# ---------------------------------------------------------------------------------------------- launchers
def test_training_launchers_per_profile(dry_run):
    expected = {"summit": "jsrun -a 1 -c 7 -g 1 -r 6 --bind packed:7 -n 3",
                "summit-batch": "jsrun -a 1 -c 7 -g 1 -r 6 --bind packed:7 -n 3",
                "slurm": "srun --mpi=pmi2 --gpu-bind=none -n 3",
                "slurm-cpu": "srun --mpi=pmi2 -n 3",
                "local": "mpiexec -n 3"}
    for profile, launcher in expected.items():
        out = dry_run(profile)
        for rule, model in (("train_flat", "flat/ce"), ("train_level", "tdc/level_1")):
            assert re.search(rf"{re.escape(launcher)} {PY} workflow_scripts/train\.py --shards results/shards "
                             rf"--model results/{model}/best\.pt", out), \
                f"{profile}: {launcher!r} not in the {rule} command:\n{out[-3000:]}"


# ---------------------------------------------------------------------------------------------- resources
@pytest.mark.parametrize("profile", ["slurm", "slurm-cpu", "summit"])
def test_every_cluster_job_gets_more_runtime_and_memory_on_retry(dry_run, profile):
    """retries: 1 must mean more: every rule's runtime and mem_mb double at attempt 2, and the profile's
    set-resources leave the rule's own attempt scaling (train_level: 120 x attempt) in place."""
    assert yaml.safe_load((REPO / profile / "config.yaml").read_text())["retries"] >= 1
    plans = {attempt: planned_jobs(dry_run(profile, attempt)) for attempt in (1, 2)}
    rules = set(plans[1]) - {"all"}
    assert {"synthesize", "index_raw", "shard", "manifest", "train_flat", "train_level", "evaluate"} <= rules
    for rule in sorted(rules):
        one, two = plans[1][rule], plans[2][rule]
        for key in ("runtime", "mem_mb", "mem_mb_per_cpu"):  # the slurm plugin sends mem_mb_per_cpu when set
            if key == "mem_mb_per_cpu" and key not in one:
                continue
            assert isinstance(one.get(key), int) and two.get(key) == 2 * one[key], \
                f"{profile}: {rule} {key} at attempts 1, 2: {one.get(key)}, {two.get(key)}"
    assert plans[1]["train_level"]["runtime"] == 120  # the rule's lambda, not a profile constant
    assert plans[1]["index_raw"]["mem_mb"] == 1000 and plans[1]["train_flat"]["runtime"] == 120


def test_slurm_gpu_profile_asks_one_gpu_per_rank_and_cpu_rules_no_gpu(dry_run, tmp_path):
    wd = workdir_like_repo(tmp_path)
    jobs = planned_jobs(dry_run("slurm"))
    # a rank's CPUs, both training rules: from the config (threads_per_rank 1 + workers 1)
    for rule, cpus in (("train_flat", 2), ("train_level", 2)):
        line = sbatch_line(jobs[rule], threads=3)
        assert f"--mem-per-cpu 2000 --ntasks=3 --cpus-per-task={cpus} --gpus-per-task=1" in line, line
        assert "--ntasks-per-gpu" not in line and "--gres" not in line and "-p gpu" in line, line
    res = snakemake(wd, "--profile", "slurm", "-n", "--config", *TINY[:-2], "train={ranks: 3, workers: 7}")
    assert res.returncode == 0, res.stdout + res.stderr
    line = sbatch_line(planned_jobs(res.stdout + res.stderr)["train_flat"], threads=3)
    assert "--ntasks=3 --cpus-per-task=8 --gpus-per-task=1" in line, line  # config knob, profile untouched
    for rule in sorted(set(jobs) - {"all", "train_flat", "train_level"}):
        line = sbatch_line(jobs[rule])
        assert "gpu" not in line, f"{rule}: {line}"
        assert "--ntasks=1 --cpus-per-task=" in line, f"{rule}: {line}"
    # the CPU variant: the same ranks, no GPU anywhere
    jobs = planned_jobs(dry_run("slurm-cpu"))
    line = sbatch_line(jobs["train_flat"], threads=3)
    assert "--mem-per-cpu 2000 " in line and "--ntasks=3 --cpus-per-task=2" in line and "gpu" not in line, line
    # every other rule of the DAG (test_slurm.py runs the jobs up to the training on a real SLURM): one task, no GPU
    for rule in sorted(set(jobs) - {"all", "train_flat", "train_level"}):
        line = sbatch_line(jobs[rule])
        assert "gpu" not in line and "--ntasks=1 --cpus-per-task=" in line, f"slurm-cpu {rule}: {line}"


# ---------------------------------------------------------------------------------------------- summit-batch
BATCH_CONFIG = {
    "image_size": 16, "classes": [14, 225, 1], "tdc": {"level_sizes": [1, 2]},
    "synth": {"n_materials": 30, "materials_per_file": 30, "energies_per_material": 1, "image_size": 32,
              "frequency": "balanced", "floor": 1, "gallery": False},
    "train": {"arch": "resnet18", "epochs": 1, "batch_size": 2, "workers": 0, "eval_batch_size": 16},
}


def batch_workdir(tmp_path) -> Path:
    return workdir_like_repo(tmp_path, "Snakefile", "rules", "report", "envs")


def run_batch_job(wd: Path, nodes: int, ranks: int, timeout=600):
    """`bsub -P MAT123 -nnodes N summit-batch/submit.lsf` through the fake LSF in ``wd``; returns (workdir, the job's
    output, the jsrun launches)."""
    cfg = json.loads(json.dumps(BATCH_CONFIG))
    cfg["train"]["ranks"] = ranks
    (wd / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    state = wd / "lsf"
    env = dict(os.environ, PATH=f"{SHIMS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
               FAKELSF_STATE=str(state), CBEDTDC_SNAKEMAKE=str(BIN / "snakemake"),
               CBEDTDC_TARGETS="results/flat/ce/best.pt", CBEDTDC_CONFIGFILES="tiny.yaml")
    res = subprocess.run(["bsub", "-P", "MAT123", "-nnodes", str(nodes), "summit-batch/submit.lsf"], cwd=wd,
                         env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "is submitted" in res.stdout, res.stdout + res.stderr
    jobid = re.search(r"<(\d+)>", res.stdout).group(1)
    rc = state / f"{jobid}.rc"
    deadline = time.time() + timeout
    while not (rc.exists() and rc.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    out = (state / f"{jobid}.out").read_text()
    assert rc.exists() and rc.read_text().strip() == "0", out[-5000:]
    options = json.loads((state / f"{jobid}.options.json").read_text())
    # the bsub line: command-line -P and -nnodes, the script's #BSUB lines for the rest
    assert options["-P"] == "MAT123" and options["-nnodes"] == str(nodes), options
    assert options["-alloc_flags"] == "gpumps" and options["-W"] == "2:00" and options["-J"] == "cbedtdc", options
    assert f"{nodes} compute node(s), at most {6 * nodes} training ranks at a time" in out, out[-3000:]
    launches = [json.loads(ln) for ln in (state / "jsrun.jsonl").read_text().splitlines()]
    return wd, out, launches


@pytest.fixture(scope="module")
def one_node_job(tmp_path_factory):
    """The one-node batch job (2 ranks) from nothing: data stage and the flat CNN."""
    return run_batch_job(batch_workdir(tmp_path_factory.mktemp("batch")), nodes=1, ranks=2)


def check_jsrun_geometry(launch: dict, ranks: int, hosts: list[str]) -> None:
    assert launch["nrs"] == str(ranks) and launch["tasks_per_rs"] == "1", launch  # one rank per resource set
    assert launch["cpu_per_rs"] == "7" and launch["gpu_per_rs"] == "1" and launch["rs_per_host"] == "6", launch
    assert launch["bind"] == "packed:7", launch
    assert launch["hosts"] == hosts, launch
    # what jsrun launched: the interpreter the shell prefix put in $CBEDTDC_PYTHON (the venv's python)
    assert re.fullmatch(r"\S*/python[\d.]*", launch["command"][0]), launch
    assert launch["command"][1] == "workflow_scripts/train.py", launch


@pytest.mark.slow
def test_summit_batch_one_node_runs_light_rules_locally_and_training_through_jsrun(one_node_job):
    wd, out, launches = one_node_job
    assert len(launches) == 1, launches  # only the training rule went through jsrun
    check_jsrun_geometry(launches[0], 2, ["f01n01", "f01n01"])
    info = json.loads((wd / "results/flat/ce/train.json").read_text())
    assert info["world_size"] == 2 and info["launcher"] == "mpi"
    assert len(set(info["param_sha256_by_rank"])) == 1
    assert "rule synthesize:" in out and "rule shard:" in out  # the data stage ran inside the allocation


@pytest.mark.slow
def test_summit_batch_two_nodes_fill_the_first_node_six_ranks_then_the_second(one_node_job, tmp_path):
    # 7 ranks, not the 12 two nodes could hold: 6 + 1 shows the packing as well, and each rank is a process that
    # imports torch on the test machine's 2 cores. A copy of the one-node job's folder (its data stage done, its
    # fake LSF state and its flat CNN dropped): the training alone runs again.
    wd = shutil.copytree(one_node_job[0], tmp_path / "run", symlinks=True, ignore=shutil.ignore_patterns("lsf"))
    shutil.rmtree(wd / "results" / "flat")
    wd, out, launches = run_batch_job(wd, nodes=2, ranks=7)
    assert len(launches) == 1, launches
    check_jsrun_geometry(launches[0], 7, ["f01n01"] * 6 + ["f01n02"])
    info = json.loads((wd / "results/flat/ce/train.json").read_text())
    assert info["world_size"] == 7 and len(set(info["param_sha256_by_rank"])) == 1
    assert "rule train_flat:" in out and "rule synthesize:" not in out, out[-3000:]


def test_summit_batch_refuses_more_ranks_than_the_allocation_has_gpus(tmp_path):
    """Snakemake would shrink the job's tasks to --resources tasks=6 and train 6 ranks instead of 12: refuse."""
    wd = batch_workdir(tmp_path)
    cfg = json.loads(json.dumps(BATCH_CONFIG))
    cfg["train"]["ranks"] = 12
    (wd / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=f"{SHIMS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}", LSB_JOBID="7",
               LSB_MCPU_HOSTS="batch1 1 f01n01 42", CBEDTDC_SNAKEMAKE=str(BIN / "snakemake"),
               CBEDTDC_TARGETS="results/flat/ce/best.pt", CBEDTDC_CONFIGFILES="tiny.yaml")
    res = subprocess.run(["bash", "summit-batch/submit.lsf"], cwd=wd, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "a training job asks for 12 ranks (train.ranks) but 1 node(s) hold 6 GPUs; submit with -nnodes 2" \
        in res.stderr, res.stderr
    assert not (wd / "results").exists()  # nothing ran


def test_fake_jsrun_refuses_more_resource_sets_than_the_allocation_holds(tmp_path):
    """The geometry check the two tests above rely on: 7 sets of 1 GPU do not fit one 6-GPU node."""
    env = dict(os.environ, PATH=f"{SHIMS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
               FAKELSF_STATE=str(tmp_path), LSB_MCPU_HOSTS="batch1 1 f01n01 42")
    res = subprocess.run(["jsrun", "-a", "1", "-c", "7", "-g", "1", "-r", "6", "-n", "7", "true"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "need 2 compute nodes; the allocation has 1" in res.stderr, res.stderr
    res = subprocess.run(["jsrun", "-a1", "-c7", "-g1", "-r6", "--nrs=6", "true"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
