"""tune_routing: per-level routing thresholds of the TDC, tuned on dev to maximise balanced accuracy.

Writes ``routing.json``. Hard reading (and rest reading with ``tdc.routing: threshold``): a
sample trickles from level k when its largest class probability is below (resp. its "rest"
probability above) threshold k; the thresholds are set by coordinate ascent on the dev
split's end-to-end balanced accuracy. Rest reading with argmax routing: nothing to tune.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import inference_parser, run_cli, set_torch_threads  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--tdc", required=True, help="TDC folder with levels.json and level_K/best.pt (required)")
    p.add_argument("--shards", required=True, help="shard root with dev.csv (required)")
    p.add_argument("--out", required=True, help="routing.json to write (required)")
    from cbedtdc.config import schema_property

    routing = schema_property("tdc", "routing")  # config/schema.yaml: the allowed values and the default
    p.add_argument("--routing", default=routing["default"], choices=routing["enum"],
                   help="rest reading (tdc.routing): forward when 'rest' wins (argmax), when p(rest) exceeds a "
                   "threshold tuned on dev (threshold), or by the hierarchical posterior (posterior); ignored in "
                   f"the hard reading (default: {routing['default']})")
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
