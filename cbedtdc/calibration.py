"""Calibration of classifier scores: softmax, one temperature fitted on held-out data, re-tempering.

Temperature scaling (Guo et al., "On calibration of modern neural networks", ICML 2017): the logits
are divided by one scalar ``T`` chosen to minimise the log-loss on dev; the ranking (and so top-1) is
unchanged, the probabilities become usable as confidences. The heads (:mod:`cbedtdc.heads`) fit it on
their dev features, the cascade (:mod:`cbedtdc.cascade.routing`) one per level before routing.
Pure numpy and scipy.
"""

from __future__ import annotations

import math

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["softmax", "fit_temperature", "calibrate"]


def softmax(logits) -> np.ndarray:
    """Row-wise softmax in float64.

    >>> softmax(np.array([[0.0, 0.0]])).tolist()
    [[0.5, 0.5]]
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits, y, bounds=(0.05, 20.0)) -> float:
    """Temperature ``T`` minimising the log-loss of ``softmax(logits / T)`` on ``(logits, y)``.

    Three of four samples right with logit margin 10: the calibrated probability 3/4 needs
    ``10 / T = log 3``.

    >>> z = np.array([[10.0, 0.0], [0.0, 10.0], [10.0, 0.0], [0.0, 10.0]])
    >>> round(fit_temperature(z, np.array([0, 1, 0, 0])), 2), round(10 / math.log(3), 2)
    (9.1, 9.1)
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda t: _nll(z / math.exp(t), y), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def calibrate(probs, temperatures) -> list[np.ndarray]:
    """Probabilities of every level re-tempered: ``softmax(log p / T_k)``.

    ``log p`` are logits up to a constant per row, so this equals dividing the level's logits by
    ``T_k``. ``temperatures=None`` returns the probabilities unchanged.

    >>> calibrate([np.array([[0.8, 0.2]])], [2.0])[0].round(3).tolist()
    [[0.667, 0.333]]
    """
    probs = [np.asarray(p, dtype=np.float64) for p in probs]
    if temperatures is None:
        return probs
    if len(temperatures) != len(probs):
        raise InputError(f"{len(temperatures)} temperatures for {len(probs)} levels")
    out = []
    for p, t in zip(probs, temperatures):
        if not float(t) > 0:
            raise InputError(f"temperature {t}: must be > 0")
        out.append(softmax(np.log(np.clip(p, 1e-12, None)) / float(t)))
    return out
