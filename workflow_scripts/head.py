"""head: one classifier head on feature sources (a flat head, or every level of the shared-backbone TDC).

Flat (default): fits one head over the run's classes (--run-classes, in the run's order) on
FEATURES.../train.h5 (one folder per source, joined by key), its temperature on dev.h5, and writes
--out (``.pt`` linear, ``.json`` XGBoost) and ``<out>.meta.json``. With --levels: fits one head per
TDC level (rule tdc_heads) into the folder --out, with heads.json. The head options come as one JSON
object (--spec), the keys of cbedtdc.heads.DEFAULTS.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.errors import InputError  # noqa: E402
from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--features", required=True, nargs="+", help="folders with train.h5 and dev.h5, one per feature "
                   "source (required)")
    p.add_argument("--out", required=True, help="head file (flat) or folder of level heads (--levels) (required)")
    p.add_argument("--run-classes", default=None, help="run_classes.json of rule check_classes: the run's classes "
                   "in the run's order (flat heads; required without --levels)")
    p.add_argument("--levels", default=None, help="levels.json: fit the shared-backbone TDC (default: a flat head)")
    p.add_argument("--spec", default="{}", help="head options as a JSON object (default: {}, cbedtdc.heads.DEFAULTS)")
    p.add_argument("--seed", type=int, default=0, help="seed of the head's initialisation and sampling (default: 0)")
    p.add_argument("--threads", type=int, default=0, help="torch / XGBoost threads while fitting, 0 = their default "
                   "(default: 0; the rules pass their threads)")
    return p


def run(args):
    from cbedtdc.cascade.shared import train_tdc_heads
    from cbedtdc.classes import read_run_classes
    from cbedtdc.heads.jobs import train_flat_head

    try:
        spec = json.loads(args.spec)
    except ValueError as err:
        raise InputError(f"--spec {args.spec!r}: not a JSON object ({err})") from err
    if not isinstance(spec, dict):
        raise InputError(f"--spec {args.spec!r}: not a JSON object")
    if args.threads:
        spec["threads"] = args.threads
    if args.levels:
        train_tdc_heads(args.levels, args.features, args.out, spec=spec, seed=args.seed)
    else:
        if not args.run_classes:
            raise InputError("a flat head needs --run-classes (the run's space groups, run_classes.json)")
        train_flat_head(args.features, args.out, read_run_classes(args.run_classes), spec=spec, seed=args.seed)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
