"""manifest: merge the per-file indexes into manifest.csv, quarantine.csv and a report.

Fails (exit 2, one line) when more than --max-fraction of the samples are quarantined.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--indexes", nargs="+", required=True, help="JSON indexes from index_raw (required)")
    p.add_argument("--manifest", required=True, help="manifest CSV to write (required)")
    p.add_argument("--quarantine", required=True, help="quarantine CSV to write (required)")
    p.add_argument("--report", required=True, help="JSON report to write (required)")
    p.add_argument("--max-fraction", type=float, default=0.05,
                   help="largest acceptable quarantined fraction (default: 0.05)")
    p.add_argument("--image-size", type=int, default=0,
                   help="shard image side; smaller stacks are quarantined (default: 0 = no check)")
    return p


def run(args):
    from cbedtdc.data import write_manifest

    write_manifest(args.indexes, args.manifest, args.quarantine, args.report,
                   max_fraction=args.max_fraction, min_side=args.image_size)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
