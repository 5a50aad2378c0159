"""Standard preprocessing of CBED stacks and the uint8 shard files.

Preprocessing (as in the challenge organisers' benchmark and the best public entry):
``x = clip(10 * (max(log(I), -17) + 17), 0, 255)`` per pixel (non-positive intensities floored
like any I < e^-17), then area-averaging resize of each panel to ``image_size``, then
rounding to uint8.

A shard holds the accepted samples of one raw file:

``images``      (N, 3, S, S) uint8, chunked (1, 3, S, S): one chunk per sample
``labels``      (N,) int16, space-group numbers 1..230
``keys``        (N,) fixed-length bytes, ``"{file}/{group}"``
``material``    (N,) fixed-length bytes
``energy_keV``  (N,) float32

plus a JSON sidecar (``.json`` next to the ``.h5``) with the keys, rows and SHA-256 checksums
of every sample image and of the whole file. Shards are written to a temporary file and
renamed, hold no timestamps, and use a fixed HDF5 format version, so the same input gives
byte-identical output.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import numpy as np

from cbedtdc.io import STACK, Prefetcher, atomic_path, read_json, write_json
from cbedtdc.errors import InputError

__all__ = [
    "LOG_FLOOR",
    "log_scale",
    "area_matrix",
    "area_resize",
    "preprocess_stack",
    "write_shard",
    "scaled_to_uint8",
    "write_mirror_shard",
    "verify_shard",
    "sha256_file",
    "FORMAT_VERSION",
]

log = logging.getLogger(__name__)

#: log(I) is floored at this value; 10 * (log + 17) then maps e^-17..e^8.5 onto 0..255.
LOG_FLOOR = -17.0
FORMAT_VERSION = 1
_LIBVER = ("v110", "v110")  # fixed file-format version -> reproducible bytes across h5py versions


def log_scale(stack: np.ndarray) -> np.ndarray:
    """``clip(10 * (max(log(I), -17) + 17), 0, 255)`` as float32; non-positive I gives 0.

    >>> log_scale(np.array([0.0, -1.0, 1.0, np.exp(8.5), 1e30], dtype=np.float32)).round(3).tolist()
    [0.0, 0.0, 170.0, 255.0, 255.0]
    """
    x = np.maximum(stack, np.float32(np.exp(LOG_FLOOR)), dtype=np.float32)
    np.log(x, out=x)
    x -= np.float32(LOG_FLOOR)
    x *= np.float32(10.0)
    return np.clip(x, 0.0, 255.0, out=x)


def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of area-averaging resampling (OpenCV INTER_AREA for shrinking).

    Row ``o`` averages the input pixels covered by output pixel ``o``, fractional overlaps
    weighted by area; each row sums to 1.

    >>> area_matrix(4, 2).tolist()
    [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]
    >>> area_matrix(3, 2).round(3).tolist()
    [[0.667, 0.333, 0.0], [0.0, 0.333, 0.667]]
    """
    if n_out > n_in:
        raise InputError(f"area resize only shrinks: {n_in} -> {n_out} pixels")
    scale = n_in / n_out
    edges = np.arange(n_out + 1) * scale
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for o in range(n_out):
        lo, hi = edges[o], edges[o + 1]
        first, last = int(np.floor(lo)), int(np.ceil(hi))
        for i in range(first, min(last, n_in)):
            w[o, i] = min(hi, i + 1) - max(lo, i)
    w /= scale
    return w


def area_resize(img: np.ndarray, n_out: int, matrix: np.ndarray | None = None) -> np.ndarray:
    """Area-average the last two (square) axes of ``img`` down to ``n_out``.

    Integer factors use a reshape-mean; other factors the :func:`area_matrix` product.

    >>> area_resize(np.arange(16, dtype=np.float32).reshape(4, 4), 2).tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    n_in = img.shape[-1]
    if img.shape[-2] != n_in:
        raise InputError(f"area_resize needs square images, got shape {img.shape}")
    if n_in == n_out:
        return img
    if n_in % n_out == 0:
        f = n_in // n_out
        lead = img.shape[:-2]
        # Rows first (a reduction over a middle axis adds whole rows: fast), then the columns
        # as f strided adds; ~15x faster than a reshape-sum over a trailing axis of size f.
        rows = img.reshape(*lead, n_out, f, n_in).sum(axis=-2, dtype=np.float32)
        out = rows[..., 0::f].copy()
        for k in range(1, f):
            out += rows[..., k::f]
        out *= np.float32(1.0 / (f * f))
        return out
    w = (area_matrix(n_in, n_out) if matrix is None else matrix).astype(np.float32)
    return np.matmul(np.matmul(w, img), w.T)


#: I is clipped to [e^-17, e^8.5] before the log: the same as clipping 10 (log I + 17) to [0, 255].
_I_LO, _I_HI = np.float32(np.exp(LOG_FLOOR)), np.float32(np.exp(255.0 / 10.0 + LOG_FLOOR))
_TEN_LN2 = np.float32(10.0 * np.log(2.0))


def preprocess_stack(stack: np.ndarray, image_size: int, *, overwrite: bool = False) -> np.ndarray:
    """Raw (3, S, S) intensities -> (3, image_size, image_size) uint8: :func:`log_scale`, area resize, rint.

    Computed in the fast, equivalent order: clip I to [e^-17, e^8.5], log2, area-average,
    then the affine map 10 ln2 * x + 170 on the small image (averaging is linear, so the
    result equals resizing the log-scaled image up to float rounding). ``overwrite=True``
    works in ``stack``'s memory (the caller's read buffer) instead of a copy.

    >>> stack = np.full((3, 4, 4), np.exp(1.0), dtype=np.float32)
    >>> preprocess_stack(stack, 2)[0].tolist()
    [[180, 180], [180, 180]]
    """
    if stack.dtype != np.float32:
        raise TypeError(f"stack dtype {stack.dtype} not float32")
    x = stack if overwrite else stack.copy()
    np.clip(x, _I_LO, _I_HI, out=x)  # NaN never reaches here: the index quarantines it
    np.log2(x, out=x)
    y = area_resize(x, image_size)  # may be x itself when no resize is needed: x is ours to change
    y *= _TEN_LN2
    y -= _TEN_LN2 * np.float32(LOG_FLOOR / np.log(2.0))
    np.clip(y, 0.0, 255.0, out=y)
    return np.rint(y, out=y).astype(np.uint8)


def sha256_file(path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def _fixed_bytes(values) -> np.ndarray:
    encoded = [v.encode("utf-8") for v in values]
    width = max([len(b) for b in encoded] + [1])
    return np.array(encoded, dtype=f"S{width}")


def _create_datasets(dst, samples, keys, source: str, s: int):
    """Write a shard's attributes and per-sample datasets (this order keeps the bytes fixed); return
    the empty ``images`` dataset, one (3, s, s) chunk per sample."""
    dst.attrs["format_version"] = FORMAT_VERSION
    dst.attrs["source_file"] = source
    dst.attrs["image_size"] = s
    dst.attrs["preprocessing"] = "clip(10*(max(log(I),-17)+17),0,255), area resize, rint, uint8"
    common = dict(track_times=False)
    n = len(samples)
    images = dst.create_dataset(
        "images", shape=(n, 3, s, s), dtype=np.uint8, chunks=(1, 3, s, s) if n else None, **common
    )
    dst.create_dataset("labels", data=np.array([r["space_group"] for r in samples], dtype=np.int16), **common)
    dst.create_dataset("keys", data=_fixed_bytes(keys), **common)
    dst.create_dataset("material", data=_fixed_bytes([r["material"] for r in samples]), **common)
    dst.create_dataset(
        "energy_keV", data=np.array([r["energy_keV"] for r in samples], dtype=np.float32), **common
    )
    return images


def _read_stack(src, raw_path: Path, samples, row: int, buf, prefetch) -> np.ndarray:
    """The raw float32 stack of ``samples[row]`` read into ``buf`` (reused while the side stays the
    same), with the next sample's stack hinted to ``prefetch``; ``RuntimeError`` when the file no
    longer holds what the index accepted."""
    rec = samples[row]
    if buf is None or buf.shape[-1] != rec["side"]:
        buf = np.empty((3, rec["side"], rec["side"]), dtype=np.float32)
    try:
        if row + 1 < len(samples):
            prefetch.hint(src[samples[row + 1]["group"]][STACK])
        dset = src[rec["group"]][STACK]
        if dset.shape != buf.shape or dset.dtype != np.float32:
            raise InputError(f"shape {dset.shape} dtype {dset.dtype}, the index saw side {rec['side']}")
        dset.read_direct(buf)
    except Exception as err:
        raise InputError(
            f"{raw_path}: sample {rec['group']} was accepted by the index but cannot be read now "
            f"({err}); the raw file changed: rerun index_raw"
        ) from err
    return buf


def _sidecar(raw_path: Path, out_path: Path, s: int, keys, samples, sample_sha, file_sha: str) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "source_file": raw_path.name,
        "shard": out_path.name,
        "image_size": s,
        "n": len(samples),
        "sha256": file_sha,
        "samples": [
            {"key": k, "row": i, "space_group": r["space_group"], "material": r["material"],
             "energy_keV": r["energy_keV"], "sha256": h}
            for i, (k, r, h) in enumerate(zip(keys, samples, sample_sha))
        ],
    }


def write_shard(raw_path, index: dict, out_path, *, image_size: int, progress: bool = False) -> dict:
    """Convert the accepted samples of one raw file into a shard, atomically.

    Parameters
    ----------
    raw_path : path-like
        The raw challenge file.
    index : dict
        Its :func:`cbedtdc.io.index_file` result; ``index["samples"]`` are converted in that
        order, except stacks smaller than ``image_size`` (the manifest quarantines those).
    out_path : path-like
        The shard ``.h5``; the sidecar is written next to it with suffix ``.json``.
    image_size : int
        Side of the shard images.

    Returns
    -------
    dict
        The sidecar content. Memory stays at about two raw stacks whatever the file size.

    Raises
    ------
    RuntimeError
        When a sample the index accepted can no longer be read (the file changed since).
    """
    import h5py

    raw_path, out_path = Path(raw_path), Path(out_path)
    samples = [r for r in index["samples"] if int(r["side"]) >= image_size]
    if len(samples) < len(index["samples"]):
        log.warning("%s: %d stacks smaller than image_size %d skipped (quarantined by the manifest)",
                    raw_path.name, len(index["samples"]) - len(samples), image_size)
    n = len(samples)
    s = int(image_size)
    keys = [f"{r['file']}/{r['group']}" for r in samples]
    sample_sha = []
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=raw_path.name, unit="stack", mininterval=5)
    with atomic_path(out_path, suffix=".h5") as tmp:
        # A raw file with no accepted sample (e.g. unreadable) gives an empty shard; it is not opened.
        src_ctx = h5py.File(raw_path, "r") if n else contextlib.nullcontext()
        with src_ctx as src, h5py.File(tmp, "x", libver=_LIBVER, track_order=False) as dst, \
                Prefetcher(raw_path) as prefetch:
            images = _create_datasets(dst, samples, keys, raw_path.name, s)
            buf = None
            for row in iterator:
                buf = _read_stack(src, raw_path, samples, row, buf, prefetch)
                img = preprocess_stack(buf, s, overwrite=True)
                images.id.write_direct_chunk((row, 0, 0, 0), img.tobytes())
                sample_sha.append(hashlib.sha256(img.tobytes()).hexdigest())
        sidecar = _sidecar(raw_path, out_path, s, keys, samples, sample_sha, sha256_file(tmp))
        # Sidecar first: a shard under its final name always has a matching sidecar.
        write_json(out_path.with_suffix(".json"), sidecar)
    log.info("%s: %d samples -> %s (%d px)", raw_path.name, n, out_path, s)
    return sidecar


def scaled_to_uint8(data: np.ndarray, image_size: int) -> np.ndarray:
    """An already log-scaled (3, S, S) stack (0..255, the STEMDL mirror's ``data``) -> (3, image_size,
    image_size) uint8: area resize when smaller, clip to 0..255, rint. No second log scaling.

    >>> scaled_to_uint8(np.array([[[0.4, 254.6], [12.5, 300.0]]] * 3, dtype=np.float32), 2)[0].tolist()
    [[0, 255], [12, 255]]
    """
    y = area_resize(np.asarray(data, dtype=np.float32), image_size).astype(np.float32, copy=True)
    np.clip(y, 0.0, 255.0, out=y)
    return np.rint(y, out=y).astype(np.uint8)


def write_mirror_shard(folder, index: dict, out_path, *, image_size: int, progress: bool = False) -> dict:
    """Convert the accepted samples of one mirror chunk into a shard, atomically (as :func:`write_shard`).

    ``index`` is the chunk's :func:`cbedtdc.mirror.index_mirror_chunk` result; each accepted file's
    ``data`` is read again and becomes :func:`scaled_to_uint8` (at 128 px: ``round(data)``, no second
    log scaling). Samples smaller than ``image_size`` are skipped (the manifest quarantines them). The
    sidecar records ``layout: stemdl_mirror``. Raises ``RuntimeError`` when an accepted file can no
    longer be read.
    """
    import h5py

    from cbedtdc.mirror import LAYOUT, read_npz

    folder, out_path = Path(folder), Path(out_path)
    samples = [r for r in index["samples"] if int(r["side"]) >= image_size]
    if len(samples) < len(index["samples"]):
        log.warning("%s: %d stacks smaller than image_size %d skipped (quarantined by the manifest)",
                    index["file"], len(index["samples"]) - len(samples), image_size)
    s = int(image_size)
    keys = [f"{r['file']}/{r['group']}" for r in samples]
    sample_sha = []
    iterator = range(len(samples))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=index["file"], unit="file", mininterval=5)
    with atomic_path(out_path, suffix=".h5") as tmp:
        with h5py.File(tmp, "x", libver=_LIBVER, track_order=False) as dst:
            images = _create_datasets(dst, samples, keys, index["file"], s)
            dst.attrs["preprocessing"] = "STEMDL mirror data (already log-scaled), area resize, clip 0-255, rint, uint8"
            for row in iterator:
                path = folder / samples[row]["group"]
                data, _, reason = read_npz(path)
                if reason:
                    raise InputError(f"{path}: accepted by the index but cannot be read now ({reason}); the file "
                                       "changed: rerun index_mirror")
                img = scaled_to_uint8(data, s)
                images.id.write_direct_chunk((row, 0, 0, 0), img.tobytes())
                sample_sha.append(hashlib.sha256(img.tobytes()).hexdigest())
        sidecar = _sidecar(Path(index["file"]), out_path, s, keys, samples, sample_sha, sha256_file(tmp))
        sidecar["layout"] = LAYOUT
        write_json(out_path.with_suffix(".json"), sidecar)
    log.info("%s: %d samples -> %s (%d px)", index["file"], len(samples), out_path, s)
    return sidecar


def verify_shard(path, *, deep: bool = True) -> list[str]:
    """Check a shard against its sidecar; returns a list of problems (empty when all is well).

    ``deep`` also re-hashes every sample image (reads the whole shard).
    """
    import h5py

    path = Path(path)
    problems = []
    side = path.with_suffix(".json")
    if not side.exists():
        return [f"{path}: sidecar {side.name} missing"]
    meta = read_json(side)
    digest = sha256_file(path)
    if digest != meta["sha256"]:
        problems.append(f"{path}: file SHA-256 {digest[:12]}… differs from the sidecar's {meta['sha256'][:12]}…")
    if deep:
        with h5py.File(path, "r") as fh:
            images = fh["images"]
            keys = [k.decode() for k in fh["keys"][()]]
            for entry in meta["samples"]:
                row = entry["row"]
                if keys[row] != entry["key"]:
                    problems.append(f"{path}: row {row} holds {keys[row]}, sidecar says {entry['key']}")
                got = hashlib.sha256(images[row].tobytes()).hexdigest()
                if got != entry["sha256"]:
                    problems.append(f"{path}: image of {entry['key']} (row {row}) fails its SHA-256")
    return problems
