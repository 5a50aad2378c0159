#!/usr/bin/env python3
"""Fake IBM LSF commands for tests (bsub, bjobs, bkill), dispatched on the program name.

State lives in $FAKELSF_STATE: every bsub argv is appended to submitted.jsonl; the job script (the last
argument) runs in the background and its exit code lands in <id>.rc. Real LSF prints
"Job <id> is submitted to queue <name>."; bjobs -noheader -o stat ID prints RUN, DONE or EXIT.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

state = Path(os.environ["FAKELSF_STATE"])
state.mkdir(parents=True, exist_ok=True)
prog = Path(sys.argv[0]).name
args = sys.argv[1:]

if prog == "bsub":
    ids = sorted(int(p.stem) for p in state.glob("*.job"))
    jobid = (ids[-1] + 1) if ids else 1000
    (state / f"{jobid}.job").write_text(json.dumps(args))
    with open(state / "submitted.jsonl", "a") as fh:
        fh.write(json.dumps(args) + "\n")
    script = args[-1]
    subprocess.Popen(["bash", "-c", f'bash "$0" > "$1.out" 2>&1; echo $? > "$1.rc"', script, str(state / str(jobid))],
                     start_new_session=True)
    print(f"Job <{jobid}> is submitted to queue <batch>.")
elif prog == "bjobs":
    jobid = args[-1]
    rc = state / f"{jobid}.rc"
    if not (state / f"{jobid}.job").exists():
        print(f"Job <{jobid}> is not found", file=sys.stderr)
        sys.exit(255)
    if rc.exists() and rc.read_text().strip():
        print("DONE" if rc.read_text().strip() == "0" else "EXIT")
    else:
        print("RUN")
elif prog == "bkill":
    print(f"Job <{args[-1]}> is being terminated")
else:
    sys.exit(f"fakelsf: unknown program {prog}")
