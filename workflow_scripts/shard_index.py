"""shard_index: write results/shards/{train,dev,test}.csv, the sample list of each split."""

from __future__ import annotations

import argparse
import logging
import sys


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--splits", required=True, help="splits CSV from the split rule (required)")
    p.add_argument("--sidecars", nargs="+", required=True, help="JSON sidecars of the shards (required)")
    p.add_argument("--shard-root", required=True, help="folder of the shards and split lists (required)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("shard_index")
    from cbedtdc.data import DataError, build_shard_index

    try:
        build_shard_index(args.splits, args.sidecars, args.shard_root)
    except (DataError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
