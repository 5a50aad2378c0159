"""The TDC's jobs on files: plan the levels, write a level's job, collect what it missed, tune the routing.

Each function reads and writes the files of one rule (``levels.json``, ``job/``, ``missed.csv``,
``routing.json``); the models are loaded lazily through :mod:`cbedtdc.train`.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from cbedtdc.cascade.plan import LevelPlan, check_trainable, level_budgets, level_job, plan_levels, trickle
from cbedtdc.cascade.routing import DEFAULT, ArgmaxRule, RoutingRule, rule_for, softmax
from cbedtdc.io import atomic_write_text, read_csv, write_csv
from cbedtdc.errors import InputError

__all__ = [
    "MISSED_FIELDS",
    "write_plan",
    "write_level_job",
    "read_missed",
    "write_missed",
    "level_dir",
    "load_levels",
    "predict_levels",
    "check_level_model",
    "collect_missed",
    "tune_routing",
]

log = logging.getLogger(__name__)

MISSED_FIELDS = ["key", "split", "space_group", "reason", "pred", "p_pred", "p_rest", "routed"]


def write_missed(path, rows: list[dict]) -> None:
    """Write the samples that reach the next level (``missed.csv``) atomically."""
    write_csv(path, rows, MISSED_FIELDS)


def read_missed(path) -> dict[str, list[str]]:
    """``{split: [keys]}`` of a ``missed.csv``."""
    out: dict[str, list[str]] = {"train": [], "dev": []}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "key" not in reader.fieldnames or "split" not in reader.fieldnames:
                raise InputError("no key/split columns")
            for row in reader:
                out.setdefault(row["split"], []).append(row["key"])
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable missed.csv ({err}); rerun rule collect_missed") from err
    return out


def level_dir(tdc_dir, level: int) -> Path:
    return Path(tdc_dir) / f"level_{level}"


def load_levels(tdc_dir, plan: LevelPlan | None = None, device: str = "cpu"):
    """Load ``best.pt`` of every level and check its outputs against the plan."""
    from cbedtdc.train import inference_device, load_model

    plan = plan or LevelPlan.load(Path(tdc_dir) / "levels.json")
    device = inference_device(device)
    models = []
    for k in range(plan.n_levels):
        path = level_dir(tdc_dir, k + 1) / "best.pt"
        model, meta = load_model(path, device=device)
        check_level_model(plan, k + 1, meta, path)
        models.append((model, meta))
    return plan, models


def predict_levels(models, shard_root, split, keys=None, batch_size: int = 64):
    """Probabilities of every level on one split: ``(keys, [probs_level_1, ...])``."""
    from cbedtdc.train import predict

    out_keys, probs = None, []
    for model, meta in models:
        k, logits = predict(model, meta, shard_root, split, keys=keys, batch_size=batch_size)
        if out_keys is not None and list(k) != out_keys:
            raise RuntimeError("levels returned samples in different orders")
        out_keys = list(k)
        probs.append(softmax(logits))
    return out_keys, probs


def check_level_model(plan: LevelPlan, level: int, meta: dict, path) -> None:
    """Raise when a level checkpoint's outputs differ from the plan (a stale model)."""
    k = level - 1
    classes = [int(c) for c in meta["classes"]]
    if classes != plan.outputs(k) or bool(meta.get("rest", False)) != plan.has_rest(k):
        raise InputError(f"{path}: outputs {classes} rest={bool(meta.get('rest'))} do not match levels.json "
                         f"(level {level}: {plan.outputs(k)} rest={plan.has_rest(k)}); retrain the level")


def collect_missed(levels_path, level: int, model_path, shard_root, *, missed_path=None, out_path=None,
                   batch_size: int = 64, device: str = "cpu"):
    """Run level ``level`` (1-based) on the train and dev samples that reached it; list those that trickle.

    Returns ``(rows, stats)`` and writes ``rows`` to ``out_path`` (``missed.csv``) when given.
    ``stats[split]`` holds ``reached``, ``missed`` and the count per reason.
    """
    from cbedtdc.data import ShardDataset
    from cbedtdc.train import inference_device, load_model, predict

    plan = LevelPlan.load(levels_path)
    k = level - 1
    if not 0 <= k < plan.n_levels - 1:
        raise InputError(f"level {level}: missed samples exist for levels 1..{plan.n_levels - 1} "
                         "(the last level keeps everything)")
    model, meta = load_model(model_path, device=inference_device(device))
    check_level_model(plan, level, meta, model_path)
    prev = read_missed(missed_path) if missed_path else None
    if plan.mode == "hard" and k > 0 and prev is None:
        raise InputError(f"hard mode: level {level} needs missed.csv of level {level - 1}")
    outs = plan.outputs(k)
    rows, stats = [], {}
    for split in ("train", "dev"):
        ds = ShardDataset(shard_root, split, classes=plan.classes)
        keys = np.asarray(ds.keys, dtype=object)
        labels = ds.labels
        if plan.mode == "rest":
            reached = np.isin(labels, plan.own(k) + plan.later(k))
        elif k == 0:
            reached = np.ones(len(keys), dtype=bool)
        else:
            reached = np.isin(keys, np.asarray(prev.get(split, []), dtype=object))
        sel_keys, sel_labels = [str(x) for x in keys[reached]], labels[reached]
        if sel_keys:
            got, logits = predict(model, meta, shard_root, split, keys=sel_keys, batch_size=batch_size)
            if list(got) != sel_keys:
                raise RuntimeError(f"predict returned the {split} samples in another order")
            probs = softmax(logits)
        else:
            probs = np.zeros((0, len(outs) + plan.has_rest(k)))
        mask, reasons = trickle(plan, k, sel_labels, probs)
        cls = probs[:, : len(outs)]
        best = np.argmax(cls, axis=1) if len(cls) else np.zeros(0, dtype=int)
        # diagnostic of the rest reading: would "rest" win the argmax (the routing is tuned later, on dev)
        routed = ArgmaxRule().forwards(plan, k, probs) if plan.mode == "rest" else None
        for i in np.flatnonzero(mask):
            rows.append({
                "key": sel_keys[i], "split": split, "space_group": int(sel_labels[i]), "reason": reasons[i],
                "pred": int(outs[best[i]]), "p_pred": round(float(cls[i, best[i]]), 6),
                "p_rest": round(float(probs[i, -1]), 6) if plan.has_rest(k) else "",
                "routed": ("yes" if routed[i] else "no") if routed is not None else "",
            })
        why = {}
        for r in reasons[mask]:
            why[r] = why.get(r, 0) + 1
        stats[split] = {"reached": int(reached.sum()), "missed": int(mask.sum()), "reasons": why}
        if routed is not None and reached.any():
            stats[split]["rest_wins_of_later"] = int((routed & mask).sum())
            stats[split]["rest_wins_of_own"] = int((routed & ~mask).sum())
    if out_path is not None:
        write_missed(out_path, rows)
    return rows, stats


def tune_routing(tdc_dir, shard_root, out_path, *, routing: str = DEFAULT, batch_size: int = 64,
                 device: str = "cpu") -> RoutingRule:
    """Tune the routing of the own-backbone levels on dev and write ``routing.json`` (rule tune_routing).

    ``routing`` is ``tdc.routing``; :func:`~cbedtdc.cascade.routing.rule_for` turns it into the rule of the
    plan's reading (the hard reading always thresholds), tuned on the levels' dev probabilities
    (:meth:`~cbedtdc.cascade.routing.RoutingRule.tune`). It lives here, not in ``levels.json``, so changing it
    never retrains a level.
    """
    from cbedtdc.data import ShardDataset
    from cbedtdc.train import inference_device

    plan = LevelPlan.load(Path(tdc_dir) / "levels.json")
    ds = ShardDataset(shard_root, "dev", classes=plan.classes)
    if not len(ds):
        raise InputError(f"{shard_root}/dev.csv has no sample of the run's classes: cannot tune the routing")
    _, models = load_levels(tdc_dir, plan, device=inference_device(device))
    _, probs = predict_levels(models, shard_root, "dev", keys=list(ds.keys), batch_size=batch_size)
    rule = rule_for(routing, plan.mode).tune(plan, probs, ds.labels)
    rule.save(out_path, plan)
    return rule


def write_plan(train_csv, classes, out_path, *, mode=None, how=None, level_sizes=None, n_levels=None,
               max_ratio=None, hard_outputs=None, epochs=None, budget_split=None, images=None) -> LevelPlan:
    """Plan the levels from the training split's counts and write ``levels.json`` (rule plan_levels).

    The budget is that of the flat baseline, ``epochs`` x the training samples of the run's classes (or
    ``images`` when > 0: ``train.images``), shared by the levels (:func:`~cbedtdc.cascade.plan.level_budgets`). An
    option left ``None`` takes the config schema's default (``tdc.mode``, ``tdc.levels`` for ``how``, ...,
    ``train.epochs``, ``train.images``).
    """
    from cbedtdc.config import schema_defaults

    tdc = schema_defaults("tdc")
    mode, how, hard_outputs, budget_split = (tdc[k] if v is None else v for k, v in (
        ("mode", mode), ("levels", how), ("hard_outputs", hard_outputs), ("budget_split", budget_split)))
    level_sizes = tdc["level_sizes"] if level_sizes is None else level_sizes
    n_levels = tdc["n_levels"] if n_levels is None else n_levels
    max_ratio = tdc["max_ratio"] if max_ratio is None else max_ratio
    epochs = schema_defaults("train")["epochs"] if epochs is None else int(epochs)
    images = schema_defaults("train")["images"] if images is None else int(images)
    rows = read_csv(train_csv)
    wanted = {int(c) for c in classes}
    labels = [int(r["space_group"]) for r in rows if int(r["space_group"]) in wanted]
    counts = Counter(labels)
    if not labels:
        raise InputError(f"{train_csv}: no training sample of the run's classes {list(classes)}")
    levels = plan_levels(counts, classes, how=how, level_sizes=level_sizes, n_levels=n_levels,
                         max_ratio=max_ratio)
    plan = LevelPlan(levels, mode=mode, hard_outputs=hard_outputs, counts=dict(counts))
    check_trainable(plan)
    plan.n_train = len(labels)
    plan.flat_images = images if images > 0 else epochs * len(labels)
    plan.budgets = level_budgets(plan, labels, plan.flat_images, budget_split)
    plan.save(out_path)
    for k, lv in enumerate(plan.levels):
        log.info("level %d: classes %s (%d training samples), budget %d images", k + 1, lv,
                 sum(counts[c] for c in lv), plan.budgets[k])
    log.info("%s reading; flat budget %d images = %s", plan.mode, plan.flat_images,
             "train.images" if images > 0 else f"{epochs} epochs x {len(labels)} samples")
    return plan


def write_level_job(levels_path, level: int, train_csv, dev_csv, out_dir, *, missed_path=None,
                    prev_runs=None) -> dict:
    """Write a level's training job into ``out_dir`` (rule level_job); return :func:`level_job`'s dict.

    ``train_keys.csv`` and ``dev_keys.csv`` (column ``key``) and ``args.txt``: ``--classes 14,225,...
    [--rest] --epochs E``, one argument per line, integers and flags only (read by
    ``workflow_scripts/train.py`` as ``@args.txt``, never by a shell). ``--epochs`` is the level's budget, given
    once: its planned images rounded to whole epochs over its training set (:func:`level_job`); the rule passes
    no other ``--epochs``. ``prev_runs``: ``train.json`` of the earlier levels (hard reading), whose images seen
    set the rounding carried into the budget.
    """
    from cbedtdc.train import images_seen

    plan = LevelPlan.load(levels_path)
    train, dev = read_csv(train_csv), read_csv(dev_csv)
    missed = read_missed(missed_path) if missed_path else None
    seen = [images_seen(p) for p in prev_runs] if prev_runs else None
    if seen is not None and None in seen:
        raise InputError(f"cannot read the images seen from {list(prev_runs)}")
    job = level_job(plan, level, [r["key"] for r in train], [int(r["space_group"]) for r in train],
                    [r["key"] for r in dev], [int(r["space_group"]) for r in dev], missed=missed, seen_before=seen)
    if not job["train_keys"]:
        raise InputError(f"level {level}: no training sample reaches it (classes {job['classes']})")
    out = Path(out_dir)
    write_csv(out / "train_keys.csv", [{"key": k} for k in job["train_keys"]], ["key"])
    write_csv(out / "dev_keys.csv", [{"key": k} for k in job["dev_keys"]], ["key"])
    flags = ["--classes", ",".join(str(int(c)) for c in job["classes"])]
    if job["rest"]:
        flags.append("--rest")
    flags += ["--epochs", str(int(job["epochs"]))]
    atomic_write_text(out / "args.txt", "\n".join(flags) + "\n")
    n = len(job["train_keys"])
    log.info("level %d (%s reading): outputs %s%s, %d train / %d dev samples, budget %d epochs = %d images "
             "(planned %d)", level, plan.mode, job["classes"], " + rest" if job["rest"] else "", n,
             len(job["dev_keys"]), job["epochs"], job["epochs"] * n, plan.budgets[level - 1])
    return job
