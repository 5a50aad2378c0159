"""The training engine's options and what follows from them alone: :data:`OPTIONS` (one table, from
``config/schema.yaml``), :data:`DEFAULTS`, :func:`resolve_config`, the learning rate scaled to the global batch,
its schedule, and the fingerprint that says whether a resumable state still belongs to a job."""

from __future__ import annotations

import hashlib
import json
import math

from cbedtdc.errors import InputError
from cbedtdc.losses import LOSSES

__all__ = ["OPTIONS", "DEFAULTS", "LAUNCHER_KEYS", "REF_BATCH", "RUNTIME_KEYS", "resolve_config", "scaled_lr",
           "fingerprint", "lr_schedule"]


def _options() -> dict:
    """The engine's options, one table: the ``train`` section of ``config/schema.yaml`` (default, type, allowed
    values, minimum, description) plus the job's ``loss`` (the schema's ``tdc.loss``) and ``seed``. ``DEFAULTS``,
    :func:`resolve_config`'s checks and the flags of ``workflow_scripts/train.py`` are generated from it."""
    from cbedtdc.config import schema_property

    opts = dict(schema_property("train")["properties"])
    opts["loss"] = {**schema_property("tdc", "loss"), "enum": list(LOSSES),
                    "description": "Training loss of the job."}
    opts["seed"] = schema_property("seed")
    return opts


#: Every engine option: its schema entry (``default``, ``type``, ``enum``, ``minimum``, ``description``).
OPTIONS = _options()
#: Engine defaults: the schema's ``train`` section plus the job's ``loss`` and ``seed`` (``OPTIONS``' defaults).
DEFAULTS = {k: o["default"] for k, o in OPTIONS.items()}
#: Options set by the launcher, not by a flag of the training CLI (``ranks``: mpiexec/srun/jsrun ``-n``).
LAUNCHER_KEYS = ("ranks",)
#: Global batch at which ``lr`` is given; ``lr_scaling`` scales it to the job's global batch.
REF_BATCH = 64
#: Keys that do not change the trained weights (a checkpoint stays valid when they change).
RUNTIME_KEYS = ("ranks", "threads_per_rank", "workers", "checkpoint_every", "timeout_s", "eval_batch_size")


def resolve_config(cfg: dict) -> dict:
    """Engine configuration: ``DEFAULTS`` updated with ``cfg`` (``None`` values keep the default), checked against
    the allowed values and minima of ``OPTIONS``.

    >>> resolve_config({"epochs": 2})["epochs"], resolve_config({})["arch"]
    (2, 'resnet18')
    >>> resolve_config({"epochs": 0})
    Traceback (most recent call last):
    ...
    cbedtdc.errors.InputError: train.epochs=0: must be >= 1
    """
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise InputError(f"unknown training option(s) {unknown}; allowed: {', '.join(sorted(DEFAULTS))}")
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    for key, opt in OPTIONS.items():
        if "enum" in opt and out[key] not in opt["enum"]:
            raise InputError(f"train.{key}={out[key]!r}: must be one of {', '.join(map(str, opt['enum']))}")
        for bound, ok, word in (("minimum", lambda v, b: v >= b, ">="), ("exclusiveMinimum", lambda v, b: v > b, ">"),
                                ("maximum", lambda v, b: v <= b, "<=")):
            if bound in opt and not ok(out[key], opt[bound]):
                raise InputError(f"train.{key}={out[key]}: must be {word} {opt[bound]}")
    return out


def scaled_lr(cfg: dict, global_batch: int) -> float:
    r = global_batch / REF_BATCH
    return cfg["lr"] * {"linear": r, "sqrt": math.sqrt(r), "none": 1.0}[cfg["lr_scaling"]]


def fingerprint(cfg, classes, rest, keys, global_batch, epochs) -> str:
    # ranks and accum_steps enter through the global batch only: W ranks x A micro-batches train like W*A ranks
    relevant = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS and k != "accum_steps"}
    relevant.update(classes=list(classes), rest=bool(rest), global_batch=global_batch, epochs=epochs,
                    keys=hashlib.sha256("\n".join(keys).encode()).hexdigest())
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def lr_schedule(kind: str, total_steps: int):
    """Learning-rate factor per optimizer step (a picklable-free closure for ``LambdaLR``).

    onecycle: linear warm-up from lr/25 over the first 25 % of the steps, then cosine to lr/1e4;
    cosine: linear warm-up over 5 %, then cosine to 0.

    >>> f = lr_schedule("onecycle", 8)
    >>> round(f(0), 3), f(2), round(f(8), 4)
    (0.04, 1.0, 0.0001)
    """
    t = max(1, int(total_steps))
    if kind == "onecycle":
        warm, start, floor = max(1, round(0.25 * t)), 1 / 25, 1e-4
    else:
        warm, start, floor = max(1, t // 20), 1 / max(1, t // 20), 0.0

    def factor(step: int) -> float:
        if step < warm:
            return start + (1 - start) * step / warm
        frac = min(1.0, (step - warm) / max(1, t - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))

    return factor
