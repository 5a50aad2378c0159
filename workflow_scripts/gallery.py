"""gallery: PNG with one CBED stack (three zone axes) per class of the run.

Exit code 2 when none of the classes occurs in the given files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import classes_arg, run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--raw", nargs="+", required=True, help="challenge-layout files to take the stacks from (required)")
    p.add_argument("--out", required=True, help="PNG to write (required)")
    p.add_argument("--classes", type=classes_arg, default="top20",
                   help="top20, all, or comma-separated space groups, in display order (default: top20)")
    p.add_argument("--per-row", type=int, default=4, help="classes per figure row (default: 4)")
    return p


def run(args):
    from cbedtdc.classes import resolve_classes
    from cbedtdc.synth.gallery import plot_gallery

    plot_gallery(args.raw, resolve_classes(args.classes), args.out, classes_per_row=args.per_row)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
