"""The machine's yardstick: bare torchvision ResNet training images/s (random init, 3 x 64 x 64, batch 32, AdamW).

CPUs of the same machine kind differ 2-4x; every time quoted in the README and docs/results.md comes with this
figure, measured the same day, so a reader can scale it to their machine:

    .venv/bin/python bench/machine_speed.py                 # resnet18 and resnet50, torch's 2 threads
    .venv/bin/python bench/machine_speed.py --arch resnet18 --seconds 30

No cbedtdc code runs here: it measures the machine, not the engine (bench/bench_train.py compares the two).
"""

from __future__ import annotations

import argparse
import time


def images_per_s(arch: str, *, size: int, batch: int, seconds: float, threads: int) -> float:
    """Training images/s of a bare torchvision ``arch`` on random data, after 3 warm-up steps."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = getattr(torchvision.models, arch)(num_classes=20)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 20, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += batch
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="append", help="resnet18 | resnet34 | resnet50; repeatable "
                   "(default: resnet18 and resnet50)")
    p.add_argument("--size", type=int, default=64, help="image side (default: 64)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per architecture (default: 20)")
    args = p.parse_args(argv)
    for arch in args.arch or ["resnet18", "resnet50"]:
        rate = images_per_s(arch, size=args.size, batch=args.batch, seconds=args.seconds, threads=args.threads)
        print(f"bare torchvision {arch}, 3x{args.size}x{args.size}, batch {args.batch}, {args.threads} threads: "
              f"{rate:.1f} img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
