"""Small real-layout fixtures for every test of the project (no downloaded data).

- :func:`write_challenge_file` writes a ``batch_{split}_N.h5`` file in the SMC 2020 layout
  from sample dicts, exactly as given (so tests can inject odd attribute types or bad stacks).
- :func:`make_sample` builds one realistic sample: a class-dependent CBED-like stack whose
  intensities span many orders of magnitude, with byte-string attributes like the real files.
- :func:`build_tiny_shards` writes a few raw files and runs the library's data stage on them
  (index -> manifest -> split -> shards -> shard index) and returns the shard root.
- :func:`write_npz_sample` writes one STEMDL-mirror ``sample-<n>.npz`` as the mirror's writer does;
  :func:`write_faulty_mirror` a small mirror with good samples and one planted fault of each kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_challenge_file", "make_sample", "class_pattern", "build_tiny_shards", "mirror_data",
           "write_npz_sample", "write_faulty_mirror", "MIRROR_FAULTS", "MIRROR_PUBLISHED", "write_placeholder_mirror",
           "write_placeholder_challenge"]


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


# --------------------------------------------------------------------------- STEMDL mirror
def mirror_data(class_index: int, rng, side: int = 128) -> np.ndarray:
    """A (3, side, side) float32 stack as the mirror holds it: the standard log scaling of a CBED-like pattern
    (``clip(10 * (max(log I, -17) + 17), 0, 255)``), non-integer values in 0..255."""
    raw = class_pattern(class_index, side, rng).astype(np.float64)
    return np.clip(10 * (np.maximum(np.log(raw), -17) + 17), 0, 255).astype(np.float32)


def write_npz_sample(path, data=None, label=None, members=None) -> Path:
    """``np.savez(path, data=data, label=np.asarray([label]))`` like the mirror's writer; ``None`` leaves an array
    out, ``members`` (dict) adds or replaces arrays, e.g. ``{"label": np.array([1, 2])}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    if data is not None:
        arrays["data"] = data
    if label is not None:
        arrays["label"] = np.asarray([label])
    arrays.update(members or {})
    with open(path, "wb") as fh:  # np.savez on a name would append .npz to names without it
        np.savez(fh, **arrays)
    return path


#: Planted faults of :func:`write_faulty_mirror`: key below the mirror root -> start of the quarantine reason.
MIRROR_FAULTS = {
    "training/sample-100.npz": "cannot open: ",  # truncated
    "training/sample-101.npz": "cannot open: ",  # not a zip file
    "training/sample-102.npz": "missing array data",
    "training/sample-103.npz": "missing array label",
    "training/sample-104.npz": "data shape (3, 64, 64) not (3, 128, 128)",
    "training/sample-105.npz": "data dtype float64 not float32",
    "training/sample-106.npz": "non-finite values (1 NaN, 0 inf)",
    "training/sample-107.npz": "non-finite values (0 NaN, 2 inf)",
    "training/sample-108.npz": "values outside 0..255 (min 0, max 300)",
    "validation/sample-109.npz": "label 231 outside 1..230",
    "validation/sample-110.npz": "label 0 outside 1..230",
    "validation/sample-111.npz": "label 14.5 not an integer",
    "testing/sample-112.npz": "label holds 2 values [14, 225], not 1",
    "testing/notes.txt": "not a sample-<n>.npz file name",
    "testing/sample-113.npz": "values outside 0..255 (min -1,",
    "inference/": "empty folder: no sample-<n>.npz file",
}


def write_faulty_mirror(root, *, per_folder=None, seed=0) -> dict[str, tuple[np.ndarray, int]]:
    """A small STEMDL mirror under ``root``: good samples of space groups 14, 225 and 1 in ``training``,
    ``validation`` and ``testing`` (``per_folder``: good files per folder, default 6/3/3), one file of each
    :data:`MIRROR_FAULTS` kind, and an empty ``inference`` folder. Returns ``{key: (data, label)}`` of the
    good samples (key = path below ``root``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    per_folder = per_folder or {"training": 6, "validation": 3, "testing": 3}
    classes = (14, 225, 1)
    good, n = {}, 0
    for folder, count in per_folder.items():
        for i in range(count):
            data, label = mirror_data(i % 3, rng), classes[i % 3]
            write_npz_sample(root / folder / f"sample-{n}.npz", data, label)
            good[f"{folder}/sample-{n}.npz"] = (data, label)
            n += 1
    (root / "inference").mkdir(parents=True, exist_ok=True)
    ok = mirror_data(0, rng)

    def bad(key, data=ok, label=14, members=None):
        return write_npz_sample(root / key, data, label, members)

    path = bad("training/sample-100.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (root / "training" / "sample-101.npz").write_bytes(b"<html>503 Service Unavailable</html>")
    bad("training/sample-102.npz", data=None)
    bad("training/sample-103.npz", label=None)
    bad("training/sample-104.npz", data=ok[:, :64, :64].copy())
    bad("training/sample-105.npz", data=ok.astype(np.float64))
    nan = ok.copy()
    nan[0, 1, 2] = np.nan
    bad("training/sample-106.npz", data=nan)
    inf = ok.copy()
    inf[1, 3, 3], inf[2, 0, 0] = np.inf, -np.inf
    bad("training/sample-107.npz", data=inf)
    high = np.zeros_like(ok) + ok.clip(1, 255)
    high[0, 0, 0], high[0, 0, 1] = 300, 0
    bad("training/sample-108.npz", data=high)
    bad("validation/sample-109.npz", label=231)
    bad("validation/sample-110.npz", label=0)
    bad("validation/sample-111.npz", label=14.5)
    bad("testing/sample-112.npz", members={"label": np.array([14, 225])})
    (root / "testing" / "notes.txt").write_text("not a sample\n")
    low = ok.copy()
    low[2, 5, 5] = -1.0
    bad("testing/sample-113.npz", data=low)
    return good


#: Files per folder of the published mirror (mlcommons/science benchmarks/stemdl/stfc/README.md).
MIRROR_PUBLISHED = {"training": 148_006, "validation": 20_401, "testing": 9_374, "inference": 9_375}


def write_placeholder_mirror(root, counts=None) -> Path:
    """Empty ``sample-<n>.npz`` placeholders in the mirror's four folders (default: the published 187,156 files),
    for DAG and parse-time tests that never open a file."""
    import os

    root = Path(root)
    n = 0
    for folder, count in (counts or MIRROR_PUBLISHED).items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        base = str(root / folder)
        for _ in range(count):
            os.close(os.open(f"{base}/sample-{n}.npz", os.O_CREAT | os.O_WRONLY, 0o644))
            n += 1
    return root


def write_placeholder_challenge(root, n_files: int = 1138) -> Path:
    """Empty ``batch_{train,dev,test}_N.h5`` placeholders in ``train/``, ``dev/``, ``test/`` (default: the real set's
    1,138 files, split about 90/5/5 %), for DAG and parse-time tests."""
    root = Path(root)
    dev = test = max(1, round(n_files * 0.05))
    for split, count in (("train", n_files - dev - test), ("dev", dev), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / split / f"batch_{split}_{i}.h5").touch()
    return root
