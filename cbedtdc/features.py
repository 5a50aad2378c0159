"""Penultimate features of a trained backbone over one split, streamed to an HDF5 file.

The heads of :mod:`cbedtdc.heads` train on these. A features file holds, for every sample of the
split in the split's order:

- ``features``: float32 ``(N, D)``, the activations after global average pooling, computed the way
  the model sees its input: a model trained on one panel (``orientation: random``) gets each of the
  three panels and its features are averaged (so its linear layer on them gives exactly the logits
  that :func:`cbedtdc.train.predict` averages); a stack model sees the stack once;
- ``keys`` (``"file/group"``) and ``labels`` (space groups);
- attributes: ``format``, ``split``, ``model`` (the checkpoint's path), ``model_sha256``,
  ``model_meta`` (JSON: classes, rest, arch, orientation, loss, ...), ``dim``, ``n``.

Batches are appended to a resizable dataset, so memory stays at one batch. The file is written under
a temporary name and renamed when complete: a partial file is never seen under the final name, and an
interrupted extraction is simply rerun (a temporary file left by a killed run is removed first).
CPU results are deterministic; a GPU may differ in the last bits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FEATURES_FORMAT", "FeaturesError", "FeatureSet", "pooled_features", "torch_threads", "extract_to_file",
           "read_features"]

log = logging.getLogger(__name__)

FEATURES_FORMAT = "cbedtdc-features/1"
_META_KEYS = ("classes", "rest", "output_names", "arch", "orientation", "in_channels", "n_outputs", "image_size",
              "loss", "epoch")


class FeaturesError(RuntimeError):
    """A features file that cannot be read or does not fit (the message names the file)."""


@dataclass
class FeatureSet:
    """Contents of a features file (see :func:`read_features`)."""

    keys: list[str]
    features: np.ndarray
    labels: np.ndarray
    split: str
    model: str
    model_sha256: str
    model_meta: dict

    def __len__(self) -> int:
        return len(self.keys)


def pooled_features(model, x, orientation: str):
    """Features of a batch of ``(B, 3, S, S)`` uint8 stacks as the model sees them.

    ``orientation="random"`` (a one-panel model): the mean of the features of the three panels;
    ``"stack"``: the features of the stack. Call under ``torch.inference_mode()``.
    """
    if orientation == "random":
        return sum(model.features(x[:, p: p + 1]) for p in range(x.shape[1])) / x.shape[1]
    if orientation == "stack":
        return model.features(x)
    raise ValueError(f"orientation={orientation!r}: must be 'random' or 'stack'")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run the block with ``threads`` torch intra-op threads (0: leave torch's setting), then restore.

    On a shared CPU fewer threads than cores can be several times faster (no spinning OpenMP workers).
    """
    import torch

    before = torch.get_num_threads()
    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _open_split(shard_root, split, keys, meta, model_path):
    from cbedtdc.data import ShardDataset

    ds = ShardDataset(shard_root, split, keys=keys, orientation="stack")
    if len(ds) and ds.image_size != meta["image_size"]:
        raise FeaturesError(f"{shard_root}/{split}.csv: images are {ds.image_size} px, {model_path} was trained "
                            f"on {meta['image_size']} px; use the shards the model was trained on")
    return ds


def _create(fh, ds, dim: int, chunk_rows: int, attrs: dict):
    import h5py

    n = len(ds)
    fh.create_dataset("keys", data=np.array(ds.keys, dtype=object), dtype=h5py.string_dtype())
    fh.create_dataset("labels", data=np.asarray(ds.labels, dtype=np.int64))
    feats = fh.create_dataset("features", shape=(0, dim), maxshape=(None, dim), dtype=np.float32,
                              chunks=(max(1, min(chunk_rows, n)), dim))
    for k, v in attrs.items():
        fh.attrs[k] = v
    return feats


def extract_to_file(model_path, shard_root, split: str, out_path, *, keys=None, batch_size: int = 64,
                    device: str = "cpu", workers: int = 0, threads: int = 0, progress: bool = True) -> dict:
    """Write the features of ``split`` (optionally only ``keys``) through ``model_path`` to ``out_path``.

    Parameters
    ----------
    model_path : path-like
        ``best.pt`` / ``last.pt`` of a trained job (:func:`cbedtdc.train.load_model`).
    shard_root : path-like
        Shard root holding ``{split}.csv``.
    split : {"train", "dev", "test"}
    out_path : path-like
        The HDF5 file to write (replaced atomically when complete).
    keys : iterable of str, optional
        Keep only these samples (in the split's order).
    batch_size : int
        Samples per forward pass; also the rows held in memory.
    device : {"cpu", "cuda", "auto"}
    workers : int
        DataLoader worker processes (0: read in this process).
    threads : int
        Torch intra-op threads during the extraction (0: torch's default).
    progress : bool
        Show a tqdm bar (refreshed at most every 5 s).

    Returns
    -------
    dict
        ``n``, ``dim``, ``split``, ``device``, ``seconds``, ``samples_per_s``, ``out``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    with torch_threads(threads):
        return _extract(Path(model_path), shard_root, split, Path(out_path), keys=keys, batch_size=int(batch_size),
                        dev=_device(device), workers=int(workers), progress=progress)


def _extract(model_path: Path, shard_root, split, out_path: Path, *, keys, batch_size, dev, workers, progress):
    import h5py
    import torch
    from tqdm import tqdm

    from cbedtdc.io import atomic_path
    from cbedtdc.train import load_model

    model, meta = load_model(model_path, device=dev)
    ds = _open_split(shard_root, split, keys, meta, model_path)
    dim = int(model.backbone.fc.in_features)
    attrs = {"format": FEATURES_FORMAT, "split": split, "model": str(model_path), "model_sha256": _sha256(model_path),
             "model_meta": json.dumps({k: meta.get(k) for k in _META_KEYS}, default=str), "dim": dim, "n": len(ds)}
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    t0, done = time.perf_counter(), 0
    with atomic_path(out_path, suffix=".h5") as tmp:
        with h5py.File(tmp, "x") as fh:
            feats = _create(fh, ds, dim, batch_size, attrs)
            bar = tqdm(total=len(ds), desc=f"features {split}", unit="sample", mininterval=5.0, disable=not progress)
            with bar, torch.inference_mode():
                for x, _ in loader:
                    f = pooled_features(model, x.to(dev), meta["orientation"]).float().cpu().numpy()
                    feats.resize(done + len(f), axis=0)
                    feats[done: done + len(f)] = f
                    done += len(f)
                    bar.update(len(f))
            if done != len(ds):
                raise FeaturesError(f"{out_path}: wrote {done} of {len(ds)} samples of {split}")
            fh.attrs["complete"] = True
    secs = time.perf_counter() - t0
    info = {"n": done, "dim": dim, "split": split, "device": dev, "seconds": round(secs, 3),
            "samples_per_s": round(done / secs, 2) if secs > 0 else None, "out": str(out_path)}
    log.info("features of %d %s samples (%d-d) through %s on %s in %.1f s -> %s", done, split, dim, model_path,
             dev, secs, out_path)
    return info


def read_features(path, *, split: str | None = None) -> FeatureSet:
    """Read a features file written by :func:`extract_to_file`, checked for completeness.

    ``split``, when given, must match the file's split.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FeaturesError(f"{path}: features file not found; run its features rule")
    try:
        with h5py.File(path, "r") as fh:
            attrs = dict(fh.attrs)
            if attrs.get("format") != FEATURES_FORMAT:
                raise FeaturesError(f"{path}: not a {FEATURES_FORMAT} file (format {attrs.get('format')!r})")
            keys = [k.decode() if isinstance(k, bytes) else str(k) for k in fh["keys"][()]]
            feats = np.asarray(fh["features"][()], dtype=np.float32)
            labels = np.asarray(fh["labels"][()], dtype=np.int64)
    except (OSError, KeyError) as err:
        raise FeaturesError(f"{path}: not a readable features file ({type(err).__name__}: {err}); delete it and "
                            "rerun its features rule") from err
    n = int(attrs.get("n", -1))
    if not attrs.get("complete") or not (len(keys) == len(labels) == feats.shape[0] == n):
        raise FeaturesError(f"{path}: incomplete ({feats.shape[0]} feature rows, {len(keys)} keys, {n} expected); "
                            "delete it and rerun its features rule")
    if split is not None and attrs["split"] != split:
        raise FeaturesError(f"{path}: holds the {attrs['split']} split, expected {split}")
    return FeatureSet(keys=keys, features=feats, labels=labels, split=str(attrs["split"]), model=str(attrs["model"]),
                      model_sha256=str(attrs["model_sha256"]), model_meta=json.loads(attrs["model_meta"]))
