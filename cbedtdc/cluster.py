"""Before the first SLURM submission: every job fits a node of its partition (``sinfo``), and training ranks start
with ``srun`` (called from ``rules/common.smk``'s ``onstart``, never in a dry run). The parsing and the fit are pure
functions, unit-tested on ``sinfo`` text; only :func:`check_slurm_submission` runs a command."""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
from dataclasses import dataclass

from cbedtdc.config import ConfigError

__all__ = ["SINFO_FORMAT", "SlurmRequest", "parse_sinfo", "slurm_request", "slurm_fit_errors", "dag_slurm_requests",
           "launcher_errors", "check_slurm_submission"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- SLURM: does every job fit a node?
#: ``sinfo -h -o SINFO_FORMAT``: partition (``*`` = the default), nodes, CPUs, memory (MB) and GRES of each group
#: of alike nodes.
SINFO_FORMAT = "%P %D %c %m %G"


@dataclass(frozen=True)
class SlurmRequest:
    """What one submission asks of SLURM, as the slurm executor plugin (2.8) turns resources into sbatch flags.

    ``cpus_per_task`` x ``tasks`` CPUs, at most ``tasks_per_node`` tasks on one node (``nodes`` given: the
    tasks spread evenly; else SLURM may place each task anywhere). Memory is ``mem_mb_per_cpu`` per CPU
    (``--mem-per-cpu``) or ``mem_mb`` per node (``--mem``); GPUs are ``gpus_per_task`` per task, else
    ``gpus_per_node`` on each node, else ``gpus`` in all.
    """

    name: str
    partition: str | None = None
    tasks: int = 1
    cpus_per_task: int = 1
    nodes: int | None = None
    mem_mb: int = 0
    mem_mb_per_cpu: int = 0
    gpus: int = 0
    gpus_per_node: int = 0
    gpus_per_task: int = 0

    @property
    def tasks_per_node(self) -> int:
        return math.ceil(self.tasks / self.nodes) if self.nodes else 1

    def describe(self) -> str:
        """The request in a few words, e.g. ``2 tasks x 2 CPUs, 2000 MB a CPU``."""
        parts = [f"{self.tasks} task{'s' if self.tasks > 1 else ''} x {self.cpus_per_task} CPU"
                 f"{'s' if self.cpus_per_task > 1 else ''}" + (f" on {self.nodes} node(s)" if self.nodes else "")]
        if self.mem_mb_per_cpu or self.mem_mb:
            parts.append(f"{self.mem_mb_per_cpu} MB a CPU" if self.mem_mb_per_cpu else f"{self.mem_mb} MB")
        if self.gpus_per_task:
            parts.append(f"{self.gpus_per_task} GPU(s) a task")
        elif self.gpus_per_node:
            parts.append(f"{self.gpus_per_node} GPU(s) a node")
        elif self.gpus:
            parts.append(f"{self.gpus} GPU(s)")
        return ", ".join(parts)


def _number(text: str) -> int:
    """``sinfo``'s ``48``, ``48+`` (nodes differ: at least 48) or ``n/a`` as an int (0 when unknown)."""
    m = re.match(r"\d+", text.strip())
    return int(m.group()) if m else 0


def _gres_gpus(gres: str) -> int:
    """GPUs per node in a GRES string: ``gpu:a100:4(S:0-1),gpu:v100:2`` -> 6, ``(null)`` -> 0.

    >>> _gres_gpus("gpu:a100:4(S:0-1),shard:8"), _gres_gpus("gpu:2"), _gres_gpus("(null)")
    (4, 2, 0)
    """
    total = 0
    for item in re.split(r",(?![^(]*\))", gres):
        item = item.split("(")[0].strip()
        fields = item.split(":")
        if fields[0] == "gpu":
            total += _number(fields[-1]) if len(fields) > 1 and fields[-1][:1].isdigit() else 1
    return total


def parse_sinfo(text: str) -> tuple[dict[str, list[dict]], str | None]:
    """Node groups per partition and the default partition from ``sinfo -h -o "%P %D %c %m %G"``.

    >>> parts, default = parse_sinfo("debug* 1 2 23081 (null)\\ngpu 4 64 512000 gpu:a100:4\\n")
    >>> default, parts["gpu"]
    ('debug', [{'nodes': 4, 'cpus': 64, 'mem_mb': 512000, 'gpus': 4}])
    """
    parts: dict[str, list[dict]] = {}
    default = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        name = fields[0]
        if name.endswith("*"):
            name = name[:-1]
            default = default or name
        gres = fields[4] if len(fields) > 4 else "(null)"
        parts.setdefault(name, []).append({"nodes": _number(fields[1]), "cpus": _number(fields[2]),
                                           "mem_mb": _number(fields[3]), "gpus": _gres_gpus(gres)})
    return parts, default


def _int(name: str, key: str, value, default: int = 0) -> int:
    """A resource of rule ``name`` as a whole number; absent (``None`` or ``""``) is ``default``, and so is
    Snakemake's ``<TBD>``, a size computed from input files that do not exist yet (SLURM gets it at submission).

    A value that is not a whole number stops the check (a job whose size cannot be read must not pass it as 0):

    >>> _int("train_flat", "tasks", "2"), _int("train_flat", "nodes", None), _int("shard", "mem_mb", "<TBD>")
    (2, 0, 0)
    >>> _int("train_flat", "mem_mb", "2GB")
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: rule train_flat: resource mem_mb='2GB' is not a whole number; set it to an integer
    in the profile's set-resources or default-resources (or the config), e.g. mem_mb=2000 (docs/hpc.md, Sizes)
    """
    if value is None or value == "" or value == "<TBD>":
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"rule {name}: resource {key}={value!r} is not a whole number; set it to an integer in the "
                          f"profile's set-resources or default-resources (or the config), e.g. {key}="
                          f"{2000 if 'mem' in key else 2} (docs/hpc.md, Sizes)") from None


def slurm_request(name: str, resources: dict, threads: int) -> SlurmRequest:
    """The :class:`SlurmRequest` of a job from its Snakemake resources and threads (the plugin's mapping:
    ``tasks`` -> ``--ntasks``, ``cpus_per_task`` or else the threads -> ``--cpus-per-task``, ``nodes``,
    ``mem_mb_per_cpu`` before ``mem_mb``, ``gpu`` -> ``--gpus``, ``gres`` and ``slurm_extra``'s
    ``--gpus-per-task``/``--gpus-per-node``).

    >>> r = slurm_request("train_flat", {"mpi": "srun", "tasks": 2, "cpus_per_task": 2, "mem_mb_per_cpu": 2000}, 2)
    >>> r.describe()
    '2 tasks x 2 CPUs, 2000 MB a CPU'
    """
    cpus = _int(name, "cpus_per_task", resources.get("cpus_per_task"))
    if cpus == 0:
        cpus = _int(name, "threads", threads, 1)
    extra = str(resources.get("slurm_extra") or "")
    per_task = re.search(r"--gpus-per-task[= ](?:\w+:)?(\d+)", extra)
    per_node = re.search(r"--gpus-per-node[= ](?:\w+:)?(\d+)", extra)
    gres = str(resources.get("gres") or "")
    nodes = _int(name, "nodes", resources.get("nodes")) or None
    return SlurmRequest(
        name=name, partition=resources.get("slurm_partition") or None,
        tasks=max(1, _int(name, "tasks", resources.get("tasks"), 1)), cpus_per_task=max(1, cpus), nodes=nodes,
        mem_mb=_int(name, "mem_mb", resources.get("mem_mb")),
        mem_mb_per_cpu=_int(name, "mem_mb_per_cpu", resources.get("mem_mb_per_cpu")),
        gpus=_int(name, "gpu", resources.get("gpu")),
        gpus_per_node=int(per_node.group(1)) if per_node else _gres_gpus(gres),
        gpus_per_task=int(per_task.group(1)) if per_task else 0)


def slurm_fit_errors(sinfo_text: str, requests) -> list[str]:
    """One line per request that no node of its partition can hold, else nothing.

    A request fits when one node holds what a node must hold (one task, or ``tasks_per_node`` tasks when
    ``nodes`` is given: their CPUs, memory and GPUs) and the partition's nodes together hold all tasks.

    >>> sinfo = "debug* 1 2 23081 (null)\\n"
    >>> slurm_fit_errors(sinfo, [slurm_request("shard", {"mem_mb": 1000}, 1)])
    []
    >>> print(*slurm_fit_errors(sinfo, [slurm_request("train_flat", {"tasks": 2, "cpus_per_task": 2}, 2)]))
    rule train_flat asks for 2 tasks x 2 CPUs = 4 CPUs in all, more than partition debug holds (2 CPUs in all, 1 node; largest node: 2 CPUs, 23081 MB, no GPU); lower train.ranks, or the CPUs of a rank (train.threads_per_rank + train.workers), or the profile's mem_mb_per_cpu (docs/hpc.md, Sizes)
    """
    parts, default = parse_sinfo(sinfo_text)
    errors = []
    for req in requests:
        name = req.partition or default
        groups = parts.get(name or "")
        if not groups:
            where = f"partition {name}" if name else "the default partition"
            errors.append(f"rule {req.name} asks for {where}, which sinfo does not list (partitions: "
                          f"{', '.join(sorted(parts)) or 'none'}); set slurm_partition in the profile")
            continue
        largest = {k: max(g[k] for g in groups) for k in ("cpus", "mem_mb", "gpus")}
        node_text = (f"largest node: {largest['cpus']} CPUs, {largest['mem_mb']} MB, "
                     + (f"{largest['gpus']} GPUs" if largest["gpus"] else "no GPU"))
        per_node_tasks = req.tasks_per_node
        cpus = per_node_tasks * req.cpus_per_task
        mem = cpus * req.mem_mb_per_cpu if req.mem_mb_per_cpu else req.mem_mb
        gpus = per_node_tasks * req.gpus_per_task or req.gpus_per_node or (req.gpus if req.tasks == 1 else 0)
        fits_node = [g for g in groups if g["cpus"] >= cpus and (not g["mem_mb"] or g["mem_mb"] >= mem)
                     and g["gpus"] >= gpus]
        head = f"rule {req.name} asks for {req.describe()}"
        if not fits_node:
            need = f"{cpus} CPUs" + (f", {mem} MB" if mem else "") + (f", {gpus} GPUs" if gpus else "")
            need = "" if req.tasks == 1 else f" = {need} on one node"
            errors.append(f"{head}{need}, but no node of partition {name} has that ({node_text})")
            continue
        n_nodes = sum(g["nodes"] for g in groups)
        where = f"{n_nodes} node{'s' if n_nodes > 1 else ''}; {node_text}"
        if req.nodes and sum(g["nodes"] for g in fits_node) < req.nodes:
            errors.append(f"{head}, but partition {name} has {sum(g['nodes'] for g in fits_node)} node(s) that "
                          f"hold {per_node_tasks} of its tasks ({where})")
            continue

        def tasks_on(g):  # tasks of this request one node of group g holds
            n = g["cpus"] // req.cpus_per_task
            if req.mem_mb_per_cpu and g["mem_mb"]:
                n = min(n, g["mem_mb"] // (req.cpus_per_task * req.mem_mb_per_cpu))
            if req.gpus_per_task:
                n = min(n, g["gpus"] // req.gpus_per_task)
            return n

        if sum(g["nodes"] * tasks_on(g) for g in fits_node) < req.tasks:
            have = sum(g["nodes"] * g["cpus"] for g in groups)
            errors.append(f"{head} = {req.tasks * req.cpus_per_task} CPUs in all, more than partition {name} "
                          f"holds ({have} CPUs in all, {where})")
        elif req.gpus and req.tasks > 1 and sum(g["nodes"] * g["gpus"] for g in groups) < req.gpus:
            errors.append(f"{head}, but partition {name} has {sum(g['nodes'] * g['gpus'] for g in groups)} GPUs "
                          f"in all ({where})")
    return [f"{e}; {_fix(e)}" for e in errors]


def _fix(error: str) -> str:
    """What to set, in a few words, for one line of :func:`slurm_fit_errors`."""
    if "does not list" in error:
        return "docs/hpc.md, Sizes"
    if "(group " in error:
        return ("a group job runs its jobs side by side up to --cores: set --cores to the CPUs of a node "
                "(docs/hpc.md, Sizes)")
    if error.startswith("rule train_"):
        return ("lower train.ranks, or the CPUs of a rank (train.threads_per_rank + train.workers), or the profile's "
                "mem_mb_per_cpu (docs/hpc.md, Sizes)")
    return "lower the rule's resources in the profile (docs/hpc.md, Sizes)"


def dag_slurm_requests(dag) -> list[SlurmRequest]:
    """The :class:`SlurmRequest` of every submission a run is about to make: each job to run, a group job
    (``group:`` + ``group-components``) once with the group's summed resources; local rules left out.
    ``dag`` is Snakemake's (``workflow.dag`` in ``onstart``), read through ``needrun_jobs()`` and
    ``get_job_group()`` only."""
    seen, out = set(), []
    for job in dag.needrun_jobs():
        group = dag.get_job_group(job) if getattr(job, "group", None) else None
        unit = group or job
        if id(unit) in seen or getattr(unit, "is_local", False):
            continue
        seen.add(id(unit))
        if group is not None:
            rules = sorted({j.rule.name for j in group.jobs})
            name = f"{'+'.join(rules)} (group {group.groupid}, {len(group.jobs)} jobs)"
        else:
            name = job.rule.name
        out.append(slurm_request(name, dict(unit.resources), unit.threads))
    return out


def launcher_errors(dag) -> list[str]:
    """Training rules whose ranks would not be started by ``srun`` under the slurm executor: the profile's
    ``set-resources`` block (``mpi: srun ...``) was replaced, e.g. by ``--set-resources`` on the command line."""
    errors = {}
    for job in dag.needrun_jobs():
        mpi = str(job.resources.get("mpi", "") or "")
        if mpi and mpi.split()[0] != "srun" and job.rule.name not in errors:
            errors[job.rule.name] = (
                f"rule {job.rule.name} would start its {job.resources.get('tasks')} ranks with `{mpi}` inside one "
                "sbatch job, not with srun: the profile's set-resources are gone (`--set-resources` on the command "
                "line replaces the profile's whole block); change per-rule sizes in the profile or the config "
                "(docs/hpc.md, 'Sizes')")
    return list(errors.values())


def check_slurm_submission(executor: str | None, dag, *, run=subprocess.run, which=shutil.which) -> None:
    """Before the first SLURM submission: every job fits a node of its partition (``sinfo``) and training
    ranks start with srun. Raises :class:`ConfigError` with one line per problem; nothing for other executors.
    """
    if (executor or "") != "slurm":
        return
    errors = launcher_errors(dag)
    if which("sinfo") is None:
        log.warning("sinfo is not on PATH: the jobs' sizes are not checked against the partitions' nodes")
    else:
        res = run(["sinfo", "-h", "-o", SINFO_FORMAT], capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            log.warning("sinfo failed (%s): the jobs' sizes are not checked", (res.stderr or "").strip()[:200])
        else:
            errors += slurm_fit_errors(res.stdout, dag_slurm_requests(dag))
    if errors:
        raise ConfigError("\n".join(f"config error at SLURM resources: {e}" for e in errors))
