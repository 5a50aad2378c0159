"""Checkpoints of the training engine: model files, resumable state, RNG state; all read with
``torch.load(weights_only=True)`` and written atomically (:func:`cbedtdc.io.atomic_save_torch`).

A model file (``best.pt``/``last.pt``) is ``{"format": MODEL_FORMAT, "model": state_dict, "meta": dict}``;
the resumable state (``resume/state.pt``) holds the optimizer, scheduler, scaler, RNG and history too.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "STATE_FORMAT", "MODEL_FORMAT", "load_checkpoint", "model_file", "load_model",
           "rng_state", "set_rng_state", "resume_state"]

log = logging.getLogger(__name__)

STATE_FORMAT = "cbedtdc-train-state/1"
MODEL_FORMAT = "cbedtdc-model/1"


class CheckpointError(RuntimeError):
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
