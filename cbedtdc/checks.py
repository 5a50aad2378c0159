"""Checks that stop a run before the expensive work, each with one line naming what is wrong and what to set.

- :func:`check_run_config` at parse time (``rules/common.smk``): class list, raw file names, image sizes;
- :func:`check_tdc_config` at parse time: TDC levels, backbones of the heads and the shared TDC;
- :func:`check_class_counts` in rule ``check_classes``, right after ``split`` and before any training job:
  the run's classes against the samples the data really hold;
- :func:`check_slurm_submission` in ``onstart`` (before the first job is submitted): every SLURM job fits a node
  of its partition (:func:`slurm_fit_errors`, from ``sinfo``), and the training rules start their ranks with
  ``srun``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError
from .layout import SPLITS, raw_layout, split_of, split_of_stem
from cbedtdc.errors import InputError

__all__ = ["check_classes_config", "check_run_config", "check_tdc_config", "check_class_counts", "check_lsf_submission",
           "ClassCheckError", "SINFO_FORMAT", "SlurmRequest", "parse_sinfo", "slurm_request", "slurm_fit_errors",
           "dag_slurm_requests", "check_slurm_submission"]

log = logging.getLogger(__name__)


class ClassCheckError(InputError):
    """The data hold too few samples of the run's classes for the configured run."""


def check_classes_config(spec) -> list[int]:
    """The run's classes from ``config["classes"]``, or :class:`ConfigError` saying what is wrong.

    >>> check_classes_config([999, 14])
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at classes: space group 999 out of range (allowed 1..230, got [999])
    >>> check_classes_config("top10")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at classes: 'top10' is not a class set; allowed: top20, all, ...
    """
    from .classes import resolve_classes

    try:
        classes = resolve_classes(spec)
    except ValueError as err:
        why = str(err).removeprefix("classes: ").removeprefix("classes=")
        raise ConfigError(f"config error at classes: {why}") from None
    if len(classes) < 2:
        raise ConfigError(f"config error at classes: a run needs at least 2 classes, got {classes}")
    return classes


def check_run_config(config: dict, raw_files: dict | None) -> None:
    """Parse-time checks of a validated config; ``raw_files`` is :func:`cbedtdc.layout.discover_raw`'s answer
    (None when the data are generated). Raises :class:`ConfigError` with one line.

    >>> check_run_config({"image_size": 256, "synth": {"image_size": 128}, "data": {"resplit": False}}, None)
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at image_size: 256 px shards from 128 px generated stacks; set synth.image_size to at least 256 (or image_size to at most 128)
    >>> check_run_config({"image_size": 64, "data": {"resplit": False}}, {"batch_train_0": "/d/batch_train_0.h5"})
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at raw_dir: only batch_train_* files (no dev, test split); set data.resplit: true to split them by material
    """
    if raw_files is None:
        synth = config["synth"]["image_size"]
        if config["image_size"] > synth:
            raise ConfigError(
                f"config error at image_size: {config['image_size']} px shards from {synth} px generated stacks; "
                f"set synth.image_size to at least {config['image_size']} (or image_size to at most {synth})")
        return
    if raw_layout(raw_files) == "stemdl_mirror":
        _check_mirror_config(config, raw_files)
        return
    if not config["data"]["resplit"]:
        present = {split_of(Path(p).name) for p in raw_files.values()}
        absent = [s for s in SPLITS if s not in present]
        if absent:
            have = ", ".join(f"batch_{s}_*" for s in SPLITS if s in present)
            raise ConfigError(
                f"config error at raw_dir: only {have} files (no {', '.join(absent)} split); "
                "set data.resplit: true to split them by material")


def check_tdc_config(config: dict, classes) -> None:
    """Parse-time checks of a validated config's ``tdc``, ``heads`` and ``xgboost`` sections against the run's
    ``classes`` (:func:`check_classes_config`'s answer): level sizes that cannot cover the classes, backbones
    that are not trained. Raises :class:`ConfigError` with one line naming the key and what to set.

    >>> tdc = {"levels": "explicit", "level_sizes": [5, 5], "mode": "rest", "hard_outputs": "cumulative",
    ...        "n_levels": 2, "backbone": "own", "shared_loss": "ce"}
    >>> check_tdc_config({"tdc": tdc, "flat": {"losses": ["ce"]}}, list(range(1, 12)))
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at tdc.level_sizes: [5, 5] add up to 10, the run has 11 classes; change tdc.level_sizes or set tdc.levels: auto
    """
    _check_tdc_backbones(config)
    tdc, n = config["tdc"], len(classes)
    if tdc["levels"] == "explicit":
        sizes = tdc["level_sizes"]
        if sum(sizes) != n:
            raise ConfigError(
                f"config error at tdc.level_sizes: {sizes} add up to {sum(sizes)}, the run has {n} classes; "
                "change tdc.level_sizes or set tdc.levels: auto")
        if tdc["mode"] == "rest":
            smallest = sizes[-1]  # the other levels add a "rest" output
        else:
            smallest = min(sizes) if tdc["hard_outputs"] == "own" else sizes[0]
        if smallest < 2:
            raise ConfigError(
                f"config error at tdc.level_sizes: {sizes} leaves a level with one output; a classifier needs at "
                "least 2")
    elif tdc["n_levels"] > n:
        raise ConfigError(f"config error at tdc.n_levels: {tdc['n_levels']} levels for {n} classes")


def _check_tdc_backbones(config: dict) -> None:
    """The backbone every head and level needs is trained, and the level count is known where the DAG needs it."""
    tdc, losses = config["tdc"], config["flat"]["losses"]
    shared = tdc["backbone"] == "shared"
    if tdc["levels"] == "ratio" and not shared:
        raise ConfigError(
            "config error at tdc.levels: ratio plans the number of levels from the data, which the own-backbone DAG "
            "needs at parse time; set tdc.backbone: shared, or tdc.levels: explicit or auto")
    uses_cnn = "cnn" in tdc.get("head", {}).get("features", ["cnn"])
    if shared and uses_cnn and tdc["shared_loss"] not in losses:
        raise ConfigError(
            f"config error at tdc.shared_loss: {tdc['shared_loss']} is not among flat.losses {losses}; add it there "
            "or pick one of them")
    reps = config.get("replicates", 1)
    if (reps != 1 and reps != [config.get("seed", 0)]) and not shared:
        raise ConfigError(
            "config error at replicates: replicate seeds retrain the flat backbone and the heads of the "
            "shared-backbone TDC; set tdc.backbone: shared, or replicates: 1")
    if shared and config.get("xgboost", {}).get("activate", False):
        raise ConfigError(
            "config error at xgboost.activate: its heads sit on the own-backbone level ResNets; with "
            "tdc.backbone: shared set tdc.head.kind: xgboost (or add an xgboost entry to heads.variants) instead")
    for v in config.get("heads", {}).get("variants", []):
        backbone = v.get("backbone", "ce")
        if "cnn" in v.get("features", ["cnn"]) and backbone not in losses:
            raise ConfigError(
                f"config error at heads.variants: head {v['name']} uses backbone {backbone}, not among flat.losses "
                f"{losses}; add it there or change the head's backbone")


def _check_mirror_config(config: dict, raw_files: dict) -> None:
    """Parse-time checks of a run on the STEMDL mirror (128 px, log-scaled, no material ids).

    >>> cfg = {"image_size": 64, "data": {"resplit": True, "expected_side": 0}}
    >>> _check_mirror_config(cfg, {"mirror_training_0": "t"})
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at data.resplit: the STEMDL mirror has no material ids, so a re-split could put samples of one material in several splits; set data.resplit: false (its training/validation/testing+inference folders are train/dev/test)
    """
    from .mirror import MIRROR_SIDE

    if config["data"]["resplit"]:
        raise ConfigError(
            "config error at data.resplit: the STEMDL mirror has no material ids, so a re-split could put samples of "
            "one material in several splits; set data.resplit: false (its training/validation/testing+inference "
            "folders are train/dev/test)")
    side = config["data"]["expected_side"]
    if side not in (0, MIRROR_SIDE):
        raise ConfigError(
            f"config error at data.expected_side: {side}, but the STEMDL mirror's stacks are {MIRROR_SIDE} px; set "
            f"data.expected_side to 0 or {MIRROR_SIDE}")
    if config["image_size"] > MIRROR_SIDE:
        raise ConfigError(
            f"config error at image_size: {config['image_size']} px shards from the STEMDL mirror's {MIRROR_SIDE} px "
            f"stacks; set image_size to at most {MIRROR_SIDE}")
    present = {split_of_stem(s) for s in raw_files}
    absent = [s for s in SPLITS if s not in present]
    if absent:
        folders = {"train": "training", "dev": "validation", "test": "testing or inference"}
        raise ConfigError(
            f"config error at raw_dir: the STEMDL mirror has no {', '.join(folders[s] for s in absent)} folder "
            f"(no {', '.join(absent)} split; a re-split is refused without material ids); fetch it: "
            "cbedtdc fetch <raw_dir>")


def check_class_counts(counts_path, classes) -> dict:
    """Check the run's ``classes`` against ``class_counts.csv`` (rows ``space_group,train,dev,test,total``).

    Every class needs a training sample, and the run needs dev and test samples; a missing class would also
    leave explicit ``tdc.level_sizes`` short. Returns the per-class counts of the
    run's classes; raises :class:`ClassCheckError` with one line naming the missing classes and what to set.
    """
    from .io import read_csv

    rows = {int(r["space_group"]): r for r in read_csv(counts_path)}
    counts = {c: {s: int(rows[c][s]) if c in rows else 0 for s in SPLITS} for c in classes}
    missing = [c for c in classes if counts[c]["train"] == 0]
    if missing:
        present = [c for c in classes if c not in missing]
        fix = "add files holding the run's classes"
        if len(present) >= 2:
            fix = (f"set classes: {present} (with tdc.levels: explicit, tdc.level_sizes adding up to {len(present)})"
                   " or add data of the missing classes")
        raise ClassCheckError(
            f"{counts_path}: {len(missing)} of the run's {len(classes)} classes have no training sample "
            f"(space group {', '.join(map(str, missing))}); {fix}")
    for split in ("dev", "test"):
        if sum(counts[c][split] for c in classes) == 0:
            raise ClassCheckError(
                f"{counts_path}: no {split} sample of the run's classes; set data.resplit: true to split the data "
                "by material")
    return counts


def write_checked(path, counts: dict) -> None:
    """Record the checked per-class counts (the output that training rules wait for)."""
    from .io import atomic_path

    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps({str(c): v for c, v in counts.items()}, indent=1) + "\n")


def check_lsf_submission(submit_cmd, lsf_project, environ, which) -> None:
    """Before the first job of a run whose jobs are submitted with ``bsub`` (the summit profile): ``bsub`` must be
    on PATH and the project must be set. ``lsf_project`` is the profile's ``default-resources.lsf_project``
    (``"$LSF_PROJECT"`` unless edited); ``which`` is :func:`shutil.which`. Raises :class:`ConfigError`.

    >>> check_lsf_submission("bsub -P {resources.lsf_project} -W 60", "$LSF_PROJECT", {}, lambda _: "/usr/bin/bsub")
    Traceback (most recent call last):
    ...
    cbedtdc.config.ConfigError: config error at LSF_PROJECT: the profile submits with bsub -P $LSF_PROJECT, but LSF_PROJECT is not set; export LSF_PROJECT=<your allocation> (or set default-resources.lsf_project in the profile)
    >>> check_lsf_submission("sbatch", None, {}, lambda _: None)  # not an LSF submission: nothing to check
    """
    words = str(submit_cmd or "").split()
    if not words or Path(words[0]).name != "bsub":
        return
    if which(words[0]) is None:
        raise ConfigError(
            f"config error at cluster-generic-submit-cmd: the profile submits jobs with {words[0]}, which is not "
            "on PATH; run from an LSF login node (e.g. after `module load lsf`) or use another profile")
    project = str(lsf_project or "")
    if "LSF_PROJECT" in project and not environ.get("LSF_PROJECT"):
        raise ConfigError(
            "config error at LSF_PROJECT: the profile submits with bsub -P $LSF_PROJECT, but LSF_PROJECT is not "
            "set; export LSF_PROJECT=<your allocation> (or set default-resources.lsf_project in the profile)")


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


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def slurm_request(name: str, resources: dict, threads: int) -> SlurmRequest:
    """The :class:`SlurmRequest` of a job from its Snakemake resources and threads (the plugin's mapping:
    ``tasks`` -> ``--ntasks``, ``cpus_per_task`` or else the threads -> ``--cpus-per-task``, ``nodes``,
    ``mem_mb_per_cpu`` before ``mem_mb``, ``gpu`` -> ``--gpus``, ``gres`` and ``slurm_extra``'s
    ``--gpus-per-task``/``--gpus-per-node``).

    >>> r = slurm_request("train_flat", {"mpi": "srun", "tasks": 2, "cpus_per_task": 2, "mem_mb_per_cpu": 2000}, 2)
    >>> r.describe()
    '2 tasks x 2 CPUs, 2000 MB a CPU'
    """
    cpus = _int(resources.get("cpus_per_task"))
    if cpus == 0:
        cpus = _int(threads, 1)
    extra = str(resources.get("slurm_extra") or "")
    per_task = re.search(r"--gpus-per-task[= ](?:\w+:)?(\d+)", extra)
    per_node = re.search(r"--gpus-per-node[= ](?:\w+:)?(\d+)", extra)
    gres = str(resources.get("gres") or "")
    nodes = _int(resources.get("nodes")) or None
    return SlurmRequest(
        name=name, partition=resources.get("slurm_partition") or None, tasks=max(1, _int(resources.get("tasks"), 1)),
        cpus_per_task=max(1, cpus), nodes=nodes, mem_mb=_int(resources.get("mem_mb")),
        mem_mb_per_cpu=_int(resources.get("mem_mb_per_cpu")), gpus=_int(resources.get("gpu")),
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
