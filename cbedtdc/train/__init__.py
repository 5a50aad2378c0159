"""Training engine shared by the flat baseline and every TDC level.

- :mod:`cbedtdc.train.engine`      :func:`fit` = build, resume, loop over :func:`train_one_epoch` and
  :func:`evaluate`, write ``best.pt``, ``last.pt``, ``metrics.csv``, ``train.json``
- :mod:`cbedtdc.train.options`     the engine's options (``OPTIONS``, ``DEFAULTS``), :func:`resolve_config`, lr schedule
- :mod:`cbedtdc.train.job`         a job's plan (samples, batches, lr), its model, optimizer and loss, its progress
- :mod:`cbedtdc.train.outputs`     resumable state, ``metrics.csv``, the outputs and the record of a finished job
- :mod:`cbedtdc.train.sampling`    the job's samples and targets, the batch order of every rank, the DataLoader
- :mod:`cbedtdc.train.checkpoint`  model files and resumable state (``weights_only=True``), :func:`load_model`
- :mod:`cbedtdc.train.infer`       :func:`predict` / :func:`extract_features`: logits / penultimate features of
  a split, averaged over the three orientations

torch is imported lazily, inside the functions that need it.
"""

from cbedtdc.train.checkpoint import CheckpointError, load_model
from cbedtdc.train.engine import (DEFAULTS, LAUNCHER_KEYS, OPTIONS, Job, amp_setup, bn_buffers, evaluate, fit,
                                  gpu_speed_settings, images_seen, resolve_config, scores, train_one_epoch,
                                  train_step)
from cbedtdc.train.infer import extract_features, forward, inference_device, predict
from cbedtdc.train.sampling import EpochBatches, JobData, job_targets, read_keys, train_loader

__all__ = [
    "CheckpointError",
    "DEFAULTS",
    "LAUNCHER_KEYS",
    "OPTIONS",
    "EpochBatches",
    "Job",
    "JobData",
    "amp_setup",
    "bn_buffers",
    "evaluate",
    "extract_features",
    "fit",
    "forward",
    "gpu_speed_settings",
    "images_seen",
    "inference_device",
    "job_targets",
    "load_model",
    "predict",
    "read_keys",
    "resolve_config",
    "scores",
    "train_loader",
    "train_one_epoch",
    "train_step",
]
