"""One-off measurement: how far the ``symmetry`` descriptors alone separate the space groups.

Computes the descriptors of train, dev and test (cached as features files under ``--features``; delete
them after changing the descriptors), fits ``sklearn.linear_model.LogisticRegression(class_weight=
"balanced")`` on standardised descriptors for every C of ``--C``, picks C on dev balanced accuracy and,
only with ``--test``, scores that one model on test once. Prints the numbers; the pipeline's own heads
(rules ``head``) are what a run uses, this is the measurement behind docs/symmetry.md.

    PYTHONPATH=. .venv/bin/python bench/eval_symmetry.py --shards results/shards            # dev only
    PYTHONPATH=. .venv/bin/python bench/eval_symmetry.py --shards results/shards --test     # + test, once
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # the machine is shared
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

log = logging.getLogger("eval_symmetry")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--shards", default="results/shards", help="shard root (default: results/shards)")
    p.add_argument("--features", default="results/features/symmetry_eval",
                   help="folder of the cached descriptor files {split}.h5 (default: results/features/symmetry_eval)")
    p.add_argument("--C", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0],
                   help="inverse regularisation strengths tried on dev (default: 0.01 0.03 0.1 0.3 1.0)")
    p.add_argument("--max-iter", type=int, default=2000, help="lbfgs iterations (default: 2000)")
    p.add_argument("--batch-size", type=int, default=256, help="descriptor batch (default: 256)")
    p.add_argument("--test", action="store_true", help="also score the dev-chosen model on test (default: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the logistic regression (default: 0)")
    return p


def load(shards, feats_dir: Path, split: str, batch_size: int):
    from cbedtdc.features import read_features
    from cbedtdc.features.symmetry import extract_symmetry_to_file

    path = feats_dir / f"{split}.h5"
    if not path.exists():
        info = extract_symmetry_to_file(shards, split, path, batch_size=batch_size, progress=False)
        print(f"descriptors {split}: {info['n']} samples, {info['dim']}-d, {info['samples_per_s']:.0f} samples/s, "
              f"{info['fallback']} with a fallback panel")
    fs = read_features(path, split=split)
    return fs.features, fs.labels


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    feats = Path(args.features)
    Xtr, ytr = load(args.shards, feats, "train", args.batch_size)
    Xdv, ydv = load(args.shards, feats, "dev", args.batch_size)
    scaler = StandardScaler().fit(Xtr)
    Xtr_s, Xdv_s = scaler.transform(Xtr), scaler.transform(Xdv)
    print(f"train {Xtr.shape}, dev {Xdv.shape}, {len(np.unique(ytr))} classes")
    best = None
    for C in args.C:
        t = time.perf_counter()
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=args.max_iter, random_state=args.seed)
        clf.fit(Xtr_s, ytr)
        pred = clf.predict(Xdv_s)
        bacc = balanced_accuracy_score(ydv, pred)
        print(f"C={C:<8g} dev balanced accuracy {bacc:.4f}  top-1 {np.mean(pred == ydv):.4f}  "
              f"({time.perf_counter() - t:.0f} s)")
        if best is None or bacc > best[0]:
            best = (bacc, C, clf)
    print(f"best on dev: C={best[1]:g}, dev balanced accuracy {best[0]:.4f}")
    if args.test:
        Xte, yte = load(args.shards, feats, "test", args.batch_size)
        pred = best[2].predict(scaler.transform(Xte))
        print(f"test (C={best[1]:g}, chosen on dev): balanced accuracy {balanced_accuracy_score(yte, pred):.4f}  "
              f"top-1 {np.mean(pred == yte):.4f}  n={len(yte)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
