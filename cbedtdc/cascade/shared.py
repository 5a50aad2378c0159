"""The shared-backbone TDC (``tdc.backbone: shared``, rules ``tdc_heads`` and ``tune_routing_shared``).

Every level of ``levels.json`` is a head (:mod:`cbedtdc.heads`) on the same feature sources (one flat
backbone's activations, the symmetry descriptors, or both): no level ResNet is trained, so the cascade
costs the flat budget plus head training and compares at exactly equal backbone compute.

Rest reading: level ``k`` trains on the samples of levels ``k..K``, the later ones labelled "rest".
Hard reading: level ``k`` trains on the samples that reached it, and its wrong or foreign training
samples reach level ``k + 1`` (the same trickle as the ResNet cascade, :func:`cbedtdc.cascade.plan.trickle`).
The routing is tuned on dev as for the own backbone (:meth:`cbedtdc.cascade.routing.RoutingRule.tune`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cbedtdc.cascade.plan import LevelPlan, level_training_mask, trickle
from cbedtdc.cascade.routing import DEFAULT, RoutingRule, level_targets, rule_for
from cbedtdc.heads import fit_head, load_head, resolve_spec
from cbedtdc.heads.jobs import head_images, head_suffix, run_features
from cbedtdc.io import atomic_write_text
from cbedtdc.errors import InputError

__all__ = ["fit_level_heads", "train_tdc_heads", "load_tdc_heads", "tdc_head_probs", "tune_shared_routing"]

log = logging.getLogger(__name__)


def fit_level_heads(plan: LevelPlan, train, dev=None, *, spec=None, seed: int = 0, source: str = "features"):
    """One head per level of ``plan`` on shared features; ``train`` and ``dev`` are ``(X, labels)``.

    Returns the list of fitted heads (level order). Level ``k``'s outputs are ``plan.outputs(k)``
    followed by "rest" when ``plan.has_rest(k)``, the column order of the cascade's routing.
    """
    spec = resolve_spec(spec)
    X, y = np.asarray(train[0]), np.asarray(train[1])
    Xd, yd = (None, None) if dev is None else (np.asarray(dev[0]), np.asarray(dev[1]))
    reached = np.ones(len(y), dtype=bool)
    reached_dev = None if yd is None else np.ones(len(yd), dtype=bool)
    heads = []
    for k in range(plan.n_levels):
        hard_later = plan.mode == "hard" and k > 0
        m = level_training_mask(plan, k, y, reached if hard_later else None)
        t = level_targets(plan, k, y[m])
        n_out = len(plan.outputs(k)) + plan.has_rest(k)
        dev_k = None
        if yd is not None:
            md = level_training_mask(plan, k, yd, reached_dev if hard_later else None)
            if md.any():
                dev_k = (Xd[md], level_targets(plan, k, yd[md]))
        if not m.any():
            raise InputError(f"{source}: level {k + 1} has no training sample (classes {plan.outputs(k)}); "
                             "change tdc.level_sizes or tdc.levels")
        head = fit_head(X[m], t, n_out, spec=spec, dev=dev_k, seed=seed + k, source=f"{source} (level {k + 1})",
                        info={"level": k + 1, "outputs": plan.outputs(k), "rest": plan.has_rest(k)})
        head.info["head_images"] = head_images(head)
        heads.append(head)
        if plan.mode == "hard" and k < plan.n_levels - 1:
            reached, _ = trickle(plan, k, y, head.predict_proba(X), reached)
            if reached_dev is not None:
                reached_dev, _ = trickle(plan, k, yd, head.predict_proba(Xd), reached_dev)
            log.info("hard reading: %d training samples reach level %d", int(reached.sum()), k + 2)
    return heads


def train_tdc_heads(levels_path, feature_dirs, out_dir, *, spec=None, seed: int = 0) -> dict:
    """Fit the shared-backbone cascade (rule ``tdc_heads``): ``out_dir/level_{k}{.pt|.json}`` and ``heads.json``.

    ``feature_dirs``: the feature sources (folders of ``{split}.h5``), joined by key.
    """
    from cbedtdc.features.sources import load_split

    plan = LevelPlan.load(levels_path)
    spec = resolve_spec(spec)
    tr = load_split(feature_dirs, "train", classes=plan.classes)
    dv = load_split(feature_dirs, "dev", classes=plan.classes)
    src = tr.parts[0]["path"]
    heads = fit_level_heads(plan, (tr.X, tr.labels), (dv.X, dv.labels) if len(dv) else None, spec=spec, seed=seed,
                            source=src)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for k, head in enumerate(heads):
        path = out_dir / f"level_{k + 1}{head_suffix(head.kind)}"
        head.save(path)
        files.append(path.name)
    manifest = {"mode": plan.mode, "levels": plan.levels, "spec": spec, "files": files,
                "backbone": tr.parts[0]["model"], "backbone_sha256": tr.parts[0]["model_sha256"],
                "sources": tr.provenance(),
                "head_images": [h.info["head_images"] for h in heads],
                "n_train": [h.info["n_train"] for h in heads]}
    atomic_write_text(out_dir / "heads.json", json.dumps(manifest, indent=2) + "\n")
    log.info("shared-backbone TDC: %d level heads on %s (%s), %d head images", len(heads),
             " + ".join(p["source"] for p in tr.parts), spec["kind"], sum(manifest["head_images"]))
    return manifest


def load_tdc_heads(heads_dir, plan: LevelPlan):
    """``(manifest, heads)`` of ``heads_dir/heads.json``, checked against the plan."""
    heads_dir = Path(heads_dir)
    try:
        manifest = json.loads((heads_dir / "heads.json").read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{heads_dir}/heads.json: not readable ({err}); rerun rule tdc_heads") from err
    if manifest.get("levels") != plan.levels or manifest.get("mode") != plan.mode:
        raise InputError(f"{heads_dir}/heads.json was fitted for {manifest.get('mode')} {manifest.get('levels')}, "
                         f"levels.json has {plan.mode} {plan.levels}; rerun rule tdc_heads")
    return manifest, [load_head(heads_dir / f) for f in manifest["files"]]


def tdc_head_probs(heads, X) -> list[np.ndarray]:
    """Probabilities of every level head on features ``X``."""
    return [h.predict_proba(X) for h in heads]


def tune_shared_routing(levels_path, heads_dir, feature_dirs, out_path, *, routing: str = DEFAULT) -> RoutingRule:
    """``routing.json`` of the shared-backbone cascade, tuned on the dev features (rule ``tune_routing_shared``):
    the rule of ``tdc.routing`` for the plan's reading (:func:`~cbedtdc.cascade.routing.rule_for`)."""
    plan = LevelPlan.load(levels_path)
    _, heads = load_tdc_heads(heads_dir, plan)
    _, Xd, yd = run_features(feature_dirs, "dev", plan.classes)
    if not len(yd):
        raise InputError(f"{feature_dirs}: no dev sample of the run's classes: cannot tune the routing")
    rule = rule_for(routing, plan.mode).tune(plan, tdc_head_probs(heads, Xd), yd)
    rule.save(out_path, plan)
    return rule
