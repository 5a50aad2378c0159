"""Training engine shared by the flat baseline and every TDC level.

Public API
----------
- :func:`fit` trains one classifier (1 process, or MPI/torchrun ranks with DDP) and writes
  ``best.pt``, ``last.pt``, ``metrics.csv`` and ``train.json`` into ``out_dir``;
- :func:`load_model` reads ``best.pt``/``last.pt`` (``weights_only=True``);
- :func:`predict` / :func:`extract_features` give logits / penultimate features of a split,
  averaged over the three orientations.

The shape follows torchvision's ``references/classification``: ``fit`` builds, resumes and loops over
``train_one_epoch`` and ``evaluate``. Resumable state lives in ``out_dir/resume/`` (``state.pt``, its
predecessor ``state.prev.pt`` and ``best.pt``), outside the Snakemake outputs so that a rerun of an
interrupted job finds it; it is removed once the outputs are written.

Determinism: the sampler order of an epoch is a permutation seeded by (seed, epoch); augmentation and
the random panel are drawn from (seed, epoch, index); so a run resumed mid-epoch on CPU ends with the
same weights as an uninterrupted one, and an MPI run of W ranks equals a 1-rank run with
``accum_steps = W`` (see :class:`EpochBatches`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np

from cbedtdc.losses import LOSSES

__all__ = [
    "CheckpointError",
    "DEFAULTS",
    "EpochBatches",
    "train_loader",
    "resolve_config",
    "fit",
    "load_model",
    "predict",
    "extract_features",
    "scores",
    "read_keys",
]

log = logging.getLogger(__name__)

#: Engine defaults (the ``train`` section of config/config.yaml plus the job's ``loss``/``seed``).
DEFAULTS = {
    "arch": "resnet50",
    "orientation": "random",
    "epochs": 4,
    "batch_size": 32,
    "accum_steps": 1,
    "lr": 0.002,
    "lr_scaling": "linear",
    "weight_decay": 0.05,
    "schedule": "onecycle",
    "label_smoothing": 0.1,
    "grad_clip": 1.0,
    "amp": "auto",
    "ranks": 1,
    "threads_per_rank": 1,
    "workers": 1,
    "checkpoint_every": 100,
    "timeout_s": 600,
    "eval_batch_size": 64,
    "la_tau": 1.0,
    "weight_cap": 10.0,
    "loss": "ce",
    "seed": 0,
    "budget_images": None,
}
#: Global batch at which ``lr`` is given; ``lr_scaling`` scales it to the job's global batch.
REF_BATCH = 64
#: Keys that do not change the trained weights (a checkpoint stays valid when they change).
RUNTIME_KEYS = ("ranks", "threads_per_rank", "workers", "checkpoint_every", "timeout_s", "eval_batch_size")
STATE_FORMAT = "cbedtdc-train-state/1"
MODEL_FORMAT = "cbedtdc-model/1"
METRIC_FIELDS = ("epoch", "images", "train_loss", "lr", "dev_top1", "dev_balanced_accuracy", "dev_macro_f1",
                 "train_images_per_s", "wall_s")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the job (the message names the file)."""


# --------------------------------------------------------------------------- configuration
def resolve_config(cfg: dict) -> dict:
    """Engine configuration: ``DEFAULTS`` updated with ``cfg``, checked.

    >>> resolve_config({"epochs": 2})["epochs"], resolve_config({})["arch"]
    (2, 'resnet50')
    """
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown training option(s) {unknown}; allowed: {', '.join(sorted(DEFAULTS))}")
    out = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None or k == "budget_images"}}
    choices = {"arch": ("resnet18", "resnet34", "resnet50"), "orientation": ("random", "stack"),
               "lr_scaling": ("linear", "sqrt", "none"), "schedule": ("onecycle", "cosine"),
               "amp": ("auto", "bf16", "fp16", "none"), "loss": LOSSES}
    for key, allowed in choices.items():
        if out[key] not in allowed:
            raise ValueError(f"train.{key}={out[key]!r}: must be one of {', '.join(allowed)}")
    for key in ("epochs", "batch_size", "accum_steps", "threads_per_rank", "checkpoint_every", "eval_batch_size"):
        if int(out[key]) < 1:
            raise ValueError(f"train.{key}={out[key]}: must be >= 1")
    if out["budget_images"] is not None and int(out["budget_images"]) < 1:
        raise ValueError(f"budget_images={out['budget_images']}: must be >= 1")
    return out


def _scaled_lr(cfg: dict, global_batch: int) -> float:
    r = global_batch / REF_BATCH
    return cfg["lr"] * {"linear": r, "sqrt": math.sqrt(r), "none": 1.0}[cfg["lr_scaling"]]


def read_keys(path) -> list[str]:
    """Sample keys from a CSV with a ``key`` column or ``file`` and ``group`` columns."""
    path = Path(path)
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "key" in fields:
            return [row["key"] for row in reader]
        if "file" in fields and "group" in fields:
            return [f"{row['file']}/{row['group']}" for row in reader]
    raise ValueError(f"{path}: needs a 'key' column or 'file' and 'group' columns, found {fields}")


# --------------------------------------------------------------------------- sampling
class EpochBatches:
    """Reproducible, resumable batch order of one rank.

    An epoch is a permutation of ``range(n)`` drawn from (seed, epoch), wrapped around to a
    multiple of the global batch ``G = batch_size * world_size * accum_steps``. Global batch ``k``
    is the block ``perm[k*G:(k+1)*G]``; its slot ``s = rank * accum_steps + a`` (``a`` = micro-batch)
    is the contiguous sub-block ``[s*B, (s+1)*B)``. Hence W ranks with one micro-batch each see the
    same sub-batches as one rank with W micro-batches (gradient accumulation), which is what makes
    a W-rank run and a 1-rank run with ``accum_steps = W`` equal.

    Iterating yields the micro-batches of this rank from step ``start_step`` of the current epoch.

    >>> b = EpochBatches(10, batch_size=2, world_size=2, rank=1, accum_steps=1, seed=0)
    >>> len(b), b.steps_per_epoch, b.global_batch
    (3, 3, 4)
    """

    def __init__(self, n: int, *, batch_size: int, world_size: int = 1, rank: int = 0, accum_steps: int = 1,
                 seed: int = 0):
        if n < 1:
            raise ValueError("EpochBatches: no sample to draw from")
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.accum_steps, self.seed = accum_steps, seed
        self.global_batch = batch_size * world_size * accum_steps
        self.steps_per_epoch = math.ceil(n / self.global_batch)
        self.epoch = 0
        self.start_step = 0

    def set_position(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = int(epoch), int(start_step)

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's permutation, wrapped to ``steps_per_epoch * global_batch`` entries."""
        rng = np.random.default_rng([int(self.seed), int(epoch), 0x5A3])
        perm = rng.permutation(self.n)
        total = self.steps_per_epoch * self.global_batch
        return np.resize(perm, total)

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self):
        perm = self.order(self.epoch)
        g, b = self.global_batch, self.batch_size
        for k in range(self.start_step, self.steps_per_epoch):
            for a in range(self.accum_steps):
                s = self.rank * self.accum_steps + a
                yield perm[k * g + s * b: k * g + (s + 1) * b].tolist()


class _JobData:
    """Training view of a ShardDataset opened with ``orientation="stack"``: output-index targets, the
    random panel and physics-valid augmentation.

    Items are fetched as ``(epoch, index)`` (see :class:`_EpochTagged`), so persistent DataLoader
    workers need no per-epoch state: the panel is ``panel_of(seed, epoch, index)`` as in
    ``ShardDataset(orientation="random")`` and the augmentation is drawn from (seed, epoch, index).
    """

    def __init__(self, base, targets, *, seed: int, orientation: str, augment: bool):
        self.base, self.targets, self.seed = base, np.asarray(targets), int(seed)
        self.orientation, self.augment = orientation, augment

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item):
        import torch

        from cbedtdc.data import panel_of
        from cbedtdc.model import augment, augment_params

        epoch, i = item
        stack = self.base.image(i)
        if self.orientation == "random":
            p = panel_of(self.seed, epoch, i)
            stack = stack[p: p + 1]
        x = torch.from_numpy(stack.copy())
        if self.augment:
            x = augment(x, augment_params(self.seed, epoch, i, x.shape[0]))
        return x, int(self.targets[i])


class _EpochTagged:
    """Batch sampler yielding ``(epoch, index)`` pairs of :class:`EpochBatches`."""

    def __init__(self, batches: EpochBatches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        e = self.batches.epoch
        for b in self.batches:
            yield [(e, i) for i in b]


def train_loader(data: _JobData, batches: EpochBatches, *, workers: int, seed: int, rank: int = 0,
                 pin_memory: bool = False):
    """The training DataLoader: created once per job, persistent workers, order from ``batches``.

    Call ``batches.set_position(epoch, step)`` before each ``iter(loader)``.
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed) * 100003 + int(rank))
    return torch.utils.data.DataLoader(
        data, batch_sampler=_EpochTagged(batches), num_workers=int(workers), worker_init_fn=_seed_worker,
        generator=gen, pin_memory=pin_memory, persistent_workers=int(workers) > 0,
        prefetch_factor=4 if int(workers) > 0 else None)


def _seed_worker(worker_id: int) -> None:
    import torch

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


# --------------------------------------------------------------------------- metrics
def scores(y_true, y_pred) -> dict:
    """Top-1, balanced accuracy (mean recall) and macro-F1 over the classes present in ``y_true``.

    >>> s = scores([0, 0, 1, 1], [0, 1, 1, 1])
    >>> s["top1"], s["balanced_accuracy"], round(s["macro_f1"], 4)
    (0.75, 0.75, 0.7333)
    """
    y, p = np.asarray(y_true), np.asarray(y_pred)
    if y.size == 0:
        return {"top1": float("nan"), "balanced_accuracy": float("nan"), "macro_f1": float("nan")}
    recalls, f1s = [], []
    for c in np.unique(y):
        tp = float(np.sum((y == c) & (p == c)))
        rec = tp / np.sum(y == c)
        npred = np.sum(p == c)
        prec = tp / npred if npred else 0.0
        recalls.append(rec)
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return {"top1": float(np.mean(y == p)), "balanced_accuracy": float(np.mean(recalls)),
            "macro_f1": float(np.mean(f1s))}


# --------------------------------------------------------------------------- checkpoints
def _atomic_save(obj, path: Path, *, keep_previous: Path | None = None) -> None:
    """``torch.save`` to a temp file in the target folder, fsync, then rename over ``path``."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _load(path: Path, fmt: str) -> dict:
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


def _model_file(model, meta: dict) -> dict:
    return {"format": MODEL_FORMAT, "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "meta": meta}


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def _resume_state(resume_dir: Path, fingerprint: str) -> dict | None:
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
            state = _load(path, STATE_FORMAT)
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


# --------------------------------------------------------------------------- forward helpers
def _forward(model, x, orientation: str, features: bool = False):
    """Logits (or features) of a batch of (B, 3, S, S) stacks, averaged over the panels when the
    model reads one panel."""
    fn = model.features if features else model
    if orientation == "random":
        return sum(fn(x[:, p: p + 1]) for p in range(x.shape[1])) / x.shape[1]
    return fn(x)


def _run_eval(model, ds, orientation: str, batch_size: int, device: str, features: bool = False) -> np.ndarray:
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(ds), batch_size):
            x = torch.stack([ds[i][0] for i in range(start, min(start + batch_size, len(ds)))])
            out.append(_forward(model, x.to(device), orientation, features).float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def _param_digest(model) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- the engine
def _job_labels(labels, classes, rest: bool):
    """Output index of each label and the mask of samples the job keeps."""
    index = {int(c): i for i, c in enumerate(classes)}
    targets = np.array([index.get(int(g), len(classes)) for g in labels], dtype=np.int64)
    keep = np.ones(len(targets), dtype=bool) if rest else targets < len(classes)
    return targets, keep


def _open_split(shard_root, split, keys, classes, rest, orientation, seed):
    from cbedtdc.data import ShardDataset

    ds = ShardDataset(shard_root, split, keys=keys, orientation=orientation, seed=seed)
    targets, keep = _job_labels(ds.labels, classes, rest)
    n_out = int((~keep).sum())
    if n_out:
        log.info("%s: %d of %d samples are outside the job's %d classes and excluded (rest=False)",
                 split, n_out, len(ds), len(classes))
    idx = np.flatnonzero(keep)
    if len(idx) != len(ds):
        ds = ds.subset(idx)
    return ds, targets[idx], n_out


def _norm_stats(ds, n_max: int = 256) -> tuple[float, float]:
    """Mean and std of the pixel values (in [0, 1]) of up to ``n_max`` evenly spaced samples."""
    pick = np.unique(np.linspace(0, len(ds) - 1, num=min(n_max, len(ds))).astype(int))
    vals = np.stack([ds.image(i).astype(np.float64) / 255.0 for i in pick])
    return float(vals.mean()), float(max(vals.std(), 1e-3))


def _fingerprint(cfg, classes, rest, keys, global_batch, epochs) -> str:
    # ranks and accum_steps enter through the global batch only: W ranks x A micro-batches train like W*A ranks
    relevant = {k: v for k, v in cfg.items() if k not in RUNTIME_KEYS and k != "accum_steps"}
    relevant.update(classes=list(classes), rest=bool(rest), global_batch=global_batch, epochs=epochs,
                    keys=hashlib.sha256("\n".join(keys).encode()).hexdigest())
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()


def _schedule(kind: str, total_steps: int):
    """Learning-rate factor per optimizer step (a picklable-free closure for ``LambdaLR``).

    onecycle: linear warm-up from lr/25 over the first 25 % of the steps, then cosine to lr/1e4;
    cosine: linear warm-up over 5 %, then cosine to 0.

    >>> f = _schedule("onecycle", 8)
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


def _gpu_speed_settings() -> None:
    import torch

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _amp_setup(amp: str, device: str):
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


def _bn_buffers(model):
    import torch

    return [b for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for b in m.buffers()]


def _sync_buffers(ctx, model) -> None:
    """Copy rank 0's BatchNorm statistics to every rank (they differ after the last forward)."""
    if not ctx.distributed:
        return
    import torch.distributed as dist

    for b in _bn_buffers(model):
        dist.broadcast(b.data, src=0)


def _train_step(job, micro_batches) -> float:
    """One optimizer step over this rank's micro-batches; returns the summed loss x samples (a tensor on the
    device, so that no step waits for the GPU)."""
    import torch

    model, opt, scaler = job["ddp"], job["opt"], job["scaler"]
    n_micro = len(micro_batches)
    opt.zero_grad(set_to_none=True)
    total, snapshot = torch.zeros((), dtype=torch.float64, device=job["device"]), None
    for a, (x, y) in enumerate(micro_batches):
        x = x.to(job["device"], non_blocking=True)
        y = y.to(job["device"], non_blocking=True)
        sync = model.no_sync() if (job["ctx"].distributed and a < n_micro - 1) else contextlib.nullcontext()
        with sync:
            with torch.autocast(device_type=job["device"].split(":")[0], dtype=job["amp_dtype"] or torch.float32,
                                enabled=job["amp_dtype"] is not None):
                loss = job["loss_fn"](model(x), y)
            scaler.scale(loss / n_micro).backward()
        # DDP keeps rank 0's BatchNorm statistics; accumulation keeps those of micro-batch 0 likewise
        if n_micro > 1:
            if a == 0:
                snapshot = [b.detach().clone() for b in job["bn_buffers"]]
            else:
                for b, s in zip(job["bn_buffers"], snapshot):
                    b.data.copy_(s)
        total += loss.detach().double() * len(y)
    scaler.unscale_(opt)
    if job["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), job["grad_clip"])
    scaler.step(opt)
    scaler.update()
    job["sched"].step()
    return total


def _evaluate(job, dev_ds, dev_targets) -> dict:
    """Dev scores of the current weights; dev samples are divided over the ranks."""
    ctx = job["ctx"]
    if len(dev_ds) == 0:
        return scores([], [])
    _sync_buffers(ctx, job["model"])
    part = np.array_split(np.arange(len(dev_ds)), ctx.world_size)[ctx.rank]
    logits = _run_eval(job["model"], dev_ds.subset(part), job["cfg"]["orientation"], job["cfg"]["eval_batch_size"],
                       job["device"])
    gathered = ctx.all_gather_object(logits.argmax(1) if len(logits) else np.zeros(0, dtype=np.int64))
    pred = np.concatenate(gathered)
    job["model"].train()
    return scores(dev_targets, pred)


def _write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in METRIC_FIELDS})
    _atomic_text(path, buf.getvalue())


def fit(cfg: dict, *, shard_root, out_dir, classes, rest: bool = False, train_keys=None, dev_keys=None,
        ctx=None) -> dict:
    """Train one classifier and write ``best.pt``, ``last.pt``, ``metrics.csv``, ``train.json``.

    Parameters
    ----------
    cfg : dict
        Keys of ``config["train"]`` plus ``loss``, ``seed`` and optionally ``budget_images`` (total
        training images over all epochs: ``epochs = max(1, round(budget_images / n_train))``).
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
    from cbedtdc.losses import make_loss
    from cbedtdc.model import build_model

    t_start = time.time()
    cfg = resolve_config(cfg)
    classes = [int(c) for c in classes]
    if len(classes) + int(rest) < 2:
        raise ValueError(f"classes={classes}, rest={rest}: a classifier needs at least 2 outputs")
    out_dir = Path(out_dir)
    resume_dir = out_dir / "resume"
    own_ctx = ctx is None
    if own_ctx:
        ctx = init_distributed(timeout_s=cfg["timeout_s"])
    threads_before = torch.get_num_threads()
    if ctx.device == "cpu":
        torch.set_num_threads(int(cfg["threads_per_rank"]))
    else:  # GPU: fastest kernels (autotuned convolutions, TF32 matmuls), not bitwise reproducible
        _gpu_speed_settings()
    try:
        seed = int(cfg["seed"])
        train_mode = cfg["orientation"]
        train_ds, train_targets, n_excl_train = _open_split(shard_root, "train", train_keys, classes, rest,
                                                            "stack", seed)
        dev_ds, dev_targets, n_excl_dev = _open_split(shard_root, "dev", dev_keys, classes, rest, "stack", seed)
        if len(train_ds) == 0:
            raise ValueError(f"no training sample of classes {classes} (rest={rest}) in {shard_root}/train.csv"
                             + (f" among the {len(train_keys)} given keys" if train_keys is not None else ""))
        n_out = len(classes) + int(rest)
        counts = np.bincount(train_targets, minlength=n_out)
        batches = EpochBatches(len(train_ds), batch_size=int(cfg["batch_size"]), world_size=ctx.world_size,
                               rank=ctx.rank, accum_steps=int(cfg["accum_steps"]), seed=seed)
        g = batches.global_batch
        epochs = int(cfg["epochs"])
        if cfg["budget_images"] is not None:
            epochs = max(1, round(int(cfg["budget_images"]) / len(train_ds)))
        steps = batches.steps_per_epoch
        lr = _scaled_lr(cfg, g)
        fingerprint = _fingerprint(cfg, classes, rest, train_ds.keys, g, epochs)
        mean, std = _norm_stats(train_ds)
        in_ch = 1 if train_mode == "random" else 3
        names = [str(c) for c in classes] + (["rest"] if rest else [])
        meta = {
            "classes": classes, "rest": bool(rest), "output_names": names, "arch": cfg["arch"],
            "orientation": train_mode, "in_channels": in_ch, "n_outputs": n_out,
            "image_size": int(train_ds.image_size), "mean": mean, "std": std, "loss": cfg["loss"], "seed": seed,
            "train_counts": counts.tolist(), "config": dict(cfg), "epochs": epochs,
        }
        log.info("job: %d outputs (%s), %d train / %d dev samples, %d excluded; %s, %s, %d epochs x %d steps, "
                 "global batch %d (%d x %d ranks x %d accum), lr %.3g, loss %s",
                 n_out, " ".join(names), len(train_ds), len(dev_ds), n_excl_train, cfg["arch"], train_mode, epochs,
                 steps, g, cfg["batch_size"], ctx.world_size, cfg["accum_steps"], lr, cfg["loss"])

        torch.manual_seed(seed)
        model = build_model(cfg["arch"], in_ch, n_out, mean=mean, std=std).to(ctx.device)
        amp_dtype, use_scaler = _amp_setup(cfg["amp"], ctx.device)
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
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr)
        total_steps = epochs * steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg["schedule"], total_steps))
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        loss_fn = make_loss(cfg["loss"], counts, label_smoothing=cfg["label_smoothing"], la_tau=cfg["la_tau"],
                            weight_cap=cfg["weight_cap"])
        job = {"ctx": ctx, "cfg": cfg, "model": model, "ddp": ddp, "opt": opt, "sched": sched, "scaler": scaler,
               "loss_fn": loss_fn, "device": ctx.device, "amp_dtype": amp_dtype, "grad_clip": float(cfg["grad_clip"]),
               "bn_buffers": _bn_buffers(model)}

        # ---- resume (temp files of a process killed while writing are never trusted)
        if ctx.is_main:
            for stale in [*out_dir.glob(".*.tmp"), *resume_dir.glob(".*.tmp")]:
                stale.unlink(missing_ok=True)
        epoch, step, history = 0, 0, []
        best = {"score": -1.0, "epoch": -1}
        loss_sum, loss_n = 0.0, 0
        loss_dev = torch.zeros((), dtype=torch.float64, device=ctx.device)
        resumed_from = None
        # rank 0 picks the newest readable state; the others read the same file (shared file system)
        state = _resume_state(resume_dir, fingerprint) if ctx.is_main else None
        chosen = ctx.broadcast_object(state["_path"] if state is not None else None)
        if chosen is not None and not ctx.is_main:
            state = _load(chosen, STATE_FORMAT)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
            epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best"]
            t_start -= state.get("wall_s", 0.0)  # wall_s counts the interrupted runs too
            if ctx.is_main:
                loss_sum, loss_n = state["loss_sum"], state["loss_n"]
            resumed_from = {"epoch": epoch, "step": step}
            log.info("resuming from %s: epoch %d, step %d of %d (finished epochs are not redone)",
                     resume_dir / "state.pt", epoch + 1, step, steps)
        del state

        def save_state(epoch_now, step_now):
            nonlocal loss_sum, loss_n
            loss_sum += float(loss_dev)
            loss_dev.zero_()
            loss_sum, loss_n = (ctx.all_reduce_sum([loss_sum, loss_n]) if ctx.distributed else (loss_sum, loss_n))
            if not ctx.is_main:
                loss_sum, loss_n = 0.0, 0
            _sync_buffers(ctx, model)
            if ctx.is_main:
                _atomic_save({
                    "format": STATE_FORMAT, "fingerprint": fingerprint, "epoch": epoch_now, "step": step_now,
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "rng": _rng_state(), "history": history, "best": best,
                    "loss_sum": float(loss_sum), "loss_n": int(loss_n), "meta": meta,
                    "wall_s": time.time() - t_start,
                }, resume_dir / "state.pt", keep_previous=resume_dir / "state.prev.pt")
            ctx.barrier()

        train_data = _JobData(train_ds, train_targets, seed=seed, orientation=train_mode, augment=True)
        loader = train_loader(train_data, batches, workers=int(cfg["workers"]), seed=seed, rank=ctx.rank,
                              pin_memory=ctx.device.startswith("cuda"))
        t_train, images_run = 0.0, 0
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        while epoch < epochs:
            batches.set_position(epoch, step)
            it = iter(loader)
            bar = tqdm(total=steps, initial=step, desc=f"epoch {epoch + 1}/{epochs}", disable=not ctx.is_main,
                       file=sys.stderr, mininterval=1.0 if tty else 60.0, unit="step")
            t0 = time.perf_counter()
            model.train()
            while step < steps:
                micro = [next(it) for _ in range(batches.accum_steps)]
                n_img = sum(len(y) for _, y in micro)
                loss_dev += _train_step(job, micro)  # on the device: no host sync per step
                loss_n += n_img
                images_run += n_img * ctx.world_size
                step += 1
                bar.update(1)
                if step % int(cfg["checkpoint_every"]) == 0 and step < steps:
                    t_train += time.perf_counter() - t0
                    save_state(epoch, step)
                    t0 = time.perf_counter()
            bar.close()
            del it
            t_train += time.perf_counter() - t0
            # ---- epoch end: loss over ranks, dev scores, best checkpoint, metrics row, state
            loss_sum += float(loss_dev)
            loss_dev.zero_()
            tot = ctx.all_reduce_sum([loss_sum, loss_n])
            if int(tot[1]) != steps * g:  # the sample count over all ranks must match the plan
                raise RuntimeError(f"epoch {epoch + 1}: the ranks trained on {int(tot[1])} samples, expected "
                                   f"{steps} steps x global batch {g} = {steps * g} ({len(train_ds)} samples, "
                                   "wrapped to whole batches)")
            dev = _evaluate(job, dev_ds, dev_targets)
            row = {"epoch": epoch + 1, "images": (epoch + 1) * steps * g, "train_loss": tot[0] / max(tot[1], 1),
                   "lr": float(opt.param_groups[0]["lr"]), "dev_top1": dev["top1"],
                   "dev_balanced_accuracy": dev["balanced_accuracy"], "dev_macro_f1": dev["macro_f1"],
                   "train_images_per_s": images_run / t_train if t_train > 0 else float("nan"),
                   "wall_s": time.time() - t_start}
            history.append(row)
            score = dev["balanced_accuracy"] if len(dev_ds) else float(epoch)
            if ctx.is_main:
                log.info("epoch %d/%d: train loss %.4f, dev top-1 %.4f, balanced acc %.4f, macro-F1 %.4f, %.1f img/s",
                         epoch + 1, epochs, row["train_loss"], dev["top1"], dev["balanced_accuracy"],
                         dev["macro_f1"], row["train_images_per_s"])
                if score > best["score"]:
                    best = {"score": float(score), "epoch": epoch + 1}
                    _atomic_save(_model_file(model, {**meta, "epoch": epoch + 1, **{f"dev_{k}": v for k, v in
                                                                                     dev.items()}}),
                                 resume_dir / "best.pt")
                _write_metrics(out_dir / "metrics.csv", history)
            best = ctx.broadcast_object(best)
            epoch, step = epoch + 1, 0
            loss_sum, loss_n = 0.0, 0
            save_state(epoch, step)

        # ---- outputs
        _sync_buffers(ctx, model)
        digests = ctx.all_gather_object(_param_digest(model))
        if len(set(digests)) != 1:
            raise RuntimeError(f"parameters differ between ranks after training: {digests}")
        last_dev = history[-1] if history else {}
        summary = {
            "config": dict(cfg), "classes": classes, "rest": bool(rest), "output_names": names,
            "world_size": ctx.world_size, "launcher": ctx.launcher, "device": ctx.device, "backend": ctx.backend,
            "host": socket.gethostname(), "torch": torch.__version__, "epochs": epochs, "steps_per_epoch": steps,
            "global_batch": g, "lr": lr, "n_train": len(train_ds), "n_excluded_train": n_excl_train,
            "n_dev": len(dev_ds), "n_excluded_dev": n_excl_dev, "train_counts": counts.tolist(),
            "best_epoch": best["epoch"], "best_dev_balanced_accuracy": best["score"] if len(dev_ds) else None,
            "last_dev_balanced_accuracy": last_dev.get("dev_balanced_accuracy"),
            "resumed_from": resumed_from, "images_this_run": images_run, "train_s_this_run": t_train,
            "images_per_s": images_run / t_train if t_train > 0 else None, "wall_s": time.time() - t_start,
            "param_sha256_by_rank": digests,
        }
        if ctx.is_main:
            last = _model_file(model, {**meta, "epoch": epochs})
            if (resume_dir / "best.pt").exists():
                best_obj = _load(resume_dir / "best.pt", MODEL_FORMAT)
            else:  # no dev sample of the job's classes: the last weights are the best we know
                best_obj = last
            _atomic_save(best_obj, out_dir / "best.pt")
            _atomic_save(last, out_dir / "last.pt")
            _write_metrics(out_dir / "metrics.csv", history)
            _atomic_text(out_dir / "train.json", json.dumps(summary, indent=2, default=str) + "\n")
            shutil.rmtree(resume_dir, ignore_errors=True)
            chosen = (f"best epoch {best['epoch']} (dev balanced acc {best['score']:.4f})" if len(dev_ds)
                      else "no dev sample of the job's classes, best.pt = last epoch")
            log.info("wrote %s/{best.pt,last.pt,metrics.csv,train.json}: %s, %.1f train img/s", out_dir, chosen,
                     summary["images_per_s"] or 0.0)
        ctx.barrier()
        return summary
    finally:
        torch.set_num_threads(threads_before)
        if own_ctx:
            ctx.shutdown()


# --------------------------------------------------------------------------- inference
def load_model(path, device: str = "cpu"):
    """Model and metadata of a ``best.pt``/``last.pt`` written by :func:`fit`.

    Returns
    -------
    (torch.nn.Module, dict)
        The model in eval mode on ``device``; ``meta`` holds classes, rest, output_names, arch,
        orientation, in_channels, n_outputs, image_size, mean, std, loss, epoch and config.
    """
    from cbedtdc.model import build_model

    obj = _load(path, MODEL_FORMAT)
    meta = obj["meta"]
    model = build_model(meta["arch"], meta["in_channels"], meta["n_outputs"], mean=meta["mean"], std=meta["std"])
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit a {meta['arch']} with {meta['n_outputs']} outputs") from err
    model.to(device).eval()
    return model, meta


def _inference(model, meta, shard_root, split, keys, batch_size, features):
    from cbedtdc.data import ShardDataset

    ds = ShardDataset(shard_root, split, keys=keys, orientation="stack")
    if len(ds) and ds.image_size != meta["image_size"]:
        raise ValueError(f"{shard_root}/{split}.csv: images are {ds.image_size} px, the model was trained on "
                         f"{meta['image_size']} px")
    device = str(next(model.parameters()).device)
    out = _run_eval(model, ds, meta["orientation"], batch_size, device, features)
    return list(ds.keys), out


def predict(model, meta, shard_root, split, keys=None, batch_size: int = 64):
    """Logits of every sample of ``split`` (optionally only ``keys``), one process.

    Models trained on one panel see each of the three panels and their logits are averaged;
    stack models see the stack once. Returns ``(keys, logits)`` with logits of shape
    ``(N, meta["n_outputs"])`` in ``keys`` order. Deterministic on CPU.
    """
    return _inference(model, meta, shard_root, split, keys, batch_size, features=False)


def extract_features(model, meta, shard_root, split, keys=None, batch_size: int = 64):
    """Penultimate-layer features (after global pooling), averaged like :func:`predict`.

    Returns ``(keys, features)``, features of shape ``(N, 512 or 2048)``.
    """
    return _inference(model, meta, shard_root, split, keys, batch_size, features=True)
