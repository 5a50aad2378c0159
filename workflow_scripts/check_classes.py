"""check_classes: the run's classes against the data, before any training job.

Fails (exit 2, one line) when a class of the run has no training sample, or the run has no dev or test sample,
naming the missing classes and what to set; otherwise writes the checked per-class counts (JSON).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("cbedtdc.workflow.check_classes")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--counts", required=True, help="class_counts.csv written by rule split (required)")
    p.add_argument("--classes", required=True, help="comma-separated space groups of the run (required)")
    p.add_argument("--out", required=True, help="JSON of the checked per-class counts (required)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cbedtdc.checks import ClassCheckError, check_class_counts, write_checked

    classes = [int(c) for c in args.classes.split(",") if c.strip()]
    try:
        counts = check_class_counts(args.counts, classes)
    except (ClassCheckError, OSError) as err:
        log.error("%s", err)
        return 2
    write_checked(args.out, counts)
    log.info("%d classes checked against %s", len(classes), args.counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
