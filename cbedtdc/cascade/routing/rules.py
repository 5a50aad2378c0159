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
``gate``
    Rest reading: a learned gate, a multinomial logistic regression from every level's calibrated log-probabilities
    to the level that owns the sample, fitted on dev; a class scores its level's gate probability times its
    probability within the level. Its dev score is cross-fitted (each dev sample scored by a gate that did not see
    it), so it is not flattered by fitting on dev.

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

__all__ = ["RoutingRule", "ArgmaxRule", "ThresholdRule", "PosteriorRule", "GateRule", "RULES", "ROUTINGS", "DEFAULT",
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


@dataclass(frozen=True)
class GateRule(RoutingRule):
    """Rest reading: a learned gate. ``P(level k owns the sample)`` is a multinomial logistic regression on the
    concatenated log-probabilities of every level (calibrated), fitted on dev with each sample weighted by one over
    its class's dev count (the balanced-accuracy objective); class ``c`` of level ``k`` then scores
    ``gate_k * p_k(c) / (1 - p_k(rest))`` and the argmax is the prediction (``joint`` holds those scores).

    ``coef`` (one row per level) and ``intercept`` are the gate, ``C`` its inverse regularisation, chosen among
    :attr:`CS` by the cross-fitted dev score. Tuning's dev score is cross-fitted over :attr:`FOLDS` folds of dev
    (stratified by level), so the TDC is ranked among the variants by a score no sample helped to fit. A level
    that owns no dev sample gets a gate of (about) zero.

    >>> plan = LevelPlan([[1], [2]])
    >>> gate = GateRule(coef=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), intercept=(0.0, 1.0))  # level 2 favoured
    >>> gate.route(plan, [np.array([[0.6, 0.4], [0.9, 0.1]]), np.ones((2, 1))]).pred.tolist()
    [2, 2]
    """

    name: ClassVar[str] = "gate"
    suffix: ClassVar[str] = "_gate"
    CS: ClassVar[tuple] = (0.1, 1.0, 10.0)
    FOLDS: ClassVar[int] = 5

    coef: tuple = ()
    intercept: tuple = ()
    C: float = 1.0

    @staticmethod
    def inputs(probs) -> np.ndarray:
        return np.log(np.clip(np.concatenate([np.asarray(p, dtype=float) for p in probs], axis=1), 1e-6, 1.0))

    def _route(self, plan, probs):
        x = self.inputs(probs)
        z = x @ np.asarray(self.coef, dtype=float).T + np.asarray(self.intercept, dtype=float)[None, :]
        z -= z.max(axis=1, keepdims=True)
        gate = np.exp(z)
        gate /= gate.sum(axis=1, keepdims=True)
        cols = []
        for k, (lv, p) in enumerate(zip(plan.levels, probs)):
            own = p[:, : len(lv)]
            own = own / np.clip(own.sum(axis=1, keepdims=True), 1e-12, None)
            cols.append(gate[:, k : k + 1] * own)
        joint = np.concatenate(cols, axis=1)
        classes = np.array(plan.classes, dtype=np.int64)
        level_of = np.concatenate([np.full(len(lv), k, dtype=np.int64) for k, lv in enumerate(plan.levels)])
        best = np.argmax(joint, axis=1) if len(joint) else np.zeros(0, dtype=np.int64)
        kept = level_of[best]
        reached = kept[:, None] >= np.arange(plan.n_levels)[None, :]
        return Routing(kept=kept, pred=classes[best], conf=joint[np.arange(len(joint)), best], reached=reached,
                       joint=joint, scores=joint)

    def check(self, plan, source="routing", redo="tune_routing"):
        super().check(plan, source, redo)
        n_in = sum(len(plan.outputs(k)) + plan.has_rest(k) for k in range(plan.n_levels))
        coef = np.asarray(self.coef, dtype=float)
        if coef.shape != (plan.n_levels, n_in) or len(self.intercept) != plan.n_levels:
            raise InputError(f"{source}: a gate of shape {coef.shape} with {len(self.intercept)} intercepts for "
                             f"{plan.n_levels} levels of {n_in} outputs in all (tuned on dev); rerun rule {redo}")
        return self

    def _fit(self, plan, x, labels, C):
        from sklearn.linear_model import LogisticRegression

        level_of = {int(c): k for k, lv in enumerate(plan.levels) for c in lv}
        y = np.array([level_of[int(c)] for c in labels], dtype=np.int64)
        _, inv, cnt = np.unique(labels, return_inverse=True, return_counts=True)
        coef, icpt = np.zeros((plan.n_levels, x.shape[1])), np.full(plan.n_levels, -30.0)
        present = np.unique(y)
        if len(present) == 1:  # one level owns every sample: the gate always picks it
            icpt[present[0]] = 0.0
            return coef, icpt
        lr = LogisticRegression(C=C, max_iter=2000).fit(x, y, sample_weight=1.0 / cnt[inv])
        rows = lr.classes_
        if len(rows) == 2:  # scikit-learn's binary form: one row for the second class
            coef[rows[1]], icpt[rows[1]], icpt[rows[0]] = lr.coef_[0], lr.intercept_[0], 0.0
        else:
            coef[rows], icpt[rows] = lr.coef_, lr.intercept_
        return coef, icpt

    def _with(self, coef, icpt, C) -> "GateRule":
        return replace(self, coef=tuple(tuple(float(v) for v in r) for r in coef),
                       intercept=tuple(float(v) for v in icpt), C=float(C))

    def _cross_fitted(self, plan, cal, labels, C) -> dict:
        """Dev scores of gates that never saw the sample they score (stratified folds by level, seeded)."""
        from sklearn.model_selection import StratifiedKFold

        level_of = {int(c): k for k, lv in enumerate(plan.levels) for c in lv}
        y = np.array([level_of[int(c)] for c in labels], dtype=np.int64)
        folds = min(self.FOLDS, int(np.bincount(y).max()))
        x = self.inputs(cal)
        pred = np.zeros(len(labels), dtype=np.int64)
        for tr, te in StratifiedKFold(n_splits=max(2, folds), shuffle=True, random_state=0).split(x, y):
            gate = self._with(*self._fit(plan, x[tr], labels[tr], C), C)
            pred[te] = gate._route(plan, [p[te] for p in cal]).pred
        return {"balanced_accuracy": metrics.balanced_accuracy(labels, pred, plan.classes),
                "top1": metrics.top1(labels, pred)}

    def _tuned(self, plan, probs, labels):
        import warnings

        cal = calibrate(probs, self.temperatures)
        x = self.inputs(cal)
        with warnings.catch_warnings():  # few samples per fold: a stratified split may warn; the score is kept
            warnings.simplefilter("ignore", UserWarning)
            cv = {C: self._cross_fitted(plan, cal, labels, C) for C in self.CS}
        best = max(self.CS, key=lambda C: (cv[C]["balanced_accuracy"], cv[C]["top1"]))
        tuned = self._with(*self._fit(plan, x, labels, best), best)
        in_sample = score_on(tuned, plan, probs, labels)
        return tuned, {**cv[best], "in_sample": in_sample,
                       "cross_fitted_by_C": {str(C): cv[C]["balanced_accuracy"] for C in self.CS}}

    @classmethod
    def _param(cls, key, value):
        if key == "coef":
            return tuple(tuple(float(v) for v in row) for row in value)
        if key == "intercept":
            return tuple(float(v) for v in value)
        return float(value)


#: The routing rules by name: the enum of ``tdc.routing`` in ``config/schema.yaml`` (a test checks).
RULES: dict[str, type[RoutingRule]] = {r.name: r for r in (ArgmaxRule, ThresholdRule, PosteriorRule, GateRule)}
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
