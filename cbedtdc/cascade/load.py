"""One loader of a trained cascade for :mod:`cbedtdc.evaluate` and :mod:`cbedtdc.classify`.

A cascade is its plan (``levels.json``), its tuned routing rule (``routing.json``,
:class:`~cbedtdc.cascade.routing.RoutingRule`) and its levels: one ResNet per level
(``tdc.backbone: own``, ``results/tdc/level_k/best.pt``) or one head per level on shared feature
sources (``tdc.backbone: shared``, ``results/tdc_shared/heads/``). What each caller feeds the levels
differs (shards, features files, new stacks), so the loader gives the parts, checked against each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cbedtdc.cascade.jobs import load_levels
from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.cascade.routing import RoutingRule, load_rule

__all__ = ["Cascade", "load_cascade"]


@dataclass
class Cascade:
    """A trained cascade: ``backbone`` is ``own`` (``models``: ``(model, meta)`` per level) or ``shared``
    (``heads``: one :class:`~cbedtdc.heads.Head` per level, ``manifest``: ``heads.json``)."""

    plan: LevelPlan
    rule: RoutingRule
    backbone: str
    folder: Path
    models: list = field(default_factory=list)
    heads: list = field(default_factory=list)
    manifest: dict = field(default_factory=dict)

    def route(self, probs):
        """Route the levels' probabilities with the tuned rule."""
        return self.rule.route(self.plan, probs)


def load_cascade(levels_path, routing_path, *, heads_dir=None, device: str = "cpu", models: bool = True) -> Cascade:
    """Load a cascade: own-backbone levels next to ``levels_path`` or, with ``heads_dir``, the shared one.

    ``models=False`` skips loading the level ResNets (an own cascade scored from files).
    """
    levels_path, routing_path = Path(levels_path), Path(routing_path)
    plan = LevelPlan.load(levels_path)
    rule = load_rule(routing_path, plan, redo="tune_routing_shared" if heads_dir is not None else "tune_routing")
    if heads_dir is not None:
        from cbedtdc.cascade.shared import load_tdc_heads

        manifest, heads = load_tdc_heads(heads_dir, plan)
        return Cascade(plan, rule, "shared", Path(heads_dir).parent, heads=heads, manifest=manifest)
    loaded = load_levels(levels_path.parent, plan, device=device)[1] if models else []
    return Cascade(plan, rule, "own", levels_path.parent, models=loaded)
