"""The ``cnn`` feature source: penultimate activations of a trained backbone over one split.

Computed the way the model sees its input: a model trained on one panel (``orientation: random``)
gets each of the three panels and its features are averaged (so its linear layer on them gives exactly
the logits that :func:`cbedtdc.train.predict` averages); a stack model sees the stack once. Written
with :class:`cbedtdc.features.store.FeatureWriter` (``model`` = the checkpoint's path, ``model_sha256``
its checksum, ``model_meta`` its classes, arch, orientation, loss, ...). CPU results are deterministic;
a GPU may differ in the last bits.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from cbedtdc.features.spec import FeatureSource, recorded_path
from cbedtdc.features.store import FeaturesError, FeatureWriter, sha256_file
from cbedtdc.errors import InputError

__all__ = ["NAME", "SOURCE", "pooled_features", "torch_threads", "extract_to_file", "checkpoint", "batch_features"]

log = logging.getLogger(__name__)

NAME = "cnn"
_META_KEYS = ("classes", "rest", "output_names", "arch", "orientation", "in_channels", "n_outputs", "image_size",
              "loss", "epoch")


def pooled_features(model, x, orientation: str):
    """Features of a batch of ``(B, 3, S, S)`` uint8 stacks as the model sees them.

    ``orientation="random"`` (a one-panel model): the mean of the features of the three panels;
    ``"stack"``: the features of the stack. Call under ``torch.inference_mode()``.
    """
    if orientation == "random":
        return sum(model.features(x[:, p: p + 1]) for p in range(x.shape[1])) / x.shape[1]
    if orientation == "stack":
        return model.features(x)
    raise InputError(f"orientation={orientation!r}: must be 'random' or 'stack'")


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
        raise InputError(f"batch_size={batch_size}: must be >= 1")
    from cbedtdc.train.infer import inference_device

    restored = _restore(Path(model_path), shard_root, split, Path(out_path), keys)
    if restored is not None:
        return restored
    with torch_threads(threads):
        return _extract(Path(model_path), shard_root, split, Path(out_path), keys=keys, batch_size=int(batch_size),
                        dev=inference_device(device), workers=int(workers), progress=progress)


def _extract(model_path: Path, shard_root, split, out_path: Path, *, keys, batch_size, dev, workers, progress):
    import torch
    from tqdm import tqdm

    from cbedtdc.train import load_model

    model, meta = load_model(model_path, device=dev)
    ds = _open_split(shard_root, split, keys, meta, model_path)
    dim = int(model.backbone.fc.in_features)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    t0 = time.perf_counter()
    writer = FeatureWriter(out_path, ds.keys, ds.labels, dim=dim, split=split, source=NAME, model=str(model_path),
                           model_sha256=sha256_file(model_path), model_meta={k: meta.get(k) for k in _META_KEYS},
                           chunk_rows=batch_size)
    with writer:
        bar = tqdm(total=len(ds), desc=f"features {split}", unit="sample", mininterval=5.0, disable=not progress)
        with bar, torch.inference_mode():
            for x, _ in loader:
                f = pooled_features(model, x.to(dev), meta["orientation"]).float().cpu().numpy()
                writer.append(f)
                bar.update(len(f))
    done = writer.done
    secs = time.perf_counter() - t0
    info = {"n": done, "dim": dim, "split": split, "device": dev, "seconds": round(secs, 3),
            "samples_per_s": round(done / secs, 2) if secs > 0 else None, "out": str(out_path)}
    log.info("features of %d %s samples (%d-d) through %s on %s in %.1f s -> %s", done, split, dim, model_path,
             dev, secs, out_path)
    from cbedtdc.train.checkpoint import record_finished

    record_finished(out_path.parent, _record_dir(out_path), _finished_key(model_path, shard_root, split, keys),
                    [out_path.name])
    return info


def _record_dir(out_path: Path) -> Path:
    """Where a finished extraction keeps its proof, beside the file (Snakemake deletes only the declared file)."""
    return out_path.parent / "finished" / out_path.stem


def _finished_key(model_path: Path, shard_root, split: str, keys) -> str:
    """The extraction's arguments and inputs: the checkpoint's bytes, the split, the sample list and shard files."""
    import hashlib

    from cbedtdc.train.checkpoint import input_digest

    root = Path(shard_root)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "files").glob("*.h5")) \
        if (root / "files").is_dir() else []
    text = "|".join([NAME, sha256_file(model_path), split, input_digest(root, [f"{split}.csv"], files),
                     ",".join(sorted(keys)) if keys is not None else "*"])
    return hashlib.sha256(text.encode()).hexdigest()


def _restore(model_path: Path, shard_root, split: str, out_path: Path, keys) -> dict | None:
    """After a dead Snakemake (the extraction finished, Snakemake deleted its output before rerunning the job):
    put the finished file back from its record when the arguments and inputs are the same; else None."""
    from cbedtdc.train.checkpoint import restore_finished

    rec = _record_dir(out_path)
    if not (rec / "manifest.json").is_file() or not model_path.is_file():
        return None
    if restore_finished(out_path.parent, rec, _finished_key(model_path, shard_root, split, keys),
                        [out_path.name]) is None:
        return None
    from cbedtdc.features.store import read_features

    fs = read_features(out_path, split=split)
    log.info("restored finished features from %s (nothing recomputed): %d %s samples -> %s", rec, len(fs), split,
             out_path)
    return {"n": len(fs), "dim": int(fs.features.shape[1]), "split": split, "device": None, "seconds": 0.0,
            "samples_per_s": None, "out": str(out_path), "restored": True}


# ------------------------------------------------------------------------------------ the source
def checkpoint(folder: str, root: str = "results") -> str:
    """The checkpoint a folder of this source is computed through: ``flat/{loss}`` in the training root ``root``,
    ``level_{k}`` (an own-backbone TDC level; target ``features_all``, for heads fitted by hand) in ``results/tdc``.

    >>> checkpoint("flat/ce", "results/replicates/seed_1"), checkpoint("level_2", "results/replicates/seed_1")
    ('results/replicates/seed_1/flat/ce/best.pt', 'results/tdc/level_2/best.pt')
    """
    if folder.startswith("level_"):
        return f"results/tdc/{folder}/best.pt"
    return f"{root}/{folder}/best.pt"


def _extract_source(shard_root, split, out_path, *, model=None, keys=None, batch_size=64, device="auto", threads=0,
                    workers=0, progress=True):
    if not model:
        raise InputError(f"feature source {NAME} needs --model, the checkpoint of the backbone to extract through")
    return extract_to_file(model, shard_root, split, out_path, keys=keys, batch_size=batch_size, device=device,
                           workers=workers, threads=threads, progress=progress)


def batch_features(record: dict, run_folder: Path, device: str):
    """``(features of a batch, image size)`` through the backbone a head recorded, checked by sha256."""
    from cbedtdc.train import load_model

    backbone = recorded_path(record["model"], run_folder)
    if record.get("model_sha256") and sha256_file(backbone) != record["model_sha256"]:
        raise InputError(f"{backbone} changed after the heads of {run_folder} were fitted on its features; rerun "
                         "the run (snakemake reruns features and heads)")
    model, meta = load_model(backbone, device=device)

    def features(x):
        return pooled_features(model, x, meta["orientation"]).float().cpu().numpy()

    return features, int(meta["image_size"])


#: The source: the penultimate activations of a flat model (``flat/{backbone}``) or of an own-backbone TDC level.
SOURCE = FeatureSource(name=NAME, summary="the penultimate activations of a trained backbone (the flat model named "
                       "by the head's backbone)", folder="flat/{backbone}", extract=_extract_source,
                       batch_features=batch_features, backbone=True, threads=True,
                       folders=r"flat/[a-z_]+|level_\d+",
                       checkpoint=checkpoint)
