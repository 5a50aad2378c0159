"""collect_missed: run TDC level k on the samples that reached it and list those that reach level k+1.

Writes ``missed.csv`` (key, split, space_group, reason, pred, p_pred, p_rest, routed) for the
train and dev splits. Rest reading: the samples of later levels' classes trickle (reason
``later_level``); ``routed`` says whether argmax routing ("rest" has the largest probability)
would also forward them, a diagnostic: the routing of the run is chosen later, by rule
tune_routing. Hard reading: the samples the level gets wrong (``wrong``) or cannot output
(``not_in_level``) trickle; they are level k+1's training set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging

from cbedtdc.cliutil import inference_parser, level_parser, run_cli, set_torch_threads  # noqa: E402

log = logging.getLogger("cbedtdc.workflow.collect_missed")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help,
                                parents=[level_parser(), inference_parser()])
    p.add_argument("--model", required=True, help="best.pt of the level (required)")
    p.add_argument("--shards", required=True, help="shard root with train.csv and dev.csv (required)")
    p.add_argument("--out", required=True, help="missed.csv to write (required)")
    return p


def run(args):
    from cbedtdc.cascade import collect_missed

    set_torch_threads(args.threads)
    missed = args.missed[0] if args.missed else None
    _, stats = collect_missed(args.levels, args.level, args.model, args.shards, missed_path=missed,
                              out_path=args.out, batch_size=args.batch_size, device=args.device)
    for split, s in stats.items():
        log.info("%s: %d reached level %d, %d trickle (%s)", split, s["reached"], args.level, s["missed"],
                 ", ".join(f"{k} {v}" for k, v in sorted(s["reasons"].items())) or "none")


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
