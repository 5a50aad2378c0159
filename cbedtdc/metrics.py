"""Classification metrics over space-group labels: pure numpy, no torch.

Every function takes true labels and predictions as space-group numbers (not output indices) and
the list ``classes`` of the run, so that a class that never occurs in the test split or is never
predicted still has its row in the tables. A prediction outside ``classes`` counts as wrong.

Headline numbers come with 95 % bootstrap intervals over *materials* (all samples of a material
are drawn together), because the energies of one material are not independent samples.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = [
    "confusion_matrix",
    "per_class_recall",
    "balanced_accuracy",
    "macro_f1",
    "top1",
    "top_k",
    "chance_rates",
    "merge_labels",
    "bootstrap_materials",
    "score",
]

log = logging.getLogger(__name__)


def _index(labels, classes) -> np.ndarray:
    """Position of each label in ``classes``; -1 for labels outside."""
    classes = np.asarray(classes, dtype=np.int64).ravel()
    values = np.asarray(labels, dtype=np.int64).ravel()
    if not len(classes):
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(classes, kind="stable")
    pos = np.clip(np.searchsorted(classes[order], values), 0, len(classes) - 1)
    found = classes[order][pos] == values
    return np.where(found, order[pos], -1).astype(np.int64)


def confusion_matrix(y_true, y_pred, classes) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of class ``classes[i]`` predicted as ``classes[j]``.

    A last extra column counts predictions outside ``classes``; true labels outside ``classes``
    raise ``ValueError`` (they would silently vanish from every per-class number).

    >>> confusion_matrix([1, 1, 2], [1, 2, 2], [1, 2]).tolist()
    [[1, 1, 0], [0, 1, 0]]
    """
    t = _index(y_true, classes)
    p = _index(y_pred, classes)
    if (t < 0).any():
        bad = sorted({int(v) for v, i in zip(np.asarray(y_true).ravel(), t) if i < 0})
        raise ValueError(f"true labels {bad} are not among the classes of the run {list(classes)}")
    n = len(classes)
    p = np.where(p < 0, n, p)
    out = np.zeros((n, n + 1), dtype=np.int64)
    np.add.at(out, (t, p), 1)
    return out


def per_class_recall(y_true, y_pred, classes) -> np.ndarray:
    """Recall of each class of ``classes``; NaN for a class absent from ``y_true``.

    >>> per_class_recall([1, 1, 2], [1, 2, 2], [1, 2, 3]).tolist()
    [0.5, 1.0, nan]
    """
    cm = confusion_matrix(y_true, y_pred, classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm[:, : len(classes)]) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true, y_pred, classes) -> float:
    """Mean recall over the classes present in ``y_true``.

    >>> balanced_accuracy([1, 1, 1, 2], [1, 1, 1, 1], [1, 2])
    0.5
    """
    return float(np.nanmean(per_class_recall(y_true, y_pred, classes)))


def macro_f1(y_true, y_pred, classes) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` (F1 = 0 when never predicted right).

    >>> round(macro_f1([1, 1, 2, 2], [1, 2, 2, 2], [1, 2]), 4)
    0.7333
    """
    cm = confusion_matrix(y_true, y_pred, classes)
    n = len(classes)
    tp = np.diag(cm[:, :n]).astype(float)
    support = cm.sum(axis=1)
    predicted = cm[:, :n].sum(axis=0)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[support > 0].mean())


def top1(y_true, y_pred) -> float:
    """Fraction of exact predictions.

    >>> top1([1, 2, 3], [1, 2, 4])
    0.6666666666666666
    """
    y_true = np.asarray(y_true)
    return float((y_true == np.asarray(y_pred)).mean()) if len(y_true) else float("nan")


def top_k(y_true, scores, classes, k: int = 5) -> float:
    """Fraction of samples whose class is among the ``k`` highest ``scores`` (columns = ``classes``).

    >>> top_k([2, 3], np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]]), [1, 2, 3], k=2)
    0.5
    """
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    t = _index(y_true, classes)
    return float((best == t[:, None]).any(axis=1).mean())


def chance_rates(train_labels, test_labels, classes) -> dict:
    """Accuracy of two classifiers that ignore the image.

    ``majority``: always predict the most frequent training class; ``prior``: guess at random with
    the training class frequencies (expected accuracy sum_c p_train(c) p_test(c));
    ``balanced``: balanced accuracy of either guess (1 / number of classes in test).

    >>> chance_rates([1, 1, 1, 2], [1, 2, 2, 2], [1, 2])
    {'majority': 0.25, 'prior': 0.375, 'balanced': 0.5, 'majority_class': 1}
    """
    tr = _index(train_labels, classes)
    te = _index(test_labels, classes)
    tr = tr[tr >= 0]
    n = len(classes)
    p_train = np.bincount(tr, minlength=n) / max(len(tr), 1)
    p_test = np.bincount(te[te >= 0], minlength=n) / max(len(te), 1)
    major = int(np.argmax(p_train))
    return {
        "majority": float(p_test[major]),
        "prior": float((p_train * p_test).sum()),
        "balanced": float(1.0 / max((p_test > 0).sum(), 1)),
        "majority_class": int(classes[major]),
    }


def merge_labels(labels, groups) -> np.ndarray:
    """Replace every label of a group by the group's smallest member (Friedel-merged labels).

    >>> merge_labels([1, 2, 225, 216, 14], [[1, 2], [216, 225]]).tolist()
    [1, 1, 216, 216, 14]
    """
    mapping = {}
    for group in groups:
        rep = min(int(g) for g in group)
        for g in group:
            if int(g) in mapping and mapping[int(g)] != rep:
                raise ValueError(f"friedel_groups: space group {g} is in two groups")
            mapping[int(g)] = rep
    return np.array([mapping.get(int(v), int(v)) for v in np.asarray(labels).ravel()], dtype=np.int64)


def merged_classes(classes, groups) -> list[int]:
    """The classes of a run after :func:`merge_labels`, in first-seen order.

    >>> merged_classes([14, 225, 1, 2, 216], [[1, 2], [216, 225]])
    [14, 216, 1]
    """
    return list(dict.fromkeys(merge_labels(classes, groups).tolist()))


def bootstrap_materials(fn, materials, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile interval of ``fn(idx)`` over resamples of whole materials.

    ``fn`` takes an index array into the samples and returns a number; each resample draws as
    many materials as there are, with replacement, and keeps all samples of every drawn material.
    Returns ``(low, high)``; ``(nan, nan)`` when ``n_boot`` is 0.

    >>> lo, hi = bootstrap_materials(lambda i: float(len(i)), ["a", "a", "b"], n_boot=50)
    >>> 2.0 <= lo <= hi <= 4.0
    True
    """
    if n_boot <= 0:
        return float("nan"), float("nan")
    materials = np.asarray(materials)
    names, inverse = np.unique(materials, return_inverse=True)
    members = [np.flatnonzero(inverse == m) for m in range(len(names))]
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, len(names), size=len(names))
        idx = np.concatenate([members[m] for m in drawn])
        values[b] = fn(idx)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def score(y_true, y_pred, classes, *, scores=None, materials=None, n_boot: int = 0, seed: int = 0,
          friedel_groups=None) -> dict:
    """All headline metrics of one model on one split, as a JSON-ready dict.

    Keys: ``n``, ``top1``, ``balanced_accuracy``, ``macro_f1``, with ``top5`` when ``scores``
    (columns = ``classes``) are given, ``ci95`` (bootstrap over ``materials``) when ``n_boot`` > 0,
    and ``friedel`` (top1 and balanced accuracy on merged labels) when ``friedel_groups`` is given.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out = {
        "n": int(len(y_true)),
        "top1": top1(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, classes),
        "macro_f1": macro_f1(y_true, y_pred, classes),
    }
    if scores is not None:
        out["top5"] = top_k(y_true, scores, classes, k=5)
    if materials is not None and n_boot > 0:
        fns = {
            "top1": lambda i: top1(y_true[i], y_pred[i]),
            "balanced_accuracy": lambda i: balanced_accuracy(y_true[i], y_pred[i], classes),
            "macro_f1": lambda i: macro_f1(y_true[i], y_pred[i], classes),
        }
        out["ci95"] = {name: list(bootstrap_materials(fn, materials, n_boot, seed)) for name, fn in fns.items()}
    if friedel_groups:
        mt, mp = merge_labels(y_true, friedel_groups), merge_labels(y_pred, friedel_groups)
        mc = merged_classes(classes, friedel_groups)
        out["friedel"] = {"top1": top1(mt, mp), "balanced_accuracy": balanced_accuracy(mt, mp, mc),
                          "n_classes": len(mc)}
    return out


# --------------------------------------------------------------------------------------------
# Evaluation of a trained run (loads models lazily through cbedtdc.train)
# --------------------------------------------------------------------------------------------


def images_seen(train_json) -> int | None:
    """Training images a job actually processed: epochs x steps per epoch x global batch."""
    import json
    from pathlib import Path

    try:
        d = json.loads(Path(train_json).read_text())
        return int(d["epochs"]) * int(d["steps_per_epoch"]) * int(d["global_batch"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: cannot read epochs/steps_per_epoch/global_batch; images seen unknown", train_json)
        return None


def _probs_for(model, meta, shard_root, split, keys, classes, batch_size):
    """Softmax over ``classes`` (columns reordered to ``classes``) of a flat model."""
    from cbedtdc.cascade import softmax
    from cbedtdc.train import predict

    got, logits = predict(model, meta, shard_root, split, keys=keys, batch_size=batch_size)
    if list(got) != list(keys):
        raise RuntimeError(f"predict returned the {split} samples in another order")
    order = [int(c) for c in meta["classes"]]
    if sorted(order) != sorted(classes) or meta.get("rest"):
        raise ValueError(f"flat model outputs {order} (rest={meta.get('rest')}) differ from the run's classes "
                         f"{list(classes)}; retrain it")
    p = softmax(logits)
    return p[:, [order.index(c) for c in classes]]


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
    from pathlib import Path

    from cbedtdc import cascade
    from cbedtdc.data import ShardDataset
    from cbedtdc.io import read_csv, write_csv, write_json
    from cbedtdc.train import load_model

    tdc_dir, out_dir = Path(tdc_dir), Path(out_dir)
    device = cascade.inference_device(device)
    plan = cascade.LevelPlan.load(tdc_dir / "levels.json")
    classes = plan.classes
    thresholds = cascade.load_routing(tdc_dir / "routing.json", plan)
    test = ShardDataset(shard_root, "test", classes=classes)
    dev = ShardDataset(shard_root, "dev", classes=classes)
    n_all_test = len(read_csv(Path(shard_root) / "test.csv"))
    if not len(test):
        raise ValueError(f"{shard_root}/test.csv has no sample of the run's classes {classes}")
    y, mats, keys = test.labels, test.materials, list(test.keys)
    train_labels = np.array([int(r["space_group"]) for r in read_csv(Path(shard_root) / "train.csv")])
    kw = dict(materials=mats, n_boot=n_boot, seed=seed, friedel_groups=friedel_groups)

    summary = {"n_test": int(len(y)), "n_test_materials": int(len(np.unique(mats))),
               "n_test_excluded_other_classes": int(n_all_test - len(y)), "classes": classes,
               "data": data_kind, "bootstrap": {"resamples": int(n_boot), "over": "materials", "level": 0.95}}
    chance = chance_rates(train_labels, y, classes)
    summary["chance"] = chance

    # ---- flat baselines
    flat_by_loss, flat_pred = {}, {}
    for loss, path in flat_models.items():
        model, meta = load_model(path, device=device)
        p = _probs_for(model, meta, shard_root, "test", keys, classes, batch_size)
        pred = np.asarray(classes)[np.argmax(p, axis=1)]
        s = score(y, pred, classes, scores=p, **kw)
        if len(dev):
            pd_ = _probs_for(model, meta, shard_root, "dev", list(dev.keys), classes, batch_size)
            s["dev_balanced_accuracy"] = balanced_accuracy(dev.labels, np.asarray(classes)[pd_.argmax(1)], classes)
        s["images_seen"] = images_seen(Path(path).parent / "train.json")
        s["loss"] = loss
        flat_by_loss[loss], flat_pred[loss] = s, pred
        log.info("flat %s: test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f", loss, s["top1"],
                 s["balanced_accuracy"], s["macro_f1"])
    best = max(flat_by_loss, key=lambda lo: (flat_by_loss[lo].get("dev_balanced_accuracy", 0.0), -list(
        flat_models).index(lo)))
    summary["flat"] = {**flat_by_loss[best], "selected_by": "dev balanced_accuracy among flat.losses"}
    summary["flat_by_loss"] = flat_by_loss

    # ---- TDC
    _, models = cascade.load_levels(tdc_dir, plan, device=device)
    _, probs = cascade.predict_levels(models, shard_root, "test", keys=keys, batch_size=batch_size)
    r = cascade.route(plan, probs, thresholds)
    t = score(y, r.pred, classes, **kw)
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
        "mode": plan.mode, "routing": "threshold" if plan.uses_thresholds() else "argmax",
        "thresholds": thresholds or [], "levels": plan.levels,
        "estimated_top1": est["top1"], "estimated_balanced_accuracy": est["balanced_accuracy"],
        "estimated_ci95": est_ci,
        "images_seen": sum(seen) if all(s is not None for s in seen) else None,
        "per_level": levels,
    })
    summary["tdc"] = t
    summary["budget"] = {"flat_images_planned": plan.flat_images, "tdc_images_planned": int(sum(plan.budgets)),
                         "flat_images_seen": summary["flat"]["images_seen"], "tdc_images_seen": t["images_seen"]}
    log.info("TDC (%s): test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f; estimated top-1 %.4f", plan.mode,
             t["top1"], t["balanced_accuracy"], t["macro_f1"], t["estimated_top1"])

    # ---- optional CNN-XGBoost heads
    if xgb_dir is not None:
        summary.update(_evaluate_xgb(Path(xgb_dir), flat_models, plan, models, shard_root, keys, y, dev, classes,
                                     kw, batch_size))

    # ---- tables
    owner = dict(zip(classes, (plan.level_of(classes) + 1).tolist()))
    n_train = {c: int((train_labels == c).sum()) for c in classes}
    recall_cols = {f"recall_flat_{lo}": per_class_recall(y, flat_pred[lo], classes) for lo in flat_models}
    recall_cols["recall_tdc"] = per_class_recall(y, r.pred, classes)
    recall_cols["recall_tdc_estimated"] = per_class_recall(y, oracle, classes)
    rows = []
    for i, c in enumerate(classes):
        row = {"space_group": c, "level": owner[c], "n_train": n_train[c], "n_test": int((y == c).sum())}
        row.update({name: ("" if np.isnan(v[i]) else round(float(v[i]), 6)) for name, v in recall_cols.items()})
        rows.append(row)
    write_csv(out_dir / "per_class.csv", rows, list(rows[0]))
    lv_fields = ["level", "classes", "reached", "kept", "kept_fraction", "belongs", "own_total", "own_kept",
                 "correct", "accuracy", "share_of_test", "oracle_accuracy", "images_seen"]
    write_csv(out_dir / "levels.csv", [{**lv, "classes": " ".join(map(str, lv["classes"]))} for lv in levels],
              lv_fields)
    header = ["true\\pred"] + [str(c) for c in classes] + ["other"]
    for name, pred in (("flat", flat_pred[best]), ("tdc", r.pred)):
        cm = confusion_matrix(y, pred, classes)
        write_csv(out_dir / f"confusion_{name}.csv",
                  [dict(zip(header, [str(c)] + row.tolist())) for c, row in zip(classes, cm)], header)
    pred_rows = [{"key": k, "material": m, "space_group": int(t_), "flat_pred": int(fp), "tdc_pred": int(tp),
                  "tdc_level": int(lv) + 1, "tdc_prob": round(float(cf), 6)}
                 for k, m, t_, fp, tp, lv, cf in zip(keys, mats, y, flat_pred[best], r.pred, r.kept, r.conf)]
    write_csv(out_dir / "predictions.csv", pred_rows, list(pred_rows[0]))
    write_json(out_dir / "summary.json", _jsonable(summary))
    return summary


def _evaluate_xgb(xgb_dir, flat_models, plan, models, shard_root, keys, y, dev, classes, kw, batch_size) -> dict:
    from cbedtdc import cascade
    from cbedtdc.train import load_model
    from cbedtdc.xgbhead import head_probs

    out = {"flat_xgb_by_loss": {}}
    for loss, path in flat_models.items():
        model, meta = load_model(path, device=str(next(models[0][0].parameters()).device))
        order = [int(c) for c in meta["classes"]]
        p = head_probs(xgb_dir / "flat" / loss / "head.json", model, meta, shard_root, "test", keys, batch_size)
        p = p[:, [order.index(c) for c in classes]]
        pred = np.asarray(classes)[p.argmax(1)]
        out["flat_xgb_by_loss"][loss] = score(y, pred, classes, scores=p, **kw)
    heads = [xgb_dir / f"level_{k + 1}" / "head.json" for k in range(plan.n_levels)]
    probs = [head_probs(h, m, meta, shard_root, "test", keys, batch_size) for h, (m, meta) in zip(heads, models)]
    thresholds = None
    if plan.uses_thresholds() and plan.n_levels > 1 and len(dev):
        dprobs = [head_probs(h, m, meta, shard_root, "dev", list(dev.keys), batch_size)
                  for h, (m, meta) in zip(heads, models)]
        thresholds = cascade.tune_thresholds(plan, dprobs, dev.labels)
    elif plan.uses_thresholds():
        thresholds = [0.5] * (plan.n_levels - 1)
    r = cascade.route(plan, probs, thresholds)
    t = score(y, r.pred, classes, **kw)
    est = cascade.estimated_accuracy(plan, probs, y)
    t.update({"mode": plan.mode, "routing": "threshold" if plan.uses_thresholds() else "argmax",
              "thresholds": thresholds or [], "levels": plan.levels, "estimated_top1": est["top1"],
              "estimated_balanced_accuracy": est["balanced_accuracy"],
              "per_level": cascade.level_report(plan, r, y)})
    out["tdc_xgb"] = t
    log.info("TDC + XGBoost heads: test top-1 %.4f, balanced accuracy %.4f; estimated top-1 %.4f", t["top1"],
             t["balanced_accuracy"], t["estimated_top1"])
    return out


def _jsonable(obj):
    """NaN -> None, numpy scalars -> Python, recursively (strict JSON for outside readers)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


def results_table(summaries) -> str:
    """Markdown table of one or more ``summary.json`` dicts (e.g. a rest and a hard run).

    Rows: the chance rates, every flat baseline (once), and per summary the TDC end to end and
    its paper-style estimate. Cells are percentages with the 95 % material-bootstrap interval.
    """
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    def cell(s, key):
        v = s.get(key)
        ci = (s.get("ci95") or {}).get(key)
        if v is None:
            return "-"
        if ci and None not in ci:
            return f"{pct(v)} [{pct(ci[0])}, {pct(ci[1])}]"
        return pct(v)

    def friedel(s):
        f = s.get("friedel")
        return f"{pct(f['top1'])} / {pct(f['balanced_accuracy'])}" if f else "-"

    first = summaries[0]
    lines = ["| model | images seen | top-1 | balanced accuracy | macro-F1 | top-5 | Friedel-merged top-1 / bal. acc |",
             "|---|---|---|---|---|---|---|"]
    ch = first["chance"]
    lines.append(f"| majority class ({ch.get('majority_class', '?')}) | - | {pct(ch['majority'])} | "
                 f"{pct(ch.get('balanced'))} | - | - | - |")
    lines.append(f"| prior guessing | - | {pct(ch['prior'])} | {pct(ch.get('balanced'))} | - | - | - |")
    for loss, s in first.get("flat_by_loss", {"flat": first["flat"]}).items():
        lines.append(f"| flat, {loss} | {s.get('images_seen') or '-'} | {cell(s, 'top1')} | "
                     f"{cell(s, 'balanced_accuracy')} | {cell(s, 'macro_f1')} | {cell(s, 'top5')} | {friedel(s)} |")
    for loss, s in first.get("flat_xgb_by_loss", {}).items():
        lines.append(f"| flat, {loss} + XGBoost head | same | {cell(s, 'top1')} | {cell(s, 'balanced_accuracy')} | "
                     f"{cell(s, 'macro_f1')} | {cell(s, 'top5')} | {friedel(s)} |")
    for s in summaries:
        t = s["tdc"]
        sizes = "+".join(str(len(lv)) for lv in t["levels"])
        name = f"TDC {t['mode']} ({sizes}, {t['routing']})"
        lines.append(f"| {name}, end to end | {t.get('images_seen') or '-'} | {cell(t, 'top1')} | "
                     f"{cell(t, 'balanced_accuracy')} | {cell(t, 'macro_f1')} | - | {friedel(t)} |")
        est_ci = (t.get("estimated_ci95") or {}).get("top1")
        est = pct(t["estimated_top1"]) + (f" [{pct(est_ci[0])}, {pct(est_ci[1])}]" if est_ci and None not in est_ci
                                          else "")
        lines.append(f"| {name}, *estimated* (perfect routing) | same | {est} | "
                     f"{pct(t.get('estimated_balanced_accuracy'))} | - | - | - |")
        if "tdc_xgb" in s:
            x = s["tdc_xgb"]
            lines.append(f"| {name} + XGBoost heads, end to end | same | {cell(x, 'top1')} | "
                         f"{cell(x, 'balanced_accuracy')} | {cell(x, 'macro_f1')} | - | {friedel(x)} |")
            lines.append(f"| {name} + XGBoost heads, *estimated* | same | {pct(x['estimated_top1'])} | "
                         f"{pct(x.get('estimated_balanced_accuracy'))} | - | - | - |")
    lines.append("")
    lines.append(f"Test split: {first['n_test']} samples of {first['n_test_materials']} materials; intervals: 95 % "
                 f"bootstrap over materials ({first['bootstrap']['resamples']} resamples). Data: {first['data']}.")
    return "\n".join(lines) + "\n"
