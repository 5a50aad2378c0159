"""evaluate: the flat baselines and the TDC on the test split -> results/metrics/summary.json and tables.

summary.json holds ``flat`` / ``tdc`` (top1, balanced_accuracy, macro_f1, 95 % bootstrap intervals
over materials; flat also top5; tdc also estimated_top1, per-level routing), ``flat_by_loss``,
``chance`` (majority, prior), ``budget`` (images seen) and, for kinematic data, the Friedel-merged
score. The same folder gets per_class.csv, levels.csv, confusion_{flat,tdc}.csv, predictions.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import logging
import shutil

from cbedtdc.errors import InputError  # noqa: E402
from cbedtdc.cliutil import inference_parser, run_cli, set_torch_threads  # noqa: E402

log = logging.getLogger("cbedtdc.workflow.evaluate")


def _flat(text: str):
    loss, sep, path = text.partition("=")
    if not sep or not loss or not path:
        raise argparse.ArgumentTypeError(f"expected LOSS=PATH/best.pt, got {text!r}")
    return loss, path


def _json_object(text: str):
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"not a JSON object: {text!r}")
    return value


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--shards", required=True, help="shard root with train/dev/test.csv (required)")
    p.add_argument("--flat", nargs="*", type=_flat, default=[], metavar="LOSS=BEST_PT",
                   help="flat CNN baselines, e.g. ce=results/flat/ce/best.pt (default: none, heads only)")
    p.add_argument("--tdc", required=True, help="TDC folder: levels.json, routing.json, level_K/best.pt (required)")
    p.add_argument("--summary", required=True, help="summary.json to write; its folder gets the tables (required)")
    p.add_argument("--data-info", default=None, help="data_info.json of the shards: its bootstrap_unit (material or "
                   "sample) is what the intervals resample (default: materials)")
    p.add_argument("--run-classes", default=None, help="run_classes.json of rule check_classes: the run's one class "
                   "order (default: the plan's level order)")
    p.add_argument("--heads", type=_json_object, default={}, metavar="JSON",
                   help='flat heads, {"NAME": {"path": HEAD_FILE, "backbone": LOSS, "features": [SOURCE, ...], '
                   '"dirs": [FOLDER of {split}.h5, ...]}} (default: {})')
    p.add_argument("--shared", type=_json_object, default=None, metavar="JSON",
                   help='shared-backbone TDC, {"backbone": LOSS, "features": [...], "dirs": [...], "heads": FOLDER, '
                   '"routing": routing.json}; it is then the headline TDC (default: none, own-backbone levels)')
    p.add_argument("--copy", help="also write the summary here, e.g. summary_rest.json (default: none)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over materials (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--friedel-groups", default="[]",
                   help="JSON list of groups merged in the Friedel score, [] = no such score, or auto = the run's "
                   "classes that share an extinction class (default: [])")
    p.add_argument("--data", default="generated", help="what the data are, recorded in the summary "
                   "(default: generated)")
    return p


def run(args):
    from cbedtdc.classes import read_run_classes
    from cbedtdc.evaluate import evaluate_run
    from cbedtdc.io import atomic_path

    summary = Path(args.summary)
    if summary.name != "summary.json":
        raise InputError(f"--summary {summary}: must name summary.json (its folder receives the tables)")
    groups = args.friedel_groups if args.friedel_groups == "auto" else json.loads(args.friedel_groups)
    set_torch_threads(args.threads)
    classes = read_run_classes(args.run_classes) if args.run_classes else None
    evaluate_run(args.shards, dict(args.flat), args.tdc, summary.parent, classes=classes, n_boot=args.bootstrap,
                 seed=args.seed, friedel_groups=groups or None, batch_size=args.batch_size, data_kind=args.data,
                 device=args.device, heads=args.heads, shared=args.shared or None,
                 bootstrap_over=_bootstrap_over(args.data_info))
    if args.copy:
        with atomic_path(args.copy) as tmp:
            shutil.copyfile(summary, tmp)
    log.info("wrote %s", summary)


def _bootstrap_over(path) -> str:
    """``materials`` or ``samples``: the bootstrap unit of the shards' data_info.json."""
    if not path:
        return "materials"
    unit = json.loads(Path(path).read_text()).get("bootstrap_unit", "material")
    if unit not in ("material", "sample"):
        raise InputError(f"{path}: bootstrap_unit {unit!r} is neither material nor sample; rerun rule shard_index")
    return unit + "s"


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
