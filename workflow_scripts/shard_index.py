"""shard_index: write results/shards/{train,dev,test}.csv, the sample list of each split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--splits", required=True, help="splits CSV from the split rule (required)")
    p.add_argument("--sidecars", nargs="+", required=True, help="JSON sidecars of the shards (required)")
    p.add_argument("--shard-root", required=True, help="folder of the shards and split lists (required)")
    p.add_argument("--info", default=None, help="data_info.json to write: raw layout and bootstrap unit "
                   "(default: none)")
    return p


def run(args):
    from cbedtdc.data import build_shard_index

    build_shard_index(args.splits, args.sidecars, args.shard_root, info_path=args.info)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
