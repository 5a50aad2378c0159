"""shard: convert the accepted samples of one raw file, or of one STEMDL mirror chunk, into a uint8 HDF5 shard
(+ JSON sidecar). A challenge file is log-scaled here; a mirror chunk is already scaled (pixels rounded only)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--raw", help="raw challenge file (one of --raw, --folder is required)")
    src.add_argument("--folder", help="STEMDL mirror folder of the chunk (one of --raw, --folder is required)")
    p.add_argument("--index", required=True, help="its JSON index from index_raw / index_mirror (required)")
    p.add_argument("--shard", required=True, help="shard .h5 to write; the sidecar goes next to it as .json (required)")
    p.add_argument("--image-size", type=int, required=True, help="side of the shard images; at most 128 for the "
                   "mirror (required)")
    return p


def run(args):
    from cbedtdc.io import read_json
    from cbedtdc.preprocess import write_mirror_shard, write_shard

    index = read_json(args.index)
    if args.folder:
        write_mirror_shard(args.folder, index, args.shard, image_size=args.image_size, progress=True)
    else:
        write_shard(args.raw, index, args.shard, image_size=args.image_size, progress=True)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
