"""level_job: the training set, outputs and budget of one TDC level, for workflow_scripts/train.py.

Writes into ``--out-dir``: ``train_keys.csv`` and ``dev_keys.csv`` (column ``key``) and ``args.txt``
(``--classes 14,225,... [--rest] --budget-images N``: integers and flags only, generated here,
never a config string). Rest reading: the samples of the classes of levels k..K. Hard reading:
level 1 all samples of its outputs, level k > 1 the samples in ``--missed`` (level k-1's
``missed.csv``) whose class is among its outputs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("cbedtdc.workflow.level_job")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--levels", required=True, help="levels.json from plan_levels (required)")
    p.add_argument("--level", required=True, type=int, help="level, 1-based (required)")
    p.add_argument("--train", required=True, help="results/shards/train.csv (required)")
    p.add_argument("--dev", required=True, help="results/shards/dev.csv (required)")
    p.add_argument("--missed", nargs="*", default=[],
                   help="missed.csv of the previous level (hard reading, level > 1); "
                   "given with no file = none (default: none)")
    p.add_argument("--prev-runs", nargs="*", default=[],
                   help="train.json of the earlier levels (hard reading): the images they saw set the rounding "
                   "carried into this level's budget (default: none)")
    p.add_argument("--out-dir", required=True, help="folder for train_keys.csv, dev_keys.csv, args.txt (required)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cbedtdc.cascade import LevelPlan, atomic_write_text, level_job, read_missed
    from cbedtdc.io import read_csv, write_csv
    from cbedtdc.metrics import images_seen

    try:
        plan = LevelPlan.load(args.levels)
        train = read_csv(args.train)
        dev = read_csv(args.dev)
        missed = read_missed(args.missed[0]) if args.missed else None
        seen = [images_seen(p) for p in args.prev_runs] if args.prev_runs else None
        if seen is not None and None in seen:
            raise ValueError(f"cannot read the images seen from {args.prev_runs}")
        job = level_job(plan, args.level, [r["key"] for r in train], [int(r["space_group"]) for r in train],
                        [r["key"] for r in dev], [int(r["space_group"]) for r in dev], missed=missed, seen_before=seen)
        if not job["train_keys"]:
            raise ValueError(f"level {args.level}: no training sample reaches it (classes {job['classes']})")
    except (OSError, KeyError, ValueError) as err:
        log.error("%s", err)
        return 2
    out = Path(args.out_dir)
    write_csv(out / "train_keys.csv", [{"key": k} for k in job["train_keys"]], ["key"])
    write_csv(out / "dev_keys.csv", [{"key": k} for k in job["dev_keys"]], ["key"])
    flags = ["--classes", ",".join(str(int(c)) for c in job["classes"])]
    if job["rest"]:
        flags.append("--rest")
    if job["budget_images"]:
        flags += ["--budget-images", str(int(job["budget_images"]))]
    # one argument per line: train.py reads it as @args.txt (argparse fromfile), nothing goes through a shell
    atomic_write_text(out / "args.txt", "\n".join(flags) + "\n")
    log.info("level %d (%s reading): outputs %s%s, %d train / %d dev samples, budget %s images", args.level,
             plan.mode, job["classes"], " + rest" if job["rest"] else "", len(job["train_keys"]),
             len(job["dev_keys"]), job["budget_images"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
