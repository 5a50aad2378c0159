"""Defensive reading of the public STEMDL mirror (``stemdl_ds1a``): one ``sample-<n>.npz`` per sample.

Each file holds ``data``, float32 (3, 128, 128): the stack after exactly the standard preprocessing
(``clip(10 * (max(log I, -17) + 17), 0, 255)``, area resize to 128 px), and ``label``, an array holding
the space-group number. There are no material ids, energies or other attributes. :func:`read_npz` reads
and checks one file (the array headers are checked before any pixel is read); :func:`index_mirror_chunk`
checks one chunk of a folder (:func:`cbedtdc.layout.chunk_members`) and returns the same index as
:func:`cbedtdc.io.index_file` does for a challenge file, so the manifest, split and shard rules treat
both layouts alike. Every sample is its own material: ``material`` is the sample key
(``<folder>/sample-<n>.npz``), so bootstrap intervals fall back to samples.

Nothing here raises on bad *data*: bad files and empty folders become quarantine rows.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from cbedtdc.io import parse_space_group
from cbedtdc.layout import MIRROR_SAMPLE, MIRROR_SPLITS, chunk_members, parse_mirror_stem

__all__ = ["MIRROR_SIDE", "LAYOUT", "read_npz", "index_mirror_chunk"]

log = logging.getLogger(__name__)

#: Side of the mirror's stacks (its fixed published format).
MIRROR_SIDE = 128
#: Name of the layout in indexes, shard sidecars and results/shards/data_info.json.
LAYOUT = "stemdl_mirror"


def _one_line(err) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _array_header(zf: zipfile.ZipFile, member: str):
    """``(shape, dtype)`` of one ``.npy`` member, read from its header only."""
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(fh)
    return tuple(shape), dtype


def _read_member(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    with zf.open(member) as fh:  # zipfile checks the CRC-32 at the end of the member
        return np.lib.format.read_array(fh, allow_pickle=False)


def _label(zf: zipfile.ZipFile) -> tuple[int | None, str | None]:
    try:
        shape, dtype = _array_header(zf, "label.npy")
        if dtype.hasobject:
            return None, f"label dtype {dtype} not numeric"
        raw = _read_member(zf, "label.npy")
    except Exception as err:  # truncated member, bad header, CRC error
        return None, f"cannot read label: {_one_line(err)}"
    if raw.size != 1:
        return None, f"label holds {raw.size} values {raw.reshape(-1)[:5].tolist()}, not 1"
    try:
        return parse_space_group(raw), None
    except ValueError as err:
        return None, "label " + str(err).removeprefix("space_group ")


def read_npz(path, *, require_label: bool = True, min_side: int = 0):
    """Read and check one mirror sample.

    Returns ``(data, label, None)`` for a good file: ``data`` float32 (3, 128, 128) with values in
    0..255, ``label`` the space-group number (None when ``require_label`` is false and the file holds
    none or a bad one); ``(None, None, reason)`` otherwise. Shape and dtype are read from the array
    header before any pixel, so a huge or odd array costs nothing. ``min_side``: a side smaller than
    this (the shard ``image_size``) is a reason.
    """
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except Exception as err:  # BadZipFile (truncated, not a zip), IsADirectoryError, ...
        return None, None, f"cannot open: {_one_line(err)}"
    with zf:
        names = set(zf.namelist())
        if "data.npy" not in names:
            return None, None, f"missing array data (holds {', '.join(sorted(names)) or 'nothing'})"
        label, why = (None, None)
        if "label.npy" in names:
            label, why = _label(zf)
        else:
            why = "missing array label"
        if why and require_label:
            return None, None, why
        try:
            shape, dtype = _array_header(zf, "data.npy")
        except Exception as err:
            return None, None, f"cannot read data: {_one_line(err)}"
        if shape != (3, MIRROR_SIDE, MIRROR_SIDE):
            return None, None, f"data shape {shape} not (3, {MIRROR_SIDE}, {MIRROR_SIDE})"
        if dtype != np.dtype("<f4") and dtype != np.dtype("=f4"):
            return None, None, f"data dtype {dtype} not float32"
        if min_side and MIRROR_SIDE < min_side:
            return None, None, f"side {MIRROR_SIDE} smaller than image_size {min_side}"
        try:
            data = _read_member(zf, "data.npy")
        except Exception as err:
            return None, None, f"cannot read data: {_one_line(err)}"
    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        return None, None, f"non-finite values ({n_nan} NaN, {data.size - int(finite.sum()) - n_nan} inf)"
    lo, hi = float(data.min()), float(data.max())
    if lo < 0 or hi > 255:
        return None, None, f"values outside 0..255 (min {lo:.6g}, max {hi:.6g}): not the mirror's log scaling"
    nonzero = data.reshape(3, -1).any(axis=1)
    if not nonzero.any():
        return None, None, "all-zero stack"
    if not nonzero.all():
        return None, None, f"all-zero panel {int(np.flatnonzero(~nonzero)[0])} of 3"
    return data, label, None


def index_mirror_chunk(folder, stem: str, chunk_files: int) -> dict:
    """Check every file of one chunk of a mirror folder; the index of :func:`cbedtdc.io.index_file`.

    Parameters
    ----------
    folder : path-like
        A mirror folder (``<root>/training`` ...).
    stem : str
        The chunk, ``mirror_<folder>_<k>`` (:func:`cbedtdc.layout.mirror_plan`).
    chunk_files : int
        Entries per chunk (``data.mirror_chunk``), as in the plan.

    Returns
    -------
    dict
        ``{"file": stem, "split", "layout", "folder", "seen", "samples", "quarantine"}``. A sample's
        ``file`` is the folder name and its ``group`` the file name, so its key ``file/group`` is its
        path below the mirror root; ``material`` is that key (no material ids), ``energy_keV`` NaN.
        An entry that is not ``sample-<n>.npz`` and an empty folder (group "") are quarantined.
    """
    folder = Path(folder)
    name, k = parse_mirror_stem(stem)
    split = MIRROR_SPLITS[name]
    members = chunk_members(folder, stem, chunk_files)
    samples, quarantine = [], []

    def reject(group, reason):
        log.warning("quarantine %s/%s: %s", name, group, reason)
        quarantine.append({"file": name, "group": group, "reason": reason})

    if not members:
        if k == 0:
            reject("", "empty folder: no sample-<n>.npz file")
        else:
            log.warning("%s: chunk %s holds no file: the folder has fewer files than when the run was "
                        "planned; rerun snakemake to plan it again", folder, stem)
    for member in members:
        if not MIRROR_SAMPLE.match(member):
            reject(member, "not a sample-<n>.npz file name")
            continue
        data, label, reason = read_npz(folder / member)
        if reason:
            reject(member, reason)
            continue
        key = f"{name}/{member}"
        samples.append({
            "file": name, "group": member, "split": split, "space_group": label, "material": key,
            "energy_keV": float("nan"), "formula": "", "side": int(data.shape[-1]), "warnings": "",
        })
    return {"file": stem, "split": split, "layout": LAYOUT, "folder": str(folder),
            "seen": len(samples) + len(quarantine), "samples": samples, "quarantine": quarantine}
