"""collect_missed: run TDC level k on the samples that reached it and list those that reach level k+1.

Writes ``missed.csv`` (key, split, space_group, reason, pred, p_pred, p_rest, routed) for the
train and dev splits. Rest reading: the samples of later levels' classes trickle (reason
``later_level``); ``routed`` says whether inference routing ("rest" wins) would also forward
them. Hard reading: the samples the level gets wrong (``wrong``) or cannot output
(``not_in_level``) trickle; they are level k+1's training set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("cbedtdc.workflow.collect_missed")


from cbedtdc.cliutil import inference_parser, set_torch_threads, setup_logging

def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--levels", required=True, help="levels.json from plan_levels (required)")
    p.add_argument("--level", required=True, type=int, help="level, 1-based (required)")
    p.add_argument("--model", required=True, help="best.pt of the level (required)")
    p.add_argument("--shards", required=True, help="shard root with train.csv and dev.csv (required)")
    p.add_argument("--missed", nargs="*", default=[],
                   help="missed.csv of the previous level (hard reading, level > 1); "
                   "given with no file = none (default: none)")
    p.add_argument("--out", required=True, help="missed.csv to write (required)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging()
    from cbedtdc.cascade import collect_missed

    try:
        set_torch_threads(args.threads)
        missed = args.missed[0] if args.missed else None
        rows, stats = collect_missed(args.levels, args.level, args.model, args.shards, missed_path=missed,
                                     out_path=args.out, batch_size=args.batch_size, device=args.device)
    except (OSError, KeyError, ValueError) as err:
        log.error("%s", err)
        return 2
    for split, s in stats.items():
        log.info("%s: %d reached level %d, %d trickle (%s)", split, s["reached"], args.level, s["missed"],
                 ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items())) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
