"""What a training job leaves on disk: the resumable state in ``out_dir/resume/`` (:func:`resume`,
:func:`save_state`), ``metrics.csv``, the four outputs and the record of a finished job in ``out_dir/finished/``
(:func:`job_key`, :func:`restore_outputs`, :func:`write_outputs`)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import socket
import time
from pathlib import Path

from cbedtdc.io import atomic_save_torch, atomic_write_text, write_csv
from cbedtdc.train.checkpoint import (MODEL_FORMAT, STATE_FORMAT, input_digest, load_checkpoint, model_file,
                                      record_finished, restore_finished, resume_state, rng_state, set_rng_state)
from cbedtdc.train.job import Job, JobPlan, Progress, param_digest, sync_buffers

__all__ = ["OUTPUT_NAMES", "METRIC_FIELDS", "write_metrics", "resume", "save_state", "job_key", "restore_outputs",
           "write_outputs", "images_seen"]

log = logging.getLogger(__name__)

#: The job's outputs, in ``out_dir``; kept with their sha256 in ``out_dir/finished/``.
OUTPUT_NAMES = ("best.pt", "last.pt", "metrics.csv", "train.json")
METRIC_FIELDS = ("epoch", "images", "train_loss", "lr", "dev_top1", "dev_balanced_accuracy", "dev_macro_f1",
                 "train_images_per_s", "wall_s")


def write_metrics(path: Path, rows: list[dict]) -> None:
    """``metrics.csv``: one row per finished epoch, floats with 6 significant digits."""
    write_csv(path, [{k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in METRIC_FIELDS} for r in rows],
              METRIC_FIELDS)


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
        "steps_per_epoch": plan.batches.steps_per_epoch, "total_steps": plan.total_steps,
        "global_batch": plan.batches.global_batch, "lr": plan.lr,
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


def images_seen(train_json) -> int | None:
    """Training images a job actually processed: its optimizer steps (``total_steps``; in files written before
    ``train.images`` existed, epochs x steps per epoch) x global batch (``train.json``)."""
    try:
        d = json.loads(Path(train_json).read_text())
        steps = int(d["total_steps"]) if "total_steps" in d else int(d["epochs"]) * int(d["steps_per_epoch"])
        return steps * int(d["global_batch"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s: cannot read epochs/steps_per_epoch/global_batch; images seen unknown", train_json)
        return None
