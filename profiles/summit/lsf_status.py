#!/usr/bin/env python3
"""Snakemake cluster-generic status command for LSF: print success, failed or running for a job id.

bsub prints "Job <123> is submitted to queue <batch>."; Snakemake passes that line (or the id) here.
The profile runs this file directly (executable, ``#!/usr/bin/env python3``), so it does not depend on a
``python`` of the caller's PATH; it uses the standard library of Python 3.6 or later (a login node's system
``/usr/bin/python3``, e.g. RHEL 8's 3.6, is enough).
"""
import re
import subprocess
import sys

STATES = {"DONE": "success", "EXIT": "failed", "PSUSP": "running", "USUSP": "running", "SSUSP": "running",
          "PEND": "running", "RUN": "running", "WAIT": "running", "PROV": "running", "UNKWN": "running",
          "ZOMBI": "failed"}


def main(argv) -> int:
    text = " ".join(argv[1:])
    m = re.search(r"(\d+)", text)
    if not m:
        print(f"lsf_status: no job id in {text!r}", file=sys.stderr)
        print("failed")
        return 0
    try:
        out = subprocess.run(["bjobs", "-noheader", "-o", "stat", m.group(1)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, timeout=60, check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        print("running")  # bjobs unreachable: ask again later rather than fail a running job
        return 0
    print(STATES.get(out[0] if out else "", "running"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
