"""The one XGBoost implementation of the project: a multi-class booster (``multi:softprob``, histogram
method) with optional sample weights and early stopping on dev, and its probabilities.

Used by every XGBoost head (:class:`cbedtdc.heads.Head` with ``kind: xgboost``): flat heads (the
CNN-XGBoost of Ren et al. 2017 is one on the ``cnn`` source) and the levels of the shared-backbone TDC.
xgboost is imported lazily. The native API with ``num_class`` allows classes absent from the training
targets, unlike the scikit-learn wrapper.
"""

from __future__ import annotations

import numpy as np

from cbedtdc.heads.options import XGBOOST_DEFAULTS

__all__ = ["fit_booster", "booster_probs"]


def fit_booster(X, y, n_classes: int, *, params=None, seed: int = 0, dev=None, threads: int = 0, weight=None):
    """Train a booster on ``(X, y)``; ``dev = (X, y)`` enables early stopping on its log-loss.

    ``params``: :data:`~cbedtdc.heads.options.XGBOOST_DEFAULTS` updated with these; ``weight``: one
    sample weight per row (e.g. inverse class frequency), or None.
    """
    import xgboost as xgb

    p = {**XGBOOST_DEFAULTS, **(params or {})}
    booster_params = {"objective": "multi:softprob", "num_class": int(n_classes), "max_depth": int(p["max_depth"]),
                      "eta": float(p["learning_rate"]), "subsample": float(p["subsample"]),
                      "colsample_bytree": float(p["colsample_bytree"]), "tree_method": "hist", "seed": int(seed),
                      "eval_metric": "mlogloss"}
    if int(threads):
        booster_params["nthread"] = int(threads)
    dtrain = xgb.DMatrix(np.asarray(X, dtype=np.float32), label=np.asarray(y), weight=weight)
    evals, stop = [], None
    if dev is not None and len(dev[1]) and int(p["early_stopping"]) > 0:
        evals = [(xgb.DMatrix(np.asarray(dev[0], dtype=np.float32), label=np.asarray(dev[1])), "dev")]
        stop = int(p["early_stopping"])
    return xgb.train(booster_params, dtrain, num_boost_round=int(p["n_estimators"]), evals=evals,
                     early_stopping_rounds=stop, verbose_eval=False)


def booster_probs(booster, Xs) -> np.ndarray:
    """Probabilities ``(N, n_classes)`` (float64), using the best iteration when early stopping found one."""
    import xgboost as xgb

    best = getattr(booster, "best_iteration", None)
    kw = {"iteration_range": (0, int(best) + 1)} if best is not None else {}
    p = booster.predict(xgb.DMatrix(np.asarray(Xs, dtype=np.float32)), **kw)
    return np.asarray(p, dtype=np.float64).reshape(len(Xs), -1)
