"""features: penultimate activations of one trained backbone over one split, written to an HDF5 file.

The heads (rules head and tdc_heads) train on these. Batches are appended as they are computed
(memory: one batch); the file appears under its final name only when complete, so an interrupted
job is simply rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import inference_parser, run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--model", required=True, help="best.pt of a trained flat model or TDC level (required)")
    p.add_argument("--shards", required=True, help="shard root holding {split}.csv (required)")
    p.add_argument("--split", required=True, choices=["train", "dev", "test"], help="split to extract (required)")
    p.add_argument("--out", required=True, help="features .h5 file to write (required)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    return p


def run(args):
    from cbedtdc.features.cnn import extract_to_file

    extract_to_file(args.model, args.shards, args.split, args.out, batch_size=args.batch_size, device=args.device,
                    workers=args.workers, threads=args.threads, progress=False)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
