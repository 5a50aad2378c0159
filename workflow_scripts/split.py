"""split: assign every manifest sample to train/dev/test (file-given, or re-split by material)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--manifest", required=True, help="manifest CSV (required)")
    p.add_argument("--splits", required=True, help="splits CSV to write (required)")
    p.add_argument("--counts", required=True, help="class-counts CSV to write (required)")
    p.add_argument("--resplit", action="store_true",
                   help="re-split by material, stratified by space group (default: keep the file-given split)")
    p.add_argument("--fractions", type=float, nargs=3, default=[0.79, 0.11, 0.10], metavar=("TRAIN", "DEV", "TEST"),
                   help="split fractions with --resplit (default: 0.79 0.11 0.10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-split (default: 0)")
    return p


def run(args):
    from cbedtdc.data import write_splits

    write_splits(args.manifest, args.splits, args.counts, resplit=args.resplit, fractions=args.fractions,
                 seed=args.seed)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
