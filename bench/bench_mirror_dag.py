"""Parse and dry-run time of the data stage on the STEMDL mirror layout vs the SMC 2020 HDF5 layout; prints ratios
measured in one run.

Both layouts are written as empty placeholders in a temporary folder (nothing is opened by a dry run): the
published mirror, 187,156 ``sample-<n>.npz`` in four folders, and 1,138 ``batch_{train,dev,test}_N.h5``. For
each, the plan alone (``cbedtdc.layout.discover_raw``, what ``rules/common.smk`` does at parse time) and a
Snakemake dry run of the ``shards`` target (parse + DAG of the data stage) are timed, best of ``--repeats``.
The ratio mirror / HDF5 should stay near 1 (the mirror is planned as 96 chunks per rule, the HDF5 layout as
1,138 jobs per rule).

``.venv/bin/python bench/bench_mirror_dag.py`` (about 1 min on 2 cores, 190k empty files in $TMPDIR).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def get_parser(add_help=True):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help)
    p.add_argument("--repeats", type=int, default=2, help="timed dry runs per layout, best kept (default: 2)")
    p.add_argument("--chunk", type=int, default=2000, help="data.mirror_chunk (default: 2000)")
    return p


def dry_run(workdir: Path, raw: Path, chunk: int) -> tuple[float, str]:
    cfg = workdir / f"{raw.name}.yaml"
    cfg.write_text(f"raw_dir: {str(raw)!r}\nimage_size: 64\ndata:\n  mirror_chunk: {chunk}\n")
    snakemake = Path(sys.executable).parent / "snakemake"
    t = time.perf_counter()
    res = subprocess.run([str(snakemake), "-n", "shards", "--configfile", str(cfg)], cwd=workdir,
                         capture_output=True, text=True)
    took = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(res.stdout + res.stderr)
    return took, res.stdout


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    from conftest import job_stats
    from fixtures import write_placeholder_challenge, write_placeholder_mirror

    from cbedtdc.layout import discover_raw

    tmp = Path(tempfile.mkdtemp(prefix="bench_mirror_dag."))
    try:
        mirror = write_placeholder_mirror(tmp / "mirror")
        hdf5 = write_placeholder_challenge(tmp / "hdf5")
        work = tmp / "work"
        work.mkdir()
        for name in ("workflow_scripts", "config"):
            (work / name).symlink_to(REPO / name)
        (work / "Snakefile").write_text(f'configfile: "config/config.yaml"\ninclude: "{REPO}/rules/common.smk"\n'
                                        f'include: "{REPO}/rules/data.smk"\n')
        plan, dry = {}, {}
        for name, raw in (("mirror", mirror), ("hdf5", hdf5)):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                stems = discover_raw(raw, args.chunk)
                times.append(time.perf_counter() - t)
            plan[name] = min(times), len(stems)
            runs = [dry_run(work, raw, args.chunk) for _ in range(args.repeats)]
            dry[name] = min(r[0] for r in runs), job_stats(runs[0][1])
        for name in ("mirror", "hdf5"):
            files = 187_156 if name == "mirror" else 1_138
            print(f"{name:6s} {files:>7,} files: plan {plan[name][0]:.3f} s ({plan[name][1]} stems), "
                  f"dry run of `shards` {dry[name][0]:.1f} s, {sum(dry[name][1].values())} jobs")
        print(f"ratio mirror / hdf5: plan {plan['mirror'][0] / plan['hdf5'][0]:.2f}, "
              f"dry run {dry['mirror'][0] / dry['hdf5'][0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
