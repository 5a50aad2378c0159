"""The head jobs on files: a flat head over the run's classes on a list of feature sources (linear or
XGBoost: the paper's CNN-XGBoost is a flat head of ``kind: xgboost`` on the ``cnn`` source).

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

from cbedtdc.features.sources import load_split
from cbedtdc.heads.head import fit_head, load_head
from cbedtdc.heads.options import HeadError, resolve_spec
from cbedtdc.io import atomic_write_text

__all__ = ["head_suffix", "run_features", "head_images", "reorder_columns", "train_flat_head",
           "flat_head_probs"]

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
    if head.kind != "xgboost":  # torch heads (linear, mlp): epochs x fitted samples
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
