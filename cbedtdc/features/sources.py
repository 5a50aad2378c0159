"""Several feature sources of one split joined by key: the input of every head.

A head names a *list* of sources (``[cnn]``, ``[symmetry]``, ``[cnn, symmetry]``); each is one folder of
``{split}.h5`` features files (:mod:`cbedtdc.features.store`, :mod:`cbedtdc.features.registry` says which folder).
:func:`load_split` reads one split of such folders, :func:`load_sources` any list of files; each keeps the run's
classes, aligns every source to the first one's rows by key and concatenates the columns; the heads
standardise every column (:class:`cbedtdc.heads.Head`), so sources of different scales mix.

A descriptor source's train file may hold perturbed copies of the training stacks after its clean rows (config
``features.augment``, keys ``"<key>@aug<copy>"``): a join keeps them only when every source has them (a head on
``[symmetry]`` alone trains on them; on ``[cnn, symmetry]`` the CNN features have no copies, so the head reads the
clean rows), and says how many it left out in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbedtdc.features.augment import is_augmented
from cbedtdc.features.spec import split_file
from cbedtdc.features.store import FeaturesError, read_features
from cbedtdc.errors import InputError

__all__ = ["SourceSet", "load_sources", "load_split", "source_files", "align_rows"]

log = logging.getLogger(__name__)


@dataclass
class SourceSet:
    """Rows of one split over one or more sources: ``X`` is ``(N, sum of dims)`` float32."""

    keys: list[str]
    X: np.ndarray
    labels: np.ndarray
    split: str
    parts: list[dict] = field(default_factory=list)  # per source: path, source, dim, model, model_sha256, image_size

    def __len__(self) -> int:
        return len(self.keys)

    def provenance(self) -> list[dict]:
        """What each column block came from (path, source, dim, model, model_sha256), for a head's metadata."""
        return [dict(p) for p in self.parts]


def align_rows(keys, wanted, source, split: str) -> np.ndarray:
    """Row index into ``keys`` of every key of ``wanted`` (in ``wanted``'s order); a missing key raises.

    >>> align_rows(["a", "b", "c"], ["c", "a"], "f.h5", "dev").tolist()
    [2, 0]
    """
    pos = {k: i for i, k in enumerate(keys)}
    missing = [k for k in wanted if k not in pos]
    if missing:
        raise FeaturesError(f"{source}: {len(missing)} of the {len(wanted)} {split} samples are missing "
                            f"(e.g. {missing[0]}); its features come from other shards: delete it and rerun its "
                            "features rule")
    return np.array([pos[k] for k in wanted], dtype=np.int64)


def load_sources(paths, split: str, classes=None, keys=None) -> SourceSet:
    """Read the features files ``paths`` (one per source, all of ``split``) and join them by key.

    Parameters
    ----------
    paths : list of path-like
        One ``{split}.h5`` per source; the first fixes the row order (the split's order).
    split : {"train", "dev", "test"}
    classes : iterable of int, optional
        Keep only samples of these space groups.
    keys : iterable of str, optional
        Keep only these samples (in the first file's order); a key the file lacks raises.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("no feature source given: a head needs at least one (e.g. [cnn])")
    sets = [read_features(p, split=split) for p in paths]
    first = sets[0]
    keep = np.ones(len(first), dtype=bool)
    if classes is not None:
        keep &= np.isin(first.labels, np.asarray(list(classes), dtype=np.int64))
    if keys is not None:
        wanted = set(keys)
        missing = wanted.difference(first.keys)
        if missing:
            raise FeaturesError(f"{paths[0]}: {len(missing)} of the {len(wanted)} keys asked for are not in it "
                                f"(e.g. {sorted(missing)[0]}); the features come from other shards: delete the "
                                "features file and rerun its features rule")
        keep &= np.array([k in wanted for k in first.keys])
    aug = np.array([is_augmented(k) for k in first.keys], dtype=bool)
    if aug.any() and len(sets) > 1:  # perturbed training copies (features.augment) only where every source has them
        for fs, p in zip(sets[1:], paths[1:]):
            have = set(fs.keys)
            lacking = aug & keep & np.array([k not in have for k in first.keys])
            if lacking.any():
                log.info("%s: %d perturbed training copies of %s (features.augment) left out of the join: %s has no "
                         "copies", split, int(lacking.sum()), paths[0], p)
                keep &= ~lacking
    rows = np.flatnonzero(keep)
    out_keys = [first.keys[i] for i in rows]
    blocks, parts = [first.features[rows]], []
    for fs, p in zip(sets, paths):
        if fs is not first:
            idx = align_rows(fs.keys, out_keys, p, split)
            if not np.array_equal(fs.labels[idx], first.labels[rows]):
                raise FeaturesError(f"{p}: labels differ from {paths[0]} for the same keys; the two come from "
                                    "different shards: rerun their features rules")
            blocks.append(fs.features[idx])
        parts.append({"path": str(p), "source": fs.source, "dim": int(fs.features.shape[1]), "model": fs.model,
                      "model_sha256": fs.model_sha256, "image_size": fs.model_meta.get("image_size")})
    X = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    return SourceSet(keys=out_keys, X=np.ascontiguousarray(X, dtype=np.float32), labels=first.labels[rows],
                     split=split, parts=parts)


def source_files(dirs, split: str) -> list[Path]:
    """``{dir}/{split}.h5`` of every source folder (a single folder is a list of one).

    >>> [str(p) for p in source_files(["f/flat/ce", "f/symmetry"], "dev")]
    ['f/flat/ce/dev.h5', 'f/symmetry/dev.h5']
    """
    dirs = [dirs] if isinstance(dirs, (str, Path)) else list(dirs)
    return [split_file(d, split) for d in dirs]


def load_split(dirs, split: str, classes=None, keys=None) -> SourceSet:
    """:func:`load_sources` of the ``{split}.h5`` of every source folder ``dirs`` (one per source, in order)."""
    return load_sources(source_files(dirs, split), split, classes=classes, keys=keys)
