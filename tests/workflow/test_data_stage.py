"""The data stage as Snakemake runs it: rules, CLIs, exit codes, rerun of what is missing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, data_stage_workdir, job_stats, link_workdir, snakemake
from fixtures import make_sample, write_challenge_file

from cbedtdc.data import ShardDataset
from cbedtdc.io import read_csv, read_json


def raw_dir(root):
    """Four good files (two train), one not HDF5, one sample with a NaN: 10 good samples of 11 + 1 file."""
    rng = np.random.default_rng(0)

    def s(i, j, sg, split, k):
        return make_sample(f"sample_{i}_{j}", sg, f"mp-{split}-{i}", side=32, energy_keV=100 + 10 * j,
                           class_index=k, rng=rng)

    raw = root / "raw"
    write_challenge_file(raw / "train" / "batch_train_0.h5", [s(0, 0, 14, "t0", 0), s(0, 1, 14, "t0", 0),
                                                             s(1, 0, 225, "t0", 1)])
    nan = s(2, 0, 1, "t1", 2)
    nan["stack"] = nan["stack"].copy()
    nan["stack"][0, 0, 0] = np.nan
    write_challenge_file(raw / "train" / "batch_train_1.h5", [s(0, 0, 1, "t1", 2), s(1, 0, 14, "t1", 0), nan])
    write_challenge_file(raw / "dev" / "batch_dev_0.h5", [s(0, 0, 14, "d", 0), s(1, 0, 225, "d", 1)])
    write_challenge_file(raw / "test" / "batch_test_0.h5", [s(0, 0, 1, "e", 2), s(1, 0, 225, "e", 1)])
    (raw / "test" / "batch_test_7.h5").write_bytes(b"not an HDF5 file")
    return raw


@pytest.fixture
def workdir(tmp_path):
    """A working directory that runs rules/common.smk + rules/data.smk like the main Snakefile."""
    return data_stage_workdir(tmp_path)


def config(workdir, raw, max_fraction):
    """--configfile arguments (nested --config values would arrive as strings)."""
    path = workdir / "test_config.yaml"
    path.write_text(f"raw_dir: {str(raw)!r}\nimage_size: 16\ndata:\n  quarantine_max_fraction: {max_fraction}\n")
    return ["--configfile", str(path)]


@pytest.mark.slow
def test_shards_target_builds_the_data_stage_and_reruns_only_what_is_missing(workdir):
    raw = raw_dir(workdir)
    cfg = config(workdir, raw, 0.2)
    res = snakemake("--cores", "2", "shards", *cfg, cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    data, shards = workdir / "results" / "data", workdir / "results" / "shards"
    manifest, quarantine = read_csv(data / "manifest.csv"), read_csv(data / "quarantine.csv")
    assert len(manifest) == 9 and len(quarantine) == 2
    assert read_json(data / "manifest_report.json")["seen"] == 11
    reasons = {(q["file"], q["group"]): q["reason"] for q in quarantine}
    assert reasons[("batch_train_1.h5", "sample_2_0")] == "non-finite values (1 NaN, 0 inf)"
    assert reasons[("batch_test_7.h5", "")].startswith("cannot open: ")
    assert {"file", "group", "split", "space_group", "material", "energy_keV"} <= set(manifest[0])
    for split, n in {"train": 5, "dev": 2, "test": 2}.items():
        ds = ShardDataset(shards, split)
        assert len(ds) == n and ds[0][0].shape == (3, 16, 16)
    counts = {int(r["space_group"]): int(r["total"]) for r in read_csv(data / "class_counts.csv")}
    assert counts == {14: 4, 225: 3, 1: 2}
    info = read_json(shards / "data_info.json")  # what the evaluation reads: intervals over materials here
    assert info["layout"] == "challenge_hdf5" and info["bootstrap_unit"] == "material"
    for rule in ("index_raw", "shard"):
        assert (workdir / "logs" / rule / "batch_train_0.log").exists()
        assert (workdir / "benchmarks" / rule / "batch_train_0.tsv").exists()

    # A lost shard (e.g. a job killed before its rename) is rebuilt alone, byte for byte.
    lost = shards / "files" / "batch_train_1.h5"
    before = lost.read_bytes()
    lost.unlink()
    dry = snakemake("--cores", "2", "shards", "-n", *cfg, cwd=workdir)
    jobs = dry.stdout + dry.stderr
    assert dry.returncode == 0, jobs
    assert job_stats(jobs) == {"shard": 1, "shard_index": 1, "shards": 1}, jobs
    assert "stem=batch_train_1" in jobs
    res = snakemake("--cores", "2", "shards", *cfg, cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert lost.read_bytes() == before


@pytest.mark.slow
def test_manifest_fails_with_one_clear_line_above_threshold(workdir):
    raw = raw_dir(workdir)
    res = snakemake("--cores", "2", "shards", *config(workdir, raw, 0.1), cwd=workdir)
    assert res.returncode != 0
    log = (workdir / "logs" / "manifest" / "manifest.log").read_text().splitlines()
    errors = [ln for ln in log if " ERROR " in ln]
    assert len(errors) == 1, log
    assert "2 of 11 samples quarantined (18.2% > data.quarantine_max_fraction=0.1)" in errors[0]
    assert not (workdir / "results" / "data" / "manifest.csv").exists()


def test_cli_usage_errors_exit_2(tmp_path):
    bad = tmp_path / "not_a_batch.h5"
    bad.write_bytes(b"")
    res = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "index_raw.py"), "--raw", str(bad),
                          "--out", str(tmp_path / "i.json")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "not a challenge file name" in res.stderr
    res = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "shard_index.py"), "--splits",
                          str(tmp_path / "missing.csv"), "--sidecars", str(tmp_path / "x.json"),
                          "--shard-root", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and "x.json" in res.stderr and res.stderr.strip().count("\n") == 0
