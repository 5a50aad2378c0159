"""Scores of the trained models on the test split (and their dev balanced accuracy, the selection key).

Every function takes the run's one class order (``classes``, from ``results/data/run_classes.json``):
a model's columns are put in that order before anything is scored, whatever order it was trained in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbedtdc import cascade
from cbedtdc.calibration import softmax
from cbedtdc.evaluate.variants import TestSet, Variants
from cbedtdc.features.registry import get_source, needs_backbone
from cbedtdc.features.sources import align_rows
from cbedtdc.metrics import balanced_accuracy, bootstrap_materials, score, top1
from cbedtdc.errors import InputError

__all__ = ["check_flat_classes", "flat_probs", "score_flat_cnns", "score_flat_head", "score_cascade",
           "source_label"]

log = logging.getLogger(__name__)


def source_label(backbone: str, features) -> str:
    """How a variant's feature sources are named in ``summary.json``: the backbone loss for ``[cnn]``
    (``ce``), the source names otherwise, joined by ``+``.

    >>> source_label("ce", ["cnn"]), source_label("ce", ["cnn", "symmetry"]), source_label("ce", ["symmetry"])
    ('ce', 'ce+symmetry', 'symmetry')
    """
    return "+".join(backbone if get_source(f).backbone else f for f in features)


def check_flat_classes(meta, classes, source="flat model", rule: str = "train_flat") -> list[int]:
    """The flat model's (or flat head's) class order, or a one-line error naming the file and the command that
    redoes it (``rule``).

    >>> check_flat_classes({"classes": [1, 2, 3, 4, 5]}, [14, 225], "results/flat/ce/best.pt")
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: results/flat/ce/best.pt outputs [1, 2, 3, 4, 5] (rest=None), not the run's classes [14, 225]: it was replaced or trained for another run; retrain it with `snakemake --profile local -R train_flat` (the same command as the run, plus -R train_flat)
    """
    order = [int(c) for c in meta["classes"]]
    if sorted(order) != sorted(classes) or meta.get("rest"):
        raise InputError(f"{source} outputs {order} (rest={meta.get('rest')}), not the run's classes {list(classes)}: "
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
    return softmax(logits)[:, [order.index(c) for c in classes]]


def _temperature_scaled(p_test, p_dev, dev_labels, classes):
    """Test probabilities divided by a temperature fitted on dev (as the heads and the cascade levels are)."""
    from cbedtdc.calibration import fit_temperature

    pos = {c: i for i, c in enumerate(classes)}
    t = fit_temperature(np.log(np.clip(p_dev, 1e-12, None)), np.array([pos[int(c)] for c in dev_labels]))
    return softmax(np.log(np.clip(p_test, 1e-12, None)) / t)


def score_flat_cnns(flat_models: dict, ts: TestSet, shard_root, classes, batch_size, device):
    """``(flat_by_loss, test predictions by loss, loss selected on dev, confidences)``.

    ``confidences[loss]``: ``{"before": conf, "after": conf}`` of the predicted class, the CNN's softmax and the
    same divided by a temperature fitted on dev (a CNN is trained without one).
    """
    from cbedtdc.train import images_seen, load_model

    flat_by_loss, flat_pred, conf = {}, {}, {}
    for loss, path in flat_models.items():
        model, meta = load_model(path, device=device)
        p = flat_probs(model, meta, shard_root, "test", ts.keys, classes, batch_size, source=str(path))
        pred = np.asarray(classes)[np.argmax(p, axis=1)]
        s = score(ts.labels, pred, classes, scores=p, **ts.kw)
        conf[loss] = {"before": p.max(axis=1), "after": p.max(axis=1)}
        if len(ts.dev):
            pd_ = flat_probs(model, meta, shard_root, "dev", list(ts.dev.keys), classes, batch_size)
            s["dev_balanced_accuracy"] = balanced_accuracy(ts.dev.labels, np.asarray(classes)[pd_.argmax(1)], classes)
            conf[loss]["after"] = _temperature_scaled(p, pd_, ts.dev.labels, classes).max(axis=1)
        s["images_seen"] = images_seen(Path(path).parent / "train.json")
        s["loss"] = loss
        flat_by_loss[loss], flat_pred[loss] = s, pred
        log.info("flat %s: test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f", loss, s["top1"],
                 s["balanced_accuracy"], s["macro_f1"])
    best = max(flat_by_loss, key=lambda lo: (flat_by_loss[lo].get("dev_balanced_accuracy", 0.0), -list(
        flat_models).index(lo))) if flat_by_loss else None
    return flat_by_loss, flat_pred, best, conf


def score_flat_head(variants: Variants, hname: str, h: dict, ts: TestSet, classes, backbone_images):
    """Score one flat head ``h`` (``path``, ``backbone``, ``features``: source names, ``dirs``: their folders)."""
    from cbedtdc.heads.jobs import flat_head_probs, head_images

    keys, p, head = flat_head_probs(h["path"], h["dirs"], "test", classes)
    rows = align_rows(keys, ts.keys, h["dirs"][0], "test")
    p = p[rows]
    before = flat_head_probs(h["path"], h["dirs"], "test", classes, calibrated=False)[1][rows]
    pred = np.asarray(classes)[p.argmax(1)]
    s = score(ts.labels, pred, classes, scores=p, **ts.kw)
    dev_ba = None
    if len(ts.dev):
        dkeys, pd_, _ = flat_head_probs(h["path"], h["dirs"], "dev", classes)
        dev_labels = dict(zip(ts.dev.keys, ts.dev.labels))
        yd = np.array([dev_labels[k] for k in dkeys])
        dev_ba = balanced_accuracy(yd, np.asarray(classes)[pd_.argmax(1)], classes)
    label = source_label(h["backbone"], h["features"])
    uses_cnn = needs_backbone(h["features"])
    n_head = int(head.info.get("head_images", head_images(head)))
    name = f"flat/{label}/{hname}"
    variants.add(name, "flat", s, pred, dev_ba=dev_ba, backbone=h["backbone"] if uses_cnn else None, head=hname,
                 features=list(h["features"]), head_spec=head.spec,
                 backbone_images=backbone_images if uses_cnn else 0, head_images=n_head)
    log.info("flat head %s on %s: test balanced accuracy %.4f (dev %s)", hname, label, s["balanced_accuracy"], dev_ba)
    variants.conf[name] = {"before": before.max(axis=1), "after": p.max(axis=1)}
    return name, {**s, "dev_balanced_accuracy": dev_ba, "images_seen": backbone_images if uses_cnn else 0,
                  "loss": label, "head": hname, "features": list(h["features"]), "head_images": n_head}


def score_cascade(cas, probs, ts: TestSet, classes, shared_images=None):
    """``(tdc summary, routing, oracle predictions)`` of a cascade on the test split, routed by its tuned rule.

    ``probs``: the levels' test probabilities (own ResNets or shared heads), rows in ``ts.keys`` order;
    ``shared_images``: images seen by the shared backbone (``None``: own-backbone levels).
    """
    from cbedtdc.train import images_seen

    plan = cas.plan
    y, mats, n_boot, seed = ts.labels, ts.materials, ts.kw["n_boot"], ts.kw["seed"]
    r = cas.route(probs)
    t = score(y, r.pred, classes, **ts.kw)
    est = cascade.estimated_accuracy(plan, probs, y)
    oracle = cascade.oracle_predictions(plan, probs, y)
    est_ci = {"top1": list(bootstrap_materials(lambda i: top1(y[i], oracle[i]), mats, n_boot, seed)),
              "balanced_accuracy": list(bootstrap_materials(lambda i: balanced_accuracy(y[i], oracle[i], classes), mats,
                                                            n_boot, seed))}
    levels = cascade.level_report(plan, r, y)
    for row, e in zip(levels, est["per_level"]):
        row["share_of_test"] = e["share"]
        row["oracle_accuracy"] = e["accuracy"]
        row["images_seen"] = (None if shared_images is not None
                              else images_seen(cascade.level_dir(cas.folder, row["level"]) / "train.json"))
    seen = [lv["images_seen"] for lv in levels]
    t.update({
        "mode": plan.mode, **cas.rule.summary(),  # routing (the rule's name), temperatures, the rule's parameters
        "levels": plan.levels,
        "estimated_top1": est["top1"], "estimated_balanced_accuracy": est["balanced_accuracy"],
        "estimated_ci95": est_ci,
        "images_seen": (shared_images if shared_images is not None
                        else sum(seen) if all(s is not None for s in seen) else None),
        "backbone": cas.backbone,
        "per_level": levels,
    })
    log.info("TDC (%s): test top-1 %.4f, balanced accuracy %.4f, macro-F1 %.4f; estimated top-1 %.4f", plan.mode,
             t["top1"], t["balanced_accuracy"], t["macro_f1"], t["estimated_top1"])
    return t, r, oracle
