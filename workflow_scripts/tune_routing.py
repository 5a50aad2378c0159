"""tune_routing: the own-backbone TDC's routing rule (tdc.routing), tuned on dev to maximise balanced accuracy.

Writes ``routing.json``: one temperature per level fitted on dev, then the rule's own parameters (the
thresholds of the threshold rule, the prior correction of the posterior rule), chosen on the dev split's
end-to-end balanced accuracy (:mod:`cbedtdc.cascade.routing.rules`). The hard reading always thresholds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import add_routing_arg, inference_parser, run_cli, set_torch_threads  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--tdc", required=True, help="TDC folder with levels.json and level_K/best.pt (required)")
    p.add_argument("--shards", required=True, help="shard root with dev.csv (required)")
    p.add_argument("--out", required=True, help="routing.json to write (required)")
    add_routing_arg(p)
    return p


def run(args):
    from cbedtdc.cascade import tune_routing

    set_torch_threads(args.threads)
    tune_routing(args.tdc, args.shards, args.out, routing=args.routing, batch_size=args.batch_size,
                 device=args.device)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
