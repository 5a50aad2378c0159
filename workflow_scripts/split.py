"""split: assign every manifest sample to train/dev/test (file-given, or re-split by material)."""

from __future__ import annotations

import argparse
import logging
import sys


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


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("split")
    from cbedtdc.data import DataError, write_splits

    try:
        write_splits(args.manifest, args.splits, args.counts, resplit=args.resplit, fractions=args.fractions,
                     seed=args.seed)
    except (DataError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
