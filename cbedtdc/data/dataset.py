""":class:`ShardDataset`, a map-style torch dataset over the uint8 shards of one split, and :func:`panel_of`, the
orientation panel drawn per sample and epoch. torch and h5py are imported only when a sample is read."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from cbedtdc.data.formats import DataError
from cbedtdc.errors import InputError, MissingKeysError
from cbedtdc.io import read_csv, read_json
from cbedtdc.layout import SPLITS

__all__ = ["ShardDataset", "panel_of"]


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64 finaliser: a fast, well-spread hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def panel_of(seed: int, epoch: int, index: int) -> int:
    """Orientation panel (0, 1, 2) drawn for one sample in one epoch; pure and reproducible.

    >>> [panel_of(0, 0, i) for i in range(8)] == [panel_of(0, 0, i) for i in range(8)]
    True
    """
    return _mix(_mix(_mix(seed) ^ epoch) ^ index) % 3


class ShardDataset:
    """Map-style torch dataset over the uint8 shards of one split.

    Parameters
    ----------
    shard_root : path-like
        Folder holding ``{split}.csv`` and the shard files (``results/shards``).
    split : {"train", "dev", "test"}
    keys : iterable of str, optional
        Keep only these ``"file/group"`` keys (in the split's order). Unknown keys raise.
    classes : iterable of int, optional
        Keep only samples of these space groups.
    orientation : {"stack", "random", 0, 1, 2}
        ``"stack"``: items are (3, S, S); ``"random"``: one panel (1, S, S) drawn from
        (seed, epoch, index), see :meth:`set_epoch`; 0/1/2: that panel, (1, S, S).
    seed : int
        Seed of the random panel choice.

    Items are ``(torch.uint8 tensor, int space_group)``. ``keys``, ``labels`` (space-group
    numbers), ``materials`` and ``energies`` are in index order.

    Shard files are opened lazily in the process that reads (each DataLoader worker opens its
    own), and a sample costs one positioned read of its chunk (a third of it for one panel).
    DataLoader workers copy the dataset when an iterator starts, so call ``set_epoch`` before
    iterating; with ``persistent_workers=True`` the copy is made once and ``set_epoch`` in the
    parent does not reach the workers.
    """

    #: Shard files kept open per process (least recently used closed first); the real train
    #: split spans ~900 files, more than a default limit of 1,024 descriptors allows per dataset.
    MAX_OPEN = 128

    def __init__(self, shard_root, split, *, keys=None, classes=None, orientation="stack", seed=0):
        if split not in SPLITS:
            raise InputError(f"split={split!r}: must be one of {', '.join(SPLITS)}")
        if orientation not in ("stack", "random", 0, 1, 2):
            raise InputError(f"orientation={orientation!r}: must be 'stack', 'random', 0, 1 or 2")
        self.shard_root = Path(shard_root)
        self.split = split
        self.orientation = orientation
        self.seed = int(seed)
        self.epoch = 0
        table = self.shard_root / f"{split}.csv"
        if not table.exists():
            raise FileNotFoundError(f"{table} not found: build the data stage first (snakemake shards)")
        rows = read_csv(table)
        self.shards = sorted({r["shard"] for r in rows})
        shard_id = {s: i for i, s in enumerate(self.shards)}
        self.keys = [r["key"] for r in rows]
        self.labels = np.array([int(r["space_group"]) for r in rows], dtype=np.int64)
        self.materials = np.array([r["material"] for r in rows], dtype=str)
        self.energies = np.array([float(r["energy_keV"]) for r in rows], dtype=np.float64)
        self._shard = np.array([shard_id[r["shard"]] for r in rows], dtype=np.int32)
        self._row = np.array([int(r["row"]) for r in rows], dtype=np.int64)
        self._handles = None
        self.image_size = self._probe_image_size()
        mask = np.ones(len(self.keys), dtype=bool)
        if keys is not None:
            wanted = set(keys)
            missing = wanted.difference(self.keys)
            if missing:
                raise MissingKeysError(f"{len(missing)} keys not in split {split} of {self.shard_root}, "
                               f"e.g. {sorted(missing)[:3]}")
            mask &= np.array([k in wanted for k in self.keys], dtype=bool)
        if classes is not None:
            mask &= np.isin(self.labels, np.asarray(list(classes), dtype=np.int64))
        if not mask.all():
            self._restrict(np.flatnonzero(mask))

    # -- bookkeeping
    def _probe_image_size(self) -> int:
        if not self.shards:
            return 0
        meta = read_json((self.shard_root / self.shards[0]).with_suffix(".json"))
        return int(meta["image_size"])

    def _restrict(self, idx) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        self.keys = [self.keys[i] for i in idx]
        self.labels = self.labels[idx]
        self.materials = self.materials[idx]
        self.energies = self.energies[idx]
        self._shard = self._shard[idx]
        self._row = self._row[idx]

    def subset(self, indices) -> ShardDataset:
        """A copy restricted to ``indices`` (positions in this dataset), in that order."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__getstate__())
        new._restrict(indices)
        return new

    def set_epoch(self, epoch: int) -> None:
        """Select the random panels of ``epoch`` (orientation="random")."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"ShardDataset({str(self.shard_root)!r}, {self.split!r}, n={len(self)}, "
                f"orientation={self.orientation!r}, image_size={self.image_size})")

    # -- reading
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = None  # never pickle open files; each process opens its own
        return state

    def _chunk_offsets(self, sid: int) -> np.ndarray:
        """File offset of every sample's chunk in shard ``sid`` (read once per process)."""
        import h5py

        path = self.shard_root / self.shards[sid]
        s = self.image_size
        try:
            fh = h5py.File(path, "r")
        except OSError as err:
            raise DataError(f"{path}: cannot open shard ({err}); it is truncated or not HDF5, "
                            "delete it and rerun the shard rule") from err
        with fh:
            dset = fh["images"]
            n = dset.shape[0]
            if dset.shape[1:] != (3, s, s):
                raise DataError(f"{path}: images are {dset.shape[1:]}, the split list's first shard has "
                                f"(3, {s}, {s}); rebuild the shards with one image_size")
            offsets = np.full(n, -1, dtype=np.int64)
            plain = dset.chunks == (1, 3, s, s) and dset.id.get_create_plist().get_nfilters() == 0
            if plain and n:
                if hasattr(dset.id, "chunk_iter"):
                    def visit(info):
                        offsets[info.chunk_offset[0]] = info.byte_offset
                    dset.id.chunk_iter(visit)
                else:  # HDF5 < 1.14: one query per chunk
                    for k in range(dset.id.get_num_chunks()):
                        info = dset.id.get_chunk_info(k)
                        offsets[info.chunk_offset[0]] = info.byte_offset
        if n and (not plain or (offsets < 0).any()):
            raise DataError(f"{path}: images are not one uncompressed chunk per sample; rebuild the shard")
        return offsets

    def _fd(self, sid: int):
        """(fd, chunk offsets) of shard ``sid`` in this process; at most MAX_OPEN files stay open."""
        pid = os.getpid()
        if self._handles is None or self._handles[0] != pid:
            self._handles = (pid, OrderedDict(), {})  # after a fork: never reuse the parent's files
        _, fds, offsets = self._handles
        fd = fds.get(sid)
        if fd is None:
            if sid not in offsets:
                offsets[sid] = self._chunk_offsets(sid)
            fd = fds[sid] = os.open(self.shard_root / self.shards[sid], os.O_RDONLY)
            if len(fds) > self.MAX_OPEN:
                os.close(fds.popitem(last=False)[1])
        else:
            fds.move_to_end(sid)
        return fd, offsets[sid]

    def _read_into(self, i: int, out: np.ndarray, panel: int | None = None) -> None:
        """Read item ``i``'s stack (or one ``panel`` of it) into the contiguous uint8 ``out``."""
        fd, offsets = self._fd(int(self._shard[i]))
        plane = self.image_size * self.image_size
        offset = int(offsets[self._row[i]]) + (plane * panel if panel is not None else 0)
        if os.preadv(fd, [out], offset) != out.nbytes:
            raise DataError(f"{self.shard_root / self.shards[self._shard[i]]}: short read for {self.keys[i]}; "
                            "the shard is truncated, rebuild it")

    def _panel(self, i: int) -> int | None:
        if self.orientation == "stack":
            return None
        return panel_of(self.seed, self.epoch, i) if self.orientation == "random" else int(self.orientation)

    def _check(self, i) -> int:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        return i

    def image(self, i: int) -> np.ndarray:
        """The (3, S, S) uint8 stack of item ``i`` as a numpy array (whatever the orientation)."""
        s = self.image_size
        out = np.empty((3, s, s), dtype=np.uint8)
        self._read_into(self._check(i), out)
        return out

    def __getitem__(self, i):
        import torch

        i = self._check(i)
        panel = self._panel(i)
        s = self.image_size
        out = np.empty((3 if panel is None else 1, s, s), dtype=np.uint8)
        self._read_into(i, out, panel)  # a random panel reads one third of the chunk
        return torch.from_numpy(out), int(self.labels[i])

    def __getitems__(self, indices):
        """Batch fetch used by ``DataLoader``: one array for the batch, one read per sample."""
        import torch

        idx = [self._check(i) for i in indices]
        s = self.image_size
        batch = np.empty((len(idx), 3 if self.orientation == "stack" else 1, s, s), dtype=np.uint8)
        for k, i in enumerate(idx):
            self._read_into(i, batch[k], self._panel(i))
        t = torch.from_numpy(batch)
        return [(t[k], int(self.labels[i])) for k, i in enumerate(idx)]

    def __del__(self):
        handles = getattr(self, "_handles", None)
        if handles is not None and handles[0] == os.getpid():
            for fd in handles[1].values():
                try:
                    os.close(fd)
                except OSError:
                    pass
