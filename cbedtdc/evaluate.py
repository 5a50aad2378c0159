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

__all__ = ["evaluate_run", "flat_probs", "shot_accuracy", "SHOTS", "LEVEL_FIELDS"]

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


def check_flat_classes(meta, classes, source="flat model", rule: str = "train_flat") -> list[int]:
    """The flat model's (or flat head's) class order, or a one-line error naming the file and the command that
    redoes it (``rule``).

    >>> check_flat_classes({"classes": [1, 2, 3, 4, 5]}, [14, 225], "results/flat/ce/best.pt")
    Traceback (most recent call last):
    ...
    ValueError: results/flat/ce/best.pt outputs [1, 2, 3, 4, 5] (rest=None), not the run's classes [14, 225]: it was replaced or trained for another run; retrain it with `snakemake --profile local -R train_flat` (the same command as the run, plus -R train_flat)
    """
    order = [int(c) for c in meta["classes"]]
    if sorted(order) != sorted(classes) or meta.get("rest"):
        raise ValueError(f"{source} outputs {order} (rest={meta.get('rest')}), not the run's classes {list(classes)}: "
                         "it was replaced or trained for another run; retrain it with "
                         f"`snakemake --profile local -R {rule}` (the same command as the run, plus -R {rule})")
    return order


def flat_probs(model, meta, shard_root, split, keys, classes, batch_size, source="flat model"):
    """Softmax over ``classes`` (columns reordered to ``classes``) of a flat model."""
    from cbedtdc.train import predict

    order = check_flat_classes(meta, classes, source)
    got, logits = predict(model, meta, shard_root, split, keys=keys, batch_size=batch_size)
    if list(got) != list(keys):
        raise RuntimeError(f"predict returned the {split} samples in another order")
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
        p = flat_probs(model, meta, shard_root, "test", ts.keys, classes, batch_size, source=str(path))
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


def _score_tdc(plan, probs, tuned, ts: _TestSet, tdc_dir, shared_images=None):
    """``(tdc summary, routing, oracle predictions)`` of a cascade on the test split.

    ``probs``: the levels' test probabilities (own ResNets or shared-backbone heads);
    ``shared_images``: images seen by the shared backbone (``None``: own-backbone levels).
    """
    from cbedtdc.train import images_seen

    y, mats, n_boot, seed = ts.labels, ts.materials, ts.kw["n_boot"], ts.kw["seed"]
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
        row["images_seen"] = (None if shared_images is not None
                              else images_seen(cascade.level_dir(tdc_dir, row["level"]) / "train.json"))
    seen = [lv["images_seen"] for lv in levels]
    t.update({
        "mode": plan.mode, "routing": plan.routing if plan.mode == "rest" else "threshold",
        "thresholds": thresholds or [], "temperatures": tuned["temperatures"], "prior": tuned["prior"] is not None,
        "levels": plan.levels,
        "estimated_top1": est["top1"], "estimated_balanced_accuracy": est["balanced_accuracy"],
        "estimated_ci95": est_ci,
        "images_seen": (shared_images if shared_images is not None
                        else sum(seen) if all(s is not None for s in seen) else None),
        "backbone": "own" if shared_images is None else "shared",
        "per_level": levels,
    })
    log.info("TDC (%s): test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f; estimated top-1 %.4f", plan.mode,
             t["top1"], t["balanced_accuracy"], t["macro_f1"], t["estimated_top1"])
    return t, r, oracle


def _xgb_probs(head, fdir: Path, split: str, wanted) -> np.ndarray:
    """A head's probabilities on ``fdir/{split}.h5``, rows aligned to ``wanted`` (keys)."""
    from cbedtdc.xgbhead import head_probs

    keys, p = head_probs(head, fdir / f"{split}.h5", split)
    return p[_align(keys, wanted, fdir / f"{split}.h5", split)]


def _score_xgb(xgb_dir: Path, features_root: Path, flat_models, plan, ts: _TestSet) -> dict:
    """``flat_xgb_by_loss`` and ``tdc_xgb``: the heads in place of the linear layers, routed the same way.

    Every head is scored on the features files of its job's model (``features_root/flat/{loss}/`` or
    ``features_root/level_{k}/``), the rows taken by key in the order of the test (dev) set.
    """
    from cbedtdc.xgbhead import load_head

    classes, y, keys, dev = plan.classes, ts.labels, ts.keys, ts.dev
    out = {"flat_xgb_by_loss": {}}
    for loss in flat_models:
        head = xgb_dir / "flat" / loss / "head.json"
        order = check_flat_classes(load_head(head)[1], classes, head, rule="xgboost_flat")
        p = _xgb_probs(head, features_root / "flat" / loss, "test", keys)
        p = p[:, [order.index(c) for c in classes]]
        pred = np.asarray(classes)[p.argmax(1)]
        out["flat_xgb_by_loss"][loss] = score(y, pred, classes, scores=p, **ts.kw)
    jobs = [(xgb_dir / f"level_{k + 1}" / "head.json", features_root / f"level_{k + 1}") for k in range(plan.n_levels)]
    probs = [_xgb_probs(h, fdir, "test", keys) for h, fdir in jobs]
    if len(dev):
        dprobs = [_xgb_probs(h, fdir, "dev", list(dev.keys)) for h, fdir in jobs]
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


def _write_tables(out_dir: Path, plan, ts: _TestSet, flat_recall: dict, flat_best, r, oracle, levels) -> None:
    """per_class.csv, levels.csv, confusion_{flat,tdc}.csv and predictions.csv.

    ``flat_recall`` maps a column suffix (``ce``, ``ce_crt``) to the test predictions of that flat model;
    ``flat_best`` are the predictions of the headline flat model (confusion matrix, predictions.csv).
    """
    classes, y = plan.classes, ts.labels
    owner = dict(zip(classes, (plan.level_of(classes) + 1).tolist()))
    n_train = {c: int((ts.train_labels == c).sum()) for c in classes}
    recall_cols = {f"recall_flat_{lo}": per_class_recall(y, pred, classes) for lo, pred in flat_recall.items()}
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
    for name, pred in (("flat", flat_best), ("tdc", r.pred)):
        cm = confusion_matrix(y, pred, classes)
        write_csv(out_dir / f"confusion_{name}.csv",
                  [dict(zip(header, [str(c)] + row.tolist())) for c, row in zip(classes, cm)], header)
    pred_rows = [{"key": k, "material": m, "space_group": int(t_), "flat_pred": int(fp), "tdc_pred": int(tp),
                  "tdc_level": int(lv) + 1, "tdc_prob": round(float(cf), 6)}
                 for k, m, t_, fp, tp, lv, cf in zip(ts.keys, ts.materials, y, flat_best, r.pred, r.kept,
                                                     r.conf)]
    write_csv(out_dir / "predictions.csv", pred_rows, list(pred_rows[0]))


def evaluate_run(shard_root, flat_models: dict, tdc_dir, out_dir, *, n_boot: int = 1000, seed: int = 0,
                 friedel_groups=None, batch_size: int = 64, data_kind: str = "generated",
                 device: str = "cpu", xgb_dir=None, heads=None, shared=None, features_root=None) -> dict:
    """Evaluate the flat baselines and the TDC on the test split; write the tables; return the summary.

    Parameters
    ----------
    flat_models : dict
        ``{loss: path of best.pt}``; every loss is under ``flat_by_loss``. The headline ``flat`` is the
        flat variant (one of these CNNs, or one of ``heads`` on their features) with the best dev balanced
        accuracy (chosen on dev, never on test); ``flat["model"]`` names it (``flat/ce/cnn``, ``flat/ce/crt``).
    tdc_dir : path-like
        Folder with ``levels.json`` and, for own-backbone levels, ``routing.json`` and ``level_K/best.pt``.
    out_dir : path-like
        Receives ``summary.json``, ``per_class.csv``, ``levels.csv``, ``confusion_flat.csv``,
        ``confusion_tdc.csv`` and ``predictions.csv``.
    friedel_groups : list of lists, optional
        Groups merged in the Friedel score (pass them for kinematic data only).
    xgb_dir : path-like, optional
        Folder of the CNN-XGBoost heads (``flat/{loss}/head.json``, ``level_{k}/head.json``): adds
        ``flat_xgb_by_loss`` and ``tdc_xgb`` (routed like the CNN cascade; routing re-tuned on dev
        on the heads' probabilities). They are scored on the dev and test features files under
        ``features_root`` (``flat/{loss}/``, ``level_{k}/``).
    heads : dict, optional
        Flat heads ``{name: (backbone loss, head file)}`` on ``features_root/flat/{loss}/{split}.h5``.
    shared : dict, optional
        Shared-backbone cascade ``{"loss", "heads" (folder with heads.json), "routing" (routing.json)}``:
        it is then the headline ``tdc`` (no level ResNet is loaded).
    features_root : path-like, optional
        Folder of the features files (``flat/{loss}/{split}.h5``, ``level_{k}/{split}.h5``); needed with
        ``heads``, ``shared`` or ``xgb_dir``.

    Besides the headline keys, ``variants`` lists every flat variant (loss x head) and TDC variant
    with test and dev scores, many/medium/few-shot balanced accuracy and the budgets (backbone and
    head images); ``best`` names the best flat and best TDC variant chosen on dev balanced accuracy and
    gives a paired bootstrap over materials of their test balanced-accuracy difference.
    """
    from cbedtdc.train import inference_device

    tdc_dir, out_dir = Path(tdc_dir), Path(out_dir)
    device = inference_device(device)
    plan = cascade.LevelPlan.load(tdc_dir / "levels.json")
    classes = plan.classes
    ts = _test_set(shard_root, classes, n_boot=n_boot, seed=seed, friedel_groups=friedel_groups)
    summary = {"n_test": int(len(ts.labels)), "n_test_materials": int(len(np.unique(ts.materials))),
               "n_test_excluded_other_classes": int(ts.n_excluded), "classes": classes,
               "data": data_kind, "bootstrap": {"resamples": int(n_boot), "over": "materials", "level": 0.95},
               "chance": chance_rates(ts.train_labels, ts.labels, classes)}
    flat_by_loss, flat_pred, best = _score_flat(flat_models, ts, shard_root, classes, batch_size, device)
    summary["flat_by_loss"] = flat_by_loss
    train_counts = {c: int((ts.train_labels == c).sum()) for c in classes}
    variants = _Variants(ts, classes, train_counts)
    for loss, s in flat_by_loss.items():
        variants.add(f"flat/{loss}/cnn", "flat", s, flat_pred[loss], dev_ba=s.get("dev_balanced_accuracy"),
                     backbone=loss, head="cnn", backbone_images=s.get("images_seen"), head_images=0)
    flat_heads = {}
    for hname, (loss, path) in (heads or {}).items():
        flat_heads[f"flat/{loss}/{hname}"] = _score_flat_head(
            variants, hname, loss, path, Path(features_root) / "flat" / loss, ts, classes,
            flat_by_loss.get(loss, {}).get("images_seen"))
    summary["flat"], flat_recall = _headline_flat(variants, flat_by_loss, flat_pred, best, flat_heads)
    if shared is None:
        tuned = cascade.read_routing(tdc_dir / "routing.json", plan)
        _, models = cascade.load_levels(tdc_dir, plan, device=device)
        _, probs = cascade.predict_levels(models, shard_root, "test", keys=ts.keys, batch_size=batch_size)
        t, r, oracle = _score_tdc(plan, probs, tuned, ts, tdc_dir)
        dev_ba = _dev_ba(tdc_dir / "routing.json")
        name, head_images = f"tdc/own/{plan.mode}/{t['routing']}/cnn", 0
    else:
        from cbedtdc.headjobs import load_tdc_heads, run_features, tdc_head_probs

        fdir = Path(features_root) / "flat" / shared["loss"]
        tuned = cascade.read_routing(shared["routing"], plan)
        manifest, level_heads = load_tdc_heads(shared["heads"], plan)
        keys, X, _ = run_features(fdir, "test", classes)
        probs = [p[_align(keys, ts.keys, fdir / "test.h5")] for p in tdc_head_probs(level_heads, X)]
        backbone_images = flat_by_loss.get(shared["loss"], {}).get("images_seen")
        t, r, oracle = _score_tdc(plan, probs, tuned, ts, tdc_dir, shared_images=backbone_images or 0)
        t["shared_loss"] = shared["loss"]
        t["head"] = manifest["spec"]
        t["head_images"] = int(sum(manifest["head_images"]))
        dev_ba = _dev_ba(shared["routing"])
        name, head_images = f"tdc/shared-{shared['loss']}/{plan.mode}/{t['routing']}/{manifest['spec']['kind']}", \
            t["head_images"]
    summary["tdc"] = t
    variants.add(name, "tdc", t, r.pred, dev_ba=dev_ba, backbone=t["backbone"], head=name.rsplit("/", 1)[1],
                 mode=plan.mode, routing=t["routing"], backbone_images=t["images_seen"], head_images=head_images)
    summary["budget"] = {"flat_images_planned": plan.flat_images, "tdc_images_planned": int(sum(plan.budgets)),
                         "flat_images_seen": summary["flat"]["images_seen"], "tdc_images_seen": t["images_seen"]}
    if shared is not None:
        summary["budget"]["tdc_images_planned"] = plan.flat_images  # the shared backbone is the flat model
        summary["budget"]["tdc_head_images"] = t["head_images"]
    if xgb_dir is not None:
        if shared is not None:
            raise ValueError("xgboost.activate scores the own-backbone levels; with tdc.backbone: shared use an "
                             "xgboost head in heads.variants or tdc.head instead")
        if features_root is None:
            raise ValueError("the CNN-XGBoost heads (xgb_dir) are scored on features files: pass features_root "
                             "(--features-root results/features)")
        summary.update(_score_xgb(Path(xgb_dir), Path(features_root), flat_models, plan, ts))
    summary["variants"] = variants.rows
    summary["best"] = variants.best_difference(n_boot, seed)
    _write_tables(out_dir, plan, ts, flat_recall, variants.pred[summary["flat"]["model"]], r, oracle, t["per_level"])
    write_json(out_dir / "summary.json", _jsonable(summary))
    return summary


#: Class groups by training samples, as the long-tail literature reports them.
SHOTS = (("many", 101, None), ("medium", 20, 100), ("few", 0, 19))


def shot_accuracy(y_true, y_pred, classes, train_counts) -> dict:
    """Balanced accuracy within the many- (>100), medium- (20-100) and few-shot (<20) classes.

    >>> shot_accuracy([1, 1, 2, 3], [1, 2, 2, 1], [1, 2, 3], {1: 500, 2: 50, 3: 5})["few"]
    {'classes': 1, 'n_test': 1, 'balanced_accuracy': 0.0}
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    recall = per_class_recall(y_true, y_pred, classes)
    out = {}
    for name, lo, hi in SHOTS:
        idx = [i for i, c in enumerate(classes)
               if train_counts.get(int(c), 0) >= lo and (hi is None or train_counts.get(int(c), 0) <= hi)]
        vals = [recall[i] for i in idx if np.isfinite(recall[i])]
        out[name] = {"classes": len(idx), "n_test": int(np.isin(y_true, [classes[i] for i in idx]).sum()),
                     "balanced_accuracy": float(np.mean(vals)) if vals else float("nan")}
    return out


class _Variants:
    """Rows of ``summary["variants"]`` and the test predictions behind them (for the paired bootstrap)."""

    def __init__(self, ts: _TestSet, classes, train_counts):
        self.ts, self.classes, self.counts = ts, list(classes), train_counts
        self.rows, self.pred = [], {}

    def add(self, name, family, s, pred, *, dev_ba, **extra):
        row = {"name": name, "family": family, **extra,
               "top1": s["top1"], "balanced_accuracy": s["balanced_accuracy"], "macro_f1": s["macro_f1"],
               "ci95": s.get("ci95", {}), "dev_balanced_accuracy": dev_ba,
               "shots": shot_accuracy(self.ts.labels, pred, self.classes, self.counts)}
        self.rows.append(row)
        self.pred[name] = np.asarray(pred)

    def best(self, family):
        rows = [r for r in self.rows if r["family"] == family and r["dev_balanced_accuracy"] is not None]
        return max(rows, key=lambda r: r["dev_balanced_accuracy"]) if rows else None

    def best_difference(self, n_boot: int, seed: int) -> dict:
        """Best flat and best TDC variant by dev balanced accuracy; paired bootstrap of TDC minus flat."""
        f, t = self.best("flat"), self.best("tdc")
        out = {"selected_by": "dev balanced_accuracy", "flat": f and f["name"], "tdc": t and t["name"]}
        if f is None or t is None:
            return out
        y, cl = self.ts.labels, self.classes
        pf, pt = self.pred[f["name"]], self.pred[t["name"]]

        def diff(i):
            return balanced_accuracy(y[i], pt[i], cl) - balanced_accuracy(y[i], pf[i], cl)

        out["balanced_accuracy_difference"] = diff(np.arange(len(y)))
        out["difference_ci95"] = list(bootstrap_materials(diff, self.ts.materials, n_boot, seed))
        out["paired"] = "same bootstrap resamples of whole test materials for both models"
        return out


def _dev_ba(routing_path):
    """Dev balanced accuracy of a tuned cascade, from its routing.json (``None`` when not recorded)."""
    import json

    try:
        d = json.loads(Path(routing_path).read_text())
    except (OSError, ValueError):
        return None
    return (d.get("dev_tuned") or {}).get("balanced_accuracy")


def _align(keys, wanted, source, split: str = "test") -> np.ndarray:
    """Row index into ``keys`` of every key of ``wanted`` (the test set's order)."""
    pos = {k: i for i, k in enumerate(keys)}
    missing = [k for k in wanted if k not in pos]
    if missing:
        raise ValueError(f"{source}: {len(missing)} {split} samples missing (e.g. {missing[0]}); rerun its features "
                         "rule")
    return np.array([pos[k] for k in wanted], dtype=np.int64)


def _score_flat_head(variants: _Variants, name, loss, path, fdir: Path, ts: _TestSet, classes, backbone_images):
    from cbedtdc.headjobs import flat_head_probs, head_images

    keys, p, head = flat_head_probs(path, fdir, "test", classes)
    p = p[_align(keys, ts.keys, fdir / "test.h5")]
    pred = np.asarray(classes)[p.argmax(1)]
    s = score(ts.labels, pred, classes, scores=p, **ts.kw)
    dev_ba = None
    if len(ts.dev):
        dkeys, pd_, _ = flat_head_probs(path, fdir, "dev", classes)
        dev_labels = dict(zip(ts.dev.keys, ts.dev.labels))
        yd = np.array([dev_labels[k] for k in dkeys])
        dev_ba = balanced_accuracy(yd, np.asarray(classes)[pd_.argmax(1)], classes)
    n_head = int(head.info.get("head_images", head_images(head)))
    variants.add(f"flat/{loss}/{name}", "flat", s, pred, dev_ba=dev_ba, backbone=loss, head=name,
                 head_spec=head.spec, backbone_images=backbone_images, head_images=n_head)
    log.info("flat %s + head %s: test balanced accuracy %.4f (dev %s)", loss, name, s["balanced_accuracy"], dev_ba)
    return {**s, "dev_balanced_accuracy": dev_ba, "images_seen": backbone_images, "loss": loss, "head": name,
            "head_images": n_head}


def _headline_flat(variants: _Variants, flat_by_loss: dict, flat_pred: dict, best_cnn: str, flat_heads: dict):
    """``(summary["flat"], per-class recall columns)``: the flat model the TDC is compared with.

    It is the best flat variant on dev balanced accuracy, the flat CNNs (``flat.losses``) and the heads on
    their features (``heads.variants``) alike: with ``tdc.backbone: shared`` the cascade's levels are heads
    on the same backbone, so a flat head (cRT, logit adjustment) is the flat model of equal backbone budget.
    A CNN wins ties; without dev scores the headline is the CNN of ``_score_flat``.
    """
    chosen = variants.best("flat")
    name = chosen["name"] if chosen is not None else f"flat/{best_cnn}/cnn"
    recall = dict(flat_pred)
    if name in flat_heads:
        s = flat_heads[name]
        recall[f"{s['loss']}_{s['head']}"] = variants.pred[name]
    else:
        s = {**flat_by_loss[name.split("/")[1]], "head": "cnn", "head_images": 0}
    what = "the flat CNNs (flat.losses) and their heads (heads.variants)" if flat_heads else "flat.losses"
    return {**s, "model": name, "selected_by": f"dev balanced_accuracy among {what}"}, recall


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
