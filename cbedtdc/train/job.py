"""One training job in memory: what it trains on (:class:`JobPlan`, :func:`plan_job`), the model, optimizer and
loss (:class:`Job`, :func:`build_job`), where the loop stands (:class:`Progress`), and the device settings
(AMP, BatchNorm buffers shared over the ranks)."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cbedtdc.errors import InputError
from cbedtdc.train.options import fingerprint, lr_schedule, scaled_lr
from cbedtdc.train.sampling import EpochBatches, norm_stats, open_split

__all__ = ["Job", "JobPlan", "Progress", "plan_job", "build_job", "gpu_speed_settings", "amp_setup", "bn_buffers",
           "sync_buffers", "param_digest"]

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What one optimizer step needs (:func:`~cbedtdc.train.engine.train_step`): the model, its DDP wrapper, optimizer.

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
    total_steps: int = 0  # optimizer steps of the whole job (0: epochs x steps per epoch)

    def __post_init__(self):
        if self.total_steps <= 0:
            self.total_steps = self.epochs * self.batches.steps_per_epoch

    def steps_in(self, epoch: int) -> int:
        """Optimizer steps of ``epoch`` (0-based): whole epochs, the last one cut short under ``train.images``."""
        return max(0, min(self.batches.steps_per_epoch, self.total_steps - epoch * self.batches.steps_per_epoch))


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
    total_steps, epochs = budget_steps(cfg, batches)
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
    log.info("job: %d outputs (%s), %d train / %d dev samples, %d excluded; %s, %s, %d epochs x %d steps "
             "(%d steps in all = %d images), global batch %d (%d x %d ranks x %d accum), lr %.3g, loss %s",
             n_out, " ".join(names), len(train_ds), len(dev_ds), n_excl_train, cfg["arch"], cfg["orientation"],
             epochs, batches.steps_per_epoch, total_steps, total_steps * g, g, cfg["batch_size"], ctx.world_size,
             cfg["accum_steps"], lr, cfg["loss"])
    return JobPlan(train_ds, train_targets, dev_ds, dev_targets, n_excl_train, n_excl_dev, counts, batches, epochs,
                   lr, fp, meta, total_steps=total_steps)


def budget_steps(cfg: dict, batches: EpochBatches) -> tuple[int, int]:
    """``(optimizer steps, epochs)`` of a job: ``train.epochs`` whole epochs, or with ``train.images`` > 0 that many
    images rounded up to whole global batches, in as many epochs as they need (the last one cut short).

    >>> b = EpochBatches(1000, batch_size=50, world_size=2, rank=0)  # 10 steps of 100 per epoch
    >>> budget_steps({"epochs": 2, "images": 0}, b), budget_steps({"epochs": 2, "images": 2550}, b)
    ((20, 2), (26, 3))
    """
    per_epoch = batches.steps_per_epoch
    images = int(cfg.get("images") or 0)
    if images <= 0:
        return int(cfg["epochs"]) * per_epoch, int(cfg["epochs"])
    steps = math.ceil(images / batches.global_batch)
    return steps, math.ceil(steps / per_epoch)


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
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(cfg["schedule"], plan.total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    loss_fn = make_loss(cfg["loss"], plan.counts, label_smoothing=cfg["label_smoothing"], la_tau=cfg["la_tau"],
                        weight_cap=cfg["weight_cap"])
    return Job(ctx=ctx, model=model, ddp=ddp, opt=opt, sched=sched, scaler=scaler, loss_fn=loss_fn,
               amp_dtype=amp_dtype, grad_clip=float(cfg["grad_clip"]), bn_buffers=bn_buffers(model), cfg=cfg)
