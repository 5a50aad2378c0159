"""The arithmetic of routing, shared by every rule: the walk down the levels, the hierarchical posterior,
temperatures per level, and the two accuracies (end to end, estimated).

Pure numpy (no torch, no h5py). ``probs`` is a list with one array ``(N, n_outputs)`` per level,
columns ``plan.outputs(k)`` followed by "rest" when ``plan.has_rest(k)``. The rules themselves
(argmax, threshold, posterior) are the classes of :mod:`cbedtdc.cascade.routing.rules`.

The hierarchical posterior (:func:`posterior`): level ``k`` gives ``p_k(c)`` for its own classes and
``p_k(rest)``; the probability of a class ``c`` of level ``k`` is

.. math:: P(c) = \\prod_{j<k} p_j(\\mathrm{rest}) \\; p_k(c),

and the prediction is the argmax over all classes of all levels. No sample is forced down one path, and
the evidence of every level enters the product. With ``prior`` (training class frequencies) the argmax is
over ``P(c) / prior(c)``, the Bayes rule for balanced accuracy (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021). The level that keeps a sample is the level of its predicted class, so the kept
sets partition the samples. Temperatures: Guo et al., "On calibration of modern neural networks", ICML 2017.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cbedtdc import metrics
from cbedtdc.calibration import calibrate, fit_temperature, softmax
from cbedtdc.cascade.plan import LevelPlan
from cbedtdc.errors import InputError

__all__ = [
    "Routing",
    "check_probs",
    "walk",
    "posterior",
    "posterior_matrix",
    "check_level_probs",
    "level_targets",
    "calibrate",
    "fit_temperature",
    "fit_temperatures",
    "oracle_predictions",
    "estimated_accuracy",
    "level_report",
    "softmax",
]


@dataclass
class Routing:
    """Where each sample ended: ``kept`` (0-based level), ``pred`` (space group), ``conf``
    (its probability at the keeping level), ``reached`` (N, K) booleans and, for posterior
    routing, ``joint`` (N, C): ``P(c)`` of every class in level order, and ``scores``, what its argmax ranks."""

    kept: np.ndarray
    pred: np.ndarray
    conf: np.ndarray
    reached: np.ndarray
    joint: np.ndarray | None = None
    scores: np.ndarray | None = None  # posterior routing: what the argmax ranks (joint / prior with the prior)

    def kept_sets(self) -> list[np.ndarray]:
        """Indices kept by each level: a partition of ``range(N)``."""
        return [np.flatnonzero(self.kept == k) for k in range(self.reached.shape[1])]


def check_probs(plan: LevelPlan, probs) -> list[np.ndarray]:
    if len(probs) != plan.n_levels:
        raise InputError(f"got probabilities of {len(probs)} levels, the plan has {plan.n_levels}")
    out, n = [], None
    for k, p in enumerate(probs):
        p = np.asarray(p, dtype=float)
        want = len(plan.outputs(k)) + plan.has_rest(k)
        if p.ndim != 2 or p.shape[1] != want:
            raise InputError(f"level {k + 1}: probabilities of shape {p.shape}, expected (N, {want}) "
                             f"= outputs {plan.outputs(k)}{' + rest' if plan.has_rest(k) else ''}")
        if n is not None and len(p) != n:
            raise InputError(f"level {k + 1}: {len(p)} samples, level 1 has {n}")
        n = len(p)
        out.append(p)
    return out


def walk(plan: LevelPlan, probs, forwards: Callable[[int, np.ndarray], np.ndarray]) -> Routing:
    """Send every sample down the levels until one keeps it; the last level keeps the rest.

    ``forwards(k, p)`` is a rule's decision: the samples level ``k`` (0-based) passes on, given its
    probabilities ``p``; it is never asked about the last level. The prediction of the keeping level is
    its most probable class output ("rest" excluded).

    >>> plan = LevelPlan([[1, 2], [3, 4]])
    >>> p1 = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    >>> p2 = np.array([[0.5, 0.5], [0.3, 0.7]])
    >>> r = walk(plan, [p1, p2], lambda k, p: p[:, -1] > 0.5)
    >>> r.kept.tolist(), r.pred.tolist()
    ([0, 1], [1, 4])
    """
    probs = check_probs(plan, probs)
    n, K = len(probs[0]), plan.n_levels
    kept = np.full(n, -1, dtype=np.int64)
    pred = np.zeros(n, dtype=np.int64)
    conf = np.zeros(n)
    reached = np.zeros((n, K), dtype=bool)
    active = np.ones(n, dtype=bool)
    for k, p in enumerate(probs):
        reached[:, k] = active
        fwd = np.zeros(n, dtype=bool) if k == K - 1 else np.asarray(forwards(k, p), dtype=bool)
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


def check_level_probs(levels, probs) -> list[np.ndarray]:
    """Validate the probabilities of a rest-reading cascade and return them as float64 arrays.

    Level ``k`` (0-based) of ``K`` must have ``len(levels[k]) + 1`` columns (its classes, then
    "rest") for ``k < K - 1`` and ``len(levels[-1])`` columns for the last level; all levels must
    have the same number of rows, and no probability may be negative or NaN.

    >>> [p.shape for p in check_level_probs([[1], [2, 3]], [[[0.4, 0.6]], [[0.5, 0.5]]])]
    [(1, 2), (1, 2)]
    """
    levels = [[int(c) for c in lv] for lv in levels]
    if not levels or any(not lv for lv in levels):
        raise InputError(f"levels {levels}: need at least one level and no empty level")
    flat = [c for lv in levels for c in lv]
    if len(set(flat)) != len(flat):
        raise InputError(f"levels {levels}: a class appears in two levels")
    if len(probs) != len(levels):
        raise InputError(f"got probabilities of {len(probs)} levels, the plan has {len(levels)}")
    out, n = [], None
    for k, p in enumerate(probs):
        p = np.asarray(p, dtype=np.float64)
        last = k == len(levels) - 1
        want = len(levels[k]) + (0 if last else 1)
        if p.ndim != 2 or p.shape[1] != want:
            raise InputError(f"level {k + 1}: probabilities of shape {p.shape}, expected (N, {want}) = classes "
                             f"{levels[k]}{'' if last else ' + rest'}")
        if n is not None and len(p) != n:
            raise InputError(f"level {k + 1}: {len(p)} samples, level 1 has {n}")
        if np.isnan(p).any() or (p < 0).any():
            raise InputError(f"level {k + 1}: probabilities must be >= 0 and not NaN")
        n = len(p)
        out.append(p)
    return out


def posterior_matrix(levels, probs) -> np.ndarray:
    """``P(c) = prod_{j<k} p_j(rest) * p_k(c)`` for every class, columns in level order.

    >>> p1 = np.array([[0.6, 0.4]])             # level 1: class 14, rest
    >>> p2 = np.array([[0.3, 0.7]])             # level 2: classes 2, 5
    >>> posterior_matrix([[14], [2, 5]], [p1, p2]).round(2).tolist()
    [[0.6, 0.12, 0.28]]
    """
    probs = check_level_probs(levels, probs)
    n = len(probs[0])
    reach = np.ones(n)
    cols = []
    for k, (lv, p) in enumerate(zip(levels, probs)):
        cols.append(reach[:, None] * p[:, : len(lv)])
        if k < len(levels) - 1:
            reach = reach * p[:, -1]
    return np.concatenate(cols, axis=1)


def posterior(levels, probs, prior=None) -> Routing:
    """Route a rest-reading cascade by its hierarchical posterior.

    Parameters
    ----------
    levels : list of list of int
        Classes of each level, most frequent level first.
    probs : list of array_like
        Level ``k``: ``(N, len(levels[k]) + 1)`` probabilities, the last column "rest"; the last
        level has no "rest" column.
    prior : dict or array_like, optional
        Training frequency of each class (dict class -> count or probability, or a sequence in the
        level order of the classes). The argmax is then over ``P(c) / prior(c)``; classes with a
        zero or missing prior get the smallest positive one.

    Returns
    -------
    Routing
        ``kept`` is the level of the predicted class (so the kept sets partition the samples),
        ``conf`` is ``P(pred)`` before any prior correction, ``reached[i, k]`` is ``kept[i] >= k``
        (the levels whose "rest" the prediction passes through, plus the keeping level) and
        ``joint`` holds ``P(c)`` of every class, columns in level order.

    Examples
    --------
    Sample 0 is a confident level-1 class. Sample 1 has "rest" winning at level 1 (0.55), but
    level 2 is split (0.5 / 0.5), so class 14 (0.45) beats 2 and 5 (0.275 each): the evidence of
    both levels decides, where argmax routing would have sent it to level 2.

    >>> levels = [[14], [2, 5]]
    >>> p1 = np.array([[0.9, 0.1], [0.45, 0.55], [0.2, 0.8]])
    >>> p2 = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.9]])
    >>> r = posterior(levels, [p1, p2])
    >>> r.pred.tolist(), r.kept.tolist()
    ([14, 14, 5], [0, 0, 1])

    With the training prior (class 14 four times as frequent as 2 and 5), sample 1 goes to level 2:

    >>> posterior(levels, [p1, p2], prior={14: 400, 2: 100, 5: 100}).pred.tolist()
    [14, 2, 5]

    One level is the flat argmax:

    >>> posterior([[3, 7, 9]], [[[0.2, 0.5, 0.3]]]).pred.tolist()
    [7]
    """
    levels = [[int(c) for c in lv] for lv in levels]
    joint = posterior_matrix(levels, probs)
    classes = np.array([c for lv in levels for c in lv], dtype=np.int64)
    level_of = np.concatenate([np.full(len(lv), k, dtype=np.int64) for k, lv in enumerate(levels)])
    score = joint if prior is None else joint / _prior_vector(prior, classes)[None, :]
    best = np.argmax(score, axis=1) if len(joint) else np.zeros(0, dtype=np.int64)
    kept = level_of[best]
    reached = kept[:, None] >= np.arange(len(levels))[None, :]
    return Routing(kept=kept, pred=classes[best], conf=joint[np.arange(len(joint)), best], reached=reached,
                   joint=joint, scores=score)


def _prior_vector(prior, classes: np.ndarray) -> np.ndarray:
    """Prior of ``classes`` as positive float64 (dict by class or sequence in ``classes`` order)."""
    if isinstance(prior, dict):
        pr = np.array([float(prior.get(int(c), prior.get(str(int(c)), 0.0))) for c in classes])
    else:
        pr = np.asarray(prior, dtype=np.float64).ravel()
        if pr.shape != classes.shape:
            raise InputError(f"prior has {pr.size} entries, the levels have {classes.size} classes")
    if np.isnan(pr).any() or (pr < 0).any() or not (pr > 0).any():
        raise InputError("prior: needs non-negative counts or probabilities, at least one positive")
    return np.where(pr > 0, pr, pr[pr > 0].min()) / pr.sum()


def level_targets(plan: LevelPlan, k: int, labels) -> np.ndarray:
    """Output index of each label at level ``k``: its class output, "rest" for a later class, -1 otherwise.

    >>> level_targets(LevelPlan([[1, 2], [3]]), 0, [2, 3, 1]).tolist()
    [1, 2, 0]
    """
    outs = {c: i for i, c in enumerate(plan.outputs(k))}
    later = set(plan.later(k)) if plan.has_rest(k) else set()
    rest = len(outs)
    return np.array([outs.get(int(v), rest if int(v) in later else -1) for v in np.asarray(labels).ravel()],
                    dtype=np.int64)


def fit_temperatures(plan: LevelPlan, probs, labels) -> list[float]:
    """One temperature per level, minimising the log-loss on the dev samples the level can score.

    A level scores the samples whose class is one of its outputs or, with "rest", of a later
    level; a level with no such sample keeps ``T = 1``.
    """
    probs = check_probs(plan, probs)
    out = []
    for k, p in enumerate(probs):
        y = level_targets(plan, k, labels)
        m = y >= 0
        if p.shape[1] < 2 or not m.any():
            out.append(1.0)
            continue
        out.append(fit_temperature(np.log(np.clip(p[m], 1e-12, None)), y[m]))
    return out


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
    probs = check_probs(plan, probs)
    owner = plan.level_of(labels)
    if (owner < 0).any():
        raise InputError("labels outside the classes of the levels")
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
    >>> r = walk(plan, [np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), np.ones((3, 1))], lambda k, p: p[:, -1] > 0.5)
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
