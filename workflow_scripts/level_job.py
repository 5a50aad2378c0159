"""level_job: the training set, outputs and budget of one TDC level, for workflow_scripts/train.py.

Writes into ``--out-dir``: ``train_keys.csv`` and ``dev_keys.csv`` (column ``key``) and ``args.txt``
(``--classes 14,225,... [--rest] --epochs E``: integers and flags only, generated here,
never a config string; ``--epochs`` is the level's budget, given to the engine once). Rest reading: the samples of the classes of levels k..K. Hard reading:
level 1 all samples of its outputs, level k > 1 the samples in ``--missed`` (level k-1's
``missed.csv``) whose class is among its outputs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import level_parser, run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[level_parser()])
    p.add_argument("--train", required=True, help="results/shards/train.csv (required)")
    p.add_argument("--dev", required=True, help="results/shards/dev.csv (required)")
    p.add_argument("--prev-runs", nargs="*", default=[],
                   help="train.json of the earlier levels (hard reading): the images they saw set the rounding "
                   "carried into this level's budget (default: none)")
    p.add_argument("--out-dir", required=True, help="folder for train_keys.csv, dev_keys.csv, args.txt (required)")
    return p


def run(args):
    from cbedtdc.cascade import write_level_job

    write_level_job(args.levels, args.level, args.train, args.dev, args.out_dir,
                    missed_path=args.missed[0] if args.missed else None, prev_runs=args.prev_runs or None)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
