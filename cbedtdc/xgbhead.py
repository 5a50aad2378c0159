"""Optional CNN-XGBoost head (Ren et al. 2017): gradient-boosted trees on the ResNet's penultimate features.

A head is fitted on the features of a trained job (flat baseline or TDC level) over that job's own training
samples and outputs (its classes, plus "rest" for a rest-reading level), so its probabilities can replace the
softmax of the linear layer anywhere: in the flat baseline, and level by level in the cascade, which is then
routed exactly like the CNN one. xgboost is imported lazily; the booster is saved as JSON next to a small
metadata file, both written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cbedtdc.io import atomic_path, atomic_write_text
from cbedtdc.train.sampling import job_targets

__all__ = ["DEFAULT_PARAMS", "job_targets", "fit_booster", "predict_booster", "fit_head", "load_head",
           "head_probs"]

log = logging.getLogger(__name__)

#: Booster settings (config ``xgboost``): shallow trees on ~512-2048 features, histogram method.
DEFAULT_PARAMS = {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "subsample": 0.8,
                  "colsample_bytree": 0.5, "early_stopping": 20}


def fit_booster(features, targets, n_outputs: int, *, params=None, seed: int = 0, dev=None, threads: int = 0):
    """Train a multi-class booster; ``dev = (features, targets)`` enables early stopping on its log-loss.

    Classes absent from ``targets`` are allowed (native API with ``num_class``), unlike the sklearn wrapper.
    """
    import xgboost as xgb

    p = {**DEFAULT_PARAMS, **(params or {})}
    booster_params = {"objective": "multi:softprob", "num_class": int(n_outputs), "max_depth": int(p["max_depth"]),
                      "eta": float(p["learning_rate"]), "subsample": float(p["subsample"]),
                      "colsample_bytree": float(p["colsample_bytree"]), "tree_method": "hist", "seed": int(seed),
                      "eval_metric": "mlogloss"}
    if threads:
        booster_params["nthread"] = int(threads)
    dtrain = xgb.DMatrix(np.asarray(features, dtype=np.float32), label=np.asarray(targets))
    evals, stop = [], None
    if dev is not None and len(dev[1]) and int(p["early_stopping"]) > 0:
        evals = [(xgb.DMatrix(np.asarray(dev[0], dtype=np.float32), label=np.asarray(dev[1])), "dev")]
        stop = int(p["early_stopping"])
    return xgb.train(booster_params, dtrain, num_boost_round=int(p["n_estimators"]), evals=evals,
                     early_stopping_rounds=stop, verbose_eval=False)


def predict_booster(booster, features) -> np.ndarray:
    """Probabilities ``(N, n_outputs)``, using the best iteration when early stopping found one."""
    import xgboost as xgb

    d = xgb.DMatrix(np.asarray(features, dtype=np.float32))
    best = getattr(booster, "best_iteration", None)
    kw = {"iteration_range": (0, best + 1)} if best is not None else {}
    return np.asarray(booster.predict(d, **kw), dtype=np.float64).reshape(len(features), -1)


def _features(model, meta, shard_root, split, keys, batch_size):
    from cbedtdc.data import ShardDataset
    from cbedtdc.train import extract_features

    ds = ShardDataset(shard_root, split, keys=keys)
    got, feats = extract_features(model, meta, shard_root, split, keys=keys, batch_size=batch_size)
    if list(got) != list(ds.keys):
        raise RuntimeError(f"extract_features returned the {split} samples in another order")
    return feats, ds.labels


def fit_head(model_path, shard_root, out_path, *, train_keys=None, dev_keys=None, params=None, seed: int = 0,
             batch_size: int = 64, device: str = "cpu", threads: int = 0) -> dict:
    """Fit the head of one trained job on its training samples; write ``out_path`` (+ ``.meta.json``)."""
    from cbedtdc.train import inference_device, load_model

    model, meta = load_model(model_path, device=inference_device(device))
    classes, rest = [int(c) for c in meta["classes"]], bool(meta.get("rest", False))
    n_out = len(classes) + int(rest)
    xtr, ytr = _features(model, meta, shard_root, "train", train_keys, batch_size)
    ttr, keep = job_targets(ytr, classes, rest)
    if not keep.any():
        raise ValueError(f"{model_path}: no training sample of its outputs {classes} for the XGBoost head")
    dev = None
    if dev_keys is None or len(dev_keys):
        xdv, ydv = _features(model, meta, shard_root, "dev", dev_keys, batch_size)
        tdv, kdv = job_targets(ydv, classes, rest)
        dev = (xdv[kdv], tdv[kdv])
    booster = fit_booster(xtr[keep], ttr[keep], n_out, params=params, seed=seed, dev=dev, threads=threads)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".json") as tmp:
        booster.save_model(str(tmp))
    info = {"classes": classes, "rest": rest, "n_outputs": n_out, "n_train": int(keep.sum()),
            "n_dev": 0 if dev is None else int(len(dev[1])), "features": int(xtr.shape[1]),
            "params": {**DEFAULT_PARAMS, **(params or {})}, "seed": int(seed), "model": str(model_path),
            "best_iteration": getattr(booster, "best_iteration", None)}
    if dev is not None and len(dev[1]):
        p = predict_booster(booster, dev[0])
        info["dev_accuracy"] = float((p.argmax(1) == dev[1]).mean())
    atomic_write_text(out_path.with_suffix(".meta.json"), json.dumps(info, indent=2) + "\n")
    log.info("XGBoost head of %s: %d outputs, %d train / %d dev samples, %d features -> %s", model_path, n_out,
             info["n_train"], info["n_dev"], info["features"], out_path)
    return info


def load_head(path):
    """``(booster, info)`` of a head written by :func:`fit_head`."""
    import xgboost as xgb

    path = Path(path)
    try:
        info = json.loads(path.with_suffix(".meta.json").read_text())
        booster = xgb.Booster()
        booster.load_model(str(path))
    except (OSError, ValueError, xgb.core.XGBoostError) as err:
        raise ValueError(f"{path}: not a readable XGBoost head ({err}); rerun its xgboost rule") from err
    if info.get("best_iteration") is not None:
        booster.best_iteration = int(info["best_iteration"])
    return booster, info


def head_probs(head_path, model, meta, shard_root, split, keys, batch_size: int = 64) -> np.ndarray:
    """Head probabilities of ``keys`` of ``split`` through ``model``'s features, checked against its job."""
    from cbedtdc.train import extract_features

    booster, info = load_head(head_path)
    if [int(c) for c in meta["classes"]] != info["classes"] or bool(meta.get("rest", False)) != info["rest"]:
        raise ValueError(f"{head_path} was fitted for outputs {info['classes']} rest={info['rest']}, the model has "
                         f"{meta['classes']} rest={meta.get('rest')}; rerun its xgboost rule")
    got, feats = extract_features(model, meta, shard_root, split, keys=keys, batch_size=batch_size)
    if list(got) != list(keys):
        raise RuntimeError(f"extract_features returned the {split} samples in another order")
    return predict_booster(booster, feats)
