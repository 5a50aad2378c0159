"""Resampling of a head's standardised training features with imbalanced-learn (SMOTE, BorderlineSMOTE,
ClusterCentroids), the long-tail baselines a head can add to its loss and sampler."""

from __future__ import annotations

import logging

import numpy as np

from cbedtdc.heads.options import RESAMPLERS, HeadError

__all__ = ["resample"]

log = logging.getLogger(__name__)


def resample(X, y, method: str, *, n_classes: int, seed: int = 0, k_neighbors: int = 5, target: int = 0):
    """Resample ``(X, y)`` with imbalanced-learn; returns new ``(X, y)`` (float32, int64).

    ``smote`` and ``borderline_smote`` over-sample every class with at least two samples and fewer than
    ``target`` samples up to ``target`` (0: the largest class); ``k_neighbors`` is reduced to the
    smallest such class minus one, and classes with one sample are left as they are (logged).
    ``cluster_centroids`` replaces every class with more than ``target`` samples (0: the smallest
    class) by ``target`` k-means centroids. ``none`` returns the input. On a long tail a ``target``
    well below the largest class keeps the over-sampled set small (230 classes x the largest count
    would not fit in memory).
    """
    if method not in RESAMPLERS:
        raise HeadError(f"resample={method!r}: must be one of {', '.join(RESAMPLERS)}")
    y = np.asarray(y, dtype=np.int64)
    X = np.asarray(X, dtype=np.float32)
    present, cnt = np.unique(y, return_counts=True)
    if method == "none" or len(present) < 2:
        if method != "none":
            log.warning("resample=%s: only %d class present, nothing to resample", method, len(present))
        return X, y
    from imblearn.over_sampling import SMOTE, BorderlineSMOTE
    from imblearn.under_sampling import ClusterCentroids

    if method == "cluster_centroids":
        goal = int(target) or int(cnt.min())
        strategy = {int(c): goal for c, m in zip(present, cnt) if m > goal}
        sampler = ClusterCentroids(sampling_strategy=strategy, random_state=int(seed)) if strategy else None
    else:
        goal = int(target) or int(cnt.max())
        lone = present[cnt < 2].tolist()
        if lone:
            log.warning("resample=%s: classes %s have one training sample and are not over-sampled", method, lone)
        grow = (cnt >= 2) & (cnt < goal)
        strategy = {int(c): goal for c in present[grow]}
        k = int(min(k_neighbors, cnt[grow].min() - 1)) if grow.any() else 1
        cls = SMOTE if method == "smote" else BorderlineSMOTE
        sampler = cls(sampling_strategy=strategy, k_neighbors=k, random_state=int(seed)) if strategy else None
    if sampler is None:
        return X, y
    Xr, yr = sampler.fit_resample(X, y)
    log.info("resample=%s: %d -> %d training samples over %d classes", method, len(y), len(yr), n_classes)
    return np.ascontiguousarray(Xr, dtype=np.float32), np.asarray(yr, dtype=np.int64)
