"""tune_routing_shared: routing.json of the shared-backbone TDC, tuned on the dev features.

One temperature per level head (fitted on dev), then the rule's own parameters (thresholds, prior
correction) chosen on dev, as for the own-backbone cascade (:mod:`cbedtdc.cascade.routing.rules`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import add_routing_arg, run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--levels", required=True, help="levels.json (required)")
    p.add_argument("--heads", required=True, help="folder of the level heads with heads.json (required)")
    p.add_argument("--features", required=True, nargs="+", help="folders with dev.h5 of the feature sources of "
                   "the level heads (required)")
    p.add_argument("--out", required=True, help="routing.json to write (required)")
    add_routing_arg(p)
    return p


def run(args):
    from cbedtdc.cascade.shared import tune_shared_routing

    tune_shared_routing(args.levels, args.heads, args.features, args.out, routing=args.routing)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
