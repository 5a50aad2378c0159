"""The features file: one feature *source* over one split, as an HDF5 file every head reads.

A feature source is a name (``cnn`` for a trained backbone's penultimate activations, ``symmetry``
for the physics descriptors of :mod:`cbedtdc.features.symmetry`, ``level_k`` for an own-backbone TDC
level) mapped to a float32 ``(N, D)`` array with the keys of its samples, per split. The file holds,
for every sample of the split in the split's order:

- ``features``: float32 ``(N, D)``;
- ``keys`` (``"file/group"``) and ``labels`` (space groups);
- attributes: ``format``, ``split``, ``source``, ``model`` (what computed it: a checkpoint's path or
  the descriptor set's name and version), ``model_sha256`` (a checksum of that), ``model_meta`` (JSON),
  ``dim``, ``n``, ``complete``.

:class:`FeatureWriter` appends batches to a resizable dataset (memory: one batch) under a temporary name
and renames the file when it is complete: a partial file is never seen under the final name, and an
interrupted extraction is simply rerun (a temporary file left by a killed run is removed first).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cbedtdc.errors import CbedtdcError, InputError
from cbedtdc.preprocess import sha256_file  # re-exported: the checkpoint hash a feature file records

__all__ = ["FEATURES_FORMAT", "FeaturesError", "FeatureSet", "FeatureWriter", "read_features", "sha256_file"]

log = logging.getLogger(__name__)

FEATURES_FORMAT = "cbedtdc-features/1"


class FeaturesError(CbedtdcError, RuntimeError):
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
    source: str = "cnn"
    path: str = ""
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)


class FeatureWriter:
    """Write one features file batch by batch, atomically.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with FeatureWriter(os.path.join(d, "f.h5"), ["a/1", "a/2"], [14, 2], dim=3, split="dev",
    ...                    source="demo", model="demo/1") as w:
    ...     w.append(np.ones((2, 3), dtype=np.float32))
    >>> fs = read_features(os.path.join(d, "f.h5"), split="dev")
    >>> fs.keys, fs.features.shape, fs.source
    (['a/1', 'a/2'], (2, 3), 'demo')
    """

    def __init__(self, out_path, keys, labels, *, dim: int, split: str, source: str, model: str,
                 model_sha256: str = "", model_meta: dict | None = None, chunk_rows: int = 64):
        self.out_path = Path(out_path)
        self.keys = [str(k) for k in keys]
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.keys) != len(self.labels):
            raise InputError(f"{out_path}: {len(self.keys)} keys but {len(self.labels)} labels")
        self.dim = int(dim)
        self.attrs = {"format": FEATURES_FORMAT, "split": split, "source": source, "model": str(model),
                      "model_sha256": str(model_sha256), "dim": self.dim, "n": len(self.keys),
                      "model_meta": json.dumps(model_meta or {}, default=str, sort_keys=True)}
        self.chunk_rows = max(1, min(int(chunk_rows), max(1, len(self.keys))))
        self.done = 0
        self._ctx = self._fh = self._feats = None

    def __enter__(self):
        import h5py

        from cbedtdc.io import atomic_path

        self._ctx = atomic_path(self.out_path, suffix=".h5")
        tmp = self._ctx.__enter__()
        try:
            self._fh = h5py.File(tmp, "x")
            self._fh.create_dataset("keys", data=np.array(self.keys, dtype=object), dtype=h5py.string_dtype())
            self._fh.create_dataset("labels", data=self.labels)
            self._feats = self._fh.create_dataset("features", shape=(0, self.dim), maxshape=(None, self.dim),
                                                  dtype=np.float32, chunks=(self.chunk_rows, self.dim))
            for k, v in self.attrs.items():
                self._fh.attrs[k] = v
        except BaseException:
            self._close(*sys.exc_info())
            raise
        return self

    def append(self, rows) -> None:
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise FeaturesError(f"{self.out_path}: a batch of shape {rows.shape}, expected (B, {self.dim})")
        if self.done + len(rows) > len(self.keys):
            raise FeaturesError(f"{self.out_path}: more rows than the {len(self.keys)} keys")
        self._feats.resize(self.done + len(rows), axis=0)
        self._feats[self.done: self.done + len(rows)] = rows
        self.done += len(rows)

    def _close(self, exc_type, exc, tb):
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        return self._ctx.__exit__(exc_type, exc, tb)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            if self.done != len(self.keys):
                err = FeaturesError(f"{self.out_path}: wrote {self.done} of {len(self.keys)} samples of "
                                    f"{self.attrs['split']}")
                self._close(type(err), err, None)
                raise err
            self._fh.attrs["complete"] = True
        return self._close(exc_type, exc, tb)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_features(path, *, split: str | None = None) -> FeatureSet:
    """Read a features file written by :class:`FeatureWriter`, checked for completeness.

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
            keys = [_text(k) for k in fh["keys"][()]]
            feats = np.asarray(fh["features"][()], dtype=np.float32)
            labels = np.asarray(fh["labels"][()], dtype=np.int64)
    except (OSError, KeyError) as err:
        raise FeaturesError(f"{path}: not a readable features file ({type(err).__name__}: {err}); delete it and "
                            "rerun its features rule") from err
    n = int(attrs.get("n", -1))
    if not attrs.get("complete") or not (len(keys) == len(labels) == feats.shape[0] == n):
        raise FeaturesError(f"{path}: incomplete ({feats.shape[0]} feature rows, {len(keys)} keys, {n} expected); "
                            "delete it and rerun its features rule")
    if split is not None and _text(attrs["split"]) != split:
        raise FeaturesError(f"{path}: holds the {_text(attrs['split'])} split, expected {split}")
    return FeatureSet(keys=keys, features=feats, labels=labels, split=_text(attrs["split"]),
                      model=_text(attrs["model"]), model_sha256=_text(attrs["model_sha256"]),
                      model_meta=json.loads(_text(attrs["model_meta"])), source=_text(attrs.get("source", "cnn")),
                      path=str(path), attrs={k: v for k, v in attrs.items() if k != "model_meta"})
