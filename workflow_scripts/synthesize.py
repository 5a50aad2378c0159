"""synthesize: write one challenge-layout file of generated CBED stacks (batch_{split}_N.h5).

The split comes from the output file name; which space group every material gets is a
deterministic function of the generator settings and the seed, so all files can be written
by independent jobs. Exit code 2 on a known error (bad settings, unverifiable crystal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import classes_arg, run_cli  # noqa: E402


def get_parser(add_help=True):
    from cbedtdc.config import schema_defaults
    from cbedtdc.synth.generate import THICKNESS

    d, seed = schema_defaults("synth"), schema_defaults()["seed"]  # config/schema.yaml: the defaults' one source
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--out", required=True, help="output file results/raw/batch_{train,dev,test}_N.h5 (required)")
    p.add_argument("--first-material", type=int, default=0,
                   help="index (within the split) of the file's first material (default: 0)")
    p.add_argument("--file-materials", type=int, required=True, help="materials in this file (required)")
    p.add_argument("--n-materials", type=int, default=d["n_materials"],
                   help=f"materials in total over the three splits (default: {d['n_materials']})")
    p.add_argument("--split-materials", type=int, nargs=3, metavar=("TRAIN", "DEV", "TEST"), default=None,
                   help="materials per split, overriding the 79/11/10 %% split of --n-materials (default: none)")
    p.add_argument("--classes", type=classes_arg, default="top20",
                   help="top20, all, or comma-separated space groups (default: top20)")
    p.add_argument("--energies", type=int, default=d["energies_per_material"],
                   help=f"samples (energies 100, 110, ... keV) per material (default: {d['energies_per_material']})")
    p.add_argument("--image-size", type=int, default=d["image_size"],
                   help=f"side of the written cbed_stack (default: {d['image_size']})")
    p.add_argument("--frequency", choices=["real", "balanced"], default=d["frequency"],
                   help=f"materials per class: real frequencies or equal (default: {d['frequency']})")
    p.add_argument("--floor", type=int, default=d["floor"],
                   help=f"minimum materials per class and split (default: {d['floor']})")
    p.add_argument("--zone-axes", choices=["lowindex", "namsa"], default=d["zone_axes"],
                   help=f"zone-axis policy (default: {d['zone_axes']})")
    p.add_argument("--noise", action=argparse.BooleanOptionalAction, default=d["noise"],
                   help=f"detector blur, background and Poisson noise (default: {d['noise']})")
    p.add_argument("--holz", action=argparse.BooleanOptionalAction, default=d["holz"],
                   help=f"higher-order Laue zone reflections (default: {d['holz']})")
    p.add_argument("--mistilt", type=float, default=d["mistilt"],
                   help=f"beam mistilt s.d. as a fraction of the disk radius (default: {d['mistilt']})")
    p.add_argument("--mode", choices=["kinematic", "bloch", "multislice"], default=d["mode"],
                   help=f"intensity model: kinematic two-beam, dynamical Bloch waves, or abTEM multislice "
                        f"(default: {d['mode']})")
    p.add_argument("--phonons", type=int, default=d["phonons"],
                   help=f"multislice: frozen-phonon configurations per panel (default: {d['phonons']})")
    p.add_argument("--slice-thickness", type=float, default=d["slice_thickness"],
                   help=f"multislice: slice thickness in A (default: {d['slice_thickness']})")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default=d["device"],
                   help=f"multislice: auto (GPU when CuPy sees one), cpu or gpu (default: {d['device']})")
    p.add_argument("--tail-min-train", type=int, default=d["tail_min_train"],
                   help="extra training materials for every class below this many training samples (the tail "
                        "option; needed to write its files, numbered after the plain train files; "
                        f"default: {d['tail_min_train']}, off)")
    p.add_argument("--thickness", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="specimen thickness range in A, drawn uniformly per sample (rule robustness_synthesize; "
                        f"default: the generator's {THICKNESS[0]:g}-{THICKNESS[1]:g})")
    p.add_argument("--seed", type=int, default=seed, help=f"master seed (default: {seed})")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="tqdm progress bar on stderr (default: on)")
    return p


def run(args):
    from cbedtdc.synth import synthesize_file

    synthesize_file(args.out, args.first_material, args.file_materials, classes=args.classes,
                    split_materials=args.split_materials, progress=args.progress, n_materials=args.n_materials,
                    energies_per_material=args.energies, image_size=args.image_size, frequency=args.frequency,
                    floor=args.floor, zone_axes=args.zone_axes, noise=args.noise, holz=args.holz,
                    mistilt=args.mistilt, mode=args.mode, phonons=args.phonons,
                    slice_thickness=args.slice_thickness, device=args.device, tail_min_train=args.tail_min_train,
                    thickness=tuple(args.thickness) if args.thickness else None, seed=args.seed)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
