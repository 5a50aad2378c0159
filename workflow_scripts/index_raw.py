"""index_raw: check every sample of one raw challenge file and write its JSON index.

Bad samples (and a file h5py cannot open) become quarantine entries in the index; the
command fails only on a usage error or when the index cannot be written.
"""

from __future__ import annotations

import argparse
import logging
import sys


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--raw", required=True, help="raw batch_{train,dev,test}_N.h5 file (required)")
    p.add_argument("--out", required=True, help="JSON index to write (required)")
    p.add_argument("--expected-side", type=int, default=0,
                   help="required side of the stacks, e.g. 512 for the real set (default: 0 = any square side)")
    p.add_argument("--split", choices=["train", "dev", "test"], default=None,
                   help="split of the file (default: from the file name)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("index_raw")
    from cbedtdc.io import index_file, write_json

    try:
        index = index_file(args.raw, split=args.split, expected_side=args.expected_side)
    except ValueError as err:  # file name not a challenge name
        log.error("%s", err)
        return 2
    write_json(args.out, index)
    log.info("%s: %d samples seen, %d accepted, %d quarantined", index["file"], index["seen"],
             len(index["samples"]), len(index["quarantine"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
