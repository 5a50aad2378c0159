"""Evaluation of a trained run on the test split: loads the models and their predictions, writes the summary.

:func:`evaluate_run` scores the flat baselines and the TDC (and, optionally, their CNN-XGBoost heads)
with the pure functions of :mod:`cbedtdc.metrics` and :mod:`cbedtdc.cascade.routing`, and writes
``summary.json`` and the tables that :mod:`cbedtdc.plots` draws. torch is imported lazily through
:mod:`cbedtdc.train`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbedtdc import cascade
from cbedtdc.io import read_csv, write_csv, write_json
from cbedtdc.metrics import (balanced_accuracy, bootstrap_materials, chance_rates, confusion_matrix,
                             per_class_recall, score, top1)

__all__ = ["evaluate_run", "flat_probs", "LEVEL_FIELDS"]

log = logging.getLogger(__name__)

#: Columns of ``levels.csv``.
LEVEL_FIELDS = ["level", "classes", "reached", "kept", "kept_fraction", "belongs", "own_total", "own_kept",
                "correct", "accuracy", "share_of_test", "oracle_accuracy", "images_seen"]


@dataclass
class _TestSet:
    """The test split of the run's classes (and what the scores need beside it)."""

    keys: list
    labels: np.ndarray
    materials: np.ndarray
    dev: object  # ShardDataset of the dev split
    train_labels: np.ndarray
    n_excluded: int
    kw: dict  # score() keywords: materials, bootstrap, Friedel groups


def flat_probs(model, meta, shard_root, split, keys, classes, batch_size):
    """Softmax over ``classes`` (columns reordered to ``classes``) of a flat model."""
    from cbedtdc.train import predict

    got, logits = predict(model, meta, shard_root, split, keys=keys, batch_size=batch_size)
    if list(got) != list(keys):
        raise RuntimeError(f"predict returned the {split} samples in another order")
    order = [int(c) for c in meta["classes"]]
    if sorted(order) != sorted(classes) or meta.get("rest"):
        raise ValueError(f"flat model outputs {order} (rest={meta.get('rest')}) differ from the run's classes "
                         f"{list(classes)}; retrain it")
    p = cascade.softmax(logits)
    return p[:, [order.index(c) for c in classes]]


def _test_set(shard_root, classes, *, n_boot, seed, friedel_groups) -> _TestSet:
    from cbedtdc.data import ShardDataset

    test = ShardDataset(shard_root, "test", classes=classes)
    dev = ShardDataset(shard_root, "dev", classes=classes)
    n_all_test = len(read_csv(Path(shard_root) / "test.csv"))
    if not len(test):
        raise ValueError(f"{shard_root}/test.csv has no sample of the run's classes {classes}")
    train_labels = np.array([int(r["space_group"]) for r in read_csv(Path(shard_root) / "train.csv")])
    kw = dict(materials=test.materials, n_boot=n_boot, seed=seed, friedel_groups=friedel_groups)
    return _TestSet(list(test.keys), test.labels, test.materials, dev, train_labels, n_all_test - len(test), kw)


def _score_flat(flat_models: dict, ts: _TestSet, shard_root, classes, batch_size, device):
    """``(flat_by_loss, test predictions by loss, loss selected on dev)``."""
    from cbedtdc.train import images_seen, load_model

    flat_by_loss, flat_pred = {}, {}
    for loss, path in flat_models.items():
        model, meta = load_model(path, device=device)
        p = flat_probs(model, meta, shard_root, "test", ts.keys, classes, batch_size)
        pred = np.asarray(classes)[np.argmax(p, axis=1)]
        s = score(ts.labels, pred, classes, scores=p, **ts.kw)
        if len(ts.dev):
            pd_ = flat_probs(model, meta, shard_root, "dev", list(ts.dev.keys), classes, batch_size)
            s["dev_balanced_accuracy"] = balanced_accuracy(ts.dev.labels, np.asarray(classes)[pd_.argmax(1)], classes)
        s["images_seen"] = images_seen(Path(path).parent / "train.json")
        s["loss"] = loss
        flat_by_loss[loss], flat_pred[loss] = s, pred
        log.info("flat %s: test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f", loss, s["top1"],
                 s["balanced_accuracy"], s["macro_f1"])
    best = max(flat_by_loss, key=lambda lo: (flat_by_loss[lo].get("dev_balanced_accuracy", 0.0), -list(
        flat_models).index(lo)))
    return flat_by_loss, flat_pred, best


def _score_tdc(plan, models, tuned, ts: _TestSet, tdc_dir, shard_root, batch_size):
    """``(tdc summary, routing, oracle predictions)`` of the CNN cascade on the test split."""
    from cbedtdc.train import images_seen

    y, mats, n_boot, seed = ts.labels, ts.materials, ts.kw["n_boot"], ts.kw["seed"]
    _, probs = cascade.predict_levels(models, shard_root, "test", keys=ts.keys, batch_size=batch_size)
    r = cascade.route_tuned(plan, probs, tuned)
    thresholds = tuned["thresholds"]
    t = score(y, r.pred, plan.classes, **ts.kw)
    est = cascade.estimated_accuracy(plan, probs, y)
    oracle = cascade.oracle_predictions(plan, probs, y)
    est_ci = {"top1": list(bootstrap_materials(lambda i: top1(y[i], oracle[i]), mats, n_boot, seed))}
    levels = cascade.level_report(plan, r, y)
    for row, e in zip(levels, est["per_level"]):
        row["share_of_test"] = e["share"]
        row["oracle_accuracy"] = e["accuracy"]
        row["images_seen"] = images_seen(cascade.level_dir(tdc_dir, row["level"]) / "train.json")
    seen = [lv["images_seen"] for lv in levels]
    t.update({
        "mode": plan.mode, "routing": plan.routing if plan.mode == "rest" else "threshold",
        "thresholds": thresholds or [], "temperatures": tuned["temperatures"], "prior": tuned["prior"] is not None,
        "levels": plan.levels,
        "estimated_top1": est["top1"], "estimated_balanced_accuracy": est["balanced_accuracy"],
        "estimated_ci95": est_ci,
        "images_seen": sum(seen) if all(s is not None for s in seen) else None,
        "per_level": levels,
    })
    log.info("TDC (%s): test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f; estimated top-1 %.4f", plan.mode,
             t["top1"], t["balanced_accuracy"], t["macro_f1"], t["estimated_top1"])
    return t, r, oracle


def _score_xgb(xgb_dir, flat_models, plan, models, ts: _TestSet, shard_root, batch_size) -> dict:
    """``flat_xgb_by_loss`` and ``tdc_xgb``: the heads in place of the linear layers, routed the same way."""
    from cbedtdc.train import load_model
    from cbedtdc.xgbhead import head_probs

    classes, y, keys, dev = plan.classes, ts.labels, ts.keys, ts.dev
    out = {"flat_xgb_by_loss": {}}
    for loss, path in flat_models.items():
        model, meta = load_model(path, device=str(next(models[0][0].parameters()).device))
        order = [int(c) for c in meta["classes"]]
        p = head_probs(xgb_dir / "flat" / loss / "head.json", model, meta, shard_root, "test", keys, batch_size)
        p = p[:, [order.index(c) for c in classes]]
        pred = np.asarray(classes)[p.argmax(1)]
        out["flat_xgb_by_loss"][loss] = score(y, pred, classes, scores=p, **ts.kw)
    heads = [xgb_dir / f"level_{k + 1}" / "head.json" for k in range(plan.n_levels)]
    probs = [head_probs(h, m, meta, shard_root, "test", keys, batch_size) for h, (m, meta) in zip(heads, models)]
    if len(dev):
        dprobs = [head_probs(h, m, meta, shard_root, "dev", list(dev.keys), batch_size)
                  for h, (m, meta) in zip(heads, models)]
        tuned = cascade.tune_routing_on(plan, dprobs, dev.labels, plan.routing)
    else:
        tuned = {"thresholds": [0.5] * (plan.n_levels - 1) if plan.uses_thresholds() else [], "temperatures": None,
                 "prior": False}
    tuned = {"thresholds": tuned["thresholds"] or None, "temperatures": tuned["temperatures"],
             "prior": dict(plan.counts) if tuned["prior"] else None}
    r = cascade.route_tuned(plan, probs, tuned)
    thresholds = tuned["thresholds"]
    t = score(y, r.pred, classes, **ts.kw)
    est = cascade.estimated_accuracy(plan, probs, y)
    t.update({"mode": plan.mode, "routing": plan.routing if plan.mode == "rest" else "threshold",
              "thresholds": thresholds or [], "levels": plan.levels, "estimated_top1": est["top1"],
              "estimated_balanced_accuracy": est["balanced_accuracy"],
              "per_level": cascade.level_report(plan, r, y)})
    out["tdc_xgb"] = t
    log.info("TDC + XGBoost heads: test top-1 %.4f, balanced accuracy %.4f; estimated top-1 %.4f", t["top1"],
             t["balanced_accuracy"], t["estimated_top1"])
    return out


def _write_tables(out_dir: Path, plan, ts: _TestSet, flat_pred: dict, best: str, r, oracle, levels) -> None:
    """per_class.csv, levels.csv, confusion_{flat,tdc}.csv and predictions.csv."""
    classes, y = plan.classes, ts.labels
    owner = dict(zip(classes, (plan.level_of(classes) + 1).tolist()))
    n_train = {c: int((ts.train_labels == c).sum()) for c in classes}
    recall_cols = {f"recall_flat_{lo}": per_class_recall(y, pred, classes) for lo, pred in flat_pred.items()}
    recall_cols["recall_tdc"] = per_class_recall(y, r.pred, classes)
    recall_cols["recall_tdc_estimated"] = per_class_recall(y, oracle, classes)
    rows = []
    for i, c in enumerate(classes):
        row = {"space_group": c, "level": owner[c], "n_train": n_train[c], "n_test": int((y == c).sum())}
        row.update({name: ("" if np.isnan(v[i]) else round(float(v[i]), 6)) for name, v in recall_cols.items()})
        rows.append(row)
    write_csv(out_dir / "per_class.csv", rows, list(rows[0]))
    write_csv(out_dir / "levels.csv", [{**lv, "classes": " ".join(map(str, lv["classes"]))} for lv in levels],
              LEVEL_FIELDS)
    header = ["true\\pred"] + [str(c) for c in classes] + ["other"]
    for name, pred in (("flat", flat_pred[best]), ("tdc", r.pred)):
        cm = confusion_matrix(y, pred, classes)
        write_csv(out_dir / f"confusion_{name}.csv",
                  [dict(zip(header, [str(c)] + row.tolist())) for c, row in zip(classes, cm)], header)
    pred_rows = [{"key": k, "material": m, "space_group": int(t_), "flat_pred": int(fp), "tdc_pred": int(tp),
                  "tdc_level": int(lv) + 1, "tdc_prob": round(float(cf), 6)}
                 for k, m, t_, fp, tp, lv, cf in zip(ts.keys, ts.materials, y, flat_pred[best], r.pred, r.kept,
                                                     r.conf)]
    write_csv(out_dir / "predictions.csv", pred_rows, list(pred_rows[0]))


def evaluate_run(shard_root, flat_models: dict, tdc_dir, out_dir, *, n_boot: int = 1000, seed: int = 0,
                 friedel_groups=None, batch_size: int = 64, data_kind: str = "generated",
                 device: str = "cpu", xgb_dir=None) -> dict:
    """Evaluate the flat baselines and the TDC on the test split; write the tables; return the summary.

    Parameters
    ----------
    flat_models : dict
        ``{loss: path of best.pt}``; the headline ``flat`` is the one with the best dev balanced
        accuracy (chosen on dev, never on test); every loss is under ``flat_by_loss``.
    tdc_dir : path-like
        Folder with ``levels.json``, ``routing.json`` and ``level_K/best.pt``.
    out_dir : path-like
        Receives ``summary.json``, ``per_class.csv``, ``levels.csv``, ``confusion_flat.csv``,
        ``confusion_tdc.csv`` and ``predictions.csv``.
    friedel_groups : list of lists, optional
        Groups merged in the Friedel score (pass them for kinematic data only).
    xgb_dir : path-like, optional
        Folder of the CNN-XGBoost heads (``flat/{loss}/head.json``, ``level_{k}/head.json``): adds
        ``flat_xgb_by_loss`` and ``tdc_xgb`` (routed like the CNN cascade; thresholds re-tuned on dev
        on the heads' probabilities when the routing uses them).
    """
    from cbedtdc.train import inference_device

    tdc_dir, out_dir = Path(tdc_dir), Path(out_dir)
    device = inference_device(device)
    plan = cascade.LevelPlan.load(tdc_dir / "levels.json")
    classes = plan.classes
    tuned = cascade.read_routing(tdc_dir / "routing.json", plan)
    ts = _test_set(shard_root, classes, n_boot=n_boot, seed=seed, friedel_groups=friedel_groups)
    summary = {"n_test": int(len(ts.labels)), "n_test_materials": int(len(np.unique(ts.materials))),
               "n_test_excluded_other_classes": int(ts.n_excluded), "classes": classes,
               "data": data_kind, "bootstrap": {"resamples": int(n_boot), "over": "materials", "level": 0.95},
               "chance": chance_rates(ts.train_labels, ts.labels, classes)}
    flat_by_loss, flat_pred, best = _score_flat(flat_models, ts, shard_root, classes, batch_size, device)
    summary["flat"] = {**flat_by_loss[best], "selected_by": "dev balanced_accuracy among flat.losses"}
    summary["flat_by_loss"] = flat_by_loss
    _, models = cascade.load_levels(tdc_dir, plan, device=device)
    t, r, oracle = _score_tdc(plan, models, tuned, ts, tdc_dir, shard_root, batch_size)
    summary["tdc"] = t
    summary["budget"] = {"flat_images_planned": plan.flat_images, "tdc_images_planned": int(sum(plan.budgets)),
                         "flat_images_seen": summary["flat"]["images_seen"], "tdc_images_seen": t["images_seen"]}
    if xgb_dir is not None:
        summary.update(_score_xgb(Path(xgb_dir), flat_models, plan, models, ts, shard_root, batch_size))
    _write_tables(out_dir, plan, ts, flat_pred, best, r, oracle, t["per_level"])
    write_json(out_dir / "summary.json", _jsonable(summary))
    return summary


def _jsonable(obj):
    """NaN -> None, numpy scalars -> Python, recursively (strict JSON for outside readers).

    >>> _jsonable({"a": float("nan"), "b": [np.int64(2), 0.5]})
    {'a': None, 'b': [2, 0.5]}
    """
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj
