"""symmetry_features: the rotation-invariant symmetry descriptors of one split's shards, written to an HDF5 file.

No model: the descriptors (cbedtdc.features.symmetry, docs/symmetry.md) are computed from the shards
in batches (memory: one batch) and appended to the features file, which appears under its final name
only when complete, so an interrupted job is simply rerun. Samples with a fallback panel (blank,
non-finite, no visible centre) keep finite features with a flag and are counted in the log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--shards", required=True, help="shard root holding {split}.csv (required)")
    p.add_argument("--split", required=True, choices=["train", "dev", "test"], help="split to describe (required)")
    p.add_argument("--out", required=True, help="features .h5 file to write (required)")
    p.add_argument("--batch-size", type=int, default=256, help="stacks per batch, the rows held in memory "
                   "(default: 256)")
    p.add_argument("--progress", action="store_true", help="show a progress bar (default: off; the log line "
                   "at the end gives the rate)")
    return p


def run(args):
    from cbedtdc.features.symmetry import extract_symmetry_to_file

    extract_symmetry_to_file(args.shards, args.split, args.out, batch_size=args.batch_size, progress=args.progress)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
