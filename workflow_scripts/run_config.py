"""run_config: save the configuration of the run (JSON from the rule) as results/run_config.yaml.

``make report`` passes the file back with ``--configfile``, so the report describes the run its results come from.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("cbedtdc.workflow.run_config")


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--config", required=True, help="the run's configuration as a JSON object (required)")
    p.add_argument("--out", required=True, help="YAML file to write (required)")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cbedtdc.config import write_run_config

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as err:
        log.error("--config is not JSON: %s", err)
        return 2
    write_run_config(config, args.out)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
