"""evaluate_run: score every flat model and the cascade of a trained run on test, write summary and tables."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cbedtdc.cascade.load import load_cascade
from cbedtdc.crystallography import extinction_groups
from cbedtdc.features.registry import needs_backbone
from cbedtdc.evaluate.crystal import calibration, hierarchy
from cbedtdc.evaluate.score import score_cascade, score_flat_cnns, score_flat_head, source_label
from cbedtdc.evaluate.tables import jsonable, write_tables
from cbedtdc.evaluate.variants import TestSet, Variants, headline_flat
from cbedtdc.features.sources import align_rows
from cbedtdc.io import read_csv, write_json
from cbedtdc.metrics import chance_rates
from cbedtdc.errors import InputError

__all__ = ["evaluate_run", "test_set"]

log = logging.getLogger(__name__)


def test_set(shard_root, classes, *, n_boot, seed, friedel_groups) -> TestSet:
    """The test split of the run's ``classes`` with its dev split and training labels."""
    from cbedtdc.data import ShardDataset

    test = ShardDataset(shard_root, "test", classes=classes)
    dev = ShardDataset(shard_root, "dev", classes=classes)
    n_all_test = len(read_csv(Path(shard_root) / "test.csv"))
    if not len(test):
        raise InputError(f"{shard_root}/test.csv has no sample of the run's classes {classes}")
    train_labels = np.array([int(r["space_group"]) for r in read_csv(Path(shard_root) / "train.csv")])
    kw = dict(materials=test.materials, n_boot=n_boot, seed=seed, friedel_groups=friedel_groups)
    return TestSet(list(test.keys), test.labels, test.materials, dev, train_labels, n_all_test - len(test), kw)


def _cascade_probs(cas, ts: TestSet, shard_root, shared, batch_size):
    """The cascade's level probabilities on the test samples (rows in ``ts.keys`` order)."""
    from cbedtdc import cascade
    from cbedtdc.cascade.shared import tdc_head_probs
    from cbedtdc.heads.jobs import run_features

    if cas.backbone == "own":
        return cascade.predict_levels(cas.models, shard_root, "test", keys=ts.keys, batch_size=batch_size)[1]
    keys, X, _ = run_features(shared["dirs"], "test", cas.plan.classes)
    return [p[align_rows(keys, ts.keys, shared["dirs"][0], "test")] for p in tdc_head_probs(cas.heads, X)]


def _flat_variants(flat_models, heads, ts, shard_root, classes, batch_size, device):
    """Score every flat CNN and flat head: ``(flat_by_loss, variants, headline flat, recall columns)``."""
    flat_by_loss, flat_pred, best, cnn_conf = score_flat_cnns(flat_models, ts, shard_root, classes, batch_size,
                                                              device)
    variants = Variants(ts, classes, {c: int((ts.train_labels == c).sum()) for c in classes})
    for loss, s in flat_by_loss.items():
        variants.add(f"flat/{loss}/cnn", "flat", s, flat_pred[loss], dev_ba=s.get("dev_balanced_accuracy"),
                     backbone=loss, head="cnn", features=["cnn"], backbone_images=s.get("images_seen"), head_images=0)
        variants.conf[f"flat/{loss}/cnn"] = cnn_conf[loss]
    flat_heads = {}
    for hname, h in (heads or {}).items():
        name, s = score_flat_head(variants, hname, h, ts, classes,
                                  flat_by_loss.get(h["backbone"], {}).get("images_seen"))
        flat_heads[name] = s
    flat, recall = headline_flat(variants, flat_by_loss, flat_pred, best, flat_heads)
    return flat_by_loss, variants, flat, recall


def _tdc_variant(cas, probs, ts, classes, variants, flat_by_loss, shared):
    """Score the cascade and add it to the variants: ``(summary["tdc"], routing, oracle predictions)``.

    Its dev balanced accuracy, which ranks it among the variants, is the one its rule was tuned to
    (``routing.json``, required by :func:`~cbedtdc.cascade.routing.load_rule`)."""
    plan = cas.plan
    dev_ba = cas.rule.dev["balanced_accuracy"]
    if cas.backbone == "own":
        t, r, oracle = score_cascade(cas, probs, ts, classes)
        head_images = 0
        name = f"tdc/own/{plan.mode}/{t['routing']}/cnn"
    else:
        uses_cnn = needs_backbone(shared["features"])
        backbone_images = flat_by_loss.get(shared["backbone"], {}).get("images_seen") if uses_cnn else 0
        t, r, oracle = score_cascade(cas, probs, ts, classes, shared_images=backbone_images or 0)
        label = source_label(shared["backbone"], shared["features"])
        t.update({"shared_loss": shared["backbone"], "features": list(shared["features"]), "head": cas.manifest["spec"],
                  "head_images": int(sum(cas.manifest["head_images"]))})
        head_images = t["head_images"]
        name = f"tdc/shared-{label}/{plan.mode}/{t['routing']}/{cas.manifest['spec']['kind']}"
    variants.add(name, "tdc", t, r.pred, dev_ba=dev_ba, backbone=t["backbone"], head=name.rsplit("/", 1)[1],
                 features=t.get("features", ["cnn"]), mode=plan.mode, routing=t["routing"],
                 backbone_images=t["images_seen"], head_images=head_images)
    raw = cas.rule.uncalibrated().route(plan, probs)  # the same routing on uncalibrated levels
    variants.conf[name] = {"before": (raw.pred, raw.conf), "after": (r.pred, r.conf)}
    return t, r, oracle


def _crystal_readings(summary, variants, ts, classes, n_boot, seed) -> None:
    """The hierarchy (with intervals) of the headline flat model and TDC, and their calibration."""
    y = ts.labels
    summary["calibration"] = {}
    for key, name in (("flat", summary["flat"]["model"]), ("tdc", summary["best"].get("tdc"))):
        if name is None:
            continue
        pred = variants.pred[name]
        summary[key]["hierarchy"] = hierarchy(y, pred, classes, materials=ts.materials, n_boot=n_boot, seed=seed)
        c = variants.conf.get(name)
        if c is not None:
            before = c["before"] if isinstance(c["before"], tuple) else (pred, c["before"])
            after = c["after"] if isinstance(c["after"], tuple) else (pred, c["after"])
            summary["calibration"][key] = {"model": name, **calibration(y, before, after)}


def _budget(plan, summary, shared) -> dict:
    t = summary["tdc"]
    out = {"flat_images_planned": plan.flat_images, "tdc_images_planned": int(sum(plan.budgets)),
           "flat_images_seen": summary["flat"]["images_seen"], "tdc_images_seen": t["images_seen"]}
    if shared is not None:
        out["tdc_images_planned"] = plan.flat_images  # the shared backbone is the flat model
        out["tdc_head_images"] = t["head_images"]
    return out


def evaluate_run(shard_root, flat_models: dict, tdc_dir, out_dir, *, classes=None, n_boot: int = 1000,
                 seed: int = 0, friedel_groups=None, batch_size: int = 64, data_kind: str = "generated",
                 device: str = "cpu", heads=None, shared=None, bootstrap_over: str = "materials") -> dict:
    """Evaluate the flat baselines and the TDC on the test split; write the tables; return the summary.

    Parameters
    ----------
    flat_models : dict
        ``{loss: path of best.pt}``; every loss is under ``flat_by_loss``. The headline ``flat`` is the
        flat variant (one of these CNNs, or one of ``heads``) with the best dev balanced accuracy (chosen
        on dev, never on test); ``flat["model"]`` names it (``flat/ce/cnn``, ``flat/ce/crt``).
    tdc_dir : path-like
        Folder with ``levels.json`` and, for own-backbone levels, ``routing.json`` and ``level_K/best.pt``.
    out_dir : path-like
        Receives ``summary.json``, ``per_class.csv``, ``levels.csv``, ``confusion_flat.csv``,
        ``confusion_tdc.csv`` and ``predictions.csv``.
    classes : list of int, optional
        The run's class order (``results/data/run_classes.json``); every table and score uses it.
        Default: the plan's classes in level order.
    bootstrap_over : {"materials", "samples"}
        What the bootstrap resamples, as recorded in the summary: whole test materials, or single samples for data
        without material ids (the STEMDL mirror; ``data_info.json`` of the shards says which).
    friedel_groups : list of lists or "auto", optional
        Groups merged in the Friedel score (pass them for kinematic data only); ``"auto"``: the groups of the
        run's classes that share an extinction class (:func:`cbedtdc.crystallography.extinction_groups`).
    heads : dict, optional
        Flat heads ``{name: {"path", "backbone", "features", "dirs"}}`` (CNN-XGBoost heads included, ``kind:
        xgboost``): the head file, the flat loss of its ``cnn`` source, its source names and their folders of
        ``{split}.h5``.
    shared : dict, optional
        Shared-backbone cascade ``{"backbone", "features", "dirs", "heads" (folder with heads.json),
        "routing" (routing.json)}``: it is then the headline ``tdc`` (no level ResNet is loaded).

    Besides the headline keys, ``variants`` lists every flat and TDC variant with test and dev scores,
    many/medium/few-shot balanced accuracy, the crystallographic hierarchy and the budgets; ``best`` names the
    best flat and best TDC variant chosen on dev balanced accuracy with a paired bootstrap of their test
    balanced-accuracy difference; ``flat`` and ``tdc`` carry the hierarchy with intervals and ``calibration`` their
    reliability before and after temperature scaling.
    """
    from cbedtdc.train import inference_device

    tdc_dir, out_dir = Path(tdc_dir), Path(out_dir)
    device = inference_device(device)
    if shared is None:
        cas = load_cascade(tdc_dir / "levels.json", tdc_dir / "routing.json", device=device)
    else:
        cas = load_cascade(tdc_dir / "levels.json", shared["routing"], heads_dir=shared["heads"])
    plan = cas.plan
    classes = [int(c) for c in (classes or plan.classes)]
    if sorted(classes) != sorted(plan.classes):
        raise InputError(f"{tdc_dir}/levels.json plans classes {sorted(plan.classes)}, the run has {sorted(classes)}; "
                         "rerun rule plan_levels")
    if friedel_groups == "auto":
        friedel_groups = extinction_groups(classes)
    ts = test_set(shard_root, classes, n_boot=n_boot, seed=seed, friedel_groups=friedel_groups or None)
    summary = {"n_test": int(len(ts.labels)), "n_test_materials": int(len(np.unique(ts.materials))),
               "n_test_excluded_other_classes": int(ts.n_excluded), "classes": classes,
               "data": data_kind, "bootstrap": {"resamples": int(n_boot), "over": bootstrap_over, "level": 0.95},
               "chance": chance_rates(ts.train_labels, ts.labels, classes)}
    flat_by_loss, variants, summary["flat"], flat_recall = _flat_variants(flat_models, heads, ts, shard_root,
                                                                          classes, batch_size, device)
    summary["flat_by_loss"] = flat_by_loss
    probs = _cascade_probs(cas, ts, shard_root, shared, batch_size)
    t, r, oracle = _tdc_variant(cas, probs, ts, classes, variants, flat_by_loss, shared)
    summary["tdc"] = t
    summary["budget"] = _budget(plan, summary, shared)
    summary["variants"] = variants.rows
    summary["best"] = variants.best_difference(n_boot, seed)
    _crystal_readings(summary, variants, ts, classes, n_boot, seed)
    write_tables(out_dir, plan, classes, ts, flat_recall, variants.pred[summary["flat"]["model"]], r, oracle,
                 t["per_level"])
    write_json(out_dir / "summary.json", jsonable(summary))
    return summary
