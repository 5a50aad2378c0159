"""Trickle-Down Classifier (TDC) levels: planning, budgets, training sets and the training-time trickle.

Pure numpy (no torch, no h5py): tested on hand-made labels and probabilities.

The classes of a run, ordered by training frequency, are split into levels. Level ``k`` is one
classifier trained by :mod:`cbedtdc.train`; a sample that level ``k`` does not keep trickles to
level ``k + 1``; the last level keeps everything. Two readings of "missed" (``tdc.mode``):

``rest``
    Level ``k`` has one output per class of level ``k`` plus a last output "rest" (not for the
    last level). Its training set is every sample whose class belongs to levels ``k..K``; the
    samples of later levels are labelled "rest". At inference the routing rule of ``tdc.routing``
    (:mod:`cbedtdc.cascade.routing.rules`) decides where a sample ends.
``hard``
    Level ``k`` trains on the samples that reached it (level 1: all). Its outputs are the classes
    of levels ``1..k`` (``hard_outputs="cumulative"``, so that a head-class sample that an earlier
    level got wrong can still be learnt further down) or of level ``k`` only (``"own"``). After
    training, the samples it gets wrong or whose class is not among its outputs trickle to level
    ``k + 1`` and form its training set. At inference a sample trickles when the largest class
    probability is below a per-level threshold tuned on dev (the threshold rule).

Probabilities of level ``k`` are an array ``(N, n_outputs)`` whose columns are ``plan.outputs(k)``
followed by "rest" when ``plan.has_rest(k)``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cbedtdc.io import atomic_write_text
from cbedtdc.errors import InputError

__all__ = [
    "MODES",
    "LevelPlan",
    "order_by_count",
    "plan_levels",
    "plan_levels_ratio",
    "split_by_mass",
    "level_budgets",
    "whole_epochs",
    "check_trainable",
    "level_training_mask",
    "trickle",
    "level_job",
]

log = logging.getLogger(__name__)

MODES = ("rest", "hard")


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
        raise InputError(f"tdc.n_levels={n_levels}: must be between 1 and the number of classes ({n})")
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


def plan_levels(counts: dict, classes, *, how: str = "explicit", level_sizes=None, n_levels=None,
                max_ratio=None) -> list[list[int]]:
    """Split the run's classes, most frequent first, into levels.

    Parameters
    ----------
    counts : dict
        Training samples per space group (groups missing count 0).
    classes : list of int
        Classes of the run.
    how : {"explicit", "auto", "ratio"}
        ``explicit``: ``level_sizes`` classes per level (must add up to the number of classes);
        ``auto``: ``n_levels`` levels of about equal training-sample mass; ``ratio``: levels whose
        most and least frequent classes differ by at most ``max_ratio`` (:func:`plan_levels_ratio`).

    >>> plan_levels({14: 9, 225: 8, 1: 3, 2: 2}, [14, 225, 1, 2], level_sizes=[1, 3])
    [[14], [225, 1, 2]]
    >>> plan_levels({14: 9, 225: 8, 1: 5, 2: 4}, [14, 225, 1, 2], how="auto", n_levels=2)
    [[14], [225, 1, 2]]
    """
    ordered = order_by_count(counts, classes)
    if how == "explicit":
        sizes = [int(s) for s in (level_sizes or [])]
        if not sizes or any(s < 1 for s in sizes) or sum(sizes) != len(ordered):
            raise InputError(
                f"tdc.level_sizes={sizes} must be positive and add up to the {len(ordered)} classes of the run; "
                "change tdc.level_sizes or set tdc.levels: auto with tdc.n_levels")
    elif how == "auto":
        sizes = split_by_mass([counts.get(c, 0) for c in ordered], int(n_levels or 0))
    elif how == "ratio":
        if max_ratio is None:
            raise InputError("tdc.levels=ratio needs tdc.max_ratio (largest / smallest training count in a level)")
        sizes = [len(lv) for lv in plan_levels_ratio(counts, max_ratio, classes=ordered)]
    else:
        raise InputError(f"tdc.levels={how!r}: must be 'explicit', 'auto' or 'ratio'")
    empty = [c for c in ordered if not counts.get(c, 0)]
    if empty:
        log.warning("classes %s have no training sample; their level cannot learn them", empty)
    out, start = [], 0
    for s in sizes:
        out.append(ordered[start:start + s])
        start += s
    return out


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
        raise InputError(f"tdc.max_ratio={max_ratio}: must be >= 1 (the ratio of the largest to the smallest count)")
    classes = [int(c) for c in (counts.keys() if classes is None else classes)]
    if not classes:
        raise InputError("plan_levels_ratio: no class to plan")
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


@dataclass
class LevelPlan:
    """The levels of a run and how they are trained and routed (``levels.json``)."""

    levels: list[list[int]]
    mode: str = "rest"
    hard_outputs: str = "cumulative"
    counts: dict = field(default_factory=dict)  # training samples per class (str keys in JSON)
    budgets: list[int] = field(default_factory=list)  # planned training images per level
    flat_images: int = 0  # images the flat baseline sees (train.epochs x n_train)
    n_train: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"tdc.mode={self.mode!r}: must be one of {', '.join(MODES)}")
        if self.hard_outputs not in ("cumulative", "own"):
            raise InputError(f"tdc.hard_outputs={self.hard_outputs!r}: must be 'cumulative' or 'own'")
        self.levels = [[int(c) for c in lv] for lv in self.levels]
        flat = [c for lv in self.levels for c in lv]
        if not self.levels or any(not lv for lv in self.levels) or len(set(flat)) != len(flat):
            raise InputError(f"levels {self.levels}: need at least one level, no empty level, no class twice")
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

    def to_json(self) -> dict:
        d = asdict(self)
        d["counts"] = {str(k): v for k, v in self.counts.items()}
        d["outputs"] = [self.outputs(k) for k in range(self.n_levels)]
        d["rest"] = [self.has_rest(k) for k in range(self.n_levels)]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "LevelPlan":
        keys = {"levels", "mode", "hard_outputs", "counts", "budgets", "flat_images", "n_train"}
        return cls(**{k: v for k, v in d.items() if k in keys})

    def save(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "LevelPlan":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise InputError(f"{path}: not a readable levels.json ({err}); rerun rule plan_levels") from err


def check_trainable(plan: LevelPlan) -> None:
    """Raise ``ValueError`` when a level would have fewer than 2 outputs (nothing to learn).

    >>> check_trainable(LevelPlan([[1, 2], [3]]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: level 2 of [[1, 2], [3]] has 1 output (3); a classifier needs at least 2: ...
    """
    for k in range(plan.n_levels):
        outs = plan.outputs(k)
        n = len(outs) + plan.has_rest(k)
        if n < 2:
            raise InputError(
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
        raise InputError(f"tdc.budget_split={split!r}: must be 'proportional' or 'equal'")
    raw = np.floor(total_images * weights / weights.sum()).astype(int)
    raw[-1] = total_images - raw[:-1].sum()
    return [int(b) for b in raw]


def whole_epochs(planned: float, n: int, carry: float = 0.0) -> tuple[int, float]:
    """Round a level's budget (images) to whole epochs over its ``n`` samples (the engine trains whole epochs).

    Returns ``(epochs, carry)``: ``epochs = max(1, round((planned + carry) / n))``, and the rounding error in
    images (``planned + carry - epochs x n``) to pass on to the next level, so that the levels' total stays
    within one level's rounding of the flat budget.

    >>> whole_epochs(250, 100)
    (2, 50.0)
    >>> whole_epochs(250, 100, carry=50.0)
    (3, 0.0)
    """
    if n < 1:
        raise InputError("a level needs at least one training sample")
    target = float(planned) + float(carry)
    epochs = max(1, round(target / n))
    return int(epochs), target - epochs * int(n)


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
            raise InputError(f"hard mode: level {k + 1} needs the samples that reached it (missed.csv of level {k})")
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


def level_job(plan: LevelPlan, level: int, train_keys, train_labels, dev_keys, dev_labels,
              missed=None, seen_before=None) -> dict:
    """Arguments of :func:`cbedtdc.train.fit` for level ``level`` (1-based).

    Returns ``{"classes", "rest", "train_keys", "dev_keys", "epochs"}``. ``missed`` is ``read_missed()`` of the
    previous level (hard mode, level > 1). The level's budget, its planned share of the flat images
    (``plan.budgets``), is given to the engine once, as whole ``epochs`` over the level's training set, the
    rounding of the earlier levels carried: in the rest reading their training sets are known from the plan; in
    the hard reading ``seen_before`` gives the images the earlier levels actually saw (their ``train.json``).
    """
    k = level - 1
    if not 0 <= k < plan.n_levels:
        raise InputError(f"level {level}: the plan has levels 1..{plan.n_levels}")
    if len(plan.budgets) != plan.n_levels:
        raise InputError(f"the plan has budgets {plan.budgets} for {plan.n_levels} levels; rerun rule plan_levels")
    sets = {}
    for split, keys, labels in (("train", train_keys, train_labels), ("dev", dev_keys, dev_labels)):
        keys = np.asarray(list(keys), dtype=object)
        reached = None
        if plan.mode == "hard" and k > 0:
            if missed is None:
                raise InputError(f"hard mode: level {level} needs missed.csv of level {level - 1}")
            reached = np.isin(keys, np.asarray(missed.get(split, []), dtype=object))
        mask = level_training_mask(plan, k, labels, reached)
        sets[split] = [str(x) for x in keys[mask]]
    epochs = None
    if sets["train"]:
        if plan.mode == "rest":
            labels = np.asarray(train_labels)
            carry = 0.0
            for j in range(k + 1):
                n_j = max(1, int(level_training_mask(plan, j, labels).sum()))
                epochs, carry = whole_epochs(plan.budgets[j], n_j, carry)
        else:
            carry = 0.0
            if k > 0 and seen_before is not None:
                carry = float(sum(plan.budgets[:k]) - sum(seen_before))
            elif k > 0:
                log.warning("level %d: images seen by the earlier levels unknown; no rounding carried", level)
            epochs, _ = whole_epochs(plan.budgets[k], len(sets["train"]), carry)
    return {"classes": plan.outputs(k), "rest": plan.has_rest(k), "train_keys": sets["train"],
            "dev_keys": sets["dev"], "epochs": epochs}
