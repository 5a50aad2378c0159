"""The head jobs on files: a flat head over the run's classes on a list of feature sources, and the
CNN-XGBoost head of one trained job (``xgboost.activate``: a flat CNN or an own-backbone TDC level).

Inputs are features files (:mod:`cbedtdc.features`): one folder per source holding ``{split}.h5``
(:mod:`cbedtdc.features.registry`: ``results/features/flat/{loss}/``, ``results/features/symmetry/``, ...).
A head reads a *list* of sources, joined by key and concatenated (:func:`cbedtdc.features.load_split`);
the head standardises every column. The class order of a flat head is the run's
(``results/data/run_classes.json``); its probabilities are returned in whatever order the caller asks
for, so a head, the cascade and the evaluation agree whatever the data's class-count order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from cbedtdc.features.sources import load_sources, load_split
from cbedtdc.features.store import FeaturesError, read_features
from cbedtdc.heads.head import fit_head, load_head
from cbedtdc.heads.options import HeadError, resolve_spec
from cbedtdc.io import atomic_write_text
from cbedtdc.train.sampling import job_targets

__all__ = ["head_suffix", "run_features", "head_images", "reorder_columns", "train_flat_head",
           "flat_head_probs", "fit_job_head", "job_head_probs"]

log = logging.getLogger(__name__)


def head_suffix(kind: str) -> str:
    """File suffix of a head: ``.json`` (XGBoost's own format) or ``.pt`` (a linear head).

    >>> head_suffix("xgboost"), head_suffix("linear")
    ('.json', '.pt')
    """
    return ".json" if kind == "xgboost" else ".pt"


def run_features(dirs, split: str, classes, keys=None):
    """``(keys, X, y)`` of the run's ``classes`` in the sources ``dirs`` of ``split``, in the split's order."""
    ss = load_split(dirs, split, classes=classes, keys=keys)
    return ss.keys, ss.X, ss.labels


def head_images(head) -> int:
    """Feature vectors a head processed while fitting: epochs x fitted samples (linear) or rounds x
    fitted samples (XGBoost); the head's share of the compute budget, beside the backbone's images."""
    n = int(head.info.get("n_fit", 0))
    if head.kind == "linear":
        return n * int(head.spec["epochs"])
    rounds = head.info.get("best_iteration")
    rounds = int(head.spec["xgboost"]["n_estimators"]) if rounds is None else int(rounds) + 1
    return n * rounds


def reorder_columns(probs, have, want, source, rule: str = "head") -> np.ndarray:
    """Columns of ``probs`` (in class order ``have``) put in class order ``want``; the sets must be equal.

    >>> reorder_columns(np.array([[0.1, 0.9]]), [2, 14], [14, 2], "h.pt").tolist()
    [[0.9, 0.1]]
    """
    have, want = [int(c) for c in have], [int(c) for c in want]
    if sorted(have) != sorted(want):
        raise HeadError(f"{source}: fitted on classes {have}, the run has {want}; it was fitted for another run: "
                        f"rerun its rule (snakemake -R {rule})")
    return np.asarray(probs)[:, [have.index(c) for c in want]]


def _index(labels, classes) -> np.ndarray:
    pos = {int(c): i for i, c in enumerate(classes)}
    return np.array([pos[int(v)] for v in labels], dtype=np.int64)


def train_flat_head(dirs, out_path, classes, *, spec=None, seed: int = 0) -> dict:
    """Fit one flat head on the sources ``dirs`` (train; temperature on dev), save it to ``out_path``.

    ``classes`` is the run's class order (output ``i`` is ``classes[i]``). Returns the head's metadata
    (also written beside it as ``<out>.meta.json``).
    """
    spec = resolve_spec(spec)
    classes = [int(c) for c in classes]
    tr = load_split(dirs, "train", classes=classes)
    dv = load_split(dirs, "dev", classes=classes)
    first = tr.parts[0]
    info = {"classes": classes, "sources": tr.provenance(), "backbone": first["model"],
            "backbone_sha256": first["model_sha256"]}
    head = fit_head(tr.X, _index(tr.labels, classes), len(classes), spec=spec,
                    dev=(dv.X, _index(dv.labels, classes)) if len(dv) else None, seed=seed,
                    source=first["path"], info=info)
    head.info["head_images"] = head_images(head)
    head.save(out_path)
    meta = head.metadata()
    atomic_write_text(str(out_path) + ".meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def flat_head_probs(head_path, dirs, split: str, classes, keys=None, calibrated: bool = True):
    """``(keys, probs with columns in ``classes`` order, head)`` of a flat head on one split (``calibrated=False``:
    before its temperature)."""
    head = load_head(head_path)
    got_keys, X, _ = run_features(dirs, split, classes, keys=keys)
    p = reorder_columns(head.predict_proba(X, calibrated), head.info.get("classes", []), classes, head_path)
    return got_keys, p, head


# --------------------------------------------------------------------------- CNN-XGBoost of one trained job
def _job_rows(path, split, keys, keys_source):
    try:
        ss = load_sources([path], split, keys=keys)
    except FeaturesError as err:
        raise FeaturesError(f"{err} (the keys of {keys_source or 'the job'})") from err
    if keys is not None and len(set(keys)) != len(ss):
        raise FeaturesError(f"{path}: holds {len(ss)} of the {len(set(keys))} keys of {keys_source or 'the job'}")
    return ss


def fit_job_head(train_path, dev_path, out_path, *, train_keys=None, dev_keys=None, params=None, seed: int = 0,
                 threads: int = 0, train_keys_source=None, dev_keys_source=None) -> dict:
    """Fit the XGBoost head of one trained job on its own features; write ``out_path`` (+ ``.meta.json``).

    The job's outputs (classes, "rest") come from the features file's ``model_meta``; ``train_keys`` /
    ``dev_keys`` are the job's samples (a TDC level's ``job/train_keys.csv``), ``None`` meaning every row
    of the job's outputs (a flat model). An empty ``dev_keys`` turns early stopping off.
    """
    tr = _job_rows(train_path, "train", train_keys, train_keys_source)
    meta = read_features(train_path, split="train").model_meta
    classes, rest = [int(c) for c in meta["classes"]], bool(meta.get("rest", False))
    n_out = len(classes) + int(rest)
    ttr, keep = job_targets(tr.labels, classes, rest)
    if not keep.any():
        raise HeadError(f"{train_path}: no training sample of the job's outputs {classes} for the XGBoost head")
    dev = None
    if dev_keys is None or len(dev_keys):
        dv = _job_rows(dev_path, "dev", dev_keys, dev_keys_source)
        if dv.parts[0]["model_sha256"] != tr.parts[0]["model_sha256"]:
            raise FeaturesError(f"{dev_path} was extracted through another model than {train_path}; rerun the "
                                "features rule of the older one")
        tdv, kdv = job_targets(dv.labels, classes, rest)
        dev = (dv.X[kdv], tdv[kdv])
    spec = {"kind": "xgboost", "xgboost": dict(params or {}), "threads": int(threads), "temperature": False}
    info = {"classes": classes, "rest": rest, "model": tr.parts[0]["model"],
            "model_sha256": tr.parts[0]["model_sha256"], "train_features": str(train_path)}
    head = fit_head(tr.X[keep], ttr[keep], n_out, spec=spec, dev=dev if dev is not None and len(dev[1]) else None,
                    seed=seed, info=info, source=str(train_path))
    head.save(out_path)
    out = head.metadata()
    if dev is not None and len(dev[1]):
        out["dev_accuracy"] = float((head.predict(dev[0]) == dev[1]).mean())
    atomic_write_text(Path(out_path).with_suffix(".meta.json"), json.dumps(out, indent=2) + "\n")
    log.info("XGBoost head of %s: %d outputs, %d train samples -> %s", info["model"], n_out, int(keep.sum()),
             out_path)
    return out


def job_head_probs(head_path, features_path, split: str):
    """``(keys, probabilities)`` of a job's XGBoost head on every row of a features file of that job.

    The file must come from the checkpoint the head was fitted on (same hash) and the same outputs.
    """
    head = load_head(head_path)
    fs = read_features(features_path, split=split)
    meta, info = fs.model_meta, head.info
    if [int(c) for c in meta["classes"]] != info.get("classes") or bool(meta.get("rest", False)) != info.get("rest"):
        raise HeadError(f"{head_path} was fitted for outputs {info.get('classes')} rest={info.get('rest')}, "
                        f"{features_path} holds features of a model with {meta['classes']} rest={meta.get('rest')}; "
                        "rerun its xgboost rule")
    if info.get("model_sha256") and info["model_sha256"] != fs.model_sha256:
        raise HeadError(f"{features_path} was extracted through another checkpoint of {fs.model} than {head_path} "
                        "was fitted on; rerun its features and xgboost rules")
    return fs.keys, head.predict_proba(fs.features)
