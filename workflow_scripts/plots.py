"""plots: figures of the evaluation (headline scores, per-class recall, confusion, TDC routing).

Reads the tables that rule evaluate wrote into ``--metrics`` and writes headline.png, recall.png,
confusion.png and routing.png into ``--out``; no model is loaded, so figures are redrawn in seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--metrics", required=True, help="folder with summary.json and the CSV tables (required)")
    p.add_argument("--out", required=True, help="folder for the PNG files (required)")
    return p


def run(args):
    from cbedtdc.plots import plot_all

    plot_all(args.metrics, args.out)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
