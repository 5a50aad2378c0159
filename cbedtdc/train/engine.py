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

# Over 500 lines, on purpose: the torchvision references' shape (train_one_epoch, evaluate, fit) with resume,
# the finished-job record and the per-epoch outputs, which share the Job/JobPlan/Progress state; each function is short.
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cbedtdc import metrics
from cbedtdc.io import atomic_save_torch, atomic_write_text, write_csv
from cbedtdc.losses import LOSSES
from cbedtdc.train.checkpoint import (MODEL_FORMAT, STATE_FORMAT, input_digest, load_checkpoint, model_file,
                                      record_finished, restore_finished, resume_state, rng_state, set_rng_state)
from cbedtdc.train.infer import run_eval
from cbedtdc.train.sampling import EpochBatches, JobData, norm_stats, open_split, train_loader
from cbedtdc.errors import InputError

__all__ = ["DEFAULTS", "OPTIONS", "LAUNCHER_KEYS", "Job", "resolve_config", "fit", "train_one_epoch", "evaluate", "train_step", "scores",
           "images_seen", "amp_setup", "bn_buffers", "gpu_speed_settings"]

log = logging.getLogger(__name__)

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
#: The job's outputs, in ``out_dir``; kept with their sha256 in ``out_dir/finished/``.
OUTPUT_NAMES = ("best.pt", "last.pt", "metrics.csv", "train.json")
METRIC_FIELDS = ("epoch", "images", "train_loss", "lr", "dev_top1", "dev_balanced_accuracy", "dev_macro_f1",
                 "train_images_per_s", "wall_s")


@dataclass
class Job:
    """What one optimizer step needs (:func:`train_step`): the model, its DDP wrapper and optimizer.

    ``model`` is the model without DDP (``model_without_ddp`` in torchvision); ``ddp`` the module that
    is called in training (``model`` itself in one process).
    """

    ctx: Any
    model: Any
    ddp: Any
    opt: Any
    sched: Any
    scaler: Any
    loss_fn: Any
    amp_dtype: Any = None
    grad_clip: float = 1.0
    bn_buffers: list = field(default_factory=list)
    cfg: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.ctx.device


@dataclass
class JobPlan:
    """What a job trains on and for how long (built by :func:`plan_job`)."""

    train_ds: Any
    train_targets: np.ndarray
    dev_ds: Any
    dev_targets: np.ndarray
    n_excl_train: int
    n_excl_dev: int
    counts: np.ndarray
    batches: EpochBatches
    epochs: int
    lr: float
    fingerprint: str
    meta: dict


@dataclass
class Progress:
    """Where the loop stands; saved in ``resume/state.pt`` and restored by :func:`resume`."""

    t_start: float
    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"score": -1.0, "epoch": -1})
    loss_sum: float = 0.0
    loss_n: int = 0
    loss_dev: Any = None  # summed loss x samples since the last reduction, a tensor on the device
    t_train: float = 0.0
    images_run: int = 0
    resumed_from: dict | None = None


# --------------------------------------------------------------------------- configuration
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


def gpu_speed_settings() -> None:
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def amp_setup(amp: str, device: str):
    import torch

    if not device.startswith("cuda"):
        if amp in ("bf16", "fp16"):
            log.warning("amp=%s applies on GPU only; training in float32 on CPU", amp)
        return None, False
    if amp == "none":
        return None, False
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16, True
    return torch.bfloat16, False


def bn_buffers(model):
    import torch

    return [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for b in m.buffers()]


def sync_buffers(ctx, model) -> None:
    """Copy rank 0's BatchNorm statistics to every rank (they differ after the last forward)."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    for b in bn_buffers(model):
        dist.broadcast(b.data, src=0)


def param_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()




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
    steps = batches.steps_per_epoch
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


def write_metrics(path: Path, rows: list[dict]) -> None:
    """``metrics.csv``: one row per finished epoch, floats with 6 significant digits."""
    write_csv(path, [{k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in METRIC_FIELDS} for r in rows],
              METRIC_FIELDS)


# --------------------------------------------------------------------------- build, resume, save
def plan_job(cfg: dict, ctx, shard_root, classes, rest: bool, train_keys, dev_keys) -> JobPlan:
    """Open the job's train and dev samples, fix the batch order, epochs, lr and the model's metadata."""
    seed = int(cfg["seed"])
    train_ds, train_targets, n_excl_train = open_split(shard_root, "train", train_keys, classes, rest, "stack", seed)
    dev_ds, dev_targets, n_excl_dev = open_split(shard_root, "dev", dev_keys, classes, rest, "stack", seed)
    if len(train_ds) == 0:
        raise InputError(f"no training sample of classes {classes} (rest={rest}) in {shard_root}/train.csv"
                         + (f" among the {len(train_keys)} given keys" if train_keys is not None else ""))
    n_out = len(classes) + int(rest)
    counts = np.bincount(train_targets, minlength=n_out)
    batches = EpochBatches(len(train_ds), batch_size=int(cfg["batch_size"]), world_size=ctx.world_size,
                           rank=ctx.rank, accum_steps=int(cfg["accum_steps"]), seed=seed)
    g = batches.global_batch
    epochs = int(cfg["epochs"])
    lr = scaled_lr(cfg, g)
    fp = fingerprint(cfg, classes, rest, train_ds.keys, g, epochs)
    mean, std = norm_stats(train_ds)
    in_ch = 1 if cfg["orientation"] == "random" else 3
    names = [str(c) for c in classes] + (["rest"] if rest else [])
    meta = {
        "classes": classes, "rest": bool(rest), "output_names": names, "arch": cfg["arch"],
        "orientation": cfg["orientation"], "in_channels": in_ch, "n_outputs": n_out,
        "image_size": int(train_ds.image_size), "mean": mean, "std": std, "loss": cfg["loss"], "seed": seed,
        "train_counts": counts.tolist(), "config": dict(cfg), "epochs": epochs,
    }
    log.info("job: %d outputs (%s), %d train / %d dev samples, %d excluded; %s, %s, %d epochs x %d steps, "
             "global batch %d (%d x %d ranks x %d accum), lr %.3g, loss %s",
             n_out, " ".join(names), len(train_ds), len(dev_ds), n_excl_train, cfg["arch"], cfg["orientation"],
             epochs, batches.steps_per_epoch, g, cfg["batch_size"], ctx.world_size, cfg["accum_steps"], lr,
             cfg["loss"])
    return JobPlan(train_ds, train_targets, dev_ds, dev_targets, n_excl_train, n_excl_dev, counts, batches, epochs,
                   lr, fp, meta)


def build_job(cfg: dict, ctx, plan: JobPlan) -> Job:
    """Model (seeded), DDP wrapper, AdamW without decay on biases and norms, schedule, scaler and loss."""
    import torch

    from cbedtdc.losses import make_loss
    from cbedtdc.model import build_model

    meta = plan.meta
    torch.manual_seed(int(cfg["seed"]))
    model = build_model(cfg["arch"], meta["in_channels"], meta["n_outputs"], mean=meta["mean"],
                        std=meta["std"]).to(ctx.device)
    amp_dtype, use_scaler = amp_setup(cfg["amp"], ctx.device)
    ddp = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        if ctx.backend == "nccl":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            ddp = DistributedDataParallel(model, device_ids=[torch.device(ctx.device).index])
        else:
            ddp = DistributedDataParallel(model)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=plan.lr)
    total_steps = plan.epochs * plan.batches.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg["schedule"], total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = make_loss(cfg["loss"], plan.counts, label_smoothing=cfg["label_smoothing"], la_tau=cfg["la_tau"],
                        weight_cap=cfg["weight_cap"])
    return Job(ctx=ctx, model=model, ddp=ddp, opt=opt, sched=sched, scaler=scaler, loss_fn=loss_fn,
               amp_dtype=amp_dtype, grad_clip=float(cfg["grad_clip"]), bn_buffers=bn_buffers(model), cfg=cfg)


def resume(job: Job, plan: JobPlan, out_dir: Path, resume_dir: Path, t_start: float) -> Progress:
    """Progress of a new job, or of the newest readable state of this job in ``resume_dir``.

    Temp files of a process killed while writing are never trusted. Rank 0 picks the state, the
    others read the same file (shared file system). Finished epochs are not redone.
    """
    import torch

    ctx = job.ctx
    if ctx.is_main:
        for stale in [*out_dir.glob(".*.tmp"), *resume_dir.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)
    prog = Progress(t_start=t_start, loss_dev=torch.zeros((), dtype=torch.float64, device=ctx.device))
    state = resume_state(resume_dir, plan.fingerprint) if ctx.is_main else None
    chosen = ctx.broadcast_object(state["_path"] if state is not None else None)
    if chosen is not None and not ctx.is_main:
        state = load_checkpoint(chosen, STATE_FORMAT)
    if state is not None:
        job.model.load_state_dict(state["model"])
        job.opt.load_state_dict(state["optimizer"])
        job.sched.load_state_dict(state["scheduler"])
        job.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        prog.epoch, prog.step, prog.history, prog.best = state["epoch"], state["step"], state["history"], state["best"]
        prog.t_start -= state.get("wall_s", 0.0)  # wall_s counts the interrupted runs too
        if ctx.is_main:
            prog.loss_sum, prog.loss_n = state["loss_sum"], state["loss_n"]
        prog.resumed_from = {"epoch": prog.epoch, "step": prog.step}
        log.info("resuming from %s: epoch %d, step %d of %d (finished epochs are not redone)",
                 resume_dir / "state.pt", prog.epoch + 1, prog.step, plan.batches.steps_per_epoch)
    return prog


def save_state(job: Job, plan: JobPlan, prog: Progress, resume_dir: Path) -> None:
    """Reduce the loss over the ranks; rank 0 writes ``resume/state.pt`` (the previous one kept); barrier."""
    ctx, model = job.ctx, job.model
    prog.loss_sum += float(prog.loss_dev)
    prog.loss_dev.zero_()
    if ctx.distributed:
        prog.loss_sum, prog.loss_n = ctx.all_reduce_sum([prog.loss_sum, prog.loss_n])
    if not ctx.is_main:
        prog.loss_sum, prog.loss_n = 0.0, 0
    sync_buffers(ctx, model)
    if ctx.is_main:
        atomic_save_torch({
            "format": STATE_FORMAT, "fingerprint": plan.fingerprint, "epoch": prog.epoch, "step": prog.step,
            "model": model.state_dict(), "optimizer": job.opt.state_dict(), "scheduler": job.sched.state_dict(),
            "scaler": job.scaler.state_dict(), "rng": rng_state(), "history": prog.history, "best": prog.best,
            "loss_sum": float(prog.loss_sum), "loss_n": int(prog.loss_n), "meta": plan.meta,
            "wall_s": time.time() - prog.t_start,
        }, resume_dir / "state.pt", keep_previous=resume_dir / "state.prev.pt")
    ctx.barrier()


def end_epoch(job: Job, plan: JobPlan, prog: Progress, out_dir: Path, resume_dir: Path) -> None:
    """Loss over the ranks, dev scores, best checkpoint, the metrics row, then the state of the next epoch."""
    ctx, steps, g = job.ctx, plan.batches.steps_per_epoch, plan.batches.global_batch
    prog.loss_sum += float(prog.loss_dev)
    prog.loss_dev.zero_()
    tot = ctx.all_reduce_sum([prog.loss_sum, prog.loss_n])
    if int(tot[1]) != steps * g:  # the sample count over all ranks must match the plan
        raise RuntimeError(f"epoch {prog.epoch + 1}: the ranks trained on {int(tot[1])} samples, expected "
                           f"{steps} steps x global batch {g} = {steps * g} ({len(plan.train_ds)} samples, "
                           "wrapped to whole batches)")
    dev = evaluate(job, plan.dev_ds, plan.dev_targets)
    row = {"epoch": prog.epoch + 1, "images": (prog.epoch + 1) * steps * g, "train_loss": tot[0] / max(tot[1], 1),
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


def job_key(plan: JobPlan, shard_root) -> str:
    """What a finished record must match before its outputs stand for this job: the engine's fingerprint
    (every argument that changes the weights, the training keys), the dev keys, and the inputs (the split
    tables' bytes, the shard files' names, sizes and mtimes)."""
    shards = sorted(set(plan.train_ds.shards) | set(plan.dev_ds.shards))
    dev_keys = hashlib.sha256("\n".join(plan.dev_ds.keys).encode()).hexdigest()
    inputs = input_digest(shard_root, ["train.csv", "dev.csv"], shards)
    body = {"fingerprint": plan.fingerprint, "dev_keys": dev_keys, "inputs": inputs}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def restore_outputs(ctx, out_dir: Path, key: str) -> dict | None:
    """Rank 0 restores the outputs of this job from ``out_dir/finished/`` when the record matches ``key``;
    every rank gets ``train.json``'s content then, or None (train the job)."""
    restored = None
    if ctx.is_main:
        record = out_dir / "finished"
        if restore_finished(out_dir, record, key, OUTPUT_NAMES) is not None:
            restored = json.loads((out_dir / "train.json").read_text())
            log.info("restored finished training from %s (no epoch retrained): %s verified by sha256; delete that "
                     "folder to train the job again", record, ", ".join(OUTPUT_NAMES))
    restored = ctx.broadcast_object(restored)
    ctx.barrier()
    return restored


def write_outputs(job: Job, plan: JobPlan, prog: Progress, out_dir: Path, resume_dir: Path,
                  key: str = "") -> dict:
    """Check that the ranks agree, write ``best.pt``, ``last.pt``, ``metrics.csv``, ``train.json`` (rank 0),
    record them with their sha256 under the job's ``key`` in ``finished/``, remove ``resume/``; return
    ``train.json``'s content."""
    import torch

    ctx, model, meta = job.ctx, job.model, plan.meta
    sync_buffers(ctx, model)
    digests = ctx.all_gather_object(param_digest(model))
    if len(set(digests)) != 1:
        raise RuntimeError(f"parameters differ between ranks after training: {digests}")
    last_dev = prog.history[-1] if prog.history else {}
    n_dev = len(plan.dev_ds)
    summary = {
        "config": dict(job.cfg), "classes": meta["classes"], "rest": meta["rest"], "output_names": meta["output_names"],
        "world_size": ctx.world_size, "launcher": ctx.launcher, "device": ctx.device, "backend": ctx.backend,
        "host": socket.gethostname(), "torch": torch.__version__, "epochs": plan.epochs,
        "steps_per_epoch": plan.batches.steps_per_epoch, "global_batch": plan.batches.global_batch, "lr": plan.lr,
        "n_train": len(plan.train_ds), "n_excluded_train": plan.n_excl_train, "n_dev": n_dev,
        "n_excluded_dev": plan.n_excl_dev, "train_counts": plan.counts.tolist(),
        "best_epoch": prog.best["epoch"], "best_dev_balanced_accuracy": prog.best["score"] if n_dev else None,
        "last_dev_balanced_accuracy": last_dev.get("dev_balanced_accuracy"),
        "resumed_from": prog.resumed_from, "images_this_run": prog.images_run, "train_s_this_run": prog.t_train,
        "images_per_s": prog.images_run / prog.t_train if prog.t_train > 0 else None,
        "wall_s": time.time() - prog.t_start, "param_sha256_by_rank": digests,
    }
    if ctx.is_main:
        last = model_file(model, {**meta, "epoch": plan.epochs})
        if (resume_dir / "best.pt").exists():
            best_obj = load_checkpoint(resume_dir / "best.pt", MODEL_FORMAT)
        else:  # no dev sample of the job's classes: the last weights are the best we know
            best_obj = last
        atomic_save_torch(best_obj, out_dir / "best.pt")
        atomic_save_torch(last, out_dir / "last.pt")
        write_metrics(out_dir / "metrics.csv", prog.history)
        atomic_write_text(out_dir / "train.json", json.dumps(summary, indent=2, default=str) + "\n")
        if key:  # the proof of a finished job, before the state it was resumable from goes
            record_finished(out_dir, out_dir / "finished", key, OUTPUT_NAMES)
        shutil.rmtree(resume_dir, ignore_errors=True)
        chosen = (f"best epoch {prog.best['epoch']} (dev balanced acc {prog.best['score']:.4f})" if n_dev
                  else "no dev sample of the job's classes, best.pt = last epoch")
        log.info("wrote %s/{best.pt,last.pt,metrics.csv,train.json}: %s, %.1f train img/s", out_dir, chosen,
                 summary["images_per_s"] or 0.0)
    ctx.barrier()
    return summary


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


def images_seen(train_json) -> int | None:
    """Training images a job actually processed: epochs x steps per epoch x global batch (``train.json``)."""
    try:
        d = json.loads(Path(train_json).read_text())
        return int(d["epochs"]) * int(d["steps_per_epoch"]) * int(d["global_batch"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: cannot read epochs/steps_per_epoch/global_batch; images seen unknown", train_json)
        return None
