"""Train one classifier (flat baseline or TDC level) with the cbedtdc engine.

Runs the same way by hand, under ``mpiexec -n N``, ``srun`` or ``jsrun``, and in tests::

    mpiexec -n 2 python workflow_scripts/train.py --shards results/shards --classes 14,225,1 \
        --loss ce --model results/flat/ce/best.pt

Outputs go to the folder of ``--model`` (best.pt, last.pt, metrics.csv, train.json); an interrupted
job resumes from ``<folder>/resume/`` when started again. Exit codes: 0 done, 2 bad input or
checkpoint (one log line says which file), 1 anything else. When one rank fails, the whole MPI job
is ended.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.errors import InputError  # noqa: E402
from cbedtdc.cliutil import int_list, run_cli, setup_logging  # noqa: E402
from cbedtdc.train import DEFAULTS, LAUNCHER_KEYS, OPTIONS, read_keys  # noqa: E402
from cbedtdc.train.options import RUNTIME_KEYS  # noqa: E402

log = logging.getLogger("cbedtdc.workflow.train")


_TYPES = {"integer": int, "number": float, "string": str}


class _Once(argparse.Action):
    """Store a training option, refusing a second value: a TDC level's ``@args.txt`` sets its ``--epochs`` (the
    level's budget), and a second ``--epochs`` (e.g. ``train.epochs`` from the rule) would silently replace it."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, "_given", set())
        if self.dest in given:
            parser.error(f"{option_string} given twice (a TDC level's args.txt sets --epochs and its classes); "
                         "pass each training option once")
        namespace._given = given | {self.dest}
        setattr(namespace, self.dest, values)


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per engine option (``cbedtdc.train.OPTIONS``, generated from config/schema.yaml) except the
    launcher's ``ranks``: type, choices, default and help come from that one table."""
    groups = {False: p.add_argument_group("training (config 'train' section, plus the job's loss and seed)")}
    groups[True] = p.add_argument_group("runtime (does not change the weights)")
    for key, opt in OPTIONS.items():
        if key in LAUNCHER_KEYS:
            continue
        default = DEFAULTS[key]
        desc = opt.get("description", "").rstrip(".")
        groups[key in RUNTIME_KEYS].add_argument(
            f"--{key.replace('_', '-')}", dest=key, type=_TYPES[opt.get("type", "string")], action=_Once,
            choices=opt.get("enum"), default=default, help=f"{desc} (default: {default})".replace("%", "%%"))


def get_parser(add_help: bool = True) -> argparse.ArgumentParser:
    # fromfile: `@args.txt` reads one argument per line (the TDC level job writes its classes and epochs so)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], add_help=add_help, fromfile_prefix_chars="@")
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--shards", required=True, help="shard root holding {train,dev}.csv (required)")
    io.add_argument("--model", required=True, help="output best.pt; its folder receives every output (required)")
    io.add_argument("--classes", required=True, type=int_list, help="space groups of the job, comma-separated; "
                    "output i is the i-th (required)")
    io.add_argument("--rest", action="store_true", help="add a 'rest' output for other groups (default: off, "
                    "samples of other groups are excluded)")
    io.add_argument("--train-keys", help="CSV (key, or file+group) restricting the training samples (default: all)")
    io.add_argument("--dev-keys", help="CSV restricting the dev samples (default: all)")
    add_option_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: info)")
    return p


def run(args, held: dict) -> None:
    from cbedtdc.distributed import init_distributed
    from cbedtdc.train import fit

    model = Path(args.model)
    if model.name != "best.pt":
        raise InputError(f"--model {model}: must name the job's best.pt (its folder receives all outputs)")
    cfg = {k: getattr(args, k) for k in OPTIONS if k not in LAUNCHER_KEYS}
    train_keys = read_keys(args.train_keys) if args.train_keys else None
    dev_keys = read_keys(args.dev_keys) if args.dev_keys else None
    held["ctx"] = init_distributed(timeout_s=args.timeout_s)
    fit(cfg, shard_root=args.shards, out_dir=model.parent, classes=args.classes, rest=args.rest,
        train_keys=train_keys, dev_keys=dev_keys, ctx=held["ctx"])


def main(argv=None) -> int:
    from cbedtdc.distributed import abort_job

    held = {}  # the process group, shut down after a failure has ended every rank of the job
    try:
        return run_cli(get_parser, lambda args: run(args, held), argv,
                       setup=lambda args: setup_logging(args.verbose, rank_tag=True),
                       on_error=lambda err: abort_job(held.get("ctx"), err))
    finally:
        if held.get("ctx") is not None:
            held["ctx"].shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
