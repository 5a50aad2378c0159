"""robustness_plot: one panel per perturbation of robustness.csv, one curve per model (results/plots/robustness.png).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--table", required=True, help="results/metrics/robustness.csv (required)")
    p.add_argument("--out", required=True, help="PNG to write (required)")
    return p


def run(args):
    from cbedtdc.io import read_csv
    from cbedtdc.plots_robustness import plot_robustness

    plot_robustness(read_csv(args.table), args.out)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
