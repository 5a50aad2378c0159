"""features: one feature source of one split's shards, written to an HDF5 file (results/features/<folder>/<split>.h5).

--source names a source of cbedtdc.features.registry: cnn (the penultimate activations of the trained backbone
--model), symmetry (the physics descriptors of every pattern, no model; docs/symmetry.md), ... The heads (rules
head and tdc_heads) train on these. Batches are appended as they are computed (memory: one batch); the file
appears under its final name only when complete, so an interrupted job is simply rerun. --augment adds perturbed
copies of the training stacks to a descriptor source's train split (config features.augment, docs/robustness.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import inference_parser, run_cli  # noqa: E402
from cbedtdc.errors import InputError  # noqa: E402


def get_parser(add_help=True):
    from cbedtdc.features.registry import SOURCES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--source", required=True, choices=list(SOURCES), help="the feature source (required)")
    p.add_argument("--model", default="", help="best.pt of the trained flat model or TDC level a backbone source "
                   "(cnn) is computed through; '' for a source without one (default: '')")
    p.add_argument("--shards", required=True, help="shard root holding {split}.csv (required)")
    p.add_argument("--split", required=True, choices=["train", "dev", "test"], help="split to extract (required)")
    p.add_argument("--out", required=True, help="features .h5 file to write (required)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--augment", default="{}", help="perturbed copies of the training stacks as a JSON object, the "
                   "keys of config features.augment (a descriptor source's train split only; default: {} = off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbed copies (default: 0)")
    p.add_argument("--progress", action="store_true", help="show a progress bar (default: off; the log line at "
                   "the end gives the rate)")
    return p


def run(args):
    from cbedtdc.features.augment import augment_from_json
    from cbedtdc.features.registry import get_source

    source, aug = get_source(args.source), augment_from_json(args.augment)
    extra = {}
    if aug is not None:
        if not source.augments:
            raise InputError(f"--augment: feature source {source.name} takes no perturbed copies (only the "
                             "descriptor sources do); drop --augment")
        extra = {"augment": aug, "seed": args.seed}
    source.extract(args.shards, args.split, args.out, model=args.model or None, batch_size=args.batch_size,
                   device=args.device, threads=args.threads, workers=args.workers, progress=args.progress, **extra)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
