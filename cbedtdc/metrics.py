"""Classification metrics over space-group labels: pure numpy (no torch, no h5py, no model loading).

Every function takes true labels and predictions as space-group numbers (not output indices) and
the list ``classes`` of the run, so that a class that never occurs in the test split or is never
predicted still has its row in the tables. A prediction outside ``classes`` counts as wrong.

Headline numbers come with 95 % bootstrap intervals over *materials* (all samples of a material
are drawn together), because the energies of one material are not independent samples.

The confusion matrix, per-class recall, balanced accuracy, macro-F1 and top-k agree with scikit-learn's
(``tests/unit/test_metrics.py`` checks them on random labels); they stay numpy here for the extra "outside the
classes" column and the NaN of an absent class. :func:`hierarchy_scores` scores the same predictions at every
level of :data:`cbedtdc.crystallography.LEVELS`; :func:`expected_calibration_error` and
:func:`reliability_bins` measure how well the top-label probability matches the accuracy.
"""

from __future__ import annotations

import logging

import numpy as np

from cbedtdc import crystallography
from cbedtdc.errors import InputError

__all__ = [
    "confusion_matrix",
    "per_class_recall",
    "balanced_accuracy",
    "macro_f1",
    "top1",
    "top_k",
    "confidence_bins",
    "chance_rates",
    "merge_labels",
    "bootstrap_materials",
    "paired_difference",
    "score",
    "results_table",
    "hierarchy_scores",
    "expected_calibration_error",
    "reliability_bins",
    "ece_from_bins",
    "selective_prediction",
]

log = logging.getLogger(__name__)


def _index(labels, classes) -> np.ndarray:
    """Position of each label in ``classes``; -1 for labels outside."""
    classes = np.asarray(classes, dtype=np.int64).ravel()
    values = np.asarray(labels, dtype=np.int64).ravel()
    if not len(classes):
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(classes, kind="stable")
    pos = np.clip(np.searchsorted(classes[order], values), 0, len(classes) - 1)
    found = classes[order][pos] == values
    return np.where(found, order[pos], -1).astype(np.int64)


def confusion_matrix(y_true, y_pred, classes) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of class ``classes[i]`` predicted as ``classes[j]``.

    A last extra column counts predictions outside ``classes``; true labels outside ``classes``
    raise ``ValueError`` (they would silently vanish from every per-class number).

    >>> confusion_matrix([1, 1, 2], [1, 2, 2], [1, 2]).tolist()
    [[1, 1, 0], [0, 1, 0]]
    """
    t = _index(y_true, classes)
    p = _index(y_pred, classes)
    if (t < 0).any():
        bad = sorted({int(v) for v, i in zip(np.asarray(y_true).ravel(), t) if i < 0})
        raise InputError(f"true labels {bad} are not among the classes of the run {list(classes)}")
    n = len(classes)
    p = np.where(p < 0, n, p)
    out = np.zeros((n, n + 1), dtype=np.int64)
    np.add.at(out, (t, p), 1)
    return out


def per_class_recall(y_true, y_pred, classes) -> np.ndarray:
    """Recall of each class of ``classes``; NaN for a class absent from ``y_true``.

    >>> per_class_recall([1, 1, 2], [1, 2, 2], [1, 2, 3]).tolist()
    [0.5, 1.0, nan]
    """
    cm = confusion_matrix(y_true, y_pred, classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm[:, : len(classes)]) / np.maximum(support, 1), np.nan)


def balanced_accuracy(y_true, y_pred, classes) -> float:
    """Mean recall over the classes present in ``y_true``.

    >>> balanced_accuracy([1, 1, 1, 2], [1, 1, 1, 1], [1, 2])
    0.5
    """
    return float(np.nanmean(per_class_recall(y_true, y_pred, classes)))


def macro_f1(y_true, y_pred, classes) -> float:
    """Unweighted mean F1 over the classes present in ``y_true`` (F1 = 0 when never predicted right).

    >>> round(macro_f1([1, 1, 2, 2], [1, 2, 2, 2], [1, 2]), 4)
    0.7333
    """
    cm = confusion_matrix(y_true, y_pred, classes)
    n = len(classes)
    tp = np.diag(cm[:, :n]).astype(float)
    support = cm.sum(axis=1)
    predicted = cm[:, :n].sum(axis=0)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return float(f1[support > 0].mean())


def top1(y_true, y_pred) -> float:
    """Fraction of exact predictions.

    >>> top1([1, 2, 3], [1, 2, 4])
    0.6666666666666666
    """
    y_true = np.asarray(y_true)
    return float((y_true == np.asarray(y_pred)).mean()) if len(y_true) else float("nan")


def top_k(y_true, scores, classes, k: int = 5) -> float:
    """Fraction of samples whose class is among the ``k`` highest ``scores`` (columns = ``classes``).

    >>> top_k([2, 3], np.array([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]]), [1, 2, 3], k=2)
    0.5
    """
    scores = np.asarray(scores)
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    t = _index(y_true, classes)
    return float((best == t[:, None]).any(axis=1).mean())


def chance_rates(train_labels, test_labels, classes) -> dict:
    """Accuracy of two classifiers that ignore the image.

    ``majority``: always predict the most frequent training class; ``prior``: guess at random with
    the training class frequencies (expected accuracy sum_c p_train(c) p_test(c));
    ``balanced``: balanced accuracy of either guess (1 / number of classes in test).

    >>> chance_rates([1, 1, 1, 2], [1, 2, 2, 2], [1, 2])
    {'majority': 0.25, 'prior': 0.375, 'balanced': 0.5, 'majority_class': 1}
    """
    tr = _index(train_labels, classes)
    te = _index(test_labels, classes)
    tr = tr[tr >= 0]
    n = len(classes)
    p_train = np.bincount(tr, minlength=n) / max(len(tr), 1)
    p_test = np.bincount(te[te >= 0], minlength=n) / max(len(te), 1)
    major = int(np.argmax(p_train))
    return {
        "majority": float(p_test[major]),
        "prior": float((p_train * p_test).sum()),
        "balanced": float(1.0 / max((p_test > 0).sum(), 1)),
        "majority_class": int(classes[major]),
    }


def merge_labels(labels, groups) -> np.ndarray:
    """Replace every label of a group by the group's smallest member (Friedel-merged labels).

    >>> merge_labels([1, 2, 225, 216, 14], [[1, 2], [216, 225]]).tolist()
    [1, 1, 216, 216, 14]
    """
    mapping = {}
    for group in groups:
        rep = min(int(g) for g in group)
        for g in group:
            if int(g) in mapping and mapping[int(g)] != rep:
                raise InputError(f"friedel_groups: space group {g} is in two groups")
            mapping[int(g)] = rep
    return np.array([mapping.get(int(v), int(v)) for v in np.asarray(labels).ravel()], dtype=np.int64)


def merged_classes(classes, groups) -> list[int]:
    """The classes of a run after :func:`merge_labels`, in first-seen order.

    >>> merged_classes([14, 225, 1, 2, 216], [[1, 2], [216, 225]])
    [14, 216, 1]
    """
    return list(dict.fromkeys(merge_labels(classes, groups).tolist()))


def bootstrap_materials(fn, materials, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
    """Percentile interval of ``fn(idx)`` over resamples of whole materials.

    ``fn`` takes an index array into the samples and returns a number; each resample draws as
    many materials as there are, with replacement, and keeps all samples of every drawn material.
    Returns ``(low, high)``; ``(nan, nan)`` when ``n_boot`` is 0.

    >>> lo, hi = bootstrap_materials(lambda i: float(len(i)), ["a", "a", "b"], n_boot=50)
    >>> 2.0 <= lo <= hi <= 4.0
    True
    """
    if n_boot <= 0:
        return float("nan"), float("nan")
    materials = np.asarray(materials)
    names, inverse = np.unique(materials, return_inverse=True)
    members = [np.flatnonzero(inverse == m) for m in range(len(names))]
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, len(names), size=len(names))
        idx = np.concatenate([members[m] for m in drawn])
        values[b] = fn(idx)
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_difference(y_true, pred_a, pred_b, classes, materials, n_boot: int = 1000, seed: int = 0) -> dict:
    """Balanced accuracy of ``pred_a`` minus that of ``pred_b`` on the same samples, with a paired interval.

    Both predictions are scored on the same bootstrap resamples of whole materials (:func:`bootstrap_materials`),
    so what the two share (the samples, their difficulty) cancels in the interval. Returns ``{"difference",
    "ci95": [lo, hi]}``.

    >>> d = paired_difference([1, 1, 2, 2], [1, 1, 2, 2], [1, 2, 2, 2], [1, 2], ["a", "b", "c", "d"], n_boot=20)
    >>> d["difference"], d["ci95"][0] >= 0.0
    (0.25, True)
    """
    y, pa, pb = np.asarray(y_true), np.asarray(pred_a), np.asarray(pred_b)
    if not len(y) == len(pa) == len(pb) == len(materials):
        raise InputError(f"paired_difference: {len(y)} labels, {len(pa)} and {len(pb)} predictions, "
                         f"{len(materials)} materials: they must be the same samples")

    def diff(i):
        return balanced_accuracy(y[i], pa[i], classes) - balanced_accuracy(y[i], pb[i], classes)

    return {"difference": diff(np.arange(len(y))), "ci95": list(bootstrap_materials(diff, materials, n_boot, seed))}


def score(y_true, y_pred, classes, *, scores=None, materials=None, n_boot: int = 0, seed: int = 0,
          friedel_groups=None) -> dict:
    """All headline metrics of one model on one split, as a JSON-ready dict.

    Keys: ``n``, ``top1``, ``balanced_accuracy``, ``macro_f1``, with ``top5`` when ``scores``
    (columns = ``classes``) are given, ``ci95`` (bootstrap over ``materials``) when ``n_boot`` > 0,
    and ``friedel`` (top1 and balanced accuracy on merged labels) when ``friedel_groups`` is given.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out = {
        "n": int(len(y_true)),
        "top1": top1(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, classes),
        "macro_f1": macro_f1(y_true, y_pred, classes),
    }
    if scores is not None:
        out["top5"] = top_k(y_true, scores, classes, k=5)
    if materials is not None and n_boot > 0:
        fns = {
            "top1": lambda i: top1(y_true[i], y_pred[i]),
            "balanced_accuracy": lambda i: balanced_accuracy(y_true[i], y_pred[i], classes),
            "macro_f1": lambda i: macro_f1(y_true[i], y_pred[i], classes),
        }
        out["ci95"] = {name: list(bootstrap_materials(fn, materials, n_boot, seed)) for name, fn in fns.items()}
    if friedel_groups:
        mt, mp = merge_labels(y_true, friedel_groups), merge_labels(y_pred, friedel_groups)
        mc = merged_classes(classes, friedel_groups)
        out["friedel"] = {"top1": top1(mt, mp), "balanced_accuracy": balanced_accuracy(mt, mp, mc),
                          "n_classes": len(mc)}
    return out


def hierarchy_scores(y_true, y_pred, classes, *, materials=None, n_boot: int = 0, seed: int = 0) -> dict:
    """Top-1 and balanced accuracy at every level of the crystallographic hierarchy.

    Truth and prediction are both mapped to the level (:func:`cbedtdc.crystallography.hierarchy_labels`);
    the level's classes are the images of ``classes``, so balanced accuracy averages over e.g. the crystal
    systems present among the run's true labels. A prediction that is no space group (0, -1) is wrong at every
    level.

    Parameters
    ----------
    y_true, y_pred : array_like of int
        Space-group numbers; every true label must be in ``classes``.
    classes : list of int
        The run's classes.
    materials : array_like, optional
        Material of each sample; with ``n_boot`` > 0 adds ``ci95`` (the material bootstrap of :func:`score`,
        same resamples for every level).
    n_boot, seed : int
        Bootstrap resamples and seed.

    Returns
    -------
    dict
        ``{level: {"top1", "balanced_accuracy", "n_classes"[, "ci95": {"top1": [lo, hi], ...}]}}`` in the order
        of :data:`cbedtdc.crystallography.LEVELS` (coarsest first).

    P2_1/c read as P-1 is wrong from the crystal system down; Fm-3m read as F-43m is right down to the
    extinction class (Laue class, centring and absences they share) but wrong at the point group:

    >>> s = hierarchy_scores([14, 14, 225], [2, 14, 216], [14, 225, 2, 216])
    >>> {level: round(v["top1"], 2) for level, v in s.items()}
    {'crystal_system': 0.67, 'bravais_lattice': 0.67, 'laue_class': 0.67, 'point_group': 0.33,
     'extinction_class': 0.67, 'space_group': 0.33}
    """
    y_true = np.asarray(y_true).ravel()
    y_pred = np.asarray(y_pred).ravel()
    if len(y_true) != len(y_pred):
        raise InputError(f"hierarchy_scores: {len(y_true)} true labels but {len(y_pred)} predictions")
    confusion_matrix(y_true, y_true, classes)  # true labels outside the classes raise here, named
    out = {}
    for level in crystallography.LEVELS:
        t = crystallography.hierarchy_labels(y_true, level)
        p = crystallography.hierarchy_labels(y_pred, level)
        lc = list(dict.fromkeys(crystallography.hierarchy_labels(classes, level).tolist()))
        s = {"top1": top1(t, p), "balanced_accuracy": balanced_accuracy(t, p, lc), "n_classes": len(lc)}
        if materials is not None and n_boot > 0:
            s["ci95"] = {
                "top1": list(bootstrap_materials(lambda i: top1(t[i], p[i]), materials, n_boot, seed)),
                "balanced_accuracy": list(bootstrap_materials(lambda i: balanced_accuracy(t[i], p[i], lc),
                                                              materials, n_boot, seed)),
            }
        out[level] = s
    return out


def _top_label(probs, y_index) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)`` of the top label, after checking the shapes and values."""
    probs = np.asarray(probs, dtype=float)
    y = np.asarray(y_index)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise InputError(f"probs must be a 2-D array (samples, classes), got shape {probs.shape}")
    if y.ndim != 1 or len(y) != len(probs):
        raise InputError(f"y_index must be 1-D with one entry per row of probs ({len(probs)}), got shape {y.shape}")
    if not len(y):
        raise InputError("calibration of no samples: probs and y_index are empty")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= probs.shape[1]:
        raise InputError(f"y_index must be integer column indices 0..{probs.shape[1] - 1} of probs (not space-group "
                         f"numbers), got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise InputError("probs must be probabilities in [0, 1] (apply a softmax to logits first)")
    return probs.max(axis=1), (probs.argmax(axis=1) == y).astype(float)


def _bins(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence: equal-width ``(lo, hi]`` bins of [0, 1], 0 counted in the first (as scikit-learn's
    ``calibration_curve``)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InputError(f"n_bins={n_bins!r}: give a positive integer number of bins (e.g. 15)")
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], conf, side="left")


def reliability_bins(probs, y_index, n_bins: int = 15) -> list[dict]:
    """The reliability diagram of the top label: per equal-width confidence bin, its edges, the number of
    samples, their mean confidence and their accuracy (``None`` for an empty bin; JSON-ready).

    Parameters
    ----------
    probs : array_like, shape (n, k)
        Predicted probabilities (rows need not sum to 1, e.g. a cascade's joint posterior).
    y_index : array_like of int, shape (n,)
        Column of the true class of each sample.
    n_bins : int
        Number of equal-width bins of [0, 1]; bin ``b`` holds confidences in ``(b/n, (b+1)/n]``.

    >>> bins = reliability_bins([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], [0, 1, 1], n_bins=2)
    >>> [(b["upper"], b["count"], b["confidence"] and round(b["confidence"], 3), b["accuracy"]) for b in bins]
    [(0.5, 0, None, None), (1.0, 3, 0.8, 0.6666666666666666)]
    """
    conf, correct = _top_label(probs, y_index)
    return confidence_bins(conf, correct, n_bins)


def confidence_bins(conf, correct, n_bins: int = 15) -> list[dict]:
    """:func:`reliability_bins` from each sample's confidence in its prediction and whether it was right (for a
    cascade, whose prediction comes with the probability of the keeping level or of the posterior).

    >>> [b["count"] for b in confidence_bins([0.9, 0.6, 0.2], [1, 0, 1], n_bins=2)]
    [1, 2]
    """
    conf = np.asarray(conf, dtype=float).ravel()
    correct = np.asarray(correct, dtype=float).ravel()
    if conf.shape != correct.shape or not len(conf):
        raise InputError(f"confidence_bins: {len(conf)} confidences, {len(correct)} outcomes (need equal, > 0)")
    if not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1:
        raise InputError("confidence_bins: confidences must be probabilities in [0, 1]")
    b = _bins(conf, n_bins)
    count = np.bincount(b, minlength=n_bins)
    conf_sum = np.bincount(b, weights=conf, minlength=n_bins)
    right = np.bincount(b, weights=correct, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return [{"lower": float(edges[i]), "upper": float(edges[i + 1]), "count": int(count[i]),
             "confidence": float(conf_sum[i] / count[i]) if count[i] else None,
             "accuracy": float(right[i] / count[i]) if count[i] else None} for i in range(n_bins)]


def expected_calibration_error(probs, y_index, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017): ``sum_b n_b / n * |accuracy_b - confidence_b|``
    over equal-width confidence bins (:func:`reliability_bins`); 0 for a calibrated model, up to 1.

    >>> round(expected_calibration_error([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], [0, 1, 1], n_bins=2), 6)  # |2/3 - 0.8|
    0.133333
    """
    return ece_from_bins(reliability_bins(probs, y_index, n_bins))


def ece_from_bins(bins) -> float:
    """Expected calibration error of the bins of :func:`reliability_bins` (e.g. read back from a JSON file).

    >>> ece_from_bins([{"count": 3, "confidence": 0.8, "accuracy": 0.5}, {"count": 1, "confidence": 0.9,
    ...                "accuracy": 1.0}, {"count": 0, "confidence": None, "accuracy": None}])
    0.25
    """
    n = sum(int(b["count"]) for b in bins)
    if not n:
        raise InputError("ece_from_bins: every bin is empty; give the bins of at least one sample")
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def selective_prediction(conf, correct, coverages=(0.5, 0.8), n_points: int = 20) -> dict:
    """Selective prediction: accuracy when only the most confident fraction of the samples is answered.

    The samples are ranked by confidence (ties keep their order: a stable sort); answering the top
    ``ceil(c * n)`` gives the accuracy at coverage ``c``. Returns ``{"curve": [{"coverage", "accuracy",
    "threshold"}, ...]}`` at ``n_points`` equal coverage steps up to 1, and ``"at": {str(c): accuracy}`` for
    each of ``coverages`` (a user who asks "when can I trust the answer" reads the curve: the threshold is
    the lowest confidence still answered).

    >>> s = selective_prediction([0.9, 0.8, 0.6, 0.3], [1, 1, 0, 0], coverages=(0.5, 1.0), n_points=4)
    >>> s["at"], [(p["coverage"], p["accuracy"]) for p in s["curve"]]
    ({'0.5': 1.0, '1.0': 0.5}, [(0.25, 1.0), (0.5, 1.0), (0.75, 0.6666666666666666), (1.0, 0.5)])
    """
    conf = np.asarray(conf, dtype=float).ravel()
    correct = np.asarray(correct, dtype=float).ravel()
    if conf.shape != correct.shape or not len(conf):
        raise InputError(f"selective_prediction: {len(conf)} confidences, {len(correct)} outcomes (need equal, > 0)")
    if not np.isfinite(conf).all():
        raise InputError("selective_prediction: confidences must be finite")
    order = np.argsort(-conf, kind="stable")
    right = np.cumsum(correct[order])
    n = len(conf)

    def at(c: float) -> tuple[float, float]:
        if not 0 < c <= 1:
            raise InputError(f"selective_prediction: coverage {c} must be in (0, 1]")
        m = max(1, int(np.ceil(c * n - 1e-9)))
        return float(right[m - 1] / m), float(conf[order[m - 1]])

    curve = []
    for i in range(1, int(n_points) + 1):
        acc, thr = at(i / n_points)
        curve.append({"coverage": i / n_points, "accuracy": acc, "threshold": thr})
    return {"curve": curve, "at": {str(c): at(float(c))[0] for c in coverages}}


def results_table(summaries) -> str:
    """Markdown table of one or more ``summary.json`` dicts (e.g. a rest and a hard run).

    Rows: the chance rates, every flat baseline (once), and per summary the TDC end to end and
    its paper-style estimate. Cells are percentages with the 95 % material-bootstrap interval.
    """
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    def cell(s, key):
        v = s.get(key)
        ci = (s.get("ci95") or {}).get(key)
        if v is None:
            return "-"
        if ci and None not in ci:
            return f"{pct(v)} [{pct(ci[0])}, {pct(ci[1])}]"
        return pct(v)

    def friedel(s):
        f = s.get("friedel")
        return f"{pct(f['top1'])} / {pct(f['balanced_accuracy'])}" if f else "-"

    first = summaries[0]
    lines = ["| model | images seen | top-1 | balanced accuracy | macro-F1 | top-5 | Friedel-merged top-1 / bal. acc |",
             "|---|---|---|---|---|---|---|"]
    ch = first["chance"]
    lines.append(f"| majority class ({ch.get('majority_class', '?')}) | - | {pct(ch['majority'])} | "
                 f"{pct(ch.get('balanced'))} | - | - | - |")
    lines.append(f"| prior guessing | - | {pct(ch['prior'])} | {pct(ch.get('balanced'))} | - | - | - |")
    for loss, s in first.get("flat_by_loss", {"flat": first["flat"]}).items():
        lines.append(f"| flat, {loss} | {s.get('images_seen') or '-'} | {cell(s, 'top1')} | "
                     f"{cell(s, 'balanced_accuracy')} | {cell(s, 'macro_f1')} | {cell(s, 'top5')} | {friedel(s)} |")
    f = first["flat"]
    if f.get("head") not in (None, "cnn"):  # the headline flat model is a head on a flat CNN's features
        lines.append(f"| flat, {f['loss']} + {f['head']} head (best flat on dev) | {f.get('images_seen') or '-'} | "
                     f"{cell(f, 'top1')} | {cell(f, 'balanced_accuracy')} | {cell(f, 'macro_f1')} | {cell(f, 'top5')} "
                     f"| {friedel(f)} |")
    for s in summaries:
        t = s["tdc"]
        sizes = "+".join(str(len(lv)) for lv in t["levels"])
        name = f"TDC {t['mode']} ({sizes}, {t['routing']})"
        lines.append(f"| {name}, end to end | {t.get('images_seen') or '-'} | {cell(t, 'top1')} | "
                     f"{cell(t, 'balanced_accuracy')} | {cell(t, 'macro_f1')} | - | {friedel(t)} |")
        est_ci = (t.get("estimated_ci95") or {}).get("top1")
        est = pct(t["estimated_top1"]) + (f" [{pct(est_ci[0])}, {pct(est_ci[1])}]" if est_ci and None not in est_ci
                                          else "")
        lines.append(f"| {name}, *estimated* (perfect routing) | same | {est} | "
                     f"{pct(t.get('estimated_balanced_accuracy'))} | - | - | - |")
    lines.append("")
    lines.append(f"Test split: {first['n_test']} samples of {first['n_test_materials']} materials; intervals: 95 % "
                 f"bootstrap over {first['bootstrap'].get('over', 'materials')} ({first['bootstrap']['resamples']} "
                 f"resamples). Data: {first['data']}.")
    return "\n".join(lines) + "\n"
