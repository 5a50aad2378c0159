"""tune_routing_shared: routing.json of the shared-backbone TDC, tuned on the dev features.

One temperature per level head (fitted on dev), then the thresholds (threshold routing) or the
prior correction (posterior routing) chosen on dev, as for the own-backbone cascade.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--levels", required=True, help="levels.json (required)")
    p.add_argument("--heads", required=True, help="folder of the level heads with heads.json (required)")
    p.add_argument("--features", required=True, help="folder with dev.h5 of the shared backbone (required)")
    p.add_argument("--out", required=True, help="routing.json to write (required)")
    from cbedtdc.config import schema_property

    routing = schema_property("tdc", "routing")  # config/schema.yaml: the allowed values and the default
    p.add_argument("--routing", default=routing["default"], choices=routing["enum"],
                   help="rest reading's routing rule (tdc.routing); the hard reading uses thresholds "
                   f"(default: {routing['default']})")
    return p


def run(args):
    from cbedtdc.headjobs import tune_shared_routing

    tune_shared_routing(args.levels, args.heads, args.features, args.out, routing=args.routing)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
