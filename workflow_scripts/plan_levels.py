"""plan_levels: order the run's classes by training frequency and split them into TDC levels.

Writes ``levels.json``: the levels, the reading (``rest`` or ``hard``), the
training counts and each level's training budget in images, so that the levels together see as
many images as the flat baseline (``epochs`` x samples of the run's classes in the training split).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import int_list, run_cli  # noqa: E402


def get_parser(add_help=True):
    from cbedtdc.config import schema_defaults, schema_property

    d, train = schema_defaults("tdc"), schema_defaults("train")  # config/schema.yaml: one source
    epochs, images = train["epochs"], train["images"]

    def choices(key):
        return schema_property("tdc", key)["enum"]

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--train", required=True, help="shard list of the training split, results/shards/train.csv "
                   "(required)")
    p.add_argument("--classes", required=True, type=int_list, help="space groups of the run (required)")
    p.add_argument("--levels", required=True, help="levels.json to write (required)")
    p.add_argument("--mode", default=d["mode"], choices=choices("mode"),
                   help=f"reading of the cascade, tdc.mode (default: {d['mode']})")
    p.add_argument("--how", default=d["levels"], choices=choices("levels"),
                   help="tdc.levels: explicit level sizes, equal sample mass or a bound on the count ratio within a "
                   f"level (default: {d['levels']})")
    p.add_argument("--level-sizes", type=int_list, default=d["level_sizes"],
                   help=f"classes per level (default: {' '.join(map(str, d['level_sizes']))})")
    p.add_argument("--n-levels", type=int, default=d["n_levels"],
                   help=f"number of levels with --how auto (default: {d['n_levels']})")
    p.add_argument("--max-ratio", type=float, default=d["max_ratio"],
                   help=f"with --how ratio: largest / smallest training count within a level (default: {d['max_ratio']})")
    p.add_argument("--hard-outputs", default=d["hard_outputs"], choices=choices("hard_outputs"),
                   help="hard mode: outputs of level k are the classes of levels 1..k or of level k "
                   f"(default: {d['hard_outputs']})")
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"epochs of the flat baseline (train.epochs), sets the budget (default: {epochs})")
    p.add_argument("--images", type=int, default=images,
                   help="images of the flat baseline (train.images); > 0 sets the budget instead of --epochs "
                   f"(default: {images})")
    p.add_argument("--budget-split", default=d["budget_split"], choices=choices("budget_split"),
                   help=f"how the budget is shared by the levels (default: {d['budget_split']})")
    return p


def run(args):
    from cbedtdc.cascade import write_plan

    write_plan(args.train, args.classes, args.levels, mode=args.mode, how=args.how, level_sizes=args.level_sizes,
               n_levels=args.n_levels, max_ratio=args.max_ratio, hard_outputs=args.hard_outputs, epochs=args.epochs,
               budget_split=args.budget_split, images=args.images)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
