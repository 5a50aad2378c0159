"""Trickle-Down Classifier (TDC): level planning, training sets, routing and the two accuracies.

The classes of a run, ordered by training frequency, are split into levels. Level ``k`` is one
classifier trained by :mod:`cbedtdc.train`; a sample that level ``k`` does not keep trickles to
level ``k + 1``; the last level keeps everything. Two readings of "missed" (``tdc.mode``):

``rest``
    Level ``k`` has one output per class of level ``k`` plus a last output "rest" (not for the
    last level). Its training set is every sample whose class belongs to levels ``k..K``; the
    samples of later levels are labelled "rest". At inference a sample trickles when "rest" wins
    (``routing="argmax"``) or when ``p(rest)`` exceeds a threshold tuned on dev (``"threshold"``).
``hard``
    Level ``k`` trains on the samples that reached it (level 1: all). Its outputs are the classes
    of levels ``1..k`` (``hard_outputs="cumulative"``, so that a head-class sample that an earlier
    level got wrong can still be learnt further down) or of level ``k`` only (``"own"``). After
    training, the samples it gets wrong or whose class is not among its outputs trickle to level
    ``k + 1`` and form its training set. At inference a sample trickles when the largest class
    probability is below a per-level threshold tuned on dev to maximise balanced accuracy.

Everything here except :func:`predict_levels` and :func:`load_levels` is pure numpy and is
tested on hand-made probabilities. Probabilities of level ``k`` are an array ``(N, n_outputs)``
whose columns are ``plan.outputs(k)`` followed by "rest" when ``plan.has_rest(k)``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cbedtdc import metrics

__all__ = [
    "MODES",
    "LevelPlan",
    "Routing",
    "order_by_count",
    "plan_levels",
    "split_by_mass",
    "level_budgets",
    "whole_epochs",
    "check_trainable",
    "level_training_mask",
    "trickle",
    "route",
    "tune_thresholds",
    "oracle_predictions",
    "estimated_accuracy",
    "level_report",
    "read_missed",
    "write_missed",
    "level_job",
    "collect_missed",
    "tune_routing",
    "load_routing",
    "check_level_model",
    "forward_mask",
    "predict_levels",
    "softmax",
    "inference_device",
    "classify_files",
    "find_inputs",
    "read_samples",
    "prediction_fields",
]

log = logging.getLogger(__name__)

MODES = ("rest", "hard")
REST = "rest"


# --------------------------------------------------------------------------------------------
# Level planning
# --------------------------------------------------------------------------------------------


def order_by_count(counts: dict, classes) -> list[int]:
    """Classes sorted by decreasing training count; ties keep the order of ``classes``.

    >>> order_by_count({1: 5, 2: 9, 3: 5}, [3, 1, 2])
    [2, 3, 1]
    """
    rank = {int(c): i for i, c in enumerate(classes)}
    return sorted((int(c) for c in classes), key=lambda c: (-int(counts.get(c, 0)), rank[c]))


def split_by_mass(masses, n_levels: int) -> list[int]:
    """Sizes of ``n_levels`` contiguous groups of ``masses`` with sums as equal as possible.

    Minimises the sum of squared deviations of the group sums from ``sum / n_levels`` by
    dynamic programming; every group holds at least one element.

    >>> split_by_mass([50, 20, 10, 10, 5, 5], 2)
    [1, 5]
    >>> split_by_mass([4, 3, 3, 2, 2, 1, 1], 3)
    [1, 2, 4]
    """
    masses = [float(m) for m in masses]
    n = len(masses)
    if not 1 <= n_levels <= n:
        raise ValueError(f"tdc.n_levels={n_levels}: must be between 1 and the number of classes ({n})")
    target = sum(masses) / n_levels
    prefix = np.concatenate([[0.0], np.cumsum(masses)])
    inf = float("inf")
    cost = np.full((n_levels + 1, n + 1), inf)
    back = np.zeros((n_levels + 1, n + 1), dtype=int)
    cost[0, 0] = 0.0
    for k in range(1, n_levels + 1):
        for end in range(k, n - (n_levels - k) + 1):
            for start in range(k - 1, end):
                c = cost[k - 1, start] + (prefix[end] - prefix[start] - target) ** 2
                if c < cost[k, end] - 1e-12:
                    cost[k, end] = c
                    back[k, end] = start
    sizes, end = [], n
    for k in range(n_levels, 0, -1):
        start = int(back[k, end])
        sizes.append(int(end - start))
        end = start
    return sizes[::-1]


def plan_levels(counts: dict, classes, *, how: str = "explicit", level_sizes=None, n_levels=None) -> list[list[int]]:
    """Split the run's classes, most frequent first, into levels.

    Parameters
    ----------
    counts : dict
        Training samples per space group (groups missing count 0).
    classes : list of int
        Classes of the run.
    how : {"explicit", "auto"}
        ``explicit``: ``level_sizes`` classes per level (must add up to the number of classes);
        ``auto``: ``n_levels`` levels of about equal training-sample mass.

    >>> plan_levels({14: 9, 225: 8, 1: 3, 2: 2}, [14, 225, 1, 2], level_sizes=[1, 3])
    [[14], [225, 1, 2]]
    >>> plan_levels({14: 9, 225: 8, 1: 5, 2: 4}, [14, 225, 1, 2], how="auto", n_levels=2)
    [[14], [225, 1, 2]]
    """
    ordered = order_by_count(counts, classes)
    if how == "explicit":
        sizes = [int(s) for s in (level_sizes or [])]
        if not sizes or any(s < 1 for s in sizes) or sum(sizes) != len(ordered):
            raise ValueError(
                f"tdc.level_sizes={sizes} must be positive and add up to the {len(ordered)} classes of the run; "
                "change tdc.level_sizes or set tdc.levels: auto with tdc.n_levels")
    elif how == "auto":
        sizes = split_by_mass([counts.get(c, 0) for c in ordered], int(n_levels or 0))
    else:
        raise ValueError(f"tdc.levels={how!r}: must be 'explicit' or 'auto'")
    empty = [c for c in ordered if not counts.get(c, 0)]
    if empty:
        log.warning("classes %s have no training sample; their level cannot learn them", empty)
    out, start = [], 0
    for s in sizes:
        out.append(ordered[start:start + s])
        start += s
    return out


@dataclass
class LevelPlan:
    """The levels of a run and how they are trained and routed (``levels.json``)."""

    levels: list[list[int]]
    mode: str = "rest"
    hard_outputs: str = "cumulative"
    routing: str = "argmax"  # rest mode: argmax | threshold; hard mode: always threshold
    counts: dict = field(default_factory=dict)  # training samples per class (str keys in JSON)
    budgets: list[int] = field(default_factory=list)  # budget_images per level
    flat_images: int = 0  # images the flat baseline sees (train.epochs x n_train)
    n_train: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"tdc.mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if self.hard_outputs not in ("cumulative", "own"):
            raise ValueError(f"tdc.hard_outputs={self.hard_outputs!r}: must be 'cumulative' or 'own'")
        if self.routing not in ("argmax", "threshold"):
            raise ValueError(f"tdc.routing={self.routing!r}: must be 'argmax' or 'threshold'")
        self.levels = [[int(c) for c in lv] for lv in self.levels]
        flat = [c for lv in self.levels for c in lv]
        if not self.levels or any(not lv for lv in self.levels) or len(set(flat)) != len(flat):
            raise ValueError(f"levels {self.levels}: need at least one level, no empty level, no class twice")
        self.counts = {int(k): int(v) for k, v in self.counts.items()}

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def classes(self) -> list[int]:
        """All classes, in level order."""
        return [c for lv in self.levels for c in lv]

    def own(self, k: int) -> list[int]:
        """Classes that belong to level ``k`` (0-based)."""
        return list(self.levels[k])

    def later(self, k: int) -> list[int]:
        """Classes of the levels after ``k``."""
        return [c for lv in self.levels[k + 1:] for c in lv]

    def outputs(self, k: int) -> list[int]:
        """Class outputs of level ``k`` (without "rest")."""
        if self.mode == "hard" and self.hard_outputs == "cumulative":
            return [c for lv in self.levels[: k + 1] for c in lv]
        return self.own(k)

    def has_rest(self, k: int) -> bool:
        """Whether level ``k`` has the extra "rest" output."""
        return self.mode == "rest" and k < self.n_levels - 1

    def level_of(self, labels) -> np.ndarray:
        """0-based level owning each label; -1 for labels outside the run."""
        owner = {c: k for k, lv in enumerate(self.levels) for c in lv}
        return np.array([owner.get(int(v), -1) for v in np.asarray(labels).ravel()], dtype=np.int64)

    def uses_thresholds(self) -> bool:
        return self.mode == "hard" or self.routing == "threshold"

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = {str(k): v for k, v in self.counts.items()}
        d["outputs"] = [self.outputs(k) for k in range(self.n_levels)]
        d["rest"] = [self.has_rest(k) for k in range(self.n_levels)]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "LevelPlan":
        keys = {"levels", "mode", "hard_outputs", "routing", "counts", "budgets", "flat_images", "n_train"}
        return cls(**{k: v for k, v in d.items() if k in keys})

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "LevelPlan":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a readable levels.json ({err}); rerun rule plan_levels") from err


def check_trainable(plan: LevelPlan) -> None:
    """Raise ``ValueError`` when a level would have fewer than 2 outputs (nothing to learn).

    >>> check_trainable(LevelPlan([[1, 2], [3]]))
    Traceback (most recent call last):
    ...
    ValueError: level 2 of [[1, 2], [3]] has 1 output (3); a classifier needs at least 2: ...
    """
    for k in range(plan.n_levels):
        outs = plan.outputs(k)
        n = len(outs) + plan.has_rest(k)
        if n < 2:
            raise ValueError(
                f"level {k + 1} of {plan.levels} has {n} output ({', '.join(map(str, outs))}); a classifier needs "
                "at least 2: give the last level (rest mode) or every level (hard mode, hard_outputs own) 2+ classes "
                "in tdc.level_sizes")


def level_budgets(plan: LevelPlan, train_labels, total_images: int, split: str = "proportional") -> list[int]:
    """Training images per level so that the levels together see ``total_images``.

    ``proportional``: in proportion to the samples of the classes of levels ``k..K`` (the
    training-set size of level ``k`` in the rest reading, the same weights in the hard reading,
    whose sets are only known after training); ``equal``: the same for every level. The last
    level takes the rounding remainder, so the budgets add up exactly.

    >>> plan = LevelPlan([[1], [2, 3]])
    >>> level_budgets(plan, [1, 1, 2, 3], 600)
    [400, 200]
    >>> level_budgets(plan, [1, 1, 2, 3], 600, "equal")
    [300, 300]
    """
    labels = np.asarray(train_labels)
    if split == "equal":
        weights = np.ones(plan.n_levels)
    elif split == "proportional":
        weights = np.array([np.isin(labels, plan.own(k) + plan.later(k)).sum() for k in range(plan.n_levels)],
                           dtype=float)
        if weights.sum() == 0:
            weights = np.ones(plan.n_levels)
    else:
        raise ValueError(f"tdc.budget_split={split!r}: must be 'proportional' or 'equal'")
    raw = np.floor(total_images * weights / weights.sum()).astype(int)
    raw[-1] = total_images - raw[:-1].sum()
    return [int(b) for b in raw]


def whole_epochs(planned: float, n: int, carry: float = 0.0) -> tuple[int, float]:
    """Round a level's budget to whole epochs over its ``n`` samples (the engine trains whole epochs).

    Returns ``(budget, carry)``: ``budget = epochs x n`` with ``epochs = max(1, round((planned +
    carry) / n))``, and the rounding error to pass on to the next level, so that the levels'
    total stays within one level's rounding of the flat budget.

    >>> whole_epochs(250, 100)
    (200, 50.0)
    >>> whole_epochs(250, 100, carry=50.0)
    (300, 0.0)
    """
    if n < 1:
        raise ValueError("a level needs at least one training sample")
    target = float(planned) + float(carry)
    budget = max(1, round(target / n)) * int(n)
    return int(budget), target - budget


# --------------------------------------------------------------------------------------------
# Training sets and the training-time trickle
# --------------------------------------------------------------------------------------------


def level_training_mask(plan: LevelPlan, k: int, labels, reached=None) -> np.ndarray:
    """Which samples level ``k`` (0-based) trains on.

    rest: the samples whose class belongs to levels ``k..K`` (later ones become "rest").
    hard: the samples that reached level ``k`` (``reached``; all for level 0) whose class is
    among its outputs (the others cannot be learnt by it and go straight on).

    >>> plan = LevelPlan([[1], [2], [3]])
    >>> level_training_mask(plan, 1, [1, 2, 3, 2]).tolist()
    [False, True, True, True]
    >>> hard = LevelPlan([[1], [2], [3]], mode="hard")
    >>> level_training_mask(hard, 1, [1, 2, 3, 2], reached=[True, False, True, True]).tolist()
    [True, False, False, True]
    """
    labels = np.asarray(labels)
    if plan.mode == "rest":
        return np.isin(labels, plan.own(k) + plan.later(k))
    ok = np.isin(labels, plan.outputs(k))
    if reached is None:
        if k > 0:
            raise ValueError(f"hard mode: level {k + 1} needs the samples that reached it (missed.csv of level {k})")
        return ok
    return ok & np.asarray(reached, dtype=bool)


def trickle(plan: LevelPlan, k: int, labels, probs, reached=None):
    """Training-time trickle of level ``k`` (0-based): which samples reach level ``k + 1``, and why.

    Returns ``(mask, reasons)`` over all samples; ``reasons`` is "" for samples that stay.
    rest: a sample of level ``k..K`` trickles when its class belongs to a later level
    (``"later_level"``). hard: a sample that reached level ``k`` trickles when its class is not
    among the level's outputs (``"not_in_level"``) or the level predicts it wrong (``"wrong"``).

    >>> hard = LevelPlan([[1, 2], [3]], mode="hard")
    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.5, 0.5]])
    >>> m, why = trickle(hard, 0, [1, 2, 3], p)
    >>> m.tolist(), why.tolist()
    ([False, True, True], ['', 'wrong', 'not_in_level'])
    """
    labels = np.asarray(labels)
    n = len(labels)
    reached = np.ones(n, dtype=bool) if reached is None else np.asarray(reached, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    if k >= plan.n_levels - 1:
        return np.zeros(n, dtype=bool), reasons
    if plan.mode == "rest":
        mask = reached & np.isin(labels, plan.later(k))
        reasons[mask] = "later_level"
        return mask, reasons
    outs = np.asarray(plan.outputs(k))
    probs = np.asarray(probs)
    pred = outs[np.argmax(probs[:, : len(outs)], axis=1)]
    foreign = reached & ~np.isin(labels, outs)
    wrong = reached & ~foreign & (pred != labels)
    reasons[foreign] = "not_in_level"
    reasons[wrong] = "wrong"
    return foreign | wrong, reasons


# --------------------------------------------------------------------------------------------
# Routing at inference
# --------------------------------------------------------------------------------------------


@dataclass
class Routing:
    """Where each sample ended: ``kept`` (0-based level), ``pred`` (space group), ``conf``
    (its probability at the keeping level) and ``reached`` (N, K) booleans."""

    kept: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    reached: np.ndarray

    def kept_sets(self) -> list[np.ndarray]:
        """Indices kept by each level: a partition of ``range(N)``."""
        return [np.flatnonzero(self.kept == k) for k in range(self.reached.shape[1])]


def _check_probs(plan: LevelPlan, probs) -> list[np.ndarray]:
    if len(probs) != plan.n_levels:
        raise ValueError(f"got probabilities of {len(probs)} levels, the plan has {plan.n_levels}")
    out, n = [], None
    for k, p in enumerate(probs):
        p = np.asarray(p, dtype=float)
        want = len(plan.outputs(k)) + plan.has_rest(k)
        if p.ndim != 2 or p.shape[1] != want:
            raise ValueError(f"level {k + 1}: probabilities of shape {p.shape}, expected (N, {want}) "
                             f"= outputs {plan.outputs(k)}{' + rest' if plan.has_rest(k) else ''}")
        if n is not None and len(p) != n:
            raise ValueError(f"level {k + 1}: {len(p)} samples, level 1 has {n}")
        n = len(p)
        out.append(p)
    return out


def forward_mask(plan: LevelPlan, k: int, p: np.ndarray, threshold=None) -> np.ndarray:
    """Pure decision: which samples level ``k`` (0-based) forwards, given its probabilities.

    rest + argmax: "rest" has the largest probability; rest + threshold: ``p(rest) > threshold``;
    hard: the largest class probability ``< threshold``. The last level forwards nothing.

    >>> rest = LevelPlan([[1, 2], [3]])
    >>> forward_mask(rest, 0, np.array([[0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])).tolist()
    [False, True]
    >>> hard = LevelPlan([[1, 2], [3]], mode="hard")
    >>> forward_mask(hard, 0, np.array([[0.9, 0.1], [0.55, 0.45]]), threshold=0.6).tolist()
    [False, True]
    """
    p = np.asarray(p, dtype=float)
    if k >= plan.n_levels - 1:
        return np.zeros(len(p), dtype=bool)
    if plan.mode == "rest":
        if plan.routing == "argmax":
            return np.argmax(p, axis=1) == p.shape[1] - 1
        return p[:, -1] > _threshold(threshold, k)
    return p.max(axis=1) < _threshold(threshold, k)


def _threshold(threshold, k):
    if threshold is None:
        raise ValueError(f"level {k + 1}: threshold routing needs a threshold (tuned on dev by rule tune_routing)")
    return float(threshold)


def route(plan: LevelPlan, probs, thresholds=None) -> Routing:
    """Send every sample down the levels until one keeps it; the last level keeps the rest.

    ``thresholds``: one per level except the last (ignored in rest + argmax routing). The
    prediction of the keeping level is its most probable class output ("rest" excluded).

    >>> plan = LevelPlan([[1, 2], [3, 4]])
    >>> p1 = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> p2 = np.array([[0.5, 0.5], [0.3, 0.7]])
    >>> r = route(plan, [p1, p2])
    >>> r.kept.tolist(), r.pred.tolist()
    ([0, 1], [1, 4])
    """
    probs = _check_probs(plan, probs)
    n, K = len(probs[0]), plan.n_levels
    if thresholds is not None and len(thresholds) < K - 1:
        raise ValueError(f"need {K - 1} thresholds (one per level but the last), got {list(thresholds)}")
    kept = np.full(n, -1, dtype=np.int64)
    pred = np.zeros(n, dtype=np.int64)
    conf = np.zeros(n)
    reached = np.zeros((n, K), dtype=bool)
    active = np.ones(n, dtype=bool)
    for k, p in enumerate(probs):
        reached[:, k] = active
        fwd = forward_mask(plan, k, p, None if thresholds is None or k >= K - 1 else thresholds[k])
        keep = active & ~fwd
        outs = np.asarray(plan.outputs(k))
        cls = p[:, : len(outs)]
        best = np.argmax(cls, axis=1)
        kept[keep] = k
        pred[keep] = outs[best[keep]]
        conf[keep] = cls[keep, best[keep]]
        active &= fwd
    assert not active.any() and (kept >= 0).all(), "routing lost samples"
    return Routing(kept=kept, pred=pred, conf=conf, reached=reached)


def tune_thresholds(plan: LevelPlan, probs, labels, *, grid=None, sweeps: int = 3) -> list[float]:
    """Per-level thresholds that maximise the end-to-end balanced accuracy on ``labels`` (dev).

    Coordinate ascent: each sweep sets one level's threshold at a time to the grid value with
    the best balanced accuracy (ties: best top-1, then the value closest to 0.5), the others
    fixed. Returns ``K - 1`` thresholds (empty for one level, or rest + argmax routing).

    >>> plan = LevelPlan([[1], [2, 3]], mode="hard", hard_outputs="own")
    >>> p1 = np.array([[1.0], [1.0], [1.0]])  # a 1-class level is always sure: cannot route
    >>> p2 = np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8]])
    >>> tune_thresholds(plan, [p1, p2], [1, 2, 3])
    [0.5]
    """
    probs = _check_probs(plan, probs)
    labels = np.asarray(labels)
    K = plan.n_levels
    if K == 1 or not plan.uses_thresholds():
        return []
    grid = np.round(np.linspace(0.0, 1.0, 41), 4) if grid is None else np.asarray(grid, dtype=float)
    th = [0.5] * (K - 1)
    classes = plan.classes

    def objective(t):
        r = route(plan, probs, t)
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


# --------------------------------------------------------------------------------------------
# Estimated (oracle-routed) vs end-to-end accuracy
# --------------------------------------------------------------------------------------------


def oracle_predictions(plan: LevelPlan, probs, labels) -> np.ndarray:
    """Prediction of each sample by the level that owns its true class (perfect routing).

    >>> plan = LevelPlan([[1, 2], [3, 4]])
    >>> p1 = np.array([[0.1, 0.2, 0.7], [0.3, 0.2, 0.5]])
    >>> p2 = np.array([[0.5, 0.5], [0.6, 0.4]])
    >>> oracle_predictions(plan, [p1, p2], [2, 4]).tolist()
    [2, 3]
    """
    probs = _check_probs(plan, probs)
    owner = plan.level_of(labels)
    if (owner < 0).any():
        raise ValueError("labels outside the classes of the levels")
    pred = np.zeros(len(owner), dtype=np.int64)
    for k, p in enumerate(probs):
        outs = np.asarray(plan.outputs(k))
        m = owner == k
        pred[m] = outs[np.argmax(p[m, : len(outs)], axis=1)]
    return pred


def estimated_accuracy(plan: LevelPlan, probs, labels) -> dict:
    """The paper-style "estimated" accuracy: sum over levels of P(class in level k) x acc_k.

    ``acc_k`` is the accuracy of level ``k`` on the samples of its own classes, taking its most
    probable class output ("rest" ignored), i.e. routing is assumed perfect. Returns
    ``{"top1", "balanced_accuracy", "per_level": [{"share", "accuracy"}...]}``.

    >>> plan = LevelPlan([[1], [2, 3]])
    >>> p1 = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    >>> p2 = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1], [0.9, 0.1]])
    >>> est = estimated_accuracy(plan, [p1, p2], [1, 1, 2, 3])
    >>> est["top1"], [lv["accuracy"] for lv in est["per_level"]]
    (0.75, [1.0, 0.5])
    """
    labels = np.asarray(labels)
    pred = oracle_predictions(plan, probs, labels)
    owner = plan.level_of(labels)
    per_level = []
    for k in range(plan.n_levels):
        m = owner == k
        per_level.append({"share": float(m.mean()) if len(m) else float("nan"),
                          "accuracy": float((pred[m] == labels[m]).mean()) if m.any() else float("nan")})
    return {"top1": metrics.top1(labels, pred),
            "balanced_accuracy": metrics.balanced_accuracy(labels, pred, plan.classes),
            "per_level": per_level}


def level_report(plan: LevelPlan, routing: Routing, labels) -> list[dict]:
    """Per-level counts at inference: reached, kept, kept that truly belong there, accuracy.

    ``belongs``: kept samples whose class is one of the level's own classes; ``own_total``:
    samples of the level's own classes; ``own_kept``: of those, kept by the level (routing
    recall); ``accuracy``: correct among the kept samples.

    >>> plan = LevelPlan([[1], [2]])
    >>> r = route(plan, [np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.ones((3, 1))])
    >>> [(d["kept"], d["belongs"], d["correct"]) for d in level_report(plan, r, [1, 2, 2])]
    [(2, 1, 1), (1, 1, 1)]
    """
    labels = np.asarray(labels)
    n = len(labels)
    owner = plan.level_of(labels)
    out = []
    for k in range(plan.n_levels):
        kept = routing.kept == k
        own = owner == k
        correct = int((routing.pred[kept] == labels[kept]).sum())
        out.append({
            "level": k + 1,
            "classes": plan.own(k),
            "reached": int(routing.reached[:, k].sum()),
            "kept": int(kept.sum()),
            "kept_fraction": float(kept.mean()) if n else float("nan"),
            "belongs": int((kept & own).sum()),
            "own_total": int(own.sum()),
            "own_kept": int((kept & own).sum()),
            "correct": correct,
            "accuracy": correct / int(kept.sum()) if kept.any() else float("nan"),
        })
    return out


# --------------------------------------------------------------------------------------------
# missed.csv, level jobs and model predictions (I/O)
# --------------------------------------------------------------------------------------------


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    from cbedtdc.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


MISSED_FIELDS = ["key", "split", "space_group", "reason", "pred", "p_pred", "p_rest", "routed"]


def write_missed(path, rows: list[dict]) -> None:
    """Write the samples that reach the next level (``missed.csv``) atomically."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MISSED_FIELDS, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: row.get(k, "") for k in MISSED_FIELDS})
    atomic_write_text(path, buf.getvalue())


def read_missed(path) -> dict[str, list[str]]:
    """``{split: [keys]}`` of a ``missed.csv``."""
    out: dict[str, list[str]] = {"train": [], "dev": []}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "key" not in reader.fieldnames or "split" not in reader.fieldnames:
                raise ValueError("no key/split columns")
            for row in reader:
                out.setdefault(row["split"], []).append(row["key"])
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable missed.csv ({err}); rerun rule collect_missed") from err
    return out


def level_job(plan: LevelPlan, level: int, train_keys, train_labels, dev_keys, dev_labels,
              missed=None, seen_before=None) -> dict:
    """Arguments of :func:`cbedtdc.train.fit` for level ``level`` (1-based).

    Returns ``{"classes", "rest", "train_keys", "dev_keys", "budget_images"}``. ``missed`` is
    ``read_missed()`` of the previous level (hard mode, level > 1). The budget is the planned
    share rounded to whole epochs, carrying the rounding of the earlier levels: in the rest
    reading their training sets are known from the plan; in the hard reading ``seen_before``
    gives the images the earlier levels actually saw (their ``train.json``).
    """
    k = level - 1
    if not 0 <= k < plan.n_levels:
        raise ValueError(f"level {level}: the plan has levels 1..{plan.n_levels}")
    sets = {}
    for split, keys, labels in (("train", train_keys, train_labels), ("dev", dev_keys, dev_labels)):
        keys = np.asarray(list(keys), dtype=object)
        reached = None
        if plan.mode == "hard" and k > 0:
            if missed is None:
                raise ValueError(f"hard mode: level {level} needs missed.csv of level {level - 1}")
            reached = np.isin(keys, np.asarray(missed.get(split, []), dtype=object))
        mask = level_training_mask(plan, k, labels, reached)
        sets[split] = [str(x) for x in keys[mask]]
    budget = None
    if plan.budgets and sets["train"]:
        if plan.mode == "rest":
            labels = np.asarray(train_labels)
            carry = 0.0
            for j in range(k + 1):
                n_j = max(1, int(level_training_mask(plan, j, labels).sum()))
                budget, carry = whole_epochs(plan.budgets[j], n_j, carry)
        else:
            carry = 0.0
            if k > 0 and seen_before is not None:
                carry = float(sum(plan.budgets[:k]) - sum(seen_before))
            elif k > 0:
                log.warning("level %d: images seen by the earlier levels unknown; no rounding carried", level)
            budget, _ = whole_epochs(plan.budgets[k], len(sets["train"]), carry)
    return {"classes": plan.outputs(k), "rest": plan.has_rest(k), "train_keys": sets["train"],
            "dev_keys": sets["dev"], "budget_images": budget}


def inference_device(name: str = "auto") -> str:
    """``cpu``, ``cuda``, or for ``auto`` the first GPU when torch sees one (CPU results are the
    deterministic reference)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64.

    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def level_dir(tdc_dir, level: int) -> Path:
    return Path(tdc_dir) / f"level_{level}"


def load_levels(tdc_dir, plan: LevelPlan | None = None, device: str = "cpu"):
    """Load ``best.pt`` of every level and check its outputs against the plan."""
    from cbedtdc.train import load_model

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
        raise ValueError(f"{path}: outputs {classes} rest={bool(meta.get('rest'))} do not match levels.json "
                         f"(level {level}: {plan.outputs(k)} rest={plan.has_rest(k)}); retrain the level")


def collect_missed(levels_path, level: int, model_path, shard_root, *, missed_path=None, out_path=None,
                   batch_size: int = 64, device: str = "cpu"):
    """Run level ``level`` (1-based) on the train and dev samples that reached it; list those that trickle.

    Returns ``(rows, stats)`` and writes ``rows`` to ``out_path`` (``missed.csv``) when given.
    ``stats[split]`` holds ``reached``, ``missed`` and the count per reason.
    """
    from cbedtdc.data import ShardDataset
    from cbedtdc.train import load_model, predict

    plan = LevelPlan.load(levels_path)
    k = level - 1
    if not 0 <= k < plan.n_levels - 1:
        raise ValueError(f"level {level}: missed samples exist for levels 1..{plan.n_levels - 1} "
                         "(the last level keeps everything)")
    model, meta = load_model(model_path, device=inference_device(device))
    check_level_model(plan, level, meta, model_path)
    prev = read_missed(missed_path) if missed_path else None
    if plan.mode == "hard" and k > 0 and prev is None:
        raise ValueError(f"hard mode: level {level} needs missed.csv of level {level - 1}")
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
        routed = forward_mask(plan, k, probs) if plan.mode == "rest" and plan.routing == "argmax" else None
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


def tune_routing(tdc_dir, shard_root, out_path, *, routing: str = "argmax", batch_size: int = 64,
                 device: str = "cpu") -> dict:
    """Tune the per-level thresholds on dev (when the routing uses them) and write ``routing.json``.

    ``routing`` is the rest reading's rule (``argmax`` or ``threshold``); the hard reading always
    uses thresholds. It lives here, not in ``levels.json``, so changing it never retrains a level.

    ``routing.json`` holds ``mode``, ``routing``, ``thresholds`` (one per level but the last) and,
    when tuned, the dev balanced accuracy and top-1 at the tuned thresholds and at 0.5.
    """
    from cbedtdc.data import ShardDataset

    plan = LevelPlan.load(Path(tdc_dir) / "levels.json")
    if plan.mode == "rest":
        plan.routing = routing
        plan.__post_init__()
    out = {"mode": plan.mode, "routing": "threshold" if plan.uses_thresholds() else "argmax", "thresholds": [],
           "levels": plan.levels}
    if plan.uses_thresholds() and plan.n_levels > 1:
        ds = ShardDataset(shard_root, "dev", classes=plan.classes)
        if not len(ds):
            raise ValueError(f"{shard_root}/dev.csv has no sample of the run's classes: cannot tune the thresholds")
        _, models = load_levels(tdc_dir, plan, device=inference_device(device))
        keys, probs = predict_levels(models, shard_root, "dev", keys=list(ds.keys), batch_size=batch_size)
        labels = ds.labels
        th = tune_thresholds(plan, probs, labels)
        for name, t in (("tuned", th), ("default_0.5", [0.5] * (plan.n_levels - 1))):
            r = route(plan, probs, t)
            out[f"dev_{name}"] = {"balanced_accuracy": metrics.balanced_accuracy(labels, r.pred, plan.classes),
                                  "top1": metrics.top1(labels, r.pred),
                                  "kept_fraction": [float((r.kept == k).mean()) for k in range(plan.n_levels)]}
        out["thresholds"] = th
        out["n_dev"] = int(len(labels))
        log.info("thresholds tuned on %d dev samples: %s (dev balanced accuracy %.4f, at 0.5: %.4f)", len(labels),
                 th, out["dev_tuned"]["balanced_accuracy"], out["dev_default_0.5"]["balanced_accuracy"])
    atomic_write_text(out_path, json.dumps(out, indent=2) + "\n")
    return out


def load_routing(path, plan: LevelPlan) -> list[float] | None:
    """Thresholds of ``routing.json`` checked against the plan (``None`` for argmax routing).

    Sets ``plan.routing`` to the file's rule, so that :func:`route` applies it.
    """
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable routing.json ({err}); rerun rule tune_routing") from err
    if d.get("mode") != plan.mode or d.get("levels") != plan.levels:
        raise ValueError(f"{path} was tuned for mode {d.get('mode')} levels {d.get('levels')}, levels.json has "
                         f"{plan.mode} {plan.levels}; rerun rule tune_routing")
    if plan.mode == "rest":
        plan.routing = d.get("routing", "argmax")
        plan.__post_init__()
    if not plan.uses_thresholds():
        return None
    th = [float(t) for t in d.get("thresholds", [])]
    if len(th) != plan.n_levels - 1:
        raise ValueError(f"{path}: {len(th)} thresholds for {plan.n_levels} levels")
    return th


# --------------------------------------------------------------------------------------------
# Classify new challenge-layout files with a trained run
# --------------------------------------------------------------------------------------------


def find_inputs(inputs) -> list[Path]:
    """HDF5 files named in ``inputs``; folders are searched recursively for ``*.h5``.

    A path that does not exist raises ``FileNotFoundError`` naming it; a folder without any
    ``.h5`` file raises too (nothing to classify is a user error, not an empty result).
    """
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*.h5") if q.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no .h5 file")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(dict.fromkeys(files))


def read_samples(path, image_size: int):
    """Yield ``(group, uint8 stack (3, S, S) or None, true space group or None, reason)`` for one file.

    Uses the data stage's checks (:func:`cbedtdc.io.check_stack`) and preprocessing
    (:func:`cbedtdc.preprocess.preprocess_stack`); a file that cannot be opened yields one entry
    with group "" and the reason. The ``space_group`` attribute is optional (new data).
    """
    import h5py

    from cbedtdc.io import STACK, check_stack, parse_space_group, sample_order
    from cbedtdc.preprocess import preprocess_stack

    try:
        fh = h5py.File(path, "r")
    except Exception as err:  # not HDF5, truncated, unreadable
        yield "", None, None, f"cannot open: {' '.join(str(err).split()) or type(err).__name__}"
        return
    with fh:
        try:
            names = sorted(fh.keys(), key=sample_order)
        except Exception as err:
            yield "", None, None, f"cannot list groups: {' '.join(str(err).split())}"
            return
        if not names:
            yield "", None, None, "no sample groups"
        for name in names:
            try:
                node = fh[name]
                if not isinstance(node, h5py.Group):
                    yield name, None, None, f"not a sample group ({type(node).__name__} at file root)"
                    continue
                if STACK not in node:
                    yield name, None, None, f"missing dataset {STACK}"
                    continue
                stack, reason = check_stack(node[STACK], min_side=image_size)
                if reason:
                    yield name, None, None, reason
                    continue
                truth = None
                if "space_group" in node.attrs:
                    try:
                        truth = parse_space_group(node.attrs["space_group"])
                    except ValueError:
                        truth = None
                yield name, preprocess_stack(stack, image_size), truth, ""
            except Exception as err:  # broken object header or link
                yield name, None, None, f"cannot read group: {' '.join(str(err).split())}"


def _load_run(run_dir, device: str = "cpu"):
    """``(plan, models, thresholds)`` of a TDC folder, or a one-level plan for a flat ``best.pt`` folder."""
    from cbedtdc.train import load_model

    run = Path(run_dir)
    for tdc in (run, run / "tdc"):
        if (tdc / "levels.json").exists():
            plan, models = load_levels(tdc, device=device)
            routing = tdc / "routing.json"
            if not routing.exists():
                raise FileNotFoundError(f"{routing} missing: finish the run (rule tune_routing) before classifying")
            return plan, models, load_routing(routing, plan)
    if (run / "best.pt").exists():
        model, meta = load_model(run / "best.pt", device=inference_device(device))
        if meta.get("rest"):
            raise ValueError(f"{run}/best.pt has a 'rest' output: classify its whole TDC folder instead")
        return LevelPlan([[int(c) for c in meta["classes"]]]), [(model, meta)], None
    raise FileNotFoundError(f"{run}: neither a TDC folder (levels.json) nor a model folder (best.pt); "
                            "give results/tdc or results/flat/<loss>")


def classify_files(run_dir, inputs, *, batch_size: int = 64, top: int = 5, device: str = "cpu"):
    """Classify every sample of challenge-layout files with a trained TDC (or flat model).

    Returns ``(predictions, rejected)``: one dict per classified sample (``key``, ``space_group``,
    ``level``, ``prob``, ``top1_space_group``/``top1_prob`` ... ``top5_*`` from the keeping
    level's class outputs, ``true_space_group`` when the file has one) and one dict per bad
    file or sample (``file``, ``group``, ``reason``), as the data stage reports them.
    """
    import torch

    device = inference_device(device)
    plan, models, thresholds = _load_run(run_dir, device)
    meta0 = models[0][1]
    size = int(meta0["image_size"])
    if any(int(m["image_size"]) != size for _, m in models):
        raise ValueError(f"{run_dir}: levels trained at different image sizes")
    predictions, rejected = [], []

    def run_batch(batch):
        x = torch.from_numpy(np.stack([b[1] for b in batch])).to(device)
        probs = []
        with torch.inference_mode():
            for model, meta in models:
                if meta["orientation"] == "random":
                    logits = sum(model(x[:, p: p + 1]) for p in range(x.shape[1])) / x.shape[1]
                else:
                    logits = model(x)
                probs.append(softmax(logits.float().cpu().numpy()))
        r = route(plan, probs, thresholds)
        for i, (key, _, truth) in enumerate(batch):
            k = int(r.kept[i])
            outs = plan.outputs(k)
            cls = probs[k][i, : len(outs)]
            order = np.argsort(-cls, kind="stable")[:top]
            row = {"key": key, "space_group": int(r.pred[i]), "level": k + 1, "prob": round(float(r.conf[i]), 6),
                   "true_space_group": "" if truth is None else truth}
            for j in range(top):
                row[f"top{j + 1}_space_group"] = int(outs[order[j]]) if j < len(order) else ""
                row[f"top{j + 1}_prob"] = round(float(cls[order[j]]), 6) if j < len(order) else ""
            predictions.append(row)

    batch = []
    for path in find_inputs(inputs):
        for group, img, truth, reason in read_samples(path, size):
            if reason:
                log.warning("rejected %s/%s: %s", path.name, group, reason)
                rejected.append({"file": str(path), "group": group, "reason": reason})
                continue
            batch.append((f"{path.name}/{group}", img, truth))
            if len(batch) == batch_size:
                run_batch(batch)
                batch = []
    if batch:
        run_batch(batch)
    return predictions, rejected


def prediction_fields(top: int = 5) -> list[str]:
    """Column order of the classify CSV."""
    cols = ["key", "space_group", "level", "prob"]
    for j in range(1, top + 1):
        cols += [f"top{j}_space_group", f"top{j}_prob"]
    return cols + ["true_space_group"]
