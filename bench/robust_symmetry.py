"""One-off measurement on dev: the head on the ``symmetry`` descriptors alone under the robustness perturbations,
trained with and without ``features.augment`` (docs/robustness.md, "Holding up").

Reads a finished run (``--results``): the train shards, the run's classes and every dev sample's raw stack
(``data/splits.csv`` names file and group under ``raw/``). Dev is perturbed as rule ``robustness`` perturbs test
(:mod:`cbedtdc.perturb` on the raw stacks, then the shards' preprocessing; perturbation ``k`` draws from
``default_rng([seed, k, 7])``), described with this checkout's descriptors, and scored by a head fitted like
``sym_crt`` (linear, cRT sampler, temperature on clean dev) on the clean train descriptors, then on the clean ones
plus the perturbed copies of :mod:`cbedtdc.features.augment` (the settings of ``--augment``). Test is never read.
Prints dev balanced accuracy, clean and perturbed, with the ratio to clean, and the CPU-seconds of the copies.

    .venv/bin/python bench/robust_symmetry.py --results results
    .venv/bin/python bench/robust_symmetry.py --results results --augment '{"copies": 1}'
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: The dev perturbations (the strengths of issue 25's goals).
PERTURBATIONS = [("dose", 1e3), ("dose", 1e4), ("centre_offset", 0.05), ("q_scale", 0.95), ("q_scale", 1.05),
                 ("blank_panel", 0), ("blank_panel", 1), ("blank_panel", 2)]
SPEC = {"kind": "linear", "loss": "ce", "sampler": "class_balanced", "epochs": 30, "lr": 0.01,
        "weight_decay": 5e-4, "temperature": True, "threads": 1}


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--results", default="results", help="a finished run's results folder (default: results)")
    p.add_argument("--augment", default="{}", help="features.augment settings as JSON, missing keys at their "
                   "defaults (default: {} = the config's defaults)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbations, copies and head (default: 0)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from cbedtdc.classes import read_run_classes
    from cbedtdc.data import ShardDataset
    from cbedtdc.evaluate.robustness import preprocessed, read_raw_stacks
    from cbedtdc.features.augment import Augment, augment_batch
    from cbedtdc.features.symmetry import describe
    from cbedtdc.heads import fit_head
    from cbedtdc.io import read_csv
    from cbedtdc.metrics import balanced_accuracy
    from cbedtdc.perturb import perturb

    res = Path(args.results)
    classes = [int(c) for c in read_run_classes(res / "data" / "run_classes.json")]
    pos = {c: i for i, c in enumerate(classes)}
    rows = [r for r in read_csv(res / "data" / "splits.csv") if r["split"] == "dev" and int(r["space_group"]) in pos]
    raw = read_raw_stacks(rows, sorted((res / "raw").glob("*.h5")))
    y_dev = np.array([pos[int(r["space_group"])] for r in rows])
    size = ShardDataset(res / "shards", "dev").image_size
    dev = {"clean": preprocessed(raw, size)}
    for k, (name, s) in enumerate(PERTURBATIONS):
        rng = np.random.default_rng([args.seed, k, 7])
        dev[f"{name} {s:g}"] = preprocessed(np.stack([perturb(st, name, s, rng) for st in raw]), size)
    f_dev = {k: describe(v)[0] for k, v in dev.items()}

    ds = ShardDataset(res / "shards", "train", orientation="stack")
    x_tr = np.stack([ds.image(i) for i in range(len(ds))])
    keep = np.isin(ds.labels, classes)
    x_tr, y_tr = x_tr[keep], np.array([pos[int(v)] for v in np.asarray(ds.labels)[keep]])
    t = time.process_time()
    f_tr = describe(x_tr)[0]
    t_clean = time.process_time() - t
    d = json.loads(args.augment)
    aug = Augment(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    t = time.process_time()
    copies = [np.concatenate([augment_batch(x_tr[s:s + 256], s, c, aug, args.seed) for s in range(0, len(x_tr), 256)])
              for c in range(aug.copies)]
    t_pert = time.process_time() - t
    t = time.process_time()
    f_aug = [describe(x)[0] for x in copies]
    t_desc = time.process_time() - t
    print(f"dev: {len(rows)} stacks of {len(classes)} classes; train {len(y_tr)} stacks, descriptors "
          f"{t_clean:.1f} CPU-s; {aug.copies} copies ({aug.settings()}): perturbing {t_pert:.1f} CPU-s, "
          f"describing {t_desc:.1f} CPU-s")
    for tag, X, Y in (("clean train", f_tr, y_tr),
                      (f"+ {aug.copies} copies", np.concatenate([f_tr, *f_aug]), np.tile(y_tr, aug.copies + 1))):
        head = fit_head(X, Y, len(classes), spec=SPEC, dev=(f_dev["clean"], y_dev), seed=args.seed)
        ba = {k: balanced_accuracy(y_dev, head.predict(v), range(len(classes))) for k, v in f_dev.items()}
        print(f"{tag:14s} dev clean {ba['clean']:.3f} | " + ", ".join(
            f"{k} {v:.3f} ({v / ba['clean']:.2f})" for k, v in ba.items() if k != "clean"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
