"""What a feature source is: one :class:`FeatureSource` per source, listed once in :mod:`cbedtdc.features.registry`.

A source turns the shards of one split into a features file (:mod:`cbedtdc.features.store`) at
``<root>/features/<folder>/<split>.h5``, and a batch of new patterns into the same numbers at classify time.
Its description owns:

- its **folder** under ``features/``: ``symmetry``, or ``flat/{backbone}`` for a source computed through a
  trained flat backbone (``backbone=True``), whose folder then lives in every training root
  (``results/replicates/seed_<s>/features/flat/ce``); a source without a backbone is seed-free and stays under
  ``results``; ``folders`` is the regular expression of every folder it writes (rule ``features``' wildcard);
- its **extraction** to a file, ``extract(shard_root, split, out_path, *, model=None, keys=None, batch_size=64,
  device="auto", threads=0, workers=0, progress=True) -> dict`` (``model``: the checkpoint of a backbone
  source, :meth:`FeatureSource.checkpoint` says which one a folder is computed through);
- its **batch extractor** for ``cbedtdc classify``, ``batch_features(record, run_folder, device) -> (f, image
  size or None)``, ``f`` mapping a ``(B, 3, S, S)`` uint8 torch batch to float32 ``(B, D)``; ``record`` is what
  a head recorded of the source (:meth:`cbedtdc.features.SourceSet.provenance`), checked against this code's
  model or settings so that a head never reads numbers of another kind;
- whether its train split takes **perturbed copies** of the training stacks (``augments``; config
  ``features.augment``, :mod:`cbedtdc.features.augment`): the extraction then also takes ``augment=`` and ``seed=``.

A source computed from the patterns alone (no trained model) is a *descriptor source*: :func:`descriptor_source`
builds it from a ``describe(stacks) -> (features, reasons)`` function, the names of its columns and its settings
(with a ``version``); the file writer (:func:`write_descriptors`) and the classify-time check come with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbedtdc.errors import InputError

__all__ = ["FEATURES", "FeatureSource", "descriptor_source", "write_descriptors", "settings_sha256", "split_file",
           "recorded_path"]

log = logging.getLogger(__name__)

#: The folder of a training root that holds the feature sources: ``<root>/features/<folder>/<split>.h5``.
FEATURES = "features"


@dataclass(frozen=True)
class FeatureSource:
    """One feature source: its name (the config's ``features:`` item), folder, extraction and batch extractor.

    >>> s = descriptor_source("demo", "a demo", lambda x: (np.zeros((len(x), 1), np.float32), [""] * len(x)),
    ...                       ["zero"], {"version": "1"})
    >>> s.directory(), s.directory(root="results/replicates/seed_1"), s.pattern
    ('results/features/demo', 'results/features/demo', 'demo')
    """

    name: str
    summary: str  # one line: what the numbers are
    folder: str  # under <root>/features/; "{backbone}" is filled with the head's flat backbone
    extract: Callable[..., dict]
    batch_features: Callable[..., tuple]
    backbone: bool = False  # computed through a trained flat backbone (in every training root)
    threads: bool = False  # the extraction uses the rule's threads (torch); else one core
    folders: str = ""  # regular expression of every folder it writes (default: folder)
    checkpoint: Callable[[str, str], str] | None = None  # (folder, root) -> the checkpoint a folder is computed through
    augments: bool = False  # its extraction takes augment= and seed= (config features.augment, train split only)

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise InputError(f"feature source name {self.name!r}: use lower-case letters, digits and _")
        if self.backbone != ("{backbone}" in self.folder) or self.backbone != (self.checkpoint is not None):
            raise InputError(f"feature source {self.name}: a source with a backbone has '{{backbone}}' in its folder "
                             "and a checkpoint function, a source without one has neither")

    @property
    def pattern(self) -> str:
        """The regular expression of the folders this source writes under ``features/``."""
        return self.folders or re.escape(self.folder)

    def folder_of(self, backbone: str | None = None) -> str:
        """The folder under ``features/`` of a head's source (``backbone``: the head's flat backbone)."""
        if not self.backbone:
            return self.folder
        if not backbone:
            raise InputError(f"feature source {self.name} needs the flat model (backbone) it comes from")
        return self.folder.format(backbone=backbone)

    def directory(self, backbone: str | None = None, root: str = "results") -> str:
        """``<root>/features/<folder>``; a source without a backbone is the same for every training seed, so it
        stays under ``results``."""
        return f"{root if self.backbone else 'results'}/{FEATURES}/{self.folder_of(backbone)}"


def split_file(folder, split: str) -> Path:
    """The features file of one split in a source's folder.

    >>> str(split_file("results/features/symmetry", "dev"))
    'results/features/symmetry/dev.h5'
    """
    return Path(folder) / f"{split}.h5"


def recorded_path(path, folder: Path) -> Path:
    """A path a run recorded relative to its working directory, found from ``folder`` upwards."""
    path = Path(path)
    if path.is_absolute():
        return path
    for base in [folder, *folder.resolve().parents]:
        if (base / path).exists():
            return base / path
    raise FileNotFoundError(f"{folder}: {path} (recorded by the run) is missing; rerun the run")


# ------------------------------------------------------------------------------- descriptor sources
def settings_sha256(settings: dict) -> str:
    """SHA-256 of the sorted JSON of a descriptor source's settings: its features files' ``model_sha256``.

    >>> settings_sha256({"version": "1"})[:12]
    'f76983c7e474'
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def write_descriptors(shard_root, split: str, out_path, *, name: str, describe, names, settings: dict, keys=None,
                      batch_size: int = 256, progress: bool = True, augment=None, seed: int = 0) -> dict:
    """Write ``describe``'s features of every stack of ``split`` to ``out_path`` (a features file).

    Streams batches of ``batch_size`` stacks through :class:`cbedtdc.data.ShardDataset` (memory: one batch);
    the file appears under its final name only when complete, so an interrupted run is simply rerun.
    ``describe(stacks)`` takes uint8 ``(B, 3, S, S)`` and returns float32 ``(B, len(names))`` and, per stack,
    ``""`` or why a panel fell back; such samples are kept and counted in the log, with their keys. The file
    records ``model = "<name>/<version>"``, ``model_sha256`` = :func:`settings_sha256` and, in ``model_meta``,
    the settings, the column names and the image size.

    ``augment`` (a :class:`cbedtdc.features.augment.Augment`, train split only) appends ``augment.copies``
    perturbed copies of every stack after the clean rows, keys ``"<key>@aug<copy>"``, drawn from ``seed``; the
    settings are recorded in ``model_meta["augment"]`` (``model_sha256`` stays that of the descriptors).

    Returns
    -------
    dict
        ``n``, ``dim``, ``split``, ``seconds``, ``samples_per_s``, ``out``, ``fallback`` (count), ``augmented``
        (rows of perturbed copies).
    """
    from tqdm import tqdm

    from cbedtdc.data import ShardDataset
    from cbedtdc.features.augment import augment_batch, augmented_keys
    from cbedtdc.features.store import FeatureWriter

    if int(batch_size) < 1:
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    if augment is not None and split != "train":
        raise InputError(f"{out_path}: augmentation is for the train split only; the {split} features stay clean "
                         "(drop --augment)")
    copies = augment.copies if augment is not None else 0
    ds = ShardDataset(shard_root, split, keys=keys, orientation="stack")
    names, dim, side, t0, flagged, aug_flagged = list(names), len(names), ds.image_size, time.perf_counter(), [], 0
    meta = {**settings, "names": names, "image_size": side}
    if copies:
        meta["augment"] = {**augment.settings(), "seed": int(seed)}
    writer = FeatureWriter(out_path, ds.keys + augmented_keys(ds.keys, copies), np.tile(ds.labels, copies + 1),
                           dim=dim, split=split, source=name, model=f"{name}/{settings['version']}",
                           model_sha256=settings_sha256(settings), model_meta=meta, chunk_rows=int(batch_size))
    with writer:
        bar = tqdm(total=len(ds) * (copies + 1), desc=f"{name} {split}", unit="sample", mininterval=5.0,
                   disable=not progress)
        with bar:
            buf = np.empty((int(batch_size), 3, side, side), dtype=np.uint8)
            for copy in range(-1, copies):  # -1: the clean stacks, then each perturbed copy
                for start in range(0, len(ds), int(batch_size)):
                    stop = min(start + int(batch_size), len(ds))
                    for i in range(start, stop):
                        buf[i - start] = ds.image(i)
                    x = buf[: stop - start]
                    if copy >= 0:
                        x = augment_batch(x, start, copy, augment, seed)
                    feats, reasons = describe(x)
                    writer.append(feats)
                    if copy < 0:
                        flagged += [(ds.keys[start + i], r) for i, r in enumerate(reasons) if r]
                    else:
                        aug_flagged += sum(1 for r in reasons if r)
                    bar.update(stop - start)
    secs, done = time.perf_counter() - t0, writer.done
    if flagged:
        log.warning("%d of %d %s samples have a fallback panel (features kept and flagged), e.g. %s",
                    len(flagged), len(ds), split, "; ".join(f"{k}: {r}" for k, r in flagged[:5]))
        for k, r in flagged:
            log.info("fallback %s: %s", k, r)
    if copies:
        log.info("%d perturbed copies of the %d %s stacks (seed %d): %d rows, %d with a fallback panel (blanked "
                 "or noisy panels, features kept and flagged)", copies, len(ds), split, seed, copies * len(ds),
                 aug_flagged)
    info = {"n": done, "dim": dim, "split": split, "seconds": round(secs, 3),
            "samples_per_s": round(done / secs, 2) if secs > 0 else None, "out": str(Path(out_path)),
            "fallback": len(flagged), "augmented": copies * len(ds)}
    log.info("%s descriptors of %d %s samples (%d-d) in %.1f s (%.0f samples/s) -> %s", name, done, split, dim,
             secs, info["samples_per_s"] or 0, out_path)
    return info


def descriptor_source(name: str, summary: str, describe, names, settings: dict, *,
                      folder: str | None = None, augments: bool = True) -> FeatureSource:
    """A feature source computed from the patterns alone (no trained model, one core, seed-free).

    Parameters
    ----------
    name : str
        The config's ``features:`` item (and the schema's enum).
    summary : str
        One line: what the numbers are.
    describe : callable
        ``describe(stacks)``: uint8 ``(B, 3, S, S)`` -> ``(float32 (B, len(names)), list of B reasons)``, a
        reason being ``""`` or why a panel fell back; never NaN.
    names : list of str
        The name of every column.
    settings : dict
        JSON-able settings with a ``version``; a head fitted on other settings is refused at classify time.
    folder : str, optional
        Its folder under ``features/`` (default: the name).
    augments : bool
        Whether its train file takes the perturbed copies of config ``features.augment``
        (:mod:`cbedtdc.features.augment`; default: True).
    """
    if "version" not in settings:
        raise InputError(f"feature source {name}: its settings need a 'version'")
    settings, names = dict(settings), list(names)
    model, sha = f"{name}/{settings['version']}", settings_sha256(settings)

    def extract(shard_root, split, out_path, *, model=None, keys=None, batch_size=256, device="auto", threads=0,
                workers=0, progress=True, augment=None, seed=0):
        del device, threads, workers  # numpy on one core, in this process
        if model:
            raise InputError(f"feature source {name} reads no model; drop --model {model}")
        return write_descriptors(shard_root, split, out_path, name=name, describe=describe, names=names,
                                 settings=settings, keys=keys, batch_size=batch_size, progress=progress,
                                 augment=augment, seed=seed)

    def batch_features(record, run_folder, device):
        if record.get("model") != model or record.get("model_sha256") != sha:
            raise InputError(f"{run_folder}: its heads were fitted on {name} features {record.get('model')} of other "
                             f"settings than this version's ({model}); rerun the run")
        size = record.get("image_size")

        def features(x):
            return describe(x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x))[0]

        return features, int(size) if size else None

    return FeatureSource(name=name, summary=summary, folder=folder or name, extract=extract,
                         batch_features=batch_features, augments=augments)
