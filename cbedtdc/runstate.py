"""State of a pipeline run in a working directory: progress of its training jobs, and stale Snakemake locks.

Two things a user of ``make run`` needs that Snakemake does not print:

* **Progress.** A training job writes its progress to its rule's ``log:`` file (``logs/train_flat/ce.log``), so the
  terminal shows one ``Shell command:`` line for half an hour. :func:`job_status` reads a training log and says
  where the job is (epoch, images/s, ETA); ``python -m cbedtdc.runstate status`` prints one line per training job,
  and ``follow`` prints a line whenever a job reaches a new epoch, until the Snakemake process it watches ends.
* **Resume after a kill.** A ``snakemake`` killed with SIGKILL (or by a walltime limit) leaves its lock in
  ``.snakemake/locks``; the rerun then stops with ``LockException``. The lock is *stale* when no process is still
  working in this directory: no ``snakemake`` and no job of the old run (a ``workflow_scripts/`` command, or an
  MPI launcher running one) whose working directory is this one. ``unlock-if-stale`` removes a stale lock with
  ``snakemake --unlock`` and refuses, naming the processes, while any of them lives (two runs writing the same
  checkpoints would corrupt each other). Linux only (reads ``/proc``).

>>> parse_epoch_line("2026-12-02 02:30:00,123 INFO cbedtdc.train: epoch 3/10: train loss 1.2, "
...                  "dev top-1 0.3, balanced acc 0.2, macro-F1 0.2, 41.5 img/s")
(3, 10, 41.5)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["JobStatus", "job_status", "run_status", "live_processes", "stale_lock", "unlock_if_stale", "main"]

log = logging.getLogger(__name__)

TRAIN_LOG_DIRS = ("train_flat", "train_level")
_STAMP = r"(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+"
_EPOCH = re.compile(r"epoch (?P<epoch>\d+)/(?P<epochs>\d+): train loss .*?(?P<rate>[\d.]+) img/s")
_STAMPED_EPOCH = re.compile(_STAMP + r" .*?" + _EPOCH.pattern)
_JOB = re.compile(_STAMP + r" .*?job: .*?(?P<epochs>\d+) epochs x (?P<steps>\d+) steps")
_RESUME = re.compile(_STAMP + r" .*?resuming from .*?: epoch (?P<epoch>\d+)")
# tqdm's bar in the log: "epoch 4/10:  37%|###  | 41/112 [00:53<01:32, 1.31it/s]"
_BAR = re.compile(r"epoch (?P<epoch>\d+)/(?P<epochs>\d+):\s+(?P<pct>\d+)%\|[^|]*\|\s*(?P<step>\d+)/(?P<steps>\d+)"
                  r" \[[^<]*<(?P<eta>[\d:?]+)")
_DONE = re.compile(r" wrote .*best\.pt| restored finished training from ")
_FAILED = re.compile(r"^(Traceback|.* ERROR |.*Error: )", re.MULTILINE)
_WORKER_MARKERS = ("workflow_scripts/", "snakemake")


def parse_epoch_line(line: str) -> tuple[int, int, float] | None:
    """``(epoch, epochs, images/s)`` of an engine's end-of-epoch log line, else None.

    >>> parse_epoch_line("nothing here") is None
    True
    """
    m = _EPOCH.search(line)
    return (int(m["epoch"]), int(m["epochs"]), float(m["rate"])) if m else None


@dataclass
class JobStatus:
    """Where one training job stands, read from its log."""

    name: str  # e.g. train_flat/ce
    state: str  # waiting | running | done | failed
    epoch: int = 0  # last finished epoch
    epochs: int = 0
    rate: float = 0.0  # images/s of the last finished epoch
    percent: int | None = None  # progress inside the running epoch (tqdm)
    eta_s: float | None = None  # seconds to the job's end, estimated

    def line(self) -> str:
        """One short line for the terminal."""
        if self.state in ("waiting", "done", "failed") and not self.epochs:
            return f"{self.name}: {self.state}"
        where = f"epoch {self.epoch}/{self.epochs}"
        if self.state == "running" and self.percent is not None:
            where = f"epoch {min(self.epoch + 1, self.epochs)}/{self.epochs} at {self.percent} %"
        parts = [f"{self.name}: {self.state}, {where}"]
        if self.rate:
            parts.append(f"{self.rate:.1f} img/s")
        if self.state == "running" and self.eta_s is not None:
            parts.append(f"ETA {_minutes(self.eta_s)}")
        return ", ".join(parts)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _stamp(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()


def _clock(text: str) -> float | None:
    """tqdm's ``MM:SS`` or ``H:MM:SS`` as seconds (None for ``?``)."""
    if "?" in text:
        return None
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def job_status(path: Path, name: str | None = None) -> JobStatus:
    """Read one training log (the engine's lines and its tqdm bar) and say where the job is.

    The ETA is the time of the epochs still to run at the mean duration of the epochs this log timed (from the
    log's time stamps), or tqdm's own estimate inside the first epoch.
    """
    path = Path(path)
    name = name or f"{path.parent.name}/{path.stem}"
    text = path.read_text(errors="replace") if path.exists() else ""
    status = JobStatus(name=name, state="waiting")
    if not text:
        return status
    status.state = "running"
    start = None
    for m in _JOB.finditer(text):
        start, status.epochs = _stamp(m["stamp"]), int(m["epochs"])
    for m in _RESUME.finditer(text):
        start, first = _stamp(m["stamp"]), int(m["epoch"])
    epochs = [(int(m["epoch"]), int(m["epochs"]), float(m["rate"]), _stamp(m["stamp"]))
              for m in _STAMPED_EPOCH.finditer(text)]
    if epochs:
        status.epoch, status.epochs, status.rate, last = epochs[-1]
    bars = list(_BAR.finditer(text.replace("\r", "\n")))
    if bars and int(bars[-1]["epoch"]) > status.epoch:
        status.percent = int(bars[-1]["pct"])
        status.epochs = status.epochs or int(bars[-1]["epochs"])
    if _DONE.search(text):
        status.state, status.percent = "done", None
    elif _FAILED.search(text):
        status.state = "failed"
    if status.state != "running" or not status.epochs:
        return status
    timed = [e for e in epochs if start is None or e[3] >= start]
    if epochs and start is not None and timed:
        first_epoch = timed[0][0] - 1
        per_epoch = (timed[-1][3] - start) / max(timed[-1][0] - first_epoch, 1)
        done_frac = (status.percent or 0) / 100
        status.eta_s = max(per_epoch * (status.epochs - status.epoch - done_frac), 0.0)
    elif bars:
        eta_epoch = _clock(bars[-1]["eta"])
        if eta_epoch is not None:
            pct = max(int(bars[-1]["pct"]), 1) / 100
            elapsed_epoch = eta_epoch * pct / max(1 - pct, 1e-3)
            status.eta_s = eta_epoch + (status.epochs - status.epoch - 1) * (elapsed_epoch + eta_epoch)
    return status


#: The stages of a run and their rules, in data-flow order (``make status``).
STAGES = (
    ("data", ("synthesize", "gallery", "index_raw", "index_mirror", "manifest", "split", "check_classes", "shard",
              "shard_mirror", "shard_index")),
    ("training", ("train_flat", "plan_levels", "level_job", "train_level", "collect_missed", "tune_routing")),
    ("features and heads", ("features", "head", "tdc_heads", "tune_routing_shared")),
    ("evaluation and report", ("evaluate", "plots", "run_config")),
)


def stage_status(workdir=".", *, active_s: float = 120.0, now: float | None = None) -> list[str]:
    """One line per stage that has started: jobs finished per rule (a job's benchmark file is written when it ends)
    and jobs running now (a log written in the last ``active_s`` seconds without its benchmark file)."""
    workdir, now = Path(workdir), time.time() if now is None else now
    lines = []
    for stage, rules in STAGES:
        done, running = {}, {}
        for rule in rules:
            bench = workdir / "benchmarks" / rule
            finished = {p.relative_to(bench).with_suffix("").as_posix() for p in bench.rglob("*.tsv")} \
                if bench.is_dir() else set()
            logs = workdir / "logs" / rule
            live = [p for p in logs.rglob("*.log") if now - p.stat().st_mtime < active_s
                    and p.relative_to(logs).with_suffix("").as_posix() not in finished] if logs.is_dir() else []
            if finished:
                done[rule] = len(finished)
            if live:
                running[rule] = len(live)
        if not done and not running:
            continue
        text = f"{stage}: {sum(done.values())} jobs done"
        if done:
            text += " (" + ", ".join(f"{r} {n}" for r, n in done.items()) + ")"
        if running:
            text += "; running now: " + ", ".join(f"{r} ({n})" for r, n in running.items())
        lines.append(text)
    return lines


def run_status(workdir=".") -> list[JobStatus]:
    """Status of every training job that has a log under ``workdir/logs``."""
    logs = Path(workdir) / "logs"
    return [job_status(p) for d in TRAIN_LOG_DIRS for p in sorted((logs / d).glob("*.log"))]


def live_processes(workdir=".") -> list[tuple[int, str]]:
    """``(pid, command)`` of processes other than this one working in ``workdir``: snakemake or a pipeline job."""
    workdir = Path(workdir).resolve()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in (os.getpid(), os.getppid()):
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone, or not ours to read
            continue
        if cwd == workdir and any(marker in cmd for marker in _WORKER_MARKERS) and "cbedtdc.runstate" not in cmd:
            found.append((int(proc.name), cmd))
    return found


def stale_lock(workdir=".") -> bool:
    """True when ``workdir`` holds a Snakemake lock and no process is working there any more."""
    locks = Path(workdir) / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir()) and not live_processes(workdir)


def unlock_if_stale(workdir=".", snakemake: str | None = None, snakefile=None) -> str:
    """Remove a stale lock (``snakemake --unlock``); refuse while the old run's processes live.

    Returns ``"none"`` (no lock), ``"unlocked"``, or raises :class:`RuntimeError` naming the live processes.
    """
    locks = Path(workdir) / ".snakemake" / "locks"
    if not (locks.is_dir() and any(locks.iterdir())):
        return "none"
    alive = live_processes(workdir)
    if alive:
        listing = "; ".join(f"pid {pid}: {cmd[:120]}" for pid, cmd in alive[:5])
        raise RuntimeError(
            f"{workdir}: Snakemake's lock is held and {len(alive)} process(es) of a run still work here ({listing}); "
            "wait for them to end or stop them (kill PID), then rerun")
    exe = snakemake or str(Path(sys.executable).with_name("snakemake"))
    cmd = [exe, "--unlock", "--cores", "1", *(["-s", str(snakefile)] if snakefile else [])]
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if res.returncode:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{workdir}: `{' '.join(cmd)}` failed: {tail[0]}")
    log.info("removed the stale lock of a killed run in %s (snakemake --unlock); resuming", Path(workdir).resolve())
    return "unlocked"


def follow(workdir=".", *, pid: int | None = None, interval: float = 20.0, out=sys.stdout) -> None:
    """Print a stage's line when its job counts change and a training job's line whenever it starts, reaches a new
    epoch, ends or fails; stop when ``pid`` has ended."""
    seen: dict[str, tuple] = {}
    stages: dict[str, str] = {}
    while True:
        for line in stage_status(workdir):  # one line per stage when its job counts change
            stage = line.split(":", 1)[0]
            if stages.get(stage) != line:
                stages[stage] = line
                print(f"[stage] {line}", file=out, flush=True)
        for status in run_status(workdir):
            key = (status.state, status.epoch)
            if seen.get(status.name) != key and status.state != "waiting":
                seen[status.name] = key
                print(f"[progress] {status.line()}", file=out, flush=True)
        if pid is not None and not Path(f"/proc/{pid}").exists():
            return
        time.sleep(interval)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cbedtdc.runstate", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["status", "follow", "unlock-if-stale"],
                   help="status: one line per training job; follow: a line per new epoch until --pid ends; "
                        "unlock-if-stale: remove the lock a killed run left")
    p.add_argument("--workdir", default=".", help="the pipeline's working directory (default: .)")
    p.add_argument("--snakefile", default=None, help="unlock-if-stale: the Snakefile of the run (default: "
                   "Snakemake's own search in --workdir)")
    p.add_argument("--pid", type=int, default=None, help="follow: stop when this process ends (default: never)")
    p.add_argument("--interval", type=float, default=20.0, help="follow: seconds between looks (default: 20)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.action == "status":
        stages = stage_status(args.workdir)
        for line in stages:
            print(line)
        jobs = run_status(args.workdir)
        for status in jobs:
            print(status.line())
        if not jobs and not stages:
            print(f"nothing has run under {Path(args.workdir).resolve()} yet (no log under logs/)")
        return 0
    if args.action == "follow":
        try:
            follow(args.workdir, pid=args.pid, interval=args.interval)
        except KeyboardInterrupt:
            pass
        return 0
    try:
        unlock_if_stale(args.workdir, snakefile=args.snakefile)
    except RuntimeError as err:
        log.error("Error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
