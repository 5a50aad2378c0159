"""tune_heads: the same grid of head settings for the flat head and the TDC's level heads, scored on dev only.

Reads FEATURES.../train.h5 and dev.h5 (one folder per source, joined by key), never test.h5; writes every
try with its dev balanced accuracy, top-1 and macro-F1 to --out (CSV, column ``chosen`` = 1 for the best try
of each side). The grid is a YAML file (``grid:`` option -> values, ``base:`` fixed options), e.g.
config/tuning.yaml. See cbedtdc.evaluate.tune.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cascade.routing import DEFAULT, ROUTINGS  # noqa: E402
from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--features", required=True, nargs="+", help="folders with train.h5 and dev.h5, one per feature "
                   "source (required)")
    p.add_argument("--run-classes", required=True, help="run_classes.json of rule check_classes (required)")
    p.add_argument("--grid", required=True, help="YAML tuning grid, e.g. config/tuning.yaml (required)")
    p.add_argument("--levels", default=None, help="levels.json of rule plan_levels: also tune the TDC's level "
                   "heads (default: the flat side only)")
    p.add_argument("--routing", default=DEFAULT, choices=ROUTINGS, help="the TDC's routing rule, tuned on dev for "
                   f"every try (default: {DEFAULT}, config tdc.routing)")
    p.add_argument("--seed", type=int, default=0, help="seed of every head's initialisation and sampling (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="torch / XGBoost threads, 0 = their default (default: 0)")
    p.add_argument("--out", required=True, help="CSV of every try and its dev scores (required)")
    return p


def run(args):
    from cbedtdc.evaluate.tune import run_tuning

    chosen = run_tuning(args.features, args.run_classes, args.grid, args.out, levels_path=args.levels,
                        routing=args.routing, seed=args.seed, threads=args.threads)
    for side, row in chosen.items():
        print(f"{side}: try {row['try']} {row['setting']} dev balanced accuracy {row['dev_balanced_accuracy']:.4f}")


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
