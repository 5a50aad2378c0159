"""Optional CNN-XGBoost head (Ren et al. 2017): gradient-boosted trees on the ResNet's penultimate features.

A head is fitted on the features of a trained job (flat baseline or TDC level) over that job's own training
samples and outputs (its classes, plus "rest" for a rest-reading level), so its probabilities can replace the
softmax of the linear layer anywhere: in the flat baseline, and level by level in the cascade, which is then
routed exactly like the CNN one. The features are those of the features stage (:mod:`cbedtdc.features`,
rules ``features`` and ``features_level``: the model's own pooled penultimate activations of every sample of
a split); a level's samples are selected from them by key. xgboost is imported lazily; the booster is saved
as JSON next to a small metadata file, both written atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cbedtdc.features.store import FeaturesError, read_features
from cbedtdc.io import atomic_path, atomic_write_text
from cbedtdc.train.sampling import job_targets

__all__ = ["DEFAULT_PARAMS", "job_targets", "job_rows", "fit_booster", "predict_booster", "fit_head", "load_head",
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


def job_rows(fs, keys, source, keys_source=None) -> np.ndarray:
    """Row index into the features file ``fs`` of the job's ``keys``, in the file's (the split's) order.

    ``keys=None``: every row. A key that the file lacks raises, naming both files and the key (the
    features then come from other shards than the job). Duplicate keys count once, as in the job's
    :class:`cbedtdc.data.ShardDataset`.
    """
    if keys is None:
        return np.arange(len(fs), dtype=np.int64)
    wanted = set(keys)
    present = set(fs.keys)
    missing = [k for k in dict.fromkeys(keys) if k not in present]
    if missing:
        raise FeaturesError(f"{source}: {len(missing)} of the {len(wanted)} keys of {keys_source or 'the job'} are "
                            f"not in it (e.g. {missing[0]}); the features come from other shards than the job: "
                            "delete the features file and rerun its features rule")
    return np.array([i for i, k in enumerate(fs.keys) if k in wanted], dtype=np.int64)


def _job_features(path, split, keys, keys_source):
    fs = read_features(path, split=split)
    rows = job_rows(fs, keys, Path(path), keys_source)
    return fs, fs.features[rows], fs.labels[rows]


def fit_head(train_path, dev_path, out_path, *, train_keys=None, dev_keys=None, params=None, seed: int = 0,
             threads: int = 0, train_keys_source=None, dev_keys_source=None) -> dict:
    """Fit the head of one trained job on its features; write ``out_path`` (+ ``.meta.json``).

    Parameters
    ----------
    train_path, dev_path : path-like
        ``train.h5`` and ``dev.h5`` written by :func:`cbedtdc.features.extract_to_file` through the
        job's model (``results/features/flat/{loss}/`` or ``results/features/level_{k}/``); the job's
        outputs (classes, "rest") are read from the file's ``model_meta``.
    train_keys, dev_keys : list of str, optional
        The job's samples (a TDC level's ``job/train_keys.csv``, ``job/dev_keys.csv``); ``None``: every
        row of the file (a flat model), of which the samples of the job's outputs are kept. An empty
        ``dev_keys`` turns early stopping off.
    train_keys_source, dev_keys_source : str, optional
        Where the keys came from, for error messages.
    """
    fs, xtr, ytr = _job_features(train_path, "train", train_keys, train_keys_source)
    meta = fs.model_meta
    classes, rest = [int(c) for c in meta["classes"]], bool(meta.get("rest", False))
    n_out = len(classes) + int(rest)
    ttr, keep = job_targets(ytr, classes, rest)
    if not keep.any():
        raise ValueError(f"{train_path}: no training sample of the job's outputs {classes} for the XGBoost head")
    dev = None
    if dev_keys is None or len(dev_keys):
        dfs, xdv, ydv = _job_features(dev_path, "dev", dev_keys, dev_keys_source)
        if dfs.model_sha256 != fs.model_sha256:
            raise FeaturesError(f"{dev_path} was extracted through another model than {train_path} ({dfs.model} vs "
                                f"{fs.model}); rerun the features rule of the older one")
        tdv, kdv = job_targets(ydv, classes, rest)
        dev = (xdv[kdv], tdv[kdv])
    booster = fit_booster(xtr[keep], ttr[keep], n_out, params=params, seed=seed, dev=dev, threads=threads)
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".json") as tmp:
        booster.save_model(str(tmp))
    info = {"classes": classes, "rest": rest, "n_outputs": n_out, "n_train": int(keep.sum()),
            "n_dev": 0 if dev is None else int(len(dev[1])), "features": int(xtr.shape[1]),
            "params": {**DEFAULT_PARAMS, **(params or {})}, "seed": int(seed), "model": fs.model,
            "model_sha256": fs.model_sha256, "train_features": str(train_path),
            "best_iteration": getattr(booster, "best_iteration", None)}
    if dev is not None and len(dev[1]):
        p = predict_booster(booster, dev[0])
        info["dev_accuracy"] = float((p.argmax(1) == dev[1]).mean())
    atomic_write_text(out_path.with_suffix(".meta.json"), json.dumps(info, indent=2) + "\n")
    log.info("XGBoost head of %s: %d outputs, %d train / %d dev samples, %d features from %s -> %s", fs.model,
             n_out, info["n_train"], info["n_dev"], info["features"], train_path, out_path)
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


def head_probs(head_path, features_path, split: str):
    """``(keys, probabilities)`` of a head on every row of a features file, checked against its job.

    The file must come from the model the head was fitted on (same checkpoint hash); align the rows
    to the samples you score by key.
    """
    booster, info = load_head(head_path)
    fs = read_features(features_path, split=split)
    meta = fs.model_meta
    if [int(c) for c in meta["classes"]] != info["classes"] or bool(meta.get("rest", False)) != info["rest"]:
        raise ValueError(f"{head_path} was fitted for outputs {info['classes']} rest={info['rest']}, "
                         f"{features_path} holds features of a model with {meta['classes']} rest={meta.get('rest')}; "
                         "rerun its xgboost rule")
    if info.get("model_sha256") and info["model_sha256"] != fs.model_sha256:
        raise ValueError(f"{features_path} was extracted through another checkpoint of {fs.model} than {head_path} "
                         "was fitted on; rerun its features and xgboost rules")
    return fs.keys, predict_booster(booster, fs.features)
