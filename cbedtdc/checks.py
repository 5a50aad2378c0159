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
import shutil
from pathlib import Path

from .config import ConfigError
from .layout import SPLITS, raw_layout, split_of, split_of_stem
from cbedtdc.errors import InputError

__all__ = ["check_classes_config", "check_run_config", "check_tdc_config", "check_class_counts", "check_lsf_submission",
           "ClassCheckError", "check_slurm_submission"]

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
    from cbedtdc.features.registry import needs_backbone

    if shared and needs_backbone(tdc.get("head", {}).get("features", ["cnn"])) and tdc["shared_loss"] not in losses:
        raise ConfigError(
            f"config error at tdc.shared_loss: {tdc['shared_loss']} is not among flat.losses {losses}; add it there "
            "or pick one of them")
    reps = config.get("replicates", 1)
    if (reps != 1 and reps != [config.get("seed", 0)]) and not shared:
        raise ConfigError(
            "config error at replicates: replicate seeds retrain the flat backbone and the heads of the "
            "shared-backbone TDC; set tdc.backbone: shared, or replicates: 1")
    for v in config.get("heads", {}).get("variants", []):
        backbone = v.get("backbone", "ce")
        if needs_backbone(v.get("features", ["cnn"])) and backbone not in losses:
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


# The SLURM checks live in cbedtdc.cluster; the rules import this one name from here with the other checks.
from .cluster import check_slurm_submission  # noqa: E402
