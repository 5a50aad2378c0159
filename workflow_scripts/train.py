"""Train one classifier (flat baseline or TDC level) with the cbedtdc engine.

Runs the same way by hand, under ``mpiexec -n N``, ``srun`` or ``jsrun``, and in tests::

    mpiexec -n 2 python workflow_scripts/train.py --shards results/shards --classes 14,225,1 \
        --loss ce --model results/flat/ce/best.pt

Outputs go to the folder of ``--model`` (best.pt, last.pt, metrics.csv, train.json); an interrupted
job resumes from ``<folder>/resume/`` when started again. Exit codes: 0 done, 2 bad input or
checkpoint (one log line says which file), 1 anything else. When one rank fails, the whole MPI job
is ended.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import int_list, run_cli, setup_logging  # noqa: E402
from cbedtdc.train import DEFAULTS, read_keys  # noqa: E402

log = logging.getLogger("cbedtdc.workflow.train")


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = DEFAULTS
    # fromfile: `@args.txt` reads one argument per line (the TDC level job writes its class flags so)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help, fromfile_prefix_chars="@")
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--shards", required=True, help="shard root holding {train,dev}.csv (required)")
    io.add_argument("--model", required=True, help="output best.pt; its folder receives every output (required)")
    io.add_argument("--classes", required=True, type=int_list, help="space groups of the job, comma-separated; "
                    "output i is the i-th (required)")
    io.add_argument("--rest", action="store_true", help="add a 'rest' output for other groups (default: off, "
                    "samples of other groups are excluded)")
    io.add_argument("--train-keys", help="CSV (key, or file+group) restricting the training samples (default: all)")
    io.add_argument("--dev-keys", help="CSV restricting the dev samples (default: all)")
    t = p.add_argument_group("training (config 'train' section)")
    t.add_argument("--loss", default=d["loss"], help=f"ce | weighted_ce | logit_adjusted | balanced_softmax "
                   f"(default: {d['loss']})")
    t.add_argument("--seed", type=int, default=d["seed"], help=f"seed (default: {d['seed']})")
    t.add_argument("--budget-images", type=int, help="total training images; sets epochs = "
                   "max(1, round(budget / n_train)) (default: use --epochs)")
    t.add_argument("--arch", default=d["arch"], help=f"resnet18 | resnet34 | resnet50 (default: {d['arch']})")
    t.add_argument("--orientation", default=d["orientation"], help=f"random | stack (default: {d['orientation']})")
    t.add_argument("--epochs", type=int, default=d["epochs"], help=f"epochs (default: {d['epochs']})")
    t.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"batch per rank (default: "
                   f"{d['batch_size']})")
    t.add_argument("--accum-steps", type=int, default=d["accum_steps"], help="micro-batches per optimizer step "
                   f"(default: {d['accum_steps']})")
    t.add_argument("--lr", type=float, default=d["lr"], help=f"peak lr at global batch 64 (default: {d['lr']})")
    t.add_argument("--lr-scaling", default=d["lr_scaling"], help=f"linear | sqrt | none (default: {d['lr_scaling']})")
    t.add_argument("--weight-decay", type=float, default=d["weight_decay"], help=f"AdamW weight decay (default: "
                   f"{d['weight_decay']})")
    t.add_argument("--schedule", default=d["schedule"], help=f"onecycle | cosine (default: {d['schedule']})")
    t.add_argument("--label-smoothing", type=float, default=d["label_smoothing"], help="label smoothing (default: "
                   f"{d['label_smoothing']})")
    t.add_argument("--grad-clip", type=float, default=d["grad_clip"], help=f"gradient-norm clip, 0 = off (default: "
                   f"{d['grad_clip']})")
    t.add_argument("--amp", default=d["amp"], help=f"auto | bf16 | fp16 | none, GPU only (default: {d['amp']})")
    t.add_argument("--la-tau", type=float, default=d["la_tau"], help=f"logit_adjusted temperature (default: "
                   f"{d['la_tau']})")
    t.add_argument("--weight-cap", type=float, default=d["weight_cap"], help="largest weighted_ce class weight "
                   f"(default: {d['weight_cap']})")
    r = p.add_argument_group("runtime (does not change the weights)")
    r.add_argument("--threads-per-rank", type=int, default=d["threads_per_rank"], help="torch threads per rank on "
                   f"CPU (default: {d['threads_per_rank']})")
    r.add_argument("--workers", type=int, default=d["workers"], help=f"DataLoader workers per rank (default: "
                   f"{d['workers']})")
    r.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="steps between resumable "
                   f"checkpoints (default: {d['checkpoint_every']})")
    r.add_argument("--timeout-s", type=int, default=d["timeout_s"], help="collective timeout in seconds (default: "
                   f"{d['timeout_s']})")
    r.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"], help="evaluation batch (default: "
                   f"{d['eval_batch_size']})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    return p


CFG_KEYS = ("loss", "seed", "budget_images", "arch", "orientation", "epochs", "batch_size", "accum_steps", "lr",
            "lr_scaling", "weight_decay", "schedule", "label_smoothing", "grad_clip", "amp", "la_tau", "weight_cap",
            "threads_per_rank", "workers", "checkpoint_every", "timeout_s", "eval_batch_size")


def run(args, held: dict) -> None:
    from cbedtdc.distributed import init_distributed
    from cbedtdc.train import fit

    model = Path(args.model)
    if model.name != "best.pt":
        raise ValueError(f"--model {model}: must name the job's best.pt (its folder receives all outputs)")
    cfg = {k: getattr(args, k) for k in CFG_KEYS}
    train_keys = read_keys(args.train_keys) if args.train_keys else None
    dev_keys = read_keys(args.dev_keys) if args.dev_keys else None
    held["ctx"] = init_distributed(timeout_s=args.timeout_s)
    fit(cfg, shard_root=args.shards, out_dir=model.parent, classes=args.classes, rest=args.rest,
        train_keys=train_keys, dev_keys=dev_keys, ctx=held["ctx"])


def main(argv=None) -> int:
    from cbedtdc.distributed import abort_job

    held = {}  # the process group, shut down after a failure has ended every rank of the job
    try:
        return run_cli(get_parser, lambda args: run(args, held), argv,
                       setup=lambda args: setup_logging(args.verbose, rank_tag=True),
                       on_error=lambda err: abort_job(held.get("ctx"), err))
    finally:
        if held.get("ctx") is not None:
            held["ctx"].shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
