"""Posterior routing of a rest-reading cascade, and levels planned by a bound on the count ratio.

Pure numpy; nothing here reads files or imports torch.

``posterior``
    Reads the cascade as a hierarchical model. Level ``k`` gives ``p_k(c)`` for its own classes
    and ``p_k(rest)`` for "the class belongs to a later level"; the last level has no "rest". The
    probability of a class ``c`` of level ``k`` is

    .. math:: P(c) = \\prod_{j<k} p_j(\\mathrm{rest}) \\; p_k(c),

    and the prediction is the argmax over all classes of all levels. No sample is forced down one
    path: a sample whose level-1 "rest" wins can still be predicted as a level-1 class when the
    later levels are unsure, and the evidence of every level enters the product. When every level's
    probabilities sum to one, the ``P(c)`` sum to one too. With ``prior`` (the training class
    frequencies) the argmax is taken over ``P(c) / prior(c)``, the Bayes rule for balanced accuracy
    (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021). The level that "keeps" a
    sample is the level of its predicted class, so the kept sets partition the samples.

``plan_levels_ratio``
    Splits the classes, most frequent first, into consecutive levels whose most and least frequent
    classes differ by at most ``max_ratio`` in training count: the premise of the Trickle-Down
    Classifier that one level holds classes of similar frequency.

This file is temporary: its functions move into the cascade package's routing and planning modules.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["PosteriorRouting", "check_level_probs", "posterior_matrix", "posterior", "plan_levels_ratio"]

log = logging.getLogger(__name__)


@dataclass
class PosteriorRouting:
    """Result of :func:`posterior`.

    Attributes
    ----------
    pred : ndarray of int, (N,)
        Predicted class (space group).
    kept : ndarray of int, (N,)
        0-based level of the predicted class.
    conf : ndarray of float, (N,)
        ``P(pred)`` (before any prior correction).
    reached : ndarray of bool, (N, K)
        ``reached[i, k]`` is ``kept[i] >= k``: the levels whose "rest" the sample's prediction passes
        through, plus the keeping level (the same meaning as in threshold routing).
    joint : ndarray of float, (N, C)
        ``P(c)`` of every class, columns in level order (``classes``).
    classes : ndarray of int, (C,)
        The classes of all levels in level order.
    """

    pred: np.ndarray
    kept: np.ndarray
    conf: np.ndarray
    reached: np.ndarray
    joint: np.ndarray
    classes: np.ndarray

    def kept_sets(self) -> list[np.ndarray]:
        """Indices kept by each level: a partition of ``range(N)``."""
        return [np.flatnonzero(self.kept == k) for k in range(self.reached.shape[1])]


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
        raise ValueError(f"levels {levels}: need at least one level and no empty level")
    flat = [c for lv in levels for c in lv]
    if len(set(flat)) != len(flat):
        raise ValueError(f"levels {levels}: a class appears in two levels")
    if len(probs) != len(levels):
        raise ValueError(f"got probabilities of {len(probs)} levels, the plan has {len(levels)}")
    out, n = [], None
    for k, p in enumerate(probs):
        p = np.asarray(p, dtype=np.float64)
        last = k == len(levels) - 1
        want = len(levels[k]) + (0 if last else 1)
        if p.ndim != 2 or p.shape[1] != want:
            raise ValueError(f"level {k + 1}: probabilities of shape {p.shape}, expected (N, {want}) = classes "
                             f"{levels[k]}{'' if last else ' + rest'}")
        if n is not None and len(p) != n:
            raise ValueError(f"level {k + 1}: {len(p)} samples, level 1 has {n}")
        if np.isnan(p).any() or (p < 0).any():
            raise ValueError(f"level {k + 1}: probabilities must be >= 0 and not NaN")
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


def posterior(levels, probs, prior=None) -> PosteriorRouting:
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
    PosteriorRouting

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
    return PosteriorRouting(pred=classes[best], kept=kept, conf=joint[np.arange(len(joint)), best],
                            reached=reached, joint=joint, classes=classes)


def _prior_vector(prior, classes: np.ndarray) -> np.ndarray:
    """Prior of ``classes`` as positive float64 (dict by class or sequence in ``classes`` order)."""
    if isinstance(prior, dict):
        pr = np.array([float(prior.get(int(c), prior.get(str(int(c)), 0.0))) for c in classes])
    else:
        pr = np.asarray(prior, dtype=np.float64).ravel()
        if pr.shape != classes.shape:
            raise ValueError(f"prior has {pr.size} entries, the levels have {classes.size} classes")
    if np.isnan(pr).any() or (pr < 0).any() or not (pr > 0).any():
        raise ValueError("prior: needs non-negative counts or probabilities, at least one positive")
    return np.where(pr > 0, pr, pr[pr > 0].min()) / pr.sum()


def plan_levels_ratio(counts: dict, max_ratio: float, classes=None) -> list[list[int]]:
    """Consecutive levels (most frequent class first) with max count / min count <= ``max_ratio``.

    Greedy: a level grows while its first (most frequent) class has at most ``max_ratio`` times the
    count of the candidate. A level left with a single class is merged into the neighbouring level
    where the merged ratio is smaller (so each level has at least two classes when the run has two),
    and the bound is then exceeded; that is logged. A class without training sample counts as 1.

    Parameters
    ----------
    counts : dict
        Training samples per class.
    max_ratio : float
        Bound on the count ratio within a level, >= 1.
    classes : iterable of int, optional
        Classes of the run (default: the keys of ``counts``); ties in count keep this order.

    Examples
    --------
    >>> plan_levels_ratio({14: 500, 225: 400, 1: 300, 2: 120, 62: 100, 5: 30, 8: 20}, 3)
    [[14, 225, 1], [2, 62], [5, 8]]

    Class 3 is alone (1000 / 300 and 300 / 100 both exceed 2); it joins the next level, where the
    merged ratio is 3.0, not the previous one (3.3):

    >>> plan_levels_ratio({1: 1000, 2: 900, 3: 300, 4: 100, 5: 100}, 2)
    [[1, 2], [3, 4, 5]]
    """
    max_ratio = float(max_ratio)
    if not max_ratio >= 1.0:
        raise ValueError(f"tdc.max_ratio={max_ratio}: must be >= 1 (the ratio of the largest to the smallest count)")
    classes = [int(c) for c in (counts.keys() if classes is None else classes)]
    if not classes:
        raise ValueError("plan_levels_ratio: no class to plan")
    rank = {c: i for i, c in enumerate(classes)}
    n = {c: max(1, int(counts.get(c, counts.get(str(c), 0)))) for c in classes}
    ordered = sorted(classes, key=lambda c: (-n[c], rank[c]))
    levels = [[ordered[0]]]
    for c in ordered[1:]:
        if n[levels[-1][0]] <= max_ratio * n[c]:
            levels[-1].append(c)
        else:
            levels.append([c])
    return _merge_singletons(levels, n, max_ratio)


def _merge_singletons(levels: list[list[int]], n: dict, max_ratio: float) -> list[list[int]]:
    """Merge every one-class level into the neighbour that gives the smaller count ratio."""
    def ratio(lv):
        return n[lv[0]] / n[lv[-1]]

    levels = [list(lv) for lv in levels]
    while len(levels) > 1 and any(len(lv) == 1 for lv in levels):
        i = next(k for k, lv in enumerate(levels) if len(lv) == 1)
        options = []
        if i > 0:
            options.append((ratio(levels[i - 1] + levels[i]), i - 1))
        if i < len(levels) - 1:
            options.append((ratio(levels[i] + levels[i + 1]), i + 1))
        r, j = min(options)
        lone = levels[i][0]
        lo, hi = min(i, j), max(i, j)
        levels[lo:hi + 1] = [levels[lo] + levels[hi]]
        log.warning("class %d alone in its level: merged into a neighbour, level count ratio %.2f > max_ratio %.2f",
                    lone, r, max_ratio)
    return levels
