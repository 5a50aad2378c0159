"""xgboost_head: fit a CNN-XGBoost head on the penultimate features of one trained job (flat or TDC level).

The head learns the job's own outputs (its classes, plus "rest" for a rest-reading level) from the job's
features files (``--train``/``--dev``, written by the features rules through the job's model) over the job's
training samples (``--train-keys``/``--dev-keys`` of a TDC level, selected by key; all samples of its
classes for a flat model), with early stopping on dev. Writes ``--out`` (booster JSON) and
``<out>.meta.json``. The network is not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    from cbedtdc.heads import XGBOOST_DEFAULTS as D

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--train", required=True, help="train.h5 features file of the job's model (required)")
    p.add_argument("--dev", required=True, help="dev.h5 features file of the job's model (required)")
    p.add_argument("--out", required=True, help="head.json to write (required)")
    p.add_argument("--threads", type=int, default=0, help="xgboost threads, 0 = all cores (default: 0)")
    p.add_argument("--train-keys", help="CSV (key column) of the job's training samples (default: all)")
    p.add_argument("--dev-keys", help="CSV (key column) of the job's dev samples (default: all)")
    p.add_argument("--n-estimators", type=int, default=D["n_estimators"], help=f"boosting rounds (default: "
                   f"{D['n_estimators']})")
    p.add_argument("--max-depth", type=int, default=D["max_depth"], help=f"tree depth (default: {D['max_depth']})")
    p.add_argument("--learning-rate", type=float, default=D["learning_rate"], help="shrinkage (default: "
                   f"{D['learning_rate']})")
    p.add_argument("--subsample", type=float, default=D["subsample"], help=f"row subsampling (default: "
                   f"{D['subsample']})")
    p.add_argument("--colsample-bytree", type=float, default=D["colsample_bytree"], help="feature subsampling "
                   f"(default: {D['colsample_bytree']})")
    p.add_argument("--early-stopping", type=int, default=D["early_stopping"], help="rounds without dev "
                   f"improvement before stopping, 0 = off (default: {D['early_stopping']})")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    return p


def run(args):
    from cbedtdc.train import read_keys
    from cbedtdc.heads.jobs import fit_job_head

    params = {k: getattr(args, k) for k in ("n_estimators", "max_depth", "learning_rate", "subsample",
                                            "colsample_bytree", "early_stopping")}
    train_keys = read_keys(args.train_keys) if args.train_keys else None
    dev_keys = read_keys(args.dev_keys) if args.dev_keys else None
    fit_job_head(args.train, args.dev, args.out, train_keys=train_keys, dev_keys=dev_keys, params=params,
             seed=args.seed, threads=args.threads, train_keys_source=args.train_keys,
             dev_keys_source=args.dev_keys)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
