"""Inference with a trained model: logits and penultimate features of a split, averaged over the panels."""

from __future__ import annotations

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["inference_device", "forward", "run_eval", "predict", "extract_features"]


def inference_device(name: str = "auto") -> str:
    """``cpu``, ``cuda``, or for ``auto`` the first GPU when torch sees one (CPU results are the
    deterministic reference)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def forward(model, x, orientation: str, features: bool = False):
    """Logits (or features) of a batch of (B, 3, S, S) stacks, averaged over the panels when the
    model reads one panel."""
    fn = model.features if features else model
    if orientation == "random":
        return sum(fn(x[:, p: p + 1]) for p in range(x.shape[1])) / x.shape[1]
    return fn(x)


def run_eval(model, ds, orientation: str, batch_size: int, device: str, features: bool = False) -> np.ndarray:
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ds), batch_size):
            x = torch.stack([ds[i][0] for i in range(start, min(start + batch_size, len(ds)))])
            out.append(forward(model, x.to(device), orientation, features).float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def _inference(model, meta, shard_root, split, keys, batch_size, features):
    from cbedtdc.data import ShardDataset

    ds = ShardDataset(shard_root, split, keys=keys, orientation="stack")
    if len(ds) and ds.image_size != meta["image_size"]:
        raise InputError(f"{shard_root}/{split}.csv: images are {ds.image_size} px, the model was trained on "
                         f"{meta['image_size']} px")
    device = str(next(model.parameters()).device)
    out = run_eval(model, ds, meta["orientation"], batch_size, device, features)
    return list(ds.keys), out


def predict(model, meta, shard_root, split, keys=None, batch_size: int = 64):
    """Logits of every sample of ``split`` (optionally only ``keys``), one process.

    Models trained on one panel see each of the three panels and their logits are averaged;
    stack models see the stack once. Returns ``(keys, logits)`` with logits of shape
    ``(N, meta["n_outputs"])`` in ``keys`` order. Deterministic on CPU.
    """
    return _inference(model, meta, shard_root, split, keys, batch_size, features=False)


def extract_features(model, meta, shard_root, split, keys=None, batch_size: int = 64):
    """Penultimate-layer features (after global pooling), averaged like :func:`predict`.

    Returns ``(keys, features)``, features of shape ``(N, 512 or 2048)``.
    """
    return _inference(model, meta, shard_root, split, keys, batch_size, features=True)
