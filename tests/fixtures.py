"""Small real-layout fixtures for every test of the project (no downloaded data).

- :func:`write_challenge_file` writes a ``batch_{split}_N.h5`` file in the SMC 2020 layout
  from sample dicts, exactly as given (so tests can inject odd attribute types or bad stacks).
- :func:`make_sample` builds one realistic sample: a class-dependent CBED-like stack whose
  intensities span many orders of magnitude, with byte-string attributes like the real files.
- :func:`build_tiny_shards` writes a few raw files and runs the library's data stage on them
  (index -> manifest -> split -> shards -> shard index) and returns the shard root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_challenge_file", "make_sample", "class_pattern", "build_tiny_shards"]


def write_challenge_file(path, samples) -> Path:
    """Write a challenge-layout HDF5 file.

    Parameters
    ----------
    path : path-like
        Target, e.g. ``tmp_path / "batch_train_0.h5"``.
    samples : iterable of dict
        Each with ``"group"`` (default ``sample_{i}_0``), ``"stack"`` (array written as
        ``cbed_stack`` with its own dtype and shape; ``None`` writes no dataset) and ``"attrs"``
        (dict written as group attributes: Python ``bytes`` as fixed-length strings like the
        challenge writer, anything else verbatim, e.g. ``str`` as a variable-length string).
    """
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as fh:
        for i, s in enumerate(samples):
            grp = fh.create_group(s.get("group", f"sample_{i}_0"))
            if s.get("stack") is not None:
                grp.create_dataset("cbed_stack", data=s["stack"])
            for k, v in s.get("attrs", {}).items():
                # Python bytes -> fixed-length HDF5 strings, read back as b'...' like the real files.
                grp.attrs[k] = np.bytes_(v) if isinstance(v, bytes) else v
    return path


def class_pattern(class_index: int, side: int, rng) -> np.ndarray:
    """A (3, side, side) float32 CBED-like stack whose geometry depends on ``class_index``.

    A bright central disk and a lattice of weaker disks whose spacing and rotation depend on
    the class (and differ per panel), on a background near 1e-7, with multiplicative noise.
    """
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) - (side - 1) / 2
    out = np.empty((3, side, side), dtype=np.float32)
    for p in range(3):
        spacing = side * (0.16 + 0.05 * ((class_index + p) % 5))
        angle = np.deg2rad(13.0 * class_index + 29.0 * p)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        du = u - spacing * np.round(u / spacing)
        dv = v - spacing * np.round(v / spacing)
        radius = spacing * 0.22
        disks = (du**2 + dv**2 < radius**2).astype(np.float64)
        r2 = xx**2 + yy**2
        envelope = np.exp(-r2 / (2 * (side * 0.35) ** 2))
        img = 1e-7 + 10.0 * disks * envelope + 3e3 * (r2 < radius**2)
        img *= rng.lognormal(0.0, 0.3, size=img.shape)
        out[p] = img
    return out


def make_sample(group, space_group, material, *, side=32, energy_keV=100, class_index=0, rng=None,
                stack=None, attrs=None) -> dict:
    """One good sample dict for :func:`write_challenge_file`, with real-file attribute types.

    ``attrs`` (dict) overrides or adds attributes, e.g. ``{"space_group": np.int64(14)}``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    base = {
        "space_group": str(space_group).encode(),
        "material": material.encode(),
        "energy_keV": np.int64(energy_keV),
        "z_dirs": np.array([[[1, 1, 0], [1, -1, 1], [-1, 1, 3]]], dtype=np.int64),
        "y_dirs": rng.normal(size=(1, 3, 3)),
        "semi_angles_rad": np.array([0.00276776, 0.0028678, 0.00367309]),
        "d_hkls_angstrom": np.array([3.343, 3.227, 2.519]),
        "abc_angstrom": np.array([4.6456, 7.5474, 7.5923]),
        "angles_degree": np.array([75.75, 91.58, 89.09]),
        "formula": "Fe8 O14 F2",
    }
    base.update(attrs or {})
    if stack is None:
        stack = class_pattern(class_index, side, rng)
    return {"group": group, "stack": stack, "attrs": base}


def build_tiny_shards(root, classes=(14, 225, 1), per_class=6, side=32, seed=0, *, image_size=None,
                      energies=2, files_per_split=1) -> Path:
    """Write tiny raw files and run the real data stage on them; return the shard root.

    Parameters
    ----------
    root : path-like
        Work folder; gets ``raw/``, ``data/`` (manifest, splits, ...) and ``shards/``.
    classes : sequence of int
        Space groups present; class ``classes[k]`` gets pattern ``k``.
    per_class : int
        Training samples per class; dev and test get ``max(energies, per_class // 2)``.
    side : int
        Side of the raw stacks.
    image_size : int, optional
        Side of the shard images (default ``side``).
    energies : int
        Samples (energies) per material; materials never cross splits.
    files_per_split : int
        Raw files per split (samples dealt round-robin over them by material).
    """
    from cbedtdc.data import build_shard_index, write_manifest, write_splits
    from cbedtdc.io import index_file, write_json
    from cbedtdc.preprocess import write_shard

    root = Path(root)
    image_size = image_size or side
    rng = np.random.default_rng(seed)
    raw_paths = []
    for split in ("train", "dev", "test"):
        n = per_class if split == "train" else max(energies, per_class // 2)
        n_mat = max(1, -(-n // energies))
        files = [[] for _ in range(files_per_split)]
        counters = [0] * files_per_split
        for k, sg in enumerate(classes):
            for m in range(n_mat):
                f = (k * n_mat + m) % files_per_split
                i = counters[f]
                counters[f] += 1
                for j in range(min(energies, n - m * energies)):
                    files[f].append(make_sample(f"sample_{i}_{j}", sg, f"mp-{split}-{sg}-{m}", side=side,
                                                energy_keV=100 + 10 * j, class_index=k, rng=rng))
        for f, samples in enumerate(files):
            raw_paths.append(write_challenge_file(root / "raw" / f"batch_{split}_{f}.h5", samples))
    data, shards = root / "data", root / "shards"
    index_paths, sidecars = [], []
    for path in raw_paths:
        stem = path.name[:-3]
        idx = index_file(path)
        write_json(data / "index" / f"{stem}.json", idx)
        index_paths.append(data / "index" / f"{stem}.json")
        write_shard(path, idx, shards / "files" / f"{stem}.h5", image_size=image_size)
        sidecars.append(shards / "files" / f"{stem}.json")
    write_manifest(index_paths, data / "manifest.csv", data / "quarantine.csv", data / "manifest_report.json",
                   max_fraction=0.0, min_side=image_size)
    write_splits(data / "manifest.csv", data / "splits.csv", data / "class_counts.csv", seed=seed)
    build_shard_index(data / "splits.csv", sidecars, shards)
    return shards
