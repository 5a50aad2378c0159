"""A SLURM job that no node of its partition can hold is refused before submission with one line naming the rule, the
request and the largest node (cbedtdc.checks, from `sinfo -h -o "%P %D %c %m %G"`), instead of pending forever;
and training ranks must start with srun (a `--set-resources` on the command line replaces the profile's block)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cbedtdc.cluster import (SINFO_FORMAT, check_slurm_submission, dag_slurm_requests, parse_sinfo, slurm_fit_errors,
                            slurm_request)
from cbedtdc.config import ConfigError

CI_NODE = "debug* 1 2 23081 (null)\n"  # .ci/start_slurm.sh on a 2-core machine
SITE = ("cpu* 100 48 190000 (null)\n"
        "cpu* 4 128 1000000 (null)\n"
        "gpu 8 64 512000 gpu:a100:4(S:0-1)\n")


def fit(sinfo, name, resources, threads=1):
    return slurm_fit_errors(sinfo, [slurm_request(name, resources, threads)])


def test_sinfo_lines_become_node_groups_per_partition():
    parts, default = parse_sinfo(SITE)
    assert default == "cpu"
    assert parts["cpu"] == [{"nodes": 100, "cpus": 48, "mem_mb": 190000, "gpus": 0},
                            {"nodes": 4, "cpus": 128, "mem_mb": 1000000, "gpus": 0}]
    assert parts["gpu"][0]["gpus"] == 4
    assert SINFO_FORMAT == "%P %D %c %m %G"


def test_jobs_that_fit_pass():
    assert fit(CI_NODE, "shard", {"mem_mb": 1000}) == []
    assert fit(CI_NODE, "train_flat", {"mpi": "srun", "tasks": 2, "cpus_per_task": 1, "mem_mb_per_cpu": 2000}) == []
    # 16 ranks x 8 CPUs spread over the 48-core nodes; a 100-core job goes to the big nodes
    assert fit(SITE, "train_flat", {"tasks": 16, "cpus_per_task": 8, "mem_mb_per_cpu": 2000}) == []
    assert fit(SITE, "evaluate", {"mem_mb": 500000}, threads=100) == []
    assert fit(SITE, "train_level", {"slurm_partition": "gpu", "tasks": 8, "cpus_per_task": 8,
                                     "slurm_extra": "'--gpus-per-task=1'"}) == []


def test_the_ci_node_refuses_two_ranks_of_two_cpus_naming_rule_request_and_node():
    (line,) = fit(CI_NODE, "train_flat", {"mpi": "srun", "tasks": 2, "cpus_per_task": 2, "mem_mb_per_cpu": 2000})
    assert line.startswith("rule train_flat asks for 2 tasks x 2 CPUs, 2000 MB a CPU = 4 CPUs in all")
    assert "partition debug" in line and "largest node: 2 CPUs, 23081 MB, no GPU" in line
    assert "train.threads_per_rank + train.workers" in line  # what to set
    assert "\n" not in line


def test_a_group_job_wider_than_a_node_says_to_set_cores():
    (line,) = fit(CI_NODE, "index_raw+shard (group rawfile, 6 jobs)", {"mem_mb": 3000, "_cores": 3}, threads=3)
    assert "asks for 1 task x 3 CPUs, 3000 MB, but no node of partition debug has that" in line
    assert "set --cores to the CPUs of a node" in line


@pytest.mark.parametrize("resources, threads, words", [
    ({"mem_mb": 2000000}, 1, "1 task x 1 CPU, 2000000 MB, but no node of partition cpu has that"),
    ({"tasks": 4, "cpus_per_task": 200}, 1, "= 200 CPUs on one node, but no node"),
    ({"tasks": 2, "cpus_per_task": 48, "mem_mb_per_cpu": 30000}, 1, "= 48 CPUs, 1440000 MB on one node"),
    ({"slurm_partition": "gpu", "tasks": 8, "cpus_per_task": 8, "slurm_extra": "--gpus-per-task=1", "nodes": 1}, 1,
     "= 64 CPUs, 8 GPUs on one node"),
    ({"slurm_partition": "gpu", "gres": "gpu:a100:8"}, 1, "8 GPU(s) a node, but no node of partition gpu"),
    ({"tasks": 1000, "cpus_per_task": 48}, 1, "= 48000 CPUs in all, more than partition cpu holds"),
    ({"slurm_partition": "bigmem"}, 1, "partition bigmem, which sinfo does not list (partitions: cpu, gpu)"),
])
def test_requests_no_node_or_partition_holds(resources, threads, words):
    (line,) = fit(SITE, "some_rule", resources, threads)
    assert line.startswith("rule some_rule asks for ") and words in line, line
    if "sinfo does not list" not in line:
        assert "largest node: " in line


def test_cpus_default_to_threads_and_a_negative_cpus_per_task_to_one():
    assert slurm_request("r", {}, 6).cpus_per_task == 6
    assert slurm_request("r", {"cpus_per_task": -1}, 6).cpus_per_task == 1


def fake_dag(jobs, groups=None):
    groups = groups or {}
    return SimpleNamespace(needrun_jobs=lambda: jobs, get_job_group=lambda j: groups.get(id(j)))


def job(rule, resources, threads=1, group=None, local=False):
    return SimpleNamespace(rule=SimpleNamespace(name=rule), resources=resources, threads=threads, group=group,
                           is_local=local)


def test_requests_of_a_dag_count_a_group_once_and_skip_local_rules():
    a, b = job("index_raw", {"mem_mb": 1000}, group="rawfile"), job("shard", {"mem_mb": 1000}, group="rawfile")
    grouped = SimpleNamespace(jobs=[a, b], groupid="rawfile", resources={"mem_mb": 2000}, threads=2, is_local=False)
    train = job("train_flat", {"mpi": "srun", "tasks": 2, "cpus_per_task": 1})
    dag = fake_dag([a, b, train, job("all", {}, local=True)], {id(a): grouped, id(b): grouped})
    reqs = dag_slurm_requests(dag)
    assert [r.name for r in reqs] == ["index_raw+shard (group rawfile, 2 jobs)", "train_flat"]
    assert (reqs[0].cpus_per_task, reqs[0].mem_mb, reqs[1].tasks) == (2, 2000, 2)


def test_submission_check_runs_sinfo_and_refuses_with_one_line_per_problem():
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return SimpleNamespace(returncode=0, stdout=CI_NODE, stderr="")

    ok = fake_dag([job("train_flat", {"mpi": "srun --mpi=pmi2", "tasks": 2, "cpus_per_task": 1})])
    check_slurm_submission("slurm", ok, run=run, which=lambda _: "/usr/bin/sinfo")
    assert calls == [["sinfo", "-h", "-o", SINFO_FORMAT]]
    # the profile's set-resources replaced by `--set-resources train_flat:cpus_per_task=2`: mpiexec, 2 CPUs a rank
    bad = fake_dag([job("train_flat", {"mpi": "mpiexec", "tasks": 2, "cpus_per_task": 2})])
    with pytest.raises(ConfigError) as err:
        check_slurm_submission("slurm", bad, run=run, which=lambda _: "/usr/bin/sinfo")
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    assert "rule train_flat would start its 2 ranks with `mpiexec` inside one sbatch job" in lines[0]
    assert "replaces the profile's whole block" in lines[0]
    assert "4 CPUs in all, more than partition debug holds" in lines[1]
    # other executors: nothing is checked, sinfo is not run
    check_slurm_submission("local", bad, run=None, which=None)
    check_slurm_submission("cluster-generic", bad, run=None, which=None)


@pytest.mark.parametrize("resources, threads, words", [
    ({"mem_mb": "2GB"}, 1, "resource mem_mb='2GB' is not a whole number"),
    ({"tasks": "two"}, 1, "resource tasks='two' is not a whole number"),
    ({"cpus_per_task": 2.5}, 1, "resource cpus_per_task=2.5 is not a whole number"),
    ({"mem_mb_per_cpu": [2000]}, 1, "resource mem_mb_per_cpu=[2000] is not a whole number"),
    ({"gpu": True}, 1, "resource gpu=True is not a whole number"),
    ({}, "many", "resource threads='many' is not a whole number"),
])
def test_an_unreadable_resource_stops_the_check_naming_rule_resource_and_value(resources, threads, words):
    """Read as 0, such a value would make any job fit (0 MB, 0 GPUs): it is refused, and says what to set."""
    with pytest.raises(ConfigError, match="^rule train_flat: " + words.replace("[", r"\[").replace("]", r"\]")
                       .replace(".", r"\.") + ".*set it to an integer in the profile"):
        slurm_request("train_flat", resources, threads)


def test_whole_numbers_as_text_or_float_and_snakemakes_tbd_are_read():
    """Snakemake passes sizes as int or text; ``<TBD>`` (computed from input files that do not exist yet) is left to
    SLURM at submission, as before."""
    r = slurm_request("shard", {"mem_mb": "3000", "tasks": 2.0, "nodes": "", "gpu": None}, 1)
    assert (r.mem_mb, r.tasks, r.nodes, r.gpus) == (3000, 2, None, 0)
    assert slurm_request("shard", {"mem_mb": "<TBD>"}, 1).mem_mb == 0


def test_a_dag_job_with_an_unreadable_resource_fails_the_submission_check():
    def run(cmd, **kw):
        return SimpleNamespace(returncode=0, stdout=SITE, stderr="")

    dag = fake_dag([job("train_flat", {"mpi": "srun", "tasks": 2, "mem_mb_per_cpu": "lots"})])
    with pytest.raises(ConfigError, match=r"rule train_flat: resource mem_mb_per_cpu='lots' is not a whole number"):
        check_slurm_submission("slurm", dag, run=run, which=lambda _: "/usr/bin/sinfo")


def test_without_sinfo_or_when_it_fails_the_sizes_go_unchecked_with_a_warning(caplog):
    dag = fake_dag([job("train_flat", {"mpi": "srun", "tasks": 2, "cpus_per_task": 1})])
    check_slurm_submission("slurm", dag, run=None, which=lambda _: None)
    assert "sinfo is not on PATH" in caplog.text
    failed = SimpleNamespace(returncode=1, stdout="", stderr="slurm_load_partitions: Unable to contact controller")
    check_slurm_submission("slurm", dag, run=lambda cmd, **kw: failed, which=lambda _: "/usr/bin/sinfo")
    assert "sinfo failed (slurm_load_partitions: Unable to contact controller)" in caplog.text
