"""gallery: PNG with one CBED stack (three zone axes) per class of the run.

Exit code 2 when none of the classes occurs in the given files.
"""

from __future__ import annotations

import argparse
import logging
import sys


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--raw", nargs="+", required=True, help="challenge-layout files to take the stacks from (required)")
    p.add_argument("--out", required=True, help="PNG to write (required)")
    p.add_argument("--classes", default="top20",
                   help="top20, all, or comma-separated space groups, in display order (default: top20)")
    p.add_argument("--per-row", type=int, default=4, help="classes per figure row (default: 4)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("gallery")
    from cbedtdc.classes import resolve_classes
    from cbedtdc.synth.gallery import plot_gallery

    spec = args.classes.strip()
    try:
        if spec not in ("top20", "all"):
            spec = [int(x) for x in spec.replace(",", " ").split()]
        classes = resolve_classes(spec)
        plot_gallery(args.raw, classes, args.out, classes_per_row=args.per_row)
    except ValueError as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
