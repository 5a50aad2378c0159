"""The routing rules of the TDC as objects: chosen once from the config, tuned on dev, saved, loaded, applied.

A rule is a frozen value (a :class:`RoutingRule` subclass): ``rule_for(name, mode)`` gives the untuned rule of
``tdc.routing`` for a cascade of reading ``mode`` (the hard reading always thresholds); ``.tune(plan, probs,
labels)`` returns the rule tuned on the dev probabilities (one temperature per level, then the rule's own
parameters); ``.route(plan, probs)`` calibrates and routes; ``.save(path, plan)`` writes ``routing.json`` and
:func:`load_rule` reads it back, checked against the plan. Every other module calls these; none compares
rule names.

``argmax``
    Rest reading: a level forwards a sample when its "rest" output has the largest probability.
``threshold``
    Rest reading: forward when ``p(rest)`` exceeds a per-level threshold; hard reading: when the largest
    class probability is below it. The thresholds are tuned on dev (:func:`tune_thresholds`) on the
    calibrated probabilities.
``posterior``
    Rest reading: the argmax of the hierarchical posterior (:func:`~cbedtdc.cascade.routing.core.posterior`),
    divided by the training prior when that wins on dev.

Adding a rule: a subclass here with ``name``, ``forwards`` (or ``_route``), ``_tuned`` and its parameters as
dataclass fields, an entry in :data:`RULES`, and its name in the enum of ``tdc.routing`` (``config/schema.yaml``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from cbedtdc import metrics
from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.cascade.routing.core import Routing, calibrate, check_probs, fit_temperatures, posterior, walk
from cbedtdc.errors import InputError
from cbedtdc.io import atomic_write_text

__all__ = ["RoutingRule", "ArgmaxRule", "ThresholdRule", "PosteriorRule", "RULES", "ROUTINGS", "DEFAULT",
           "rule_for", "reading_name", "load_rule", "tune_thresholds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoutingRule:
    """How a cascade routes; a value, never part of the plan (``routing.json``).

    ``temperatures``: one per level, fitted on dev (``None``: uncalibrated); ``dev``: the dev scores of the
    tuning (``balanced_accuracy``, ``top1``, ``kept_fraction``), ``None`` before tuning. A subclass sets
    ``name`` and decides per level (:meth:`forwards`) or routes the whole cascade (:meth:`_route`).
    """

    name: ClassVar[str] = ""
    #: Readings the rule can route (the hard reading has no "rest" output: thresholds only).
    modes: ClassVar[tuple] = ("rest",)
    #: Appended to the reading's name in ``summary_<reading>.json`` (:func:`reading_name`).
    suffix: ClassVar[str] = ""

    temperatures: tuple | None = None
    dev: dict | None = field(default=None, compare=False)

    # ---------------------------------------------------------------- routing
    def forwards(self, plan: LevelPlan, k: int, p: np.ndarray) -> np.ndarray:
        """Which samples level ``k`` (0-based, not the last) passes on, given its (calibrated) probabilities."""
        raise NotImplementedError(f"routing rule {self.name!r} routes the whole cascade at once")

    def _route(self, plan: LevelPlan, probs: list) -> Routing:
        return walk(plan, probs, lambda k, p: self.forwards(plan, k, p))

    def route(self, plan: LevelPlan, probs) -> Routing:
        """Calibrate the levels' probabilities by the temperatures, then route them by this rule."""
        self.check(plan)
        return self._route(plan, calibrate(check_probs(plan, probs), self.temperatures))

    def uncalibrated(self) -> "RoutingRule":
        """The same rule without temperatures (the reliability before calibration)."""
        return replace(self, temperatures=None)

    def check(self, plan: LevelPlan, source="routing", redo: str = "tune_routing") -> "RoutingRule":
        """This rule, checked against ``plan`` (reading, number of temperatures and of the rule's parameters);
        an error names ``source`` and the rule that tunes it again (``redo``)."""
        if plan.mode not in self.modes:
            raise InputError(f"{source}: routing rule {self.name} for a {plan.mode}-reading cascade, which routes "
                             f"with {rule_for(self.name, plan.mode).name}; rerun rule {redo}")
        if self.temperatures is not None and len(self.temperatures) != plan.n_levels:
            raise InputError(f"{source}: {len(self.temperatures)} temperatures for {plan.n_levels} levels; rerun "
                             f"rule {redo}")
        return self

    # ---------------------------------------------------------------- tuning on dev
    def tune(self, plan: LevelPlan, probs, labels) -> "RoutingRule":
        """This rule tuned on the dev probabilities ``probs`` and ``labels``: one temperature per level
        (:func:`~cbedtdc.cascade.routing.core.fit_temperatures`), then the rule's own parameters on the
        calibrated probabilities; ``.dev`` holds the dev scores."""
        RoutingRule.check(self, plan)  # the reading and the temperatures; tuning sets the rule's own parameters
        labels = np.asarray(labels)
        if not len(labels):
            raise InputError("no dev sample of the run's classes: cannot tune the routing")
        probs = check_probs(plan, probs)
        base = replace(self, temperatures=tuple(fit_temperatures(plan, probs, labels)))
        tuned, extra = base._tuned(plan, probs, labels)
        tuned = replace(tuned, dev={**score_on(tuned, plan, probs, labels), "n": int(len(labels)), **extra})
        log.info("routing %s tuned on %d dev samples: %s, temperatures %s (dev balanced accuracy %.4f)", tuned.name,
                 len(labels), tuned.params(), [round(t, 3) for t in tuned.temperatures],
                 tuned.dev["balanced_accuracy"])
        return tuned

    def _tuned(self, plan: LevelPlan, probs, labels) -> tuple["RoutingRule", dict]:
        """The rule with its parameters set on dev (temperatures already fitted), and extra dev scores."""
        return self, {}

    # ---------------------------------------------------------------- files
    def params(self) -> dict:
        """The rule's own parameters (its dataclass fields but ``temperatures`` and ``dev``), JSON-ready."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.name not in ("temperatures",
                                                                                                   "dev")}

    def summary(self) -> dict:
        """What ``summary.json`` records of the routing: ``routing`` (the name), ``temperatures``, the parameters."""
        return {"routing": self.name, "temperatures": None if self.temperatures is None else list(self.temperatures),
                **self.params()}

    def to_json(self, plan: LevelPlan) -> dict:
        """``routing.json``: the plan it was tuned for (``mode``, ``levels``), the rule and the dev scores."""
        return {"mode": plan.mode, "levels": plan.levels, **self.summary(), "dev": self.dev}

    def save(self, path, plan: LevelPlan) -> None:
        """Write :meth:`to_json` to ``path`` atomically."""
        atomic_write_text(path, json.dumps(self.to_json(plan), indent=2) + "\n")

    @classmethod
    def from_json(cls, d: dict, plan: LevelPlan, source="routing.json", redo: str = "tune_routing") -> "RoutingRule":
        """The rule of a ``routing.json`` dict, checked against the plan; an error names ``source``, the key and
        the rule to rerun (``redo``)."""
        if not isinstance(d, dict):
            raise InputError(f"{source}: not a JSON object; rerun rule {redo}")
        for key in ("mode", "levels", "routing", "temperatures", "dev"):
            if key not in d:
                raise InputError(f"{source}: key {key!r} missing (written by another version?); rerun rule {redo}")
        if d["mode"] != plan.mode or d["levels"] != plan.levels:
            raise InputError(f"{source} was tuned for mode {d['mode']} levels {d['levels']}, levels.json has "
                             f"{plan.mode} {plan.levels}; rerun rule {redo}")
        if d["routing"] not in RULES:
            raise InputError(f"{source}: routing {d['routing']!r} is not a rule ({', '.join(RULES)}); rerun rule "
                             f"{redo}")
        rule_cls = RULES[d["routing"]]
        own = [f.name for f in fields(rule_cls) if f.name not in ("temperatures", "dev")]
        missing = [k for k in own if k not in d]
        if missing:
            raise InputError(f"{source}: key {missing[0]!r} of routing {d['routing']} missing; rerun rule {redo}")
        if not isinstance(d["dev"], dict) or not isinstance(d["dev"].get("balanced_accuracy"), (int, float)):
            raise InputError(f"{source}: key 'dev' holds no balanced_accuracy (the dev score that ranks the TDC "
                             f"among the variants); rerun rule {redo}")
        temps = d["temperatures"]
        try:
            rule = rule_cls(temperatures=None if temps is None else tuple(float(t) for t in temps), dev=d["dev"],
                            **{k: rule_cls._param(k, d[k]) for k in own})
        except (TypeError, ValueError) as err:
            raise InputError(f"{source}: bad value of the routing ({err}); rerun rule {redo}") from err
        return rule.check(plan, source, redo)

    @classmethod
    def _param(cls, key, value):
        return value


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def score_on(rule: RoutingRule, plan: LevelPlan, probs, labels) -> dict:
    """Balanced accuracy, top-1 and the fraction kept by each level of ``rule`` on labelled probabilities."""
    r = rule.route(plan, probs)
    return {"balanced_accuracy": metrics.balanced_accuracy(labels, r.pred, plan.classes),
            "top1": metrics.top1(labels, r.pred),
            "kept_fraction": [float((r.kept == k).mean()) for k in range(plan.n_levels)]}


@dataclass(frozen=True)
class ArgmaxRule(RoutingRule):
    """Rest reading: forward a sample when "rest" has the largest probability of the level.

    >>> plan = LevelPlan([[1, 2], [3]])
    >>> ArgmaxRule().route(plan, [np.array([[0.5, 0.1, 0.4], [0.2, 0.3, 0.5]]), np.ones((2, 1))]).kept.tolist()
    [0, 1]
    """

    name: ClassVar[str] = "argmax"

    def forwards(self, plan, k, p):
        return np.argmax(p, axis=1) == p.shape[1] - 1


@dataclass(frozen=True)
class ThresholdRule(RoutingRule):
    """Rest reading: forward when ``p(rest) > thresholds[k]``; hard reading: when the largest class probability
    is below it. One threshold per level but the last, tuned on dev (:func:`tune_thresholds`).

    >>> hard = LevelPlan([[1, 2], [3]], mode="hard")
    >>> ThresholdRule(thresholds=(0.6,)).route(hard, [np.array([[0.9, 0.1], [0.55, 0.45]]),
    ...                                              np.ones((2, 3))]).kept.tolist()
    [0, 1]
    """

    name: ClassVar[str] = "threshold"
    modes: ClassVar[tuple] = ("rest", "hard")
    suffix: ClassVar[str] = "_threshold"

    thresholds: tuple = ()

    def forwards(self, plan, k, p):
        t = float(self.thresholds[k])
        return p[:, -1] > t if plan.mode == "rest" else p.max(axis=1) < t

    def check(self, plan, source="routing", redo="tune_routing"):
        super().check(plan, source, redo)
        if len(self.thresholds) != plan.n_levels - 1:
            raise InputError(f"{source}: {len(self.thresholds)} thresholds for {plan.n_levels} levels (one per "
                             f"level but the last, tuned on dev); rerun rule {redo}")
        return self

    def _tuned(self, plan, probs, labels):
        cal = calibrate(probs, self.temperatures)
        tuned = replace(self, thresholds=tuple(tune_thresholds(plan, cal, labels)))
        return tuned, {"default_0.5": score_on(replace(self, thresholds=(0.5,) * (plan.n_levels - 1)), plan, probs,
                                               labels)}

    @classmethod
    def _param(cls, key, value):
        return tuple(float(t) for t in value)


@dataclass(frozen=True)
class PosteriorRule(RoutingRule):
    """Rest reading: the argmax of the hierarchical posterior ``P(c) = prod_{j<k} p_j(rest) p_k(c)``, divided by
    the training prior (the plan's class counts) when ``prior``; tuning keeps the prior when it wins on dev (and the
    plan records the counts).

    >>> plan = LevelPlan([[14], [2, 5]], counts={14: 400, 2: 100, 5: 100})
    >>> probs = [np.array([[0.45, 0.55]]), np.array([[0.5, 0.5]])]
    >>> PosteriorRule().route(plan, probs).pred.tolist(), PosteriorRule(prior=True).route(plan, probs).pred.tolist()
    ([14], [2])
    """

    name: ClassVar[str] = "posterior"

    prior: bool = False

    def _route(self, plan, probs):
        return posterior(plan.levels, probs, prior=dict(plan.counts) if self.prior else None)

    def _tuned(self, plan, probs, labels):
        if not plan.counts:  # a plan without training counts has no prior to divide by
            return replace(self, prior=False), {}
        plain, corrected = (score_on(replace(self, prior=p), plan, probs, labels) for p in (False, True))
        use = corrected["balanced_accuracy"] > plain["balanced_accuracy"]
        return replace(self, prior=use), {"without_prior": plain, "with_prior": corrected}

    @classmethod
    def _param(cls, key, value):
        if not isinstance(value, bool):
            raise ValueError(f"prior={value!r} is not true or false")
        return value


#: The routing rules by name: the enum of ``tdc.routing`` in ``config/schema.yaml`` (a test checks).
RULES: dict[str, type[RoutingRule]] = {r.name: r for r in (ArgmaxRule, ThresholdRule, PosteriorRule)}
ROUTINGS = tuple(RULES)
#: The library's default rule, the schema's default of ``tdc.routing`` (a test checks).
DEFAULT = "posterior"


def rule_for(name: str = DEFAULT, mode: str = "rest") -> RoutingRule:
    """The untuned rule a cascade of reading ``mode`` routes with under ``tdc.routing: name``: that rule for the
    rest reading; the threshold rule for the hard reading (it has no "rest" output), whatever ``name``.

    >>> rule_for("posterior").name, rule_for("posterior", "hard").name
    ('posterior', 'threshold')
    """
    if name not in RULES:
        raise InputError(f"tdc.routing={name!r}: must be one of {', '.join(RULES)}")
    rule = RULES[name]()
    return rule if mode in rule.modes else ThresholdRule()


def reading_name(mode: str, name: str = DEFAULT) -> str:
    """The TDC reading's name in ``summary_<reading>.json``: ``rest``, ``rest_threshold`` or ``hard``.

    >>> reading_name("rest", "posterior"), reading_name("rest", "threshold"), reading_name("hard", "argmax")
    ('rest', 'rest_threshold', 'hard')
    """
    return mode if mode == "hard" else mode + rule_for(name, mode).suffix


def load_rule(path, plan: LevelPlan, redo: str = "tune_routing") -> RoutingRule:
    """``routing.json`` as its tuned rule, checked against the plan; a missing or bad file is an
    :class:`~cbedtdc.errors.InputError` naming it, the key and the rule to rerun (``redo``)."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise InputError(f"{path} missing: finish the run (rule {redo}) first") from err
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable routing.json ({err}); rerun rule {redo}") from err
    return RoutingRule.from_json(d, plan, path, redo)


def tune_thresholds(plan: LevelPlan, probs, labels, *, grid=None, sweeps: int = 3) -> list[float]:
    """Per-level thresholds that maximise the end-to-end balanced accuracy on ``labels`` (dev).

    Coordinate ascent: each sweep sets one level's threshold at a time to the grid value with
    the best balanced accuracy (ties: best top-1, then the value closest to 0.5), the others
    fixed, routing by :class:`ThresholdRule`. Returns ``K - 1`` thresholds (empty for one level).

    >>> plan = LevelPlan([[1], [2, 3]], mode="hard", hard_outputs="own")
    >>> p1 = np.array([[1.0], [1.0], [1.0]])  # a 1-class level is always sure: cannot route
    >>> p2 = np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    >>> tune_thresholds(plan, [p1, p2], [1, 2, 3])
    [0.5]
    """
    probs = check_probs(plan, probs)
    labels = np.asarray(labels)
    K = plan.n_levels
    if K == 1:
        return []
    grid = np.round(np.linspace(0.0, 1.0, 41), 4) if grid is None else np.asarray(grid, dtype=float)
    th = [0.5] * (K - 1)
    classes = plan.classes

    def objective(t):
        r = ThresholdRule(thresholds=tuple(t))._route(plan, probs)
        return (metrics.balanced_accuracy(labels, r.pred, classes), metrics.top1(labels, r.pred))

    best_score = objective(th)
    for _ in range(sweeps):
        changed = False
        for k in range(K - 1):
            for g in grid:
                trial = list(th)
                trial[k] = float(g)
                s = objective(trial)
                better = s > best_score or (s == best_score and abs(g - 0.5) < abs(th[k] - 0.5))
                if better:
                    changed = changed or trial != th
                    best_score, th = s, trial
        if not changed:
            break
    return [float(t) for t in th]
