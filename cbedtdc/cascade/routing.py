"""Routing of the TDC at inference, threshold tuning and the two accuracies (end to end, estimated).

Pure numpy (no torch, no h5py). ``probs`` is a list with one array ``(N, n_outputs)`` per level,
columns ``plan.outputs(k)`` followed by "rest" when ``plan.has_rest(k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cbedtdc import metrics
from cbedtdc.cascade.plan import LevelPlan

__all__ = [
    "Routing",
    "forward_mask",
    "route",
    "tune_thresholds",
    "oracle_predictions",
    "estimated_accuracy",
    "level_report",
    "softmax",
]


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


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64.

    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
