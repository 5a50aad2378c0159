"""Checkpoints of the training engine: model files, resumable state, RNG state; all read with
``torch.load(weights_only=True)`` and written atomically (:func:`cbedtdc.io.atomic_save_torch`).

A model file (``best.pt``/``last.pt``) is ``{"format": MODEL_FORMAT, "model": state_dict, "meta": dict}``;
the resumable state (``resume/state.pt``) holds the optimizer, scheduler, scaler, RNG and history too.

A *finished record* (``finished/`` beside the outputs: hard links, or copies, of the outputs plus
``manifest.json`` with their sha256 and the job's key) proves that a job with these arguments and
inputs has finished. Snakemake deletes the declared outputs of a job it thinks incomplete (its
``snakemake`` process was killed while the ranks went on and finished); the rerun then puts them back
from the record (:func:`restore_finished`) instead of training again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
from cbedtdc.errors import CbedtdcError
from cbedtdc.preprocess import sha256_file

__all__ = ["CheckpointError", "STATE_FORMAT", "MODEL_FORMAT", "load_checkpoint", "model_file", "load_model",
           "rng_state", "set_rng_state", "resume_state", "FINISHED_FORMAT", "file_sha256", "input_digest",
           "record_finished", "restore_finished"]

log = logging.getLogger(__name__)

STATE_FORMAT = "cbedtdc-train-state/1"
MODEL_FORMAT = "cbedtdc-model/1"
FINISHED_FORMAT = "cbedtdc-finished/1"


class CheckpointError(CbedtdcError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the job (the message names the file)."""


def load_checkpoint(path: Path, fmt: str) -> dict:
    """Read a checkpoint with ``weights_only=True``; :class:`CheckpointError` naming the file if bad."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, disallowed global, I/O error
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(err).__name__}: {first[:200]}); delete it and rerun the job") from err
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: not a {fmt} checkpoint (found {found!r})")
    return obj


def model_file(model, meta: dict) -> dict:
    return {"format": MODEL_FORMAT, "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": meta}


def load_model(path, device: str = "cpu"):
    """Model and metadata of a ``best.pt``/``last.pt`` written by :func:`fit`.

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode on ``device``; ``meta`` holds classes, rest, output_names, arch,
        orientation, in_channels, n_outputs, image_size, mean, std, loss, epoch and config.
    """
    from cbedtdc.model import build_model

    obj = load_checkpoint(path, MODEL_FORMAT)
    meta = obj["meta"]
    model = build_model(meta["arch"], meta["in_channels"], meta["n_outputs"], mean=meta["mean"], std=meta["std"])
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit a {meta['arch']} with {meta['n_outputs']} outputs") from err
    model.to(device).eval()
    return model, meta


def rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def resume_state(resume_dir: Path, fingerprint: str) -> dict | None:
    """Newest readable state of this job in ``resume_dir``, else None.

    A corrupt ``state.pt`` is reported by name and the previous one is used; when no readable
    state is left the job stops with :class:`CheckpointError` rather than silently restarting.
    """
    candidates = [resume_dir / "state.pt", resume_dir / "state.prev.pt"]
    present = [p for p in candidates if p.exists()]
    if not present:
        return None
    errors = []
    for path in present:
        try:
            state = load_checkpoint(path, STATE_FORMAT)
        except CheckpointError as err:
            log.error("%s; trying the previous checkpoint", err)
            errors.append(str(err))
            continue
        state["_path"] = str(path)
        if state["fingerprint"] != fingerprint:
            log.warning("%s belongs to another configuration or data set (fingerprint %s, this job %s); "
                        "starting from scratch", path, state["fingerprint"][:12], fingerprint[:12])
            return None
        return state
    raise CheckpointError("no readable checkpoint to resume from: " + " | ".join(errors)
                          + f"; delete {resume_dir} to start the job from scratch")


# --------------------------------------------------------------------------- finished record
file_sha256 = sha256_file  # sha256 of a file's bytes (cbedtdc.preprocess), named as this module's callers read it


def input_digest(root, tables, files) -> str:
    """Checksum of a job's inputs: the bytes of ``tables`` (small sample lists) and the name, size and
    modification time of ``files`` (large data files, not read), all relative to ``root``.

    A rewritten data file changes the digest even when its size does not (its mtime moves); a touched but
    identical one changes it too, which costs a retraining, never a wrong restore.
    """
    root = Path(root)
    h = hashlib.sha256()
    for name in tables:
        h.update(f"table {name} {file_sha256(root / name)}\n".encode())
    for name in sorted(files):
        st = (root / name).stat()
        h.update(f"file {name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes under ``dst`` atomically: a hard link (no extra space), or a copy where the file
    system has none, written under a temporary name and renamed."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here (another file system, or not supported): a copy
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def record_finished(out_dir, record_dir, key: str, names) -> Path:
    """Keep what proves a finished job beside its outputs: ``record_dir/<name>`` for each output ``name`` of
    ``out_dir`` (hard links) and, written last, ``record_dir/manifest.json`` with ``key`` and each file's sha256.

    Returns the manifest's path. Without the manifest (a kill while recording) the record is ignored.
    """
    out_dir, record_dir = Path(out_dir), Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    manifest = record_dir / "manifest.json"
    manifest.unlink(missing_ok=True)  # the old record stops counting before its files change
    files = {}
    for name in names:
        _link_or_copy(out_dir / name, record_dir / name)
        files[name] = {"sha256": file_sha256(record_dir / name), "bytes": (record_dir / name).stat().st_size}
    body = {"format": FINISHED_FORMAT, "key": key, "files": files,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = record_dir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, manifest)
    return manifest


def restore_finished(out_dir, record_dir, key: str, names) -> dict | None:
    """Put the outputs of a finished job back from its record, if the record is this job's and intact.

    The record counts when ``record_dir/manifest.json`` names ``key`` and every file in ``names`` has the
    recorded sha256; then each goes back under ``out_dir`` (a hard link or a copy, renamed into place) and
    the manifest is returned. Otherwise nothing is changed and None is returned (the reason is logged).
    """
    out_dir, record_dir = Path(out_dir), Path(record_dir)
    manifest = record_dir / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        body = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s); training the job", manifest, err)
        return None
    if body.get("format") != FINISHED_FORMAT or body.get("key") != key:
        log.info("%s: a finished record of other arguments or inputs; training the job", manifest)
        return None
    for name in names:
        want = (body.get("files") or {}).get(name, {}).get("sha256")
        path = record_dir / name
        if want is None or not path.is_file() or file_sha256(path) != want:
            log.warning("%s: missing or not the recorded bytes (sha256 mismatch); training the job", path)
            return None
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            if (out_dir / name).samefile(record_dir / name):
                continue
        _link_or_copy(record_dir / name, out_dir / name)
    return body
