"""index_mirror: check every sample-<n>.npz of one chunk of a STEMDL mirror folder and write its JSON index.

Bad files (and an empty folder) become quarantine entries in the index; the command fails only on a
usage error or when the index cannot be written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import run_cli  # noqa: E402

log = logging.getLogger("cbedtdc.workflow.index_mirror")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--folder", required=True, help="mirror folder, <root>/training etc. (required)")
    p.add_argument("--stem", required=True, help="the chunk, mirror_<folder>_<k> (required)")
    p.add_argument("--chunk", type=int, required=True, help="files per chunk, data.mirror_chunk (required)")
    p.add_argument("--out", required=True, help="JSON index to write (required)")
    return p


def run(args):
    from cbedtdc.io import write_json
    from cbedtdc.mirror import index_mirror_chunk

    index = index_mirror_chunk(args.folder, args.stem, args.chunk)
    write_json(args.out, index)
    log.info("%s: %d files seen, %d accepted, %d quarantined", index["file"], index["seen"],
             len(index["samples"]), len(index["quarantine"]))


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
