#!/usr/bin/env python3
"""Fake IBM LSF + jsrun commands for tests (bsub, bjobs, bkill, jsrun), dispatched on the program name.

State lives in $FAKELSF_STATE.

bsub: every argv is appended to submitted.jsonl; the job script (the last argument) runs in the background and its
output lands in <id>.out, its exit code in <id>.rc. ``#BSUB`` lines of the script count as options, the command
line wins (as in LSF); the effective options go to <id>.options.json. ``-nnodes N`` gives the job an allocation of
N fake CORAL nodes (42 cores, 6 GPUs each): LSB_MCPU_HOSTS = "batch1 1 f01n01 42 f01n02 42 ...", as on Summit,
where the first host is the launch node. Real LSF prints "Job <id> is submitted to queue <name>.".

bjobs -noheader -o stat ID prints RUN, DONE or EXIT.

jsrun: checks the resource-set geometry (-n, -a, -c, -g, -r) against the allocation of LSB_MCPU_HOSTS, appends
what it would place to jsrun.jsonl, then starts the ``-n x -a`` ranks on this machine with the ``mpiexec`` found
on PATH (the ranks are real MPI ranks; only the placement on hosts is simulated).
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

CORES_PER_NODE, GPUS_PER_NODE = 42, 6
state = Path(os.environ["FAKELSF_STATE"])
state.mkdir(parents=True, exist_ok=True)
prog = Path(sys.argv[0]).name
args = sys.argv[1:]


def bsub_options(argv: list[str]) -> dict:
    """Options of a bsub argv without the job: {"-P": "X", "-nnodes": "2", ...} (all bsub options take a value)."""
    opts, i = {}, 0
    while i < len(argv) - 1 and argv[i].startswith("-"):
        opts[argv[i]] = argv[i + 1]
        i += 2
    return opts


def script_directives(script: Path) -> dict:
    if not script.is_file():
        return {}
    words = []
    for line in script.read_text().splitlines():
        if line.startswith("#BSUB"):
            words += shlex.split(line[len("#BSUB"):])
    return bsub_options(words + ["job"])


def bsub() -> None:
    ids = sorted(int(p.stem) for p in state.glob("*.job"))
    jobid = (ids[-1] + 1) if ids else 1000
    (state / f"{jobid}.job").write_text(json.dumps(args))
    with open(state / "submitted.jsonl", "a") as fh:
        fh.write(json.dumps(args) + "\n")
    script = args[-1]
    opts = {**script_directives(Path(script)), **bsub_options(args)}
    (state / f"{jobid}.options.json").write_text(json.dumps(opts))
    env = dict(os.environ, LSB_JOBID=str(jobid), LS_SUBCWD=os.getcwd())
    if "-nnodes" in opts:
        hosts = [f"f01n{i + 1:02d} {CORES_PER_NODE}" for i in range(int(opts["-nnodes"]))]
        env["LSB_MCPU_HOSTS"] = " ".join(["batch1 1", *hosts])
    subprocess.Popen(["bash", "-c", 'bash "$0" > "$1.out" 2>&1; echo $? > "$1.rc"', script, str(state / str(jobid))],
                     start_new_session=True, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
    print(f"Job <{jobid}> is submitted to queue <batch>.")


def bjobs() -> None:
    jobid = args[-1]
    rc = state / f"{jobid}.rc"
    if not (state / f"{jobid}.job").exists():
        print(f"Job <{jobid}> is not found", file=sys.stderr)
        sys.exit(255)
    if rc.exists() and rc.read_text().strip():
        print("DONE" if rc.read_text().strip() == "0" else "EXIT")
    else:
        print("RUN")


JSRUN_OPTS = {"-n": "nrs", "--nrs": "nrs", "-a": "tasks_per_rs", "--tasks_per_rs": "tasks_per_rs",
              "-c": "cpu_per_rs", "--cpu_per_rs": "cpu_per_rs", "-g": "gpu_per_rs", "--gpu_per_rs": "gpu_per_rs",
              "-r": "rs_per_host", "--rs_per_host": "rs_per_host", "-b": "bind", "--bind": "bind",
              "-d": "launch_distribution", "--launch_distribution": "launch_distribution", "--smpiargs": "smpiargs"}


def jsrun_options(argv: list[str]) -> tuple[dict, list[str]]:
    """Options (``-a 1``, ``-a1``, ``--nrs=4``, ``--nrs 4``) and the command after them."""
    opts, i = {}, 0
    while i < len(argv) and argv[i].startswith("-"):
        word = argv[i]
        name, _, value = word.partition("=")
        if name not in JSRUN_OPTS and name[:2] in JSRUN_OPTS and not name.startswith("--"):
            name, value = name[:2], name[2:]
        if name not in JSRUN_OPTS:
            sys.exit(f"fake jsrun: unknown option {word}")
        if not value:
            i += 1
            value = argv[i]
        opts[JSRUN_OPTS[name]] = value
        i += 1
    return opts, argv[i:]


def jsrun() -> None:
    hosts_env = os.environ.get("LSB_MCPU_HOSTS")
    if not hosts_env:
        sys.exit("fake jsrun: not inside an LSF allocation (no LSB_MCPU_HOSTS); start jsrun from a bsub job")
    words = hosts_env.split()
    hosts = sorted(set(words[2::2]))  # the first pair is the launch node
    opts, cmd = jsrun_options(args)
    if not cmd:
        sys.exit("fake jsrun: no command")
    nrs, a = int(opts.get("nrs", 1)), int(opts.get("tasks_per_rs", 1))
    c, g = int(opts.get("cpu_per_rs", 1)), int(opts.get("gpu_per_rs", 0))
    fit = min(CORES_PER_NODE // c, GPUS_PER_NODE // g if g else CORES_PER_NODE)
    r = int(opts.get("rs_per_host", fit))
    if r * c > CORES_PER_NODE or r * g > GPUS_PER_NODE:
        sys.exit(f"fake jsrun: {r} resource sets a host of {c} cores + {g} GPUs exceed a node's "
                 f"{CORES_PER_NODE} cores + {GPUS_PER_NODE} GPUs")
    need = -(-nrs // r)
    if need > len(hosts):
        sys.exit(f"fake jsrun: {nrs} resource sets at {r} a host need {need} compute nodes; the allocation has "
                 f"{len(hosts)} ({hosts_env})")
    placement = [hosts[k // r] for k in range(nrs)]
    record = {"argv": args, **{k: opts.get(k) for k in ("nrs", "tasks_per_rs", "cpu_per_rs", "gpu_per_rs",
                                                          "rs_per_host", "bind")},
              "hosts": placement, "command": cmd}
    with open(state / "jsrun.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("fake jsrun: no mpiexec on PATH to start the ranks")
    print(f"fake jsrun: {nrs} resource sets x {a} ranks on {sorted(set(placement))}", file=sys.stderr)
    sys.exit(subprocess.run([mpiexec, "-n", str(nrs * a), *cmd]).returncode)


if prog == "bsub":
    bsub()
elif prog == "bjobs":
    bjobs()
elif prog == "bkill":
    print(f"Job <{args[-1]}> is being terminated")
elif prog == "jsrun":
    jsrun()
else:
    sys.exit(f"fakelsf: unknown program {prog}")
