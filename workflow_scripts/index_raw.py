"""index_raw: check every sample of one raw challenge file and write its JSON index.

Bad samples (and a file h5py cannot open) become quarantine entries in the index; the
command fails only on a usage error or when the index cannot be written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import logging

from cbedtdc.cliutil import run_cli  # noqa: E402

log = logging.getLogger("cbedtdc.workflow.index_raw")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--raw", required=True, help="raw batch_{train,dev,test}_N.h5 file (required)")
    p.add_argument("--out", required=True, help="JSON index to write (required)")
    p.add_argument("--expected-side", type=int, default=0,
                   help="required side of the stacks, e.g. 512 for the real set (default: 0 = any square side)")
    p.add_argument("--split", choices=["train", "dev", "test"], default=None,
                   help="split of the file (default: from the file name)")
    return p


def run(args):
    from cbedtdc.io import index_file, write_json

    index = index_file(args.raw, split=args.split, expected_side=args.expected_side)
    write_json(args.out, index)
    log.info("%s: %d samples seen, %d accepted, %d quarantined", index["file"], index["seen"],
             len(index["samples"]), len(index["quarantine"]))


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
