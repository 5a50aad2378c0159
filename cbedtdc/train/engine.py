"""Training engine shared by the flat baseline and every TDC level, shaped like torchvision's
``references/classification/train.py``: :func:`fit` builds the job, resumes it, loops over
:func:`train_one_epoch` and :func:`evaluate`, and writes ``best.pt``, ``last.pt``, ``metrics.csv`` and
``train.json`` into ``out_dir`` (1 process, or MPI/torchrun ranks with DDP).

Resumable state lives in ``out_dir/resume/`` (``state.pt``, its predecessor ``state.prev.pt`` and
``best.pt``), outside the Snakemake outputs so that a rerun of an interrupted job finds it; it is
removed once the outputs are written. What proves a finished job stays beside the outputs, in
``out_dir/finished/`` (hard links of the four outputs and their sha256 under the job's key: arguments
and inputs), so that a rerun whose outputs Snakemake deleted puts them back instead of training again.
Determinism: see :mod:`cbedtdc.train.sampling`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from cbedtdc import metrics
from cbedtdc.errors import InputError
from cbedtdc.io import atomic_save_torch
from cbedtdc.train.checkpoint import model_file
from cbedtdc.train.infer import run_eval
from cbedtdc.train.job import (Job, JobPlan, Progress, amp_setup, bn_buffers, build_job, gpu_speed_settings, plan_job,
                               sync_buffers)
from cbedtdc.train.options import DEFAULTS, LAUNCHER_KEYS, OPTIONS, resolve_config
from cbedtdc.train.outputs import (images_seen, restore_outputs, resume, save_state, job_key, write_metrics,
                                   write_outputs)
from cbedtdc.train.sampling import JobData, train_loader

__all__ = ["DEFAULTS", "OPTIONS", "LAUNCHER_KEYS", "Job", "resolve_config", "fit", "train_one_epoch", "evaluate",
           "train_step", "scores", "images_seen", "amp_setup", "bn_buffers", "gpu_speed_settings"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one step, one epoch, dev
def train_step(job, micro_batches) -> float:
    """One optimizer step over this rank's micro-batches; returns the summed loss x samples (a tensor on the
    device, so that no step waits for the GPU)."""
    import torch

    model, opt, scaler, device = job.ddp, job.opt, job.scaler, job.device
    n_micro = len(micro_batches)
    opt.zero_grad(set_to_none=True)
    total, snapshot = torch.zeros((), dtype=torch.float64, device=device), None
    for a, (x, y) in enumerate(micro_batches):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        sync = model.no_sync() if (job.ctx.distributed and a < n_micro - 1) else contextlib.nullcontext()
        with sync:
            with torch.autocast(device_type=device.split(":")[0], dtype=job.amp_dtype or torch.float32,
                                enabled=job.amp_dtype is not None):
                loss = job.loss_fn(model(x), y)
            scaler.scale(loss / n_micro).backward()
        # DDP keeps rank 0's BatchNorm statistics; accumulation keeps those of micro-batch 0 likewise
        if n_micro > 1:
            if a == 0:
                snapshot = [b.detach().clone() for b in job.bn_buffers]
            else:
                for b, s in zip(job.bn_buffers, snapshot):
                    b.data.copy_(s)
        total += loss.detach().double() * len(y)
    scaler.unscale_(opt)
    if job.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), job.grad_clip)
    scaler.step(opt)
    scaler.update()
    job.sched.step()
    return total


def train_one_epoch(job: Job, plan: JobPlan, prog: Progress, loader, resume_dir: Path) -> None:
    """Optimizer steps from ``prog.step`` to the end of epoch ``prog.epoch``; a resumable state every
    ``checkpoint_every`` steps. The loss stays on the device (``prog.loss_dev``) until it is reduced."""
    from tqdm import tqdm

    ctx, batches = job.ctx, plan.batches
    steps = plan.steps_in(prog.epoch)
    batches.set_position(prog.epoch, prog.step)
    it = iter(loader)
    tty = sys.stderr.isatty()
    bar = tqdm(total=steps, initial=prog.step, desc=f"epoch {prog.epoch + 1}/{plan.epochs}", disable=not ctx.is_main,
               file=sys.stderr, mininterval=1.0 if tty else 60.0, unit="step")
    t0 = time.perf_counter()
    job.model.train()
    while prog.step < steps:
        micro = [next(it) for _ in range(batches.accum_steps)]
        n_img = sum(len(y) for _, y in micro)
        prog.loss_dev += train_step(job, micro)  # on the device: no host sync per step
        prog.loss_n += n_img
        prog.images_run += n_img * ctx.world_size
        prog.step += 1
        bar.update(1)
        if prog.step % int(job.cfg["checkpoint_every"]) == 0 and prog.step < steps:
            prog.t_train += time.perf_counter() - t0
            save_state(job, plan, prog, resume_dir)
            t0 = time.perf_counter()
    bar.close()
    del it
    prog.t_train += time.perf_counter() - t0


def evaluate(job: Job, dev_ds, dev_targets) -> dict:
    """Dev scores of the current weights; dev samples are divided over the ranks."""
    ctx = job.ctx
    if len(dev_ds) == 0:
        return scores([], [])
    sync_buffers(ctx, job.model)
    part = np.array_split(np.arange(len(dev_ds)), ctx.world_size)[ctx.rank]
    logits = run_eval(job.model, dev_ds.subset(part), job.cfg["orientation"], job.cfg["eval_batch_size"], job.device)
    gathered = ctx.all_gather_object(logits.argmax(1) if len(logits) else np.zeros(0, dtype=np.int64))
    pred = np.concatenate(gathered)
    job.model.train()
    return scores(dev_targets, pred)


def scores(y_true, y_pred) -> dict:
    """Top-1, balanced accuracy (mean recall) and macro-F1 over the output indices present in ``y_true``.

    >>> s = scores([0, 0, 1, 1], [0, 1, 1, 1])
    >>> s["top1"], s["balanced_accuracy"], round(s["macro_f1"], 4)
    (0.75, 0.75, 0.7333)
    """
    y, p = np.asarray(y_true), np.asarray(y_pred)
    if y.size == 0:
        return {"top1": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan")}
    present = np.unique(y)
    return {"top1": metrics.top1(y, p), "balanced_accuracy": metrics.balanced_accuracy(y, p, present),
            "macro_f1": metrics.macro_f1(y, p, present)}


def end_epoch(job: Job, plan: JobPlan, prog: Progress, out_dir: Path, resume_dir: Path) -> None:
    """Loss over the ranks, dev scores, best checkpoint, the metrics row, then the state of the next epoch."""
    ctx, steps, g = job.ctx, plan.steps_in(prog.epoch), plan.batches.global_batch
    prog.loss_sum += float(prog.loss_dev)
    prog.loss_dev.zero_()
    tot = ctx.all_reduce_sum([prog.loss_sum, prog.loss_n])
    if int(tot[1]) != steps * g:  # the sample count over all ranks must match the plan
        raise RuntimeError(f"epoch {prog.epoch + 1}: the ranks trained on {int(tot[1])} samples, expected "
                           f"{steps} steps x global batch {g} = {steps * g} ({len(plan.train_ds)} samples, "
                           "wrapped to whole batches)")
    dev = evaluate(job, plan.dev_ds, plan.dev_targets)
    row = {"epoch": prog.epoch + 1, "images": sum(plan.steps_in(e) for e in range(prog.epoch + 1)) * g, "train_loss": tot[0] / max(tot[1], 1),
           "lr": float(job.opt.param_groups[0]["lr"]), "dev_top1": dev["top1"],
           "dev_balanced_accuracy": dev["balanced_accuracy"], "dev_macro_f1": dev["macro_f1"],
           "train_images_per_s": prog.images_run / prog.t_train if prog.t_train > 0 else float("nan"),
           "wall_s": time.time() - prog.t_start}
    prog.history.append(row)
    score = dev["balanced_accuracy"] if len(plan.dev_ds) else float(prog.epoch)
    if ctx.is_main:
        log.info("epoch %d/%d: train loss %.4f, dev top-1 %.4f, balanced acc %.4f, macro-F1 %.4f, %.1f img/s",
                 prog.epoch + 1, plan.epochs, row["train_loss"], dev["top1"], dev["balanced_accuracy"],
                 dev["macro_f1"], row["train_images_per_s"])
        if score > prog.best["score"]:
            prog.best = {"score": float(score), "epoch": prog.epoch + 1}
            meta = {**plan.meta, "epoch": prog.epoch + 1, **{f"dev_{k}": v for k, v in dev.items()}}
            atomic_save_torch(model_file(job.model, meta), resume_dir / "best.pt")
        write_metrics(out_dir / "metrics.csv", prog.history)
    prog.best = ctx.broadcast_object(prog.best)
    prog.epoch, prog.step = prog.epoch + 1, 0
    prog.loss_sum, prog.loss_n = 0.0, 0
    save_state(job, plan, prog, resume_dir)


# --------------------------------------------------------------------------- fit
def fit(cfg: dict, *, shard_root, out_dir, classes, rest: bool = False, train_keys=None, dev_keys=None,
        ctx=None) -> dict:
    """Train one classifier and write ``best.pt``, ``last.pt``, ``metrics.csv``, ``train.json``.

    Parameters
    ----------
    cfg : dict
        Keys of ``config["train"]`` plus ``loss`` and ``seed`` (``DEFAULTS`` fills the others). A TDC level's
        budget arrives as its ``epochs`` (whole epochs over its training set, set by ``cascade.level_job``).
    shard_root : path-like
        ``results/shards``.
    out_dir : path-like
        Folder of the job's outputs (created).
    classes : list of int
        Space groups of the job; output ``i`` is ``classes[i]``.
    rest : bool
        Add a last output "rest" for every training sample outside ``classes``; without it such
        samples are excluded (and counted in the log and ``train.json``).
    train_keys, dev_keys : list of str, optional
        Restrict the train / dev split to these sample keys (a TDC level's subset).
    ctx : DistContext, optional
        An already started process group; by default :func:`cbedtdc.distributed.init_distributed`
        is called (one process when no launcher is detected) and shut down at the end.

    Returns
    -------
    dict
        The content of ``train.json`` (same on every rank).
    """
    import torch

    from cbedtdc.distributed import init_distributed

    t_start = time.time()
    cfg = resolve_config(cfg)
    classes = [int(c) for c in classes]
    if len(classes) + int(rest) < 2:
        raise InputError(f"classes={classes}, rest={rest}: a classifier needs at least 2 outputs")
    out_dir = Path(out_dir)
    resume_dir = out_dir / "resume"
    own_ctx = ctx is None
    if own_ctx:
        ctx = init_distributed(timeout_s=cfg["timeout_s"])
    threads_before = torch.get_num_threads()
    if ctx.device == "cpu":
        torch.set_num_threads(int(cfg["threads_per_rank"]))
    else:  # GPU: fastest kernels (autotuned convolutions, TF32 matmuls), not bitwise reproducible
        gpu_speed_settings()
    try:
        plan = plan_job(cfg, ctx, shard_root, classes, rest, train_keys, dev_keys)
        key = job_key(plan, shard_root) if ctx.is_main else ""
        restored = restore_outputs(ctx, out_dir, key)
        if restored is not None:
            return restored
        job = build_job(cfg, ctx, plan)
        prog = resume(job, plan, out_dir, resume_dir, t_start)
        data = JobData(plan.train_ds, plan.train_targets, seed=int(cfg["seed"]), orientation=cfg["orientation"],
                       augment=True)
        loader = train_loader(data, plan.batches, workers=int(cfg["workers"]), seed=int(cfg["seed"]), rank=ctx.rank,
                              pin_memory=ctx.device.startswith("cuda"))
        while prog.epoch < plan.epochs:
            train_one_epoch(job, plan, prog, loader, resume_dir)
            end_epoch(job, plan, prog, out_dir, resume_dir)
        return write_outputs(job, plan, prog, out_dir, resume_dir, key)
    finally:
        torch.set_num_threads(threads_before)
        if own_ctx:
            ctx.shutdown()
