"""replicates: every variant's scores across training seeds (the run's seed and the replicates) -> replicates.json/.csv.

Each --summary is SEED=PATH of one summary.json of the same data; the output gives, per variant, the mean,
standard deviation and range of test balanced accuracy and top-1 over seeds, and the dev-chosen best TDC minus
best flat per seed with its mean and 95 % t-interval over seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def _seed_path(text: str):
    seed, sep, path = text.partition("=")
    if not sep or not seed.isdigit() or not path:
        raise argparse.ArgumentTypeError(f"expected SEED=PATH/summary.json, got {text!r}")
    return int(seed), path


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--summary", required=True, nargs="+", type=_seed_path, metavar="SEED=SUMMARY",
                   help="summary.json of every training seed (required)")
    p.add_argument("--out", required=True, help="replicates.json to write; replicates.csv beside it (required)")
    return p


def run(args):
    from cbedtdc.evaluate.replicates import REPLICATE_FIELDS, aggregate, csv_rows, load_summaries
    from cbedtdc.evaluate.tables import jsonable
    from cbedtdc.io import write_csv, write_json

    agg = aggregate(load_summaries(args.summary), dict(args.summary))
    out = Path(args.out)
    write_json(out, jsonable(agg))
    write_csv(out.with_suffix(".csv"), csv_rows(agg), REPLICATE_FIELDS)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
