"""Benchmark of the ``symmetry`` feature source on one core; prints rates and a ratio measured in one run.

1. shard reads: samples/s of ``ShardDataset.image`` over a split, in order (what the extraction does), with
   the shard files in the page cache and evicted from it before each pass (``posix_fadvise(DONTNEED)``);
2. descriptors: samples/s of ``describe`` on stacks already in memory (batches of ``--batch-size``);
3. end to end: samples/s of ``extract_symmetry_to_file`` (read + describe + write the features file).

RATIO = descriptors / shard reads (cached and evicted): above 1, describing a sample costs less than reading
it. Goal: descriptors
>= 2,000 samples/s per core at 64 px. OMP/MKL/OPENBLAS threads are set to 1 before numpy loads.

    PYTHONPATH=. .venv/bin/python bench/bench_symmetry.py --shards results/shards --split dev
    PYTHONPATH=. .venv/bin/python bench/bench_symmetry.py            # without shards: 64-px fixture shards

Run on an idle machine; on a shared one the rates vary, the ratio less.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--shards", default="results/shards",
                   help="shard root; when missing, 64-px fixture shards are written to a temporary folder "
                        "(default: results/shards)")
    p.add_argument("--split", default="dev", help="split to read (default: dev)")
    p.add_argument("--max-samples", type=int, default=2048, help="samples used at most (default: 2048)")
    p.add_argument("--batch-size", type=int, default=256, help="descriptor batch (default: 256)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes, the best counts (default: 3)")
    return p


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from cbedtdc.data import ShardDataset
    from cbedtdc.features.symmetry import describe, descriptor_names, extract_symmetry_to_file

    work = Path(tempfile.mkdtemp(prefix="bench_symmetry_"))
    try:
        shards = Path(args.shards)
        if not (shards / f"{args.split}.csv").exists():
            sys.path.insert(0, str(REPO / "tests"))
            from fixtures import build_tiny_shards

            shards = build_tiny_shards(work / "fixture", classes=tuple(range(1, 21)), per_class=64, side=64,
                                       image_size=64, seed=0)
            print(f"no {args.split} shards under {args.shards}: wrote 64-px fixture shards to {shards}")
        ds = ShardDataset(shards, args.split)
        n = min(len(ds), args.max_samples)
        ds = ds.subset(np.arange(n))
        S = ds.image_size

        def read():
            return np.stack([ds.image(i) for i in range(n)])

        x = read()
        describe(x[: args.batch_size])  # warm-up: builds the plan (polar matrix) once
        t_read = best_of(read, args.repeats)
        files = [shards / f for f in ds.shards]

        def evicted_read():
            ds._handles = None  # reopen: no descriptor keeps pages alive
            for f in files:
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
            return read()

        t_cold = best_of(evicted_read, args.repeats) if hasattr(os, "posix_fadvise") else float("nan")

        def desc():
            for s in range(0, n, args.batch_size):
                describe(x[s: s + args.batch_size])

        t_desc = best_of(desc, args.repeats)
        out = work / "f.h5"

        def end_to_end():
            extract_symmetry_to_file(shards, args.split, out, keys=ds.keys, batch_size=args.batch_size,
                                     progress=False)

        t_e2e = best_of(end_to_end, args.repeats)
        r_read, r_cold, r_desc, r_e2e = n / t_read, n / t_cold, n / t_desc, n / t_e2e
        print(f"{n} samples of 3x{S}x{S} uint8 ({args.split} of {shards}), {len(descriptor_names())} descriptors, "
              f"batch {args.batch_size}, 1 thread")
        print(f"  shard reads (ShardDataset.image, in order) {r_read:10.0f} samples/s (page cache)")
        print(f"  shard reads, evicted from the page cache   {r_cold:10.0f} samples/s")
        print(f"  descriptors (describe, in memory)          {r_desc:10.0f} samples/s   (goal >= 2000 at 64 px)")
        print(f"  end to end (extract_symmetry_to_file)      {r_e2e:10.0f} samples/s")
        print(f"RATIO descriptors / shard reads: {r_desc / r_read:.3f} (page cache), {r_desc / r_cold:.3f} (evicted)"
              "  (> 1: describing costs less than reading)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
