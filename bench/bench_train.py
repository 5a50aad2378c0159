"""Training throughput of the engine, as ratios measured in one run.

1. Input pipeline: optimizer steps/s reading real shards through the DataLoader (ShardDataset, random
   panel, rot90/flip augmentation, ``--workers`` processes) divided by the same loop on batches that
   are already in memory. Goal >= 0.95: the input pipeline must not be the bottleneck.
2. Scaling: training images/s of the whole engine (``workflow_scripts/train.py``, one epoch, dev
   evaluation excluded) with 1 rank x 1 thread, 2 ranks x 1 thread (``mpiexec -n 2``) and
   1 rank x 2 threads, same per-rank batch.

3. Engine vs plain torchvision (``--device cuda`` on a GPU machine): images/s of the engine's training step
   (uint8 input normalised in the model, channels_last, AMP per ``--amp``, grad clipping, label smoothing)
   divided by a bare torchvision loop (float input, AdamW, cross-entropy) with the same model and batch on
   synthetic tensors. Goal >= 0.8 for ResNet50 with AMP + channels_last on GPU.

Run on an idle machine (other jobs on the cores skew both numbers)::

    python bench/bench_train.py --shards results/shards --arch resnet50 --seconds 30
    python bench/bench_train.py --synthetic --arch resnet18 --size 16 --seconds 3   # smoke test

Prints one table and one JSON line (``RESULT {...}``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_train")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shards", default="results/shards", help="shard root (default: results/shards)")
    p.add_argument("--synthetic", action="store_true", help="build tiny class-patterned shards in a temp folder "
                   "instead of reading --shards (default: off)")
    p.add_argument("--size", type=int, default=64, help="image side of the --synthetic shards (default: 64)")
    p.add_argument("--per-class", type=int, default=60, help="--synthetic training samples per class (default: 60)")
    p.add_argument("--arch", default="resnet50", help="resnet18 | resnet34 | resnet50 (default: resnet50)")
    p.add_argument("--batch-size", type=int, default=32, help="batch per rank (default: 32)")
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers (default: 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the input-pipeline test (default: 2)")
    p.add_argument("--seconds", type=float, default=30.0, help="timed seconds per measurement (default: 30)")
    p.add_argument("--repeats", type=int, default=2, help="alternating repeats of each loop (default: 2)")
    p.add_argument("--skip-scaling", action="store_true", help="skip the 1 vs 2 rank measurement (default: run it)")
    p.add_argument("--device", default="cpu", help="device of the engine-vs-torchvision test (default: cpu)")
    p.add_argument("--amp", default="auto", help="amp of the engine-vs-torchvision test (default: auto)")
    p.add_argument("--engine-batch", type=int, default=0, help="batch of the engine-vs-torchvision test "
                   "(default: --batch-size)")
    p.add_argument("--engine-size", type=int, default=0, help="image side of that test (default: the shards' side)")
    return p


def _job(shard_root, arch, batch_size, workers, seed=0):
    """Model, optimizer, loss and the engine's training DataLoader over all training classes."""
    import numpy as np
    import torch

    from cbedtdc import train as T
    from cbedtdc.data import ShardDataset
    from cbedtdc.losses import make_loss
    from cbedtdc.model import build_model

    ds = ShardDataset(shard_root, "train", orientation="stack", seed=seed)
    classes = sorted(set(ds.labels.tolist()))
    targets, _ = T.job_targets(ds.labels, classes, rest=False)
    data = T.JobData(ds, targets, seed=seed, orientation="random", augment=True)
    batches = T.EpochBatches(len(ds), batch_size=batch_size, seed=seed)
    torch.manual_seed(seed)
    model = build_model(arch, 1, len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = make_loss("ce", np.bincount(targets, minlength=len(classes)))
    dl = T.train_loader(data, batches, workers=workers, seed=seed)  # the engine's loader, built once per job

    def loader(epoch):
        batches.set_position(epoch, 0)
        return dl

    return model, opt, loss_fn, loader, len(ds)


def _step(model, opt, loss_fn, x, y):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()


def _timed(fn_batches, model, opt, loss_fn, seconds):
    """Steps/s of ``_step`` over the batches yielded by ``fn_batches()`` (restarted when exhausted)."""
    n, it = 0, fn_batches()
    t0 = time.perf_counter()
    while True:
        try:
            x, y = next(it)
        except StopIteration:
            it = fn_batches()
            continue
        _step(model, opt, loss_fn, x, y)
        n += 1
        if time.perf_counter() - t0 >= seconds and n >= 3:
            return n / (time.perf_counter() - t0)


def input_pipeline_ratio(args, shard_root) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    model, opt, loss_fn, loader, n = _job(shard_root, args.arch, args.batch_size, args.workers)
    model.train()
    epoch = [0]

    def from_shards():
        epoch[0] += 1
        return iter(loader(epoch[0]))

    cached = [(x.clone(), y.clone()) for x, y in loader(0)][: max(4, min(64, n // args.batch_size))]

    def from_memory():
        return iter(cached)

    for _ in range(2):  # warm-up: oneDNN primitives, first file opens
        x, y = cached[0]
        _step(model, opt, loss_fn, x, y)
    shard_rates, mem_rates = [], []
    for _ in range(args.repeats):
        shard_rates.append(_timed(from_shards, model, opt, loss_fn, args.seconds))
        mem_rates.append(_timed(from_memory, model, opt, loss_fn, args.seconds))
    s, m = statistics.median(shard_rates), statistics.median(mem_rates)
    return {"shard_steps_per_s": s, "memory_steps_per_s": m, "ratio": s / m, "n_train": n,
            "batch_size": args.batch_size, "workers": args.workers, "threads": args.threads}


def _engine_rate(shard_root, args, ranks: int, threads: int, tmp: Path) -> float | None:
    out = tmp / f"r{ranks}t{threads}"
    cmd = [sys.executable, str(ROOT / "workflow_scripts" / "train.py"), "--shards", str(shard_root),
           "--model", str(out / "best.pt"), "--classes", ",".join(map(str, _classes(shard_root))),
           "--arch", args.arch, "--epochs", "1", "--batch-size", str(args.batch_size), "--workers", str(args.workers),
           "--threads-per-rank", str(threads), "--checkpoint-every", "100000", "--timeout-s", "600"]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        if mpiexec is None:
            log.warning("no mpiexec: %d-rank measurement skipped", ranks)
            return None
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads((out / "train.json").read_text())["images_per_s"]


def _side(shard_root) -> int:
    from cbedtdc.data import ShardDataset

    return ShardDataset(shard_root, "train").image_size


def _classes(shard_root) -> list[int]:
    from cbedtdc.data import ShardDataset

    return sorted(set(ShardDataset(shard_root, "train").labels.tolist()))


def engine_vs_torchvision(args, size: int) -> dict:
    """Engine training step vs a bare torchvision loop on the same synthetic batch (one process)."""
    import torch
    import torchvision

    from cbedtdc import train as T
    from cbedtdc.distributed import DistContext
    from cbedtdc.losses import make_loss
    from cbedtdc.model import build_model

    dev, n_out = args.device, 20
    batch = args.engine_batch or args.batch_size
    if dev == "cpu":
        torch.set_num_threads(args.threads)
    else:
        T.gpu_speed_settings()  # as fit() does; applies to both loops
    g = torch.Generator().manual_seed(0)
    x8 = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, n_out, (batch,), generator=g)

    model = build_model(args.arch, 1, n_out).to(dev)
    amp_dtype, use_scaler = T.amp_setup(args.amp, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    job = T.Job(ctx=DistContext(device=dev), model=model, ddp=model, opt=opt,
                sched=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
                loss_fn=make_loss("ce", [1] * n_out, label_smoothing=0.1), amp_dtype=amp_dtype, grad_clip=1.0,
                bn_buffers=T.bn_buffers(model))
    micro = [(x8.to(dev), y.to(dev))]

    plain = getattr(torchvision.models, args.arch)(num_classes=n_out)
    plain.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    plain = plain.to(dev).to(memory_format=torch.channels_last)
    popt = torch.optim.AdamW(plain.parameters(), lr=1e-3)  # same optimizer: measure the engine, not AdamW vs SGD
    xf = (x8.float() / 255).to(dev).contiguous(memory_format=torch.channels_last)
    yd = y.to(dev)

    def plain_step():
        popt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=dev.split(":")[0], dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            loss = torch.nn.functional.cross_entropy(plain(xf), yd)
        loss.backward()
        popt.step()

    def rate(step):
        for _ in range(3):
            step()
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds or n < 3:
            step()
            n += 1
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
        return n * batch / (time.perf_counter() - t0)

    engine, bare = [], []
    for _ in range(args.repeats):
        engine.append(rate(lambda: T.train_step(job, micro)))
        bare.append(rate(plain_step))
    e, b = statistics.median(engine), statistics.median(bare)
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    return {"device": name, "arch": args.arch, "batch": batch, "size": size, "amp": str(amp_dtype),
            "engine_images_per_s": e, "torchvision_images_per_s": b, "ratio": e / b}


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        if args.synthetic:
            sys.path.insert(0, str(ROOT / "tests"))
            from fixtures import build_tiny_shards

            shard_root = build_tiny_shards(tmp / "data", classes=(14, 225, 1, 2), per_class=args.per_class,
                                           side=args.size, seed=0)
        else:
            shard_root = Path(args.shards)
            if not (shard_root / "train.csv").exists():
                log.error("%s/train.csv not found: run `snakemake shards` first or pass --synthetic", shard_root)
                return 2
        res = {"arch": args.arch, "shards": str(shard_root) if not args.synthetic else "synthetic"}
        res["input_pipeline"] = input_pipeline_ratio(args, shard_root)
        ip = res["input_pipeline"]
        print(f"input pipeline ({args.arch}, batch {args.batch_size}, {args.workers} worker(s), {args.threads} "
              f"threads): shards {ip['shard_steps_per_s']:.3f} steps/s, in memory {ip['memory_steps_per_s']:.3f} "
              f"steps/s, ratio {ip['ratio']:.3f} (goal >= 0.95)")
        if not args.skip_scaling:
            rates = {f"{r}x{t}": _engine_rate(shard_root, args, r, t, tmp) for r, t in ((1, 1), (2, 1), (1, 2))}
            res["scaling_images_per_s"] = rates
            base = rates["1x1"]
            for key, rate in rates.items():
                ranks, threads = key.split("x")
                if rate is not None:
                    print(f"engine, {ranks} rank(s) x {threads} thread(s): {rate:.1f} img/s "
                          f"({rate / base:.2f}x of 1 rank x 1 thread)")
        ev = engine_vs_torchvision(args, args.engine_size or _side(shard_root))
        res["engine_vs_torchvision"] = ev
        print(f"engine vs torchvision loop ({ev['device']}, {ev['arch']}, batch {ev['batch']}, {ev['size']} px, "
              f"amp {ev['amp']}): {ev['engine_images_per_s']:.1f} vs {ev['torchvision_images_per_s']:.1f} img/s, "
              f"ratio {ev['ratio']:.3f} (goal >= 0.8 on GPU)")
        print("RESULT " + json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
