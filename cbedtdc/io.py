"""Defensive reading of challenge-layout HDF5 files and atomic writing of outputs.

A challenge file ``batch_{train,dev,test}_N.h5`` holds one group ``sample_i_j`` per sample
(i material, j beam-energy index) with the dataset ``cbed_stack`` (3, S, S) float32 and
attributes such as ``space_group`` (a byte string like ``b'62'``). Writers differ: attributes
come as bytes, str, numpy scalars or arrays, and some float attributes are garbage (float128,
denormals, huge values). :func:`index_file` reads one file, checks every sample and returns
the accepted records and the rejected ones, each with a reason that names the problem.

Nothing here raises on bad *data*: bad files and samples become quarantine rows.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from cbedtdc.errors import InputError

__all__ = [
    "STACK",
    "FLOAT_ATTRS",
    "atomic_path",
    "atomic_write_text",
    "atomic_save_torch",
    "write_json",
    "read_json",
    "write_csv",
    "read_csv",
    "to_text",
    "parse_space_group",
    "parse_floats",
    "check_stack",
    "index_file",
    "walk_samples",
    "sample_order",
    "stack_extent",
    "Prefetcher",
]

log = logging.getLogger(__name__)

#: Name of the image dataset inside a sample group.
STACK = "cbed_stack"
#: Float-valued attributes and the number of values each should hold.
FLOAT_ATTRS = {"abc_angstrom": 3, "angles_degree": 3, "semi_angles_rad": 3, "d_hkls_angstrom": 3}
#: Magnitudes outside [_TINY, _HUGE] are writer garbage, not physics (seen: 2.5e-314, 1e300).
_TINY, _HUGE = 1e-30, 1e12
_SAMPLE = re.compile(r"^sample_(\d+)_(\d+)$")


# --------------------------------------------------------------------------- atomic output
@contextlib.contextmanager
def atomic_path(target, suffix=None):
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary file is removed when the block raises, so a killed or failed job never
    leaves a half-written file under the final name; temporary files of an earlier writer of
    the same target that was killed outright (SIGKILL) are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*"):  # left by a killed (SIGKILL) writer
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # callers create it (h5py mode "x" refuses an existing file)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_path`; nothing is left under any name on error.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     atomic_write_text(Path(d) / "a.txt", "hello\\n")
    ...     sorted(p.name for p in Path(d).iterdir()), (Path(d) / "a.txt").read_text()
    (['a.txt'], 'hello\\n')
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save_torch(obj, path, *, keep_previous=None) -> None:
    """``torch.save`` through :func:`atomic_path`, fsynced before the rename.

    With ``keep_previous``, an existing ``path`` is first renamed there (a resume file and its
    predecessor: a crash between the two renames leaves the predecessor, never a torn file).
    """
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)


def write_json(path, obj) -> None:
    """Write ``obj`` as sorted, indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=True) + "\n")


def read_json(path):
    with open(path) as fh:
        return json.load(fh)


def write_csv(path, rows, fields) -> None:
    """Write dict rows with the given column order, atomically.

    Missing keys are written empty; extra keys are an error (a column nobody asked for).
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- attributes
def to_text(value) -> str | None:
    """Decode an attribute to ``str`` whatever the writer stored (bytes, str, numpy, 1-arrays).

    >>> to_text(b'mp-1234'), to_text(np.bytes_(b' 62 ')), to_text(np.array([b'Fe2 O3']))
    ('mp-1234', '62', 'Fe2 O3')
    """
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    return str(value).strip().strip("\x00").strip()


def parse_space_group(value) -> int:
    """Space-group number of a ``space_group`` attribute; ``ValueError`` names the problem.

    >>> parse_space_group(b'62'), parse_space_group(np.int64(225)), parse_space_group("14")
    (62, 225, 14)
    >>> parse_space_group(b'abc')
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: space_group b'abc' not an integer
    >>> parse_space_group(b'231')
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: space_group 231 outside 1..230
    """
    if value is None:
        raise InputError("space_group missing")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    raw = value.tolist() if isinstance(value, np.ndarray) else value
    if isinstance(value, bool):
        raise InputError(f"space_group {raw!r} not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not (np.isfinite(value) and value == int(value)):
            raise InputError(f"space_group {raw!r} not an integer")
        number = int(value)
    else:
        text = to_text(value)
        m = re.fullmatch(r"([+-]?\d+)(\.0*)?", text or "")  # "62" or "62.0"
        if m is None:
            raise InputError(f"space_group {raw!r} not an integer")
        number = int(m.group(1))
    if not 1 <= number <= 230:
        raise InputError(f"space_group {number} outside 1..230")
    return number


def parse_floats(value, n: int) -> tuple[list[float], list[str]]:
    """``n`` floats from an attribute; implausible entries become NaN and are described.

    Accepts any numeric dtype (float128 included), nested shapes like (1, 3) and strings.
    Returns the values and a list of warnings (empty when everything was plausible).

    >>> parse_floats(np.array([5.284, 6.711, 2.5e-314], dtype=np.longdouble), 3)
    ([5.284, 6.711, nan], ['[2]=2.5e-314 implausible'])
    """
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return [float("nan")] * n, [f"{value!r} not numeric"]
    warnings = []
    if arr.size != n:
        warnings.append(f"{arr.size} values not {n}")
        arr = np.resize(arr, n) if arr.size else np.full(n, np.nan)
    out = []
    for i, v in enumerate(arr.tolist()):
        if not np.isfinite(v) or abs(v) > _HUGE or (v != 0 and abs(v) < _TINY):
            warnings.append(f"[{i}]={v:.3g} implausible")
            v = float("nan")
        out.append(float(v))
    return out, warnings


def _float_scalar(value) -> tuple[float, str | None]:
    vals, warn = parse_floats(value, 1)
    return vals[0], (warn[0] if warn else None)


# --------------------------------------------------------------------------- stacks
def check_stack(node, *, expected_side: int = 0, min_side: int = 0):
    """Validate and read a ``cbed_stack`` dataset.

    Returns ``(stack, None)`` for a good stack, ``(None, reason)`` otherwise. Shape and dtype
    are checked before any pixel is read, so memory stays at one stack.
    """
    import h5py

    if not isinstance(node, h5py.Dataset):
        return None, f"{STACK} is a {type(node).__name__}, not a dataset"
    shape = tuple(node.shape) if node.shape is not None else ()
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]:
        return None, f"shape {shape} not (3, N, N)"
    side = shape[1]
    if expected_side and side != expected_side:
        return None, f"shape {shape} not (3, {expected_side}, {expected_side})"
    if side == 0:
        return None, f"shape {shape} is empty"
    if min_side and side < min_side:
        return None, f"side {side} smaller than image_size {min_side}"
    if node.dtype != np.float32:
        return None, f"dtype {node.dtype} not float32"
    try:
        stack = node[()]
    except Exception as err:  # truncated file, broken chunk, filter missing: h5py raises many types
        return None, f"cannot read {STACK}: {_one_line(err)}"
    finite = np.isfinite(stack)
    if not finite.all():
        n_nan = int(np.isnan(stack).sum())
        return None, f"non-finite values ({n_nan} NaN, {stack.size - int(finite.sum()) - n_nan} inf)"
    nonzero = stack.reshape(3, -1).any(axis=1)
    if not nonzero.any():
        return None, "all-zero stack"
    if not nonzero.all():
        return None, f"all-zero panel {int(np.flatnonzero(~nonzero)[0])} of 3"
    return stack, None


def stack_extent(dset) -> tuple[int, int] | None:
    """(file offset, bytes) of a contiguous, unfiltered dataset; None for chunked ones."""
    try:
        offset = dset.id.get_offset()
        return (int(offset), int(dset.id.get_storage_size())) if offset is not None else None
    except Exception:  # compact layout, external storage, virtual datasets
        return None


class Prefetcher:
    """Ask the kernel to read the next stack while this one is processed (one core, no threads).

    ``posix_fadvise(WILLNEED)`` starts asynchronous readahead of a byte range; on storage-bound
    runs (the full set never fits the page cache) it overlaps I/O with the log scaling.
    Does nothing where the call or the layout does not allow it.
    """

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDONLY) if hasattr(os, "posix_fadvise") else None

    def hint(self, dset) -> None:
        if self.fd is None:
            return
        extent = stack_extent(dset)
        if extent:
            os.posix_fadvise(self.fd, extent[0], extent[1], os.POSIX_FADV_WILLNEED)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _one_line(err) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def sample_order(name: str):
    """Sort key putting ``sample_i_j`` groups in (i, j) order, other names after.

    >>> sorted(["sample_10_0", "sample_2_1", "sample_2_0"], key=sample_order)
    ['sample_2_0', 'sample_2_1', 'sample_10_0']
    """
    m = _SAMPLE.match(name)
    return (0, int(m.group(1)), int(m.group(2)), "") if m else (1, 0, 0, name)


def _read_sample(name, grp, file_name, split, expected_side, min_side):
    """One sample group -> (record, None) or (None, reason)."""
    attrs = grp.attrs
    try:
        sg_raw = attrs["space_group"] if "space_group" in attrs else None
    except Exception as err:
        return None, f"cannot read attribute space_group: {_one_line(err)}"
    try:
        space_group = parse_space_group(sg_raw)
    except ValueError as err:
        return None, str(err)
    material = to_text(attrs.get("material")) if "material" in attrs else None
    if not material:
        return None, "material missing"
    if STACK not in grp:
        return None, f"missing dataset {STACK}"
    stack, reason = check_stack(grp[STACK], expected_side=expected_side, min_side=min_side)
    if reason:
        return None, reason
    warnings = []
    energy, warn = _float_scalar(attrs.get("energy_keV")) if "energy_keV" in attrs else (float("nan"), "missing")
    if warn:
        warnings.append(f"energy_keV {warn}")
    rec = {
        "file": file_name,
        "group": name,
        "split": split,
        "space_group": space_group,
        "material": material,
        "energy_keV": energy,
        "formula": to_text(attrs.get("formula")) or "" if "formula" in attrs else "",
        "side": int(stack.shape[1]),
    }
    for attr, n in FLOAT_ATTRS.items():
        if attr not in attrs:
            vals, warn = [float("nan")] * n, ["missing"]
        else:
            try:
                vals, warn = parse_floats(attrs[attr], n)
            except Exception as err:  # unreadable attribute (e.g. unsupported type)
                vals, warn = [float("nan")] * n, [_one_line(err)]
        rec[attr] = vals
        warnings.extend(f"{attr} {w}" for w in warn)
    rec["warnings"] = "; ".join(warnings)
    return rec, None


def walk_samples(path, read):
    """Yield ``(group, result, reason)`` for every sample group of one challenge file.

    The one walk over a file's groups, shared by the data stage (:func:`index_file`) and
    ``cbedtdc classify`` (:func:`cbedtdc.classify.read_samples`). ``read(name, group)`` returns
    ``(result, reason)`` for one ``h5py.Group``. A file that cannot be opened or listed, or holds
    no group, yields one entry with group ``""``; a root object that is not a group, or a group
    whose header or links are broken (``read`` raising), yields its reason. The next group's
    stack is prefetched while one is read (:class:`Prefetcher`).
    """
    import h5py

    try:
        fh = h5py.File(path, "r")
    except Exception as err:  # OSError for truncated / not HDF5, FileNotFoundError, ...
        yield "", None, f"cannot open: {_one_line(err)}"
        return
    with fh, Prefetcher(path) as prefetch:
        try:
            names = sorted(fh.keys(), key=sample_order)
        except Exception as err:
            yield "", None, f"cannot list groups: {_one_line(err)}"
            return
        if not names:
            yield "", None, "no sample groups"
        for k, group in enumerate(names):
            try:
                if k + 1 < len(names):  # start reading the next stack while this one is checked
                    nxt = fh[names[k + 1]]
                    if isinstance(nxt, h5py.Group) and isinstance(nxt.get(STACK), h5py.Dataset):
                        prefetch.hint(nxt[STACK])
            except Exception:  # a broken next group is reported when its turn comes
                pass
            try:
                node = fh[group]
                if not isinstance(node, h5py.Group):
                    yield group, None, f"not a sample group ({type(node).__name__} at file root)"
                    continue
                result, reason = read(group, node)
            except Exception as err:  # a broken object header or link
                result, reason = None, f"cannot read group: {_one_line(err)}"
            yield group, result, reason


def index_file(path, *, split: str | None = None, expected_side: int = 0, min_side: int = 0) -> dict:
    """Read and check every sample of one challenge file.

    Parameters
    ----------
    path : path-like
        A ``batch_{split}_N.h5`` file.
    split : str, optional
        Split of the file; by default taken from the file name.
    expected_side : int
        Required side of the stacks (512 for the real set); 0 accepts any square side.
    min_side : int
        Smallest acceptable side (the shard ``image_size``: stacks are only shrunk).

    Returns
    -------
    dict
        ``{"file", "split", "seen", "samples": [record, ...], "quarantine": [{"file", "group",
        "reason"}, ...], "skipped_materials": [line, ...]}``. ``seen`` = len(samples) + len(quarantine): one
        entry per sample group, or one for a file that cannot be opened or listed (then ``group`` is empty).
        ``skipped_materials``: the generator's record of the materials it could not simulate (the file's root
        attribute, one line each: id, space group, reason; :func:`cbedtdc.synth.generate.write_file`), which have no
        group and so are not samples.
    """
    from cbedtdc.layout import split_of

    path = Path(path)
    name = path.name
    split = split or split_of(name)
    samples, quarantine = [], []

    def read(group, node):
        return _read_sample(group, node, name, split, expected_side, min_side)

    for group, rec, reason in walk_samples(path, read):
        if reason:
            log.warning("quarantine %s/%s: %s", name, group, reason)
            quarantine.append({"file": name, "group": group, "reason": reason})
        else:
            samples.append(rec)
    return {
        "file": name,
        "split": split,
        "seen": len(samples) + len(quarantine),
        "samples": samples,
        "quarantine": quarantine,
        "skipped_materials": _skipped_materials(path),
    }


def _skipped_materials(path) -> list[str]:
    """The lines of a generated file's ``skipped_materials`` root attribute (none when absent or unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            text = to_text(fh.attrs.get("skipped_materials")) or ""
    except Exception:  # an unreadable file is quarantined by the walk already
        return []
    return [line for line in text.splitlines() if line.strip()]
