"""synth.mode multislice speed: CPU seconds per panel (abTEM, one thread), crystal and preparation included.

Writes a real challenge-layout file with ``cbedtdc.synth.write_file`` (``--materials`` materials of the top-20
classes, one energy each, ``--phonons`` frozen-phonon configurations, the sample's random thickness 100-500 A) for
every ``--sizes`` and prints CPU seconds per panel and per material, the real-space grid, and the projected CPU
time of config/multislice.yaml. Then the machine's yardstick (bench/machine_speed.py, bare resnet18 img/s, 1
thread) so the figure can be scaled to another machine; on a loaded machine say so next to the figure.

    .venv/bin/python bench/bench_multislice.py                      # 64 px, 2 phonons, 4 materials
    .venv/bin/python bench/bench_multislice.py --sizes 32 64 128 --materials 2
    .venv/bin/python bench/bench_multislice.py --device gpu         # on a GPU node (CuPy), wall seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one core, as one synthesize job
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64], help="image sides (default: 64)")
    p.add_argument("--materials", type=int, default=4, help="materials per size (default: 4)")
    p.add_argument("--phonons", type=int, default=2, help="frozen-phonon configurations (default: 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="abTEM device (default: cpu)")
    p.add_argument("--yardstick-seconds", type=float, default=10.0,
                   help="seconds of bench/machine_speed.py resnet18 (0: skip; default: 10)")
    args = p.parse_args(argv)

    import yaml

    from cbedtdc.layout import split_material_counts
    from cbedtdc.synth import SynthConfig, write_file
    from cbedtdc.synth.multislice import grid_points

    repo = Path(__file__).resolve().parents[1]
    small = yaml.safe_load((repo / "config" / "multislice.yaml").read_text())["synth"]
    for size in args.sizes:
        cfg = SynthConfig(classes=(14, 62, 2, 15, 12, 194, 225, 166, 139, 4),
                          n_materials=max(3, 10 * args.materials), energies_per_material=1, image_size=size,
                          mode="multislice", phonons=args.phonons, device=args.device)
        with tempfile.TemporaryDirectory() as tmp:
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            write_file(Path(tmp) / "batch_train_0.h5", cfg, 0, args.materials)
            cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
        panels = 3 * args.materials
        per_panel = (wall if args.device == "gpu" else cpu) / panels
        unit = "wall s" if args.device == "gpu" else "CPU s"
        print(f"multislice {size} px, grid {grid_points(size)}^2, {args.phonons} phonons, {args.device}: "
              f"{per_panel:.2f} {unit}/panel, {3 * per_panel:.1f} {unit}/material-energy "
              f"({args.materials} materials, wall {wall:.1f} s)")
        if size == small["image_size"] and args.phonons == small["phonons"]:
            n = sum(split_material_counts(small["n_materials"]).values())
            total = n * small["energies_per_material"] * 3 * per_panel
            print(f"config/multislice.yaml: {n} materials x {small['energies_per_material']} energies x 3 panels x "
                  f"{per_panel:.2f} s = {total / 60:.0f} CPU-min, {total / 120:.0f} min on 2 cores")
    if args.yardstick_seconds > 0:
        from machine_speed import images_per_s

        rate = images_per_s("resnet18", size=64, batch=32, seconds=args.yardstick_seconds, threads=1)
        print(f"yardstick (bench/machine_speed.py): bare resnet18 3x64x64, batch 32, 1 thread: {rate:.1f} img/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
