"""plan_levels: order the run's classes by training frequency and split them into TDC levels.

Writes ``levels.json``: the levels, the reading (``rest`` or ``hard``), the
training counts and each level's training budget in images, so that the levels together see as
many images as the flat baseline (``epochs`` x samples of the run's classes in the training split).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("cbedtdc.workflow.plan_levels")


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers separated by spaces or commas, got {text!r}") from err


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--train", required=True, help="shard list of the training split, results/shards/train.csv "
                   "(required)")
    p.add_argument("--classes", required=True, type=_ints, help="space groups of the run (required)")
    p.add_argument("--levels", required=True, help="levels.json to write (required)")
    p.add_argument("--mode", default="rest", choices=["rest", "hard"], help="reading of the cascade (default: rest)")
    p.add_argument("--how", default="explicit", choices=["explicit", "auto"],
                   help="explicit level sizes or equal sample mass (default: explicit)")
    p.add_argument("--level-sizes", type=_ints, default=[5, 5, 10], help="classes per level (default: 5 5 10)")
    p.add_argument("--n-levels", type=int, default=3, help="number of levels with --how auto (default: 3)")
    p.add_argument("--hard-outputs", default="cumulative", choices=["cumulative", "own"],
                   help="hard mode: outputs of level k are the classes of levels 1..k or of level k "
                   "(default: cumulative)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the flat baseline, sets the budget (default: 4)")
    p.add_argument("--budget-split", default="proportional", choices=["proportional", "equal"],
                   help="how the budget is shared by the levels (default: proportional)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cbedtdc.cascade import LevelPlan, check_trainable, level_budgets, plan_levels
    from cbedtdc.io import read_csv

    try:
        rows = read_csv(args.train)
        labels = [int(r["space_group"]) for r in rows if int(r["space_group"]) in set(args.classes)]
        counts = Counter(labels)
        if not labels:
            raise ValueError(f"{args.train}: no training sample of the run's classes {args.classes}")
        levels = plan_levels(counts, args.classes, how=args.how, level_sizes=args.level_sizes, n_levels=args.n_levels)
        plan = LevelPlan(levels, mode=args.mode, hard_outputs=args.hard_outputs,
                         routing="threshold" if args.mode == "hard" else "argmax", counts=dict(counts))
        check_trainable(plan)
        plan.n_train = len(labels)
        plan.flat_images = args.epochs * len(labels)
        plan.budgets = level_budgets(plan, labels, plan.flat_images, args.budget_split)
    except (OSError, KeyError, ValueError) as err:
        log.error("%s", err)
        return 2
    plan.save(args.levels)
    for k, lv in enumerate(plan.levels):
        log.info("level %d: classes %s (%d training samples), budget %d images", k + 1, lv,
                 sum(counts[c] for c in lv), plan.budgets[k])
    log.info("%s reading; flat budget %d images = %d epochs x %d samples", plan.mode, plan.flat_images, args.epochs,
             len(labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
