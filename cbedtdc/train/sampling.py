"""What a training job reads: its samples and targets, the batch order of every rank, the DataLoader.

Determinism: the sampler order of an epoch is a permutation seeded by (seed, epoch); augmentation and
the random panel are drawn from (seed, epoch, index); so a run resumed mid-epoch on CPU ends with the
same weights as an uninterrupted one, and an MPI run of W ranks equals a 1-rank run with
``accum_steps = W`` (see :class:`EpochBatches`).
"""

from __future__ import annotations

import csv
import logging
import math
import random
from pathlib import Path

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["job_targets", "open_split", "norm_stats", "read_keys", "EpochBatches", "JobData", "train_loader"]

log = logging.getLogger(__name__)


def job_targets(labels, classes, rest: bool):
    """Output index of each label for a job (``rest`` -> last index); ``keep`` masks the usable ones.

    The one label mapping of the engine and the XGBoost heads.

    >>> t, keep = job_targets([14, 1, 2], [14, 225], rest=True)
    >>> t.tolist(), keep.tolist()
    ([0, 2, 2], [True, True, True])
    >>> job_targets([14, 1], [14, 225], rest=False)[1].tolist()
    [True, False]
    """
    lookup = {int(c): i for i, c in enumerate(classes)}
    t = np.array([lookup.get(int(v), len(classes)) for v in np.asarray(labels).ravel()], dtype=np.int64)
    keep = np.ones(len(t), dtype=bool) if rest else t < len(classes)
    return t, keep


def open_split(shard_root, split, keys, classes, rest, orientation, seed):
    from cbedtdc.data import ShardDataset

    ds = ShardDataset(shard_root, split, keys=keys, orientation=orientation, seed=seed)
    targets, keep = job_targets(ds.labels, classes, rest)
    n_out = int((~keep).sum())
    if n_out:
        log.info("%s: %d of %d samples are outside the job's %d classes and excluded (rest=False)",
                 split, n_out, len(ds), len(classes))
    idx = np.flatnonzero(keep)
    if len(idx) != len(ds):
        ds = ds.subset(idx)
    return ds, targets[idx], n_out


def norm_stats(ds, n_max: int = 256) -> tuple[float, float]:
    """Mean and std of the pixel values (in [0, 1]) of up to ``n_max`` evenly spaced samples."""
    pick = np.unique(np.linspace(0, len(ds) - 1, num=min(n_max, len(ds))).astype(int))
    vals = np.stack([ds.image(i).astype(np.float64) / 255.0 for i in pick])
    return float(vals.mean()), float(max(vals.std(), 1e-3))


def read_keys(path) -> list[str]:
    """Sample keys from a CSV with a ``key`` column or ``file`` and ``group`` columns."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "key" in fields:
            return [row["key"] for row in reader]
        if "file" in fields and "group" in fields:
            return [f"{row['file']}/{row['group']}" for row in reader]
    raise InputError(f"{path}: needs a 'key' column or 'file' and 'group' columns, found {fields}")


class EpochBatches:
    """Reproducible, resumable batch order of one rank.

    An epoch is a permutation of ``range(n)`` drawn from (seed, epoch), wrapped around to a
    multiple of the global batch ``G = batch_size * world_size * accum_steps``. Global batch ``k``
    is the block ``perm[k*G:(k+1)*G]``; its slot ``s = rank * accum_steps + a`` (``a`` = micro-batch)
    is the contiguous sub-block ``[s*B, (s+1)*B)``. Hence W ranks with one micro-batch each see the
    same sub-batches as one rank with W micro-batches (gradient accumulation), which is what makes
    a W-rank run and a 1-rank run with ``accum_steps = W`` equal.

    Iterating yields the micro-batches of this rank from step ``start_step`` of the current epoch.

    >>> b = EpochBatches(10, batch_size=2, world_size=2, rank=1, accum_steps=1, seed=0)
    >>> len(b), b.steps_per_epoch, b.global_batch
    (3, 3, 4)
    """

    def __init__(self, n: int, *, batch_size: int, world_size: int = 1, rank: int = 0, accum_steps: int = 1,
                 seed: int = 0):
        if n < 1:
            raise InputError("EpochBatches: no sample to draw from")
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.accum_steps, self.seed = accum_steps, seed
        self.global_batch = batch_size * world_size * accum_steps
        self.steps_per_epoch = math.ceil(n / self.global_batch)
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = int(epoch), int(start_step)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation, wrapped to ``steps_per_epoch * global_batch`` entries."""
        rng = np.random.default_rng([int(self.seed), int(epoch), 0x5A3])
        perm = rng.permutation(self.n)
        total = self.steps_per_epoch * self.global_batch
        return np.resize(perm, total)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self):
        perm = self.order(self.epoch)
        g, b = self.global_batch, self.batch_size
        for k in range(self.start_step, self.steps_per_epoch):
            for a in range(self.accum_steps):
                s = self.rank * self.accum_steps + a
                yield perm[k * g + s * b: k * g + (s + 1) * b].tolist()


class JobData:
    """Training view of a ShardDataset opened with ``orientation="stack"``: output-index targets, the
    random panel and physics-valid augmentation.

    Items are fetched as ``(epoch, index)`` (see :class:`_EpochTagged`), so persistent DataLoader
    workers need no per-epoch state: the panel is ``panel_of(seed, epoch, index)`` as in
    ``ShardDataset(orientation="random")`` and the augmentation is drawn from (seed, epoch, index).
    """

    def __init__(self, base, targets, *, seed: int, orientation: str, augment: bool):
        self.base, self.targets, self.seed = base, np.asarray(targets), int(seed)
        self.orientation, self.augment = orientation, augment

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        import torch

        from cbedtdc.data import panel_of
        from cbedtdc.model import augment, augment_params

        epoch, i = item
        stack = self.base.image(i)
        if self.orientation == "random":
            p = panel_of(self.seed, epoch, i)
            stack = stack[p: p + 1]
        x = torch.from_numpy(stack.copy())
        if self.augment:
            x = augment(x, augment_params(self.seed, epoch, i, x.shape[0]))
        return x, int(self.targets[i])


class _EpochTagged:
    """Batch sampler yielding ``(epoch, index)`` pairs of :class:`EpochBatches`."""

    def __init__(self, batches: EpochBatches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        e = self.batches.epoch
        for b in self.batches:
            yield [(e, i) for i in b]


def train_loader(data: JobData, batches: EpochBatches, *, workers: int, seed: int, rank: int = 0,
                 pin_memory: bool = False):
    """The training DataLoader: created once per job, persistent workers, order from ``batches``.

    Call ``batches.set_position(epoch, step)`` before each ``iter(loader)``.
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed) * 100003 + int(rank))
    return torch.utils.data.DataLoader(
        data, batch_sampler=_EpochTagged(batches), num_workers=int(workers), worker_init_fn=_seed_worker,
        generator=gen, pin_memory=pin_memory, persistent_workers=int(workers) > 0,
        prefetch_factor=4 if int(workers) > 0 else None)


def _seed_worker(worker_id: int) -> None:
    import torch

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
