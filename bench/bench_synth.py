"""Generator speed and memory: samples/s/core at 3x128^2 and 3x512^2, crystal generation included.

Each measurement writes a real challenge-layout file with ``cbedtdc.synth.write_file`` in a
fresh single-threaded worker process (so import and table loading are paid as in a
``synthesize`` job, but reported apart), and prints:

* samples/s/core per image size, and the ratio to the 40/s/core goal at 128^2;
* the share of crystal generation (random Wyckoff placement + two spglib checks) and of the
  per-material preparation (reflections, structure factors) in one core's time;
* the peak RSS of a worker writing N and 2N materials (ratio ~1: memory does not grow with
  the file, at most one stack is held);
* the projected wall time of the default ``make run`` data (config/config.yaml) on ``--cores``.

Run on an idle machine:  .venv/bin/python bench/bench_synth.py
Dynamical mode:          .venv/bin/python bench/bench_synth.py --mode bloch --materials 10 --sizes 128
Quick smoke run:         .venv/bin/python bench/bench_synth.py --materials 6 --sizes 64
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path


def _worker(args):
    size, n_materials, classes, energies, seed, out_dir, mode = args
    os.environ["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    from cbedtdc.classes import resolve_classes
    from cbedtdc.synth import SynthConfig, write_file
    from cbedtdc.synth import crystal as crystal_mod
    from cbedtdc.synth import generate as gen

    cfg = SynthConfig(classes=tuple(resolve_classes(classes)), n_materials=max(10 * n_materials, 100),
                      energies_per_material=energies, image_size=size, seed=seed, mode=mode)
    for sg in set(cfg.classes):  # Wyckoff tables (once per job)
        crystal_mod.wyckoff_orbits(sg)
    t_setup = time.perf_counter() - t0

    timers = {"crystal": 0.0, "material": 0.0}
    real_crystal, real_material = gen.random_crystal, gen.make_material

    def timed_crystal(*a, **k):
        t = time.perf_counter()
        try:
            return real_crystal(*a, **k)
        finally:
            timers["crystal"] += time.perf_counter() - t

    def timed_material(*a, **k):
        t = time.perf_counter()
        try:
            return real_material(*a, **k)
        finally:
            timers["material"] += time.perf_counter() - t

    gen.random_crystal, gen.make_material = timed_crystal, timed_material
    path = Path(out_dir) / "batch_train_0.h5"
    t1 = time.perf_counter()
    write_file(path, cfg, 0, n_materials)
    t_write = time.perf_counter() - t1
    size_mb = path.stat().st_size / 2**20
    path.unlink()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": size, "materials": n_materials, "samples": n_materials * energies, "setup_s": t_setup,
            "write_s": t_write, "crystal_s": timers["crystal"], "material_s": timers["material"],
            "rss_mb": rss_mb, "file_mb": size_mb}


def _run(task):
    ctx = mp.get_context("spawn")  # fresh interpreter: honest import + table cost, own RSS
    with ctx.Pool(1) as pool:
        return pool.map(_worker, [task])[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="image sides (default: 128 512)")
    p.add_argument("--materials", type=int, default=100,
                   help="materials per measurement at 128^2, scaled by (128/size)^2, at least 4 (default: 100)")
    p.add_argument("--energies", type=int, default=3, help="samples per material (default: 3)")
    p.add_argument("--classes", default="top20", help="top20 or all (default: top20)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--mode", choices=["kinematic", "bloch"], default="kinematic",
                   help="intensity model (default: kinematic)")
    p.add_argument("--cores", type=int, default=2, help="cores for the make-run projection (default: 2)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        print(f"bench_synth: mode={args.mode} classes={args.classes} energies/material={args.energies} "
              f"(single process, 1 thread; crystal generation included)")
        print(f"{'size':>6} {'samples':>8} {'write s':>8} {'samples/s/core':>15} {'crystal %':>10} "
              f"{'material %':>11} {'setup s':>8} {'MB/sample':>10}")
        rates = {}
        for size in args.sizes:
            n = max(4, round(args.materials * (128 / size) ** 2))
            r = _run((size, n, args.classes, args.energies, args.seed, tmp, args.mode))
            rate = r["samples"] / r["write_s"]
            rates[size] = rate
            print(f"{size:>6} {r['samples']:>8} {r['write_s']:>8.2f} {rate:>15.1f} "
                  f"{100 * r['crystal_s'] / r['write_s']:>9.1f}% {100 * r['material_s'] / r['write_s']:>10.1f}% "
                  f"{r['setup_s']:>8.2f} {r['file_mb'] / r['samples']:>10.3f}")
        if 128 in rates:
            print(f"ratio to the goal of 40 samples/s/core at 128^2: {rates[128] / 40:.2f}x")
        if 128 in rates and 512 in rates:
            print(f"ratio 128^2 / 512^2 rate: {rates[128] / rates[512]:.2f}x (pixels: 16x)")

        size = min(args.sizes)
        n = max(4, round(args.materials * (128 / size) ** 2 / 2))
        one, two = (_run((size, m, args.classes, args.energies, args.seed, tmp, args.mode)) for m in (n, 2 * n))
        print(f"peak RSS writing {n} vs {2 * n} materials at {size}^2: {one['rss_mb']:.0f} MB vs "
              f"{two['rss_mb']:.0f} MB (ratio {two['rss_mb'] / one['rss_mb']:.2f}; bounded if ~1)")

        if 128 in rates:
            import yaml

            cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
            s = cfg["synth"]
            if s["image_size"] in rates:
                samples = s["n_materials"] * s["energies_per_material"]
                files = -(-s["n_materials"] // s["materials_per_file"])
                wall = samples / (rates[s["image_size"]] * args.cores) + files * r["setup_s"] / args.cores
                print(f"default make-run data ({s['n_materials']} materials x {s['energies_per_material']} at "
                      f"{s['image_size']}^2 = {samples} samples, {files} jobs): ~{wall:.0f} s on {args.cores} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
