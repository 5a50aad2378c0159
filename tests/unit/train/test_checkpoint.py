"""A finished training job leaves a record beside its outputs (``finished/``: hard links + sha256 under the job's
key); a rerun whose outputs were deleted puts them back from it instead of training, and only when the record is
this job's (same arguments and inputs) and intact."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from cbedtdc.train import fit
from cbedtdc.train.checkpoint import file_sha256, input_digest, record_finished, restore_finished

CFG = {"arch": "resnet18", "epochs": 1, "batch_size": 4, "lr": 0.002, "lr_scaling": "none", "workers": 0,
       "threads_per_rank": 1, "timeout_s": 60, "seed": 3, "loss": "ce"}
CLASSES = [14, 225, 1]
OUTPUTS = ("best.pt", "last.pt", "metrics.csv", "train.json")


@pytest.fixture(scope="module")
def shards(tiny_shards, tmp_path_factory):
    """A private copy of the tiny shards (one test touches a shard file's mtime)."""
    return shutil.copytree(tiny_shards, tmp_path_factory.mktemp("shards") / "shards")


@pytest.fixture(scope="module")
def finished(shards, tmp_path_factory):
    """A finished 1-epoch job and the sha256 of its outputs."""
    out = tmp_path_factory.mktemp("job")
    fit(CFG, shard_root=shards, out_dir=out, classes=CLASSES)
    return out, {n: file_sha256(out / n) for n in OUTPUTS}


def rerun(job, shards, tmp_path, caplog, cfg=CFG):
    """A copy of the finished job with its outputs deleted (as Snakemake does to an incomplete job), fitted again."""
    out = tmp_path / "job"
    shutil.copytree(job, out)
    for name in OUTPUTS:
        (out / name).unlink()
    with caplog.at_level(logging.INFO, logger="cbedtdc"):
        fit(cfg, shard_root=shards, out_dir=out, classes=CLASSES)
    return out, caplog.text


def test_finished_job_keeps_a_record_and_no_resume_state(finished):
    out, sha = finished
    manifest = json.loads((out / "finished" / "manifest.json").read_text())
    assert {n: f["sha256"] for n, f in manifest["files"].items()} == sha
    assert all(file_sha256(out / "finished" / n) == sha[n] for n in OUTPUTS)
    assert not (out / "resume").exists()


def test_rerun_with_deleted_outputs_restores_them_without_training(finished, shards, tmp_path, caplog):
    job, sha = finished
    out, text = rerun(job, shards, tmp_path, caplog)
    assert "restored finished training from" in text and "no epoch retrained" in text
    assert "epoch 1/1" not in text  # no epoch line: nothing trained
    assert {n: file_sha256(out / n) for n in OUTPUTS} == sha


def test_other_arguments_train_again(finished, shards, tmp_path, caplog):
    job, sha = finished
    out, text = rerun(job, shards, tmp_path, caplog, cfg={**CFG, "lr": 0.001})
    assert "restored finished training" not in text and "epoch 1/1" in text
    assert file_sha256(out / "best.pt") != sha["best.pt"]
    # the new job's record replaced the old one
    assert json.loads((out / "finished" / "manifest.json").read_text())["files"]["best.pt"]["sha256"] == \
        file_sha256(out / "best.pt")


def test_rewritten_input_trains_again(finished, shards, tmp_path, caplog):
    job, _ = finished
    shard = next((shards / "files").glob("*.h5"))
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as a rewritten shard file would move
    try:
        _, text = rerun(job, shards, tmp_path, caplog)
    finally:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "restored finished training" not in text and "epoch 1/1" in text


def test_damaged_record_is_not_trusted(tmp_path, caplog):
    out, record = tmp_path / "out", tmp_path / "out" / "finished"
    out.mkdir()
    for name in OUTPUTS:
        (out / name).write_bytes(name.encode() * 100)
    record_finished(out, record, "KEY", OUTPUTS)
    assert restore_finished(out, record, "OTHER", OUTPUTS) is None
    for name in OUTPUTS:
        (out / name).unlink()
    assert restore_finished(out, record, "KEY", OUTPUTS) is not None
    assert (out / "last.pt").read_bytes() == b"last.pt" * 100
    for name in OUTPUTS:
        (out / name).unlink()
    (record / "last.pt").unlink()
    (record / "last.pt").write_bytes(b"last.pt" * 99)  # another file under the recorded name
    with caplog.at_level(logging.WARNING):
        assert restore_finished(out, record, "KEY", OUTPUTS) is None
    assert "last.pt: missing or not the recorded bytes" in caplog.text
    assert not any((out / n).exists() for n in OUTPUTS)  # nothing half-restored


def test_input_digest_reads_tables_and_stats_files(tmp_path):
    (tmp_path / "t.csv").write_text("a\n")
    (tmp_path / "f.h5").write_bytes(b"x" * 10)
    one = input_digest(tmp_path, ["t.csv"], ["f.h5"])
    (tmp_path / "t.csv").write_text("b\n")
    assert input_digest(tmp_path, ["t.csv"], ["f.h5"]) != one
