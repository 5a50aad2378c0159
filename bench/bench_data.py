"""Benchmarks of the data stage; prints two ratios measured in one run.

1. read ratio: random-access samples/s through ``ShardDataset`` + ``DataLoader`` (2 workers,
   batches of 64, shuffled) divided by samples/s of ``np.memmap`` random reads of the same
   bytes (a flat uint8 file), printed twice: with the memmap read per sample through the same
   DataLoader (like for like), and as fancy-indexed batches in one process without any
   DataLoader (the raw memory-copy speed). Goal >= 0.5.
2. conversion ratio: raw -> shard stacks/s on one core (``write_shard``: read, log scale, area
   resize, uint8, checksums, write) divided by stacks/s of plain h5py reading of the same raw
   stacks (``f[group]["cbed_stack"][()]``), on one core. Goal >= 0.8. Measured twice: with the
   raw files in the page cache (compute-bound) and evicted from it before each pass
   (``posix_fadvise(DONTNEED)``: storage-bound, as in a real run over 549 GiB).

Also prints per-core rates (stacks/s, MB/s) of index, convert and read, which docs/data.md
uses to size a full run. Synthetic raw files are written unless ``--raw-dir`` is given.

Run on an idle machine: ``.venv/bin/python bench/bench_data.py`` (default: 192 stacks of
512 px -> 128 px shards, about 600 MB of raw files in a temporary folder).
Smoke test: ``.venv/bin/python bench/bench_data.py --n-samples 16 --side 64 --image-size 32``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_data")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--raw-dir", default=None, help="folder of real batch_*.h5 files (default: write synthetic ones)")
    p.add_argument("--max-files", type=int, default=4, help="raw files used from --raw-dir (default: 4)")
    p.add_argument("--n-samples", type=int, default=192, help="synthetic stacks in total (default: 192)")
    p.add_argument("--per-file", type=int, default=48, help="synthetic stacks per raw file (default: 48)")
    p.add_argument("--side", type=int, default=512, help="side of the synthetic raw stacks (default: 512)")
    p.add_argument("--image-size", type=int, default=128, help="shard image side (default: 128)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the read benchmark (default: 64)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default: 2)")
    p.add_argument("--epochs", type=int, default=3, help="timed passes of each read benchmark (default: 3)")
    p.add_argument("--read-copies", type=int, default=20,
                   help="the shards are replicated this many times for the read benchmark so an epoch is long "
                        "enough to time (default: 20)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes of each conversion benchmark (default: 2)")
    p.add_argument("--work", default=None, help="work folder, kept (default: a temporary folder, removed)")
    return p


# ------------------------------------------------------------------ helpers
def write_synthetic(raw: Path, n: int, per_file: int, side: int, seed: int = 0) -> list[Path]:
    import h5py

    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range((n + per_file - 1) // per_file):
        path = raw / f"batch_train_{f}.h5"
        with h5py.File(path, "w") as fh:
            for i in range(min(per_file, n - f * per_file)):
                g = fh.create_group(f"sample_{i}_0")
                stack = (10.0 ** rng.uniform(-12, 5, size=(3, side, side))).astype(np.float32)
                g.create_dataset("cbed_stack", data=stack)
                g.attrs["space_group"] = np.bytes_(str(int(rng.integers(1, 231))).encode())
                g.attrs["material"] = np.bytes_(f"mp-{f}-{i}".encode())
                g.attrs["energy_keV"] = 100
        paths.append(path)
    return paths


def evict(paths) -> bool:
    """Drop the files from the page cache (clean pages only; files are fsynced first)."""
    ok = hasattr(os, "posix_fadvise")
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            if ok:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return ok


def best_of(fn, repeats, before=None):
    times = []
    for _ in range(repeats):
        if before:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def plain_read(paths):
    import h5py

    n = 0
    for p in paths:
        with h5py.File(p, "r") as fh:
            for g in fh:
                fh[g]["cbed_stack"][()]
                n += 1
    return n


# ------------------------------------------------------------------ benchmarks
def bench_conversion(paths, work: Path, image_size: int, repeats: int):
    from cbedtdc.io import index_file
    from cbedtdc.preprocess import write_shard

    indexes = [index_file(p) for p in paths]
    n = sum(len(i["samples"]) for i in indexes)
    stack_mb = 3 * indexes[0]["samples"][0]["side"] ** 2 * 4 / 1e6
    out = work / "conv"

    def convert():
        for p, idx in zip(paths, indexes):
            target = out / f"{p.stem}.h5"
            write_shard(p, idx, target, image_size=image_size)

    def index():
        for p in paths:
            index_file(p)

    results = {}
    for mode, before in (("cached", None), ("evicted", lambda: evict(paths))):
        plain_read(paths)  # warm imports and, for "cached", the page cache
        t_read = best_of(lambda: plain_read(paths), repeats, before)
        t_index = best_of(index, repeats, before)
        t_conv = best_of(convert, repeats, before)
        results[mode] = {"read": n / t_read, "index": n / t_index, "convert": n / t_conv}
    return n, stack_mb, results


def bench_reads(shard_root: Path, work: Path, batch_size: int, workers: int, epochs: int, copies: int):
    import torch

    from cbedtdc.data import ShardDataset

    base = ShardDataset(shard_root, "train")
    n = len(base) * copies
    s = base.image_size
    # The memmap baseline: exactly the same uint8 bytes, in dataset order, in one flat file.
    flat = work / "flat.u8"
    with open(flat, "wb") as fh:
        one = b"".join(base.image(i).tobytes() for i in range(len(base)))
        for _ in range(copies):
            fh.write(one)
    mm = np.memmap(flat, dtype=np.uint8, mode="c", shape=(n, 3, s, s))  # "c": batches come out writable
    # ShardDataset over `copies` replicas of the shard set (same files, repeated rows).
    ds = base.subset(np.tile(np.arange(len(base)), copies))
    labels = torch.from_numpy(ds.labels)

    def memmap_epoch(seed):
        order = np.random.default_rng(seed).permutation(n)
        total = 0
        for b in range(0, n, batch_size):
            idx = order[b: b + batch_size]
            x = torch.from_numpy(mm[np.sort(idx)])  # fancy index: one copy per batch
            y = labels[idx]
            total += x.shape[0] + 0 * int(y[0])
        return total

    class MemmapDataset:
        """np.memmap random reads of the same bytes, one sample per __getitem__ (what a raw-array loader does)."""

        def __len__(self):
            return n

        def __getitem__(self, i):
            return torch.from_numpy(np.array(mm[i])), int(labels[i])

    class InMemory:
        """The same bytes already in RAM: the DataLoader's own ceiling (worker -> main transfer)."""

        def __init__(self):
            self.x = torch.from_numpy(np.ascontiguousarray(mm))

        def __len__(self):
            return n

        def __getitem__(self, i):
            return self.x[i], int(labels[i])

    def make_epoch(dataset, n_workers):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=n_workers,
                                             persistent_workers=n_workers > 0,
                                             generator=torch.Generator().manual_seed(0))

        def epoch(_seed):
            return sum(x.shape[0] for x, _ in loader)
        return epoch

    rates = {}
    for name, epoch in (("memmap", memmap_epoch),
                        (f"ShardDataset+DataLoader({workers})", make_epoch(ds, workers)),
                        (f"memmap+DataLoader({workers})", make_epoch(MemmapDataset(), workers)),
                        (f"in-memory+DataLoader({workers})", make_epoch(InMemory(), workers)),
                        ("ShardDataset+DataLoader(0)", make_epoch(ds, 0))):
        epoch(1000)  # warm-up: page cache, worker start-up
        t = time.perf_counter()
        for e in range(epochs):
            assert epoch(e) == n
        rates[name] = n * epochs / (time.perf_counter() - t)
    return n, s, rates


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.raw_dir:
            from cbedtdc.layout import discover_raw

            paths = [p for _, p in sorted(discover_raw(args.raw_dir).items())][: args.max_files]
        else:
            paths = write_synthetic(work / "raw", args.n_samples, args.per_file, args.side)
        n, stack_mb, conv = bench_conversion(paths, work, args.image_size, args.repeats)
        print(f"conversion: {n} stacks of {stack_mb:.2f} MB -> {args.image_size} px uint8, one core")
        for mode, r in conv.items():
            print(f"  {mode:8s} read {r['read']:8.1f} stacks/s ({r['read'] * stack_mb:7.1f} MB/s) | "
                  f"index {r['index']:8.1f} stacks/s | convert {r['convert']:8.1f} stacks/s "
                  f"({r['convert'] * stack_mb:7.1f} MB/s)")
        # Shards for the read benchmark, through the library's full data stage.
        from cbedtdc.data import build_shard_index, write_manifest, write_splits
        from cbedtdc.io import index_file, write_json
        from cbedtdc.preprocess import write_shard

        data, shards = work / "data", work / "shards"
        idx_paths, sidecars = [], []
        for p in paths:
            idx = index_file(p)
            idx["split"] = "train"
            for r in idx["samples"]:
                r["split"] = "train"
            write_json(data / f"{p.stem}.json", idx)
            idx_paths.append(data / f"{p.stem}.json")
            write_shard(p, idx, shards / "files" / f"{p.stem}.h5", image_size=args.image_size)
            sidecars.append(shards / "files" / f"{p.stem}.json")
        write_manifest(idx_paths, data / "m.csv", data / "q.csv", data / "r.json", max_fraction=1.0)
        write_splits(data / "m.csv", data / "s.csv", data / "c.csv")
        build_shard_index(data / "s.csv", sidecars, shards)
        n_read, s, rates = bench_reads(shards, work, args.batch_size, args.workers, args.epochs, args.read_copies)
        print(f"random reads: {n_read} samples of 3x{s}x{s} uint8, batch {args.batch_size}, "
              f"{args.workers} DataLoader workers")
        for name, r in rates.items():
            print(f"  {name:32s} {r:10.0f} samples/s ({r * 3 * s * s / 1e6:7.1f} MB/s)")
        w = args.workers
        sd = rates[f"ShardDataset+DataLoader({w})"]
        print(f"RATIO read, same DataLoader({w}) (ShardDataset / np.memmap dataset): "
              f"{sd / rates[f'memmap+DataLoader({w})']:.2f}  (goal >= 0.5)")
        print(f"RATIO read, ShardDataset+DataLoader({w}) / np.memmap batches in one process (no DataLoader): "
              f"{sd / rates['memmap']:.2f}  (goal >= 0.5)")
        print(f"ratio ShardDataset+DataLoader({w}) / in-memory+DataLoader({w}): "
              f"{rates[f'ShardDataset+DataLoader({w})'] / rates[f'in-memory+DataLoader({w})']:.2f}  "
              "(the DataLoader's own transfer cost is the ceiling)")
        print(f"ratio ShardDataset+DataLoader(0) / np.memmap: {rates['ShardDataset+DataLoader(0)'] / rates['memmap']:.2f}")
        for mode, r in conv.items():
            print(f"RATIO conversion {mode} (convert / plain h5py read, per core): "
                  f"{r['convert'] / r['read']:.2f}  (goal >= 0.8)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
