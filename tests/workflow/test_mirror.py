"""The public STEMDL mirror (sample-<n>.npz in training/validation/testing/inference) as raw_dir."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import REPO, data_stage_workdir, job_stats, link_workdir, snakemake
from fixtures import (
    MIRROR_FAULTS,
    MIRROR_PUBLISHED,
    mirror_data,
    write_faulty_mirror,
    write_npz_sample,
    write_placeholder_mirror,
)

from cbedtdc.checks import check_run_config
from cbedtdc.config import ConfigError
from cbedtdc.data import DataError, ShardDataset, write_splits
from cbedtdc.io import read_csv, read_json, write_csv
from cbedtdc.layout import chunk_members, discover_raw, is_mirror, mirror_plan
from cbedtdc.mirror import index_mirror_chunk, read_npz
from cbedtdc.preprocess import scaled_to_uint8, write_mirror_shard


def quarantined(root, chunk):
    """{key: reason} of every quarantined entry of every chunk of the mirror under root."""
    out = {}
    for stem, folder in mirror_plan(root, chunk).items():
        idx = index_mirror_chunk(folder, stem, chunk)
        assert idx["seen"] == len(idx["samples"]) + len(idx["quarantine"])
        out.update({f"{q['file']}/{q['group']}": q["reason"] for q in idx["quarantine"]})
    return out


def test_every_planted_fault_is_quarantined_with_its_reason_and_good_files_pass(tmp_path):
    good = write_faulty_mirror(tmp_path)
    reasons = quarantined(tmp_path, 4)
    assert set(reasons) == set(MIRROR_FAULTS)
    for key, start in MIRROR_FAULTS.items():
        assert reasons[key].startswith(start), (key, reasons[key])
    accepted = {}
    for stem, folder in mirror_plan(tmp_path, 4).items():
        for rec in index_mirror_chunk(folder, stem, 4)["samples"]:
            accepted[rec["material"]] = rec
            assert rec["material"] == f"{rec['file']}/{rec['group']}"  # every sample is its own material
    assert set(accepted) == set(good)
    assert {k: r["space_group"] for k, r in accepted.items()} == {k: v[1] for k, v in good.items()}
    assert {r["split"] for k, r in accepted.items() if k.startswith("validation/")} == {"dev"}


def test_read_npz_checks_headers_and_values(tmp_path):
    data = mirror_data(0, np.random.default_rng(1))
    ok = write_npz_sample(tmp_path / "sample-1.npz", data, 62)
    got, label, reason = read_npz(ok)
    assert reason is None and label == 62 and np.array_equal(got, data)
    assert read_npz(ok, min_side=256)[2] == "side 128 smaller than image_size 256"
    no_label = write_npz_sample(tmp_path / "sample-2.npz", data)
    assert read_npz(no_label)[2] == "missing array label"
    got, label, reason = read_npz(no_label, require_label=False)  # classify: the label is optional
    assert reason is None and label is None
    zeros = data.copy()
    zeros[1] = 0
    assert read_npz(write_npz_sample(tmp_path / "sample-3.npz", zeros, 14))[2] == "all-zero panel 1 of 3"
    assert read_npz(tmp_path)[2].startswith("cannot open: ")
    raw = bytearray(ok.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside data.npy: the zip is intact, the member's CRC is not
    (tmp_path / "sample-4.npz").write_bytes(bytes(raw))
    assert read_npz(tmp_path / "sample-4.npz")[2].startswith("cannot read data: Bad CRC-32")


def test_chunks_cover_each_folder_once_in_sample_order(tmp_path):
    write_placeholder_mirror(tmp_path, {"training": 7, "validation": 0, "testing": 2})
    (tmp_path / "training" / "README").touch()
    plan = mirror_plan(tmp_path, 3)
    assert sorted(plan) == ["mirror_testing_0", "mirror_training_0", "mirror_training_1", "mirror_training_2",
                            "mirror_validation_0"]  # an empty folder keeps one chunk: its index quarantines it
    members = [m for k in range(3) for m in chunk_members(tmp_path / "training", f"mirror_training_{k}", 3)]
    assert members == [f"sample-{n}.npz" for n in range(7)] + ["README"]
    assert discover_raw(tmp_path, 3) == plan


def test_chunks_per_folder_are_the_ceiling_of_files_over_chunk_size(tmp_path):
    write_placeholder_mirror(tmp_path, {"training": 4001, "validation": 2000, "testing": 1, "inference": 0})
    plan = discover_raw(tmp_path, 2000)
    per_folder = {f: sum(s.startswith(f"mirror_{f}_") for s in plan) for f in MIRROR_PUBLISHED}
    assert per_folder == {"training": 3, "validation": 1, "testing": 1, "inference": 1}


def test_mixed_layouts_are_refused(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="holds both the STEMDL mirror .training. and challenge files .train."):
        is_mirror(tmp_path)


@pytest.mark.parametrize("change, match", [
    ({"data": {"resplit": True, "expected_side": 0}}, "data.resplit: the STEMDL mirror has no material ids"),
    ({"data": {"resplit": False, "expected_side": 512}}, "data.expected_side: 512, but the STEMDL mirror's stacks are "
                                                         "128 px"),
    ({"image_size": 256}, "image_size: 256 px shards from the STEMDL mirror's 128 px stacks"),
])
def test_mirror_config_mistakes_stop_at_parse_time(change, match):
    config = {"image_size": 64, "data": {"resplit": False, "expected_side": 0}, **change}
    stems = {"mirror_training_0": "t", "mirror_validation_0": "v", "mirror_testing_0": "e"}
    with pytest.raises(ConfigError, match=match):
        check_run_config(config, stems)
    check_run_config({"image_size": 128, "data": {"resplit": False, "expected_side": 128}}, stems)  # fine
    with pytest.raises(ConfigError, match="no testing or inference folder"):
        check_run_config({"image_size": 64, "data": {"resplit": False, "expected_side": 0}},
                         {"mirror_training_0": "t", "mirror_validation_0": "v"})


def test_resplit_of_mirror_samples_is_refused_by_the_library_too(tmp_path):
    row = {"file": "training", "group": "sample-0.npz", "split": "train", "space_group": 14,
           "material": "training/sample-0.npz", "energy_keV": "nan"}
    write_csv(tmp_path / "m.csv", [row], list(row))
    with pytest.raises(DataError, match="resplit is refused for the STEMDL mirror"):
        write_splits(tmp_path / "m.csv", tmp_path / "s.csv", tmp_path / "c.csv", resplit=True)


def test_mirror_shard_pixels_are_the_rounded_data_without_a_second_log_scaling(tmp_path):
    good = write_faulty_mirror(tmp_path / "raw", per_folder={"training": 4})
    idx = index_mirror_chunk(tmp_path / "raw" / "training", "mirror_training_0", 100)
    side = write_mirror_shard(tmp_path / "raw" / "training", idx, tmp_path / "s.h5", image_size=128)
    assert side["layout"] == "stemdl_mirror" and side["n"] == 4
    with h5py.File(tmp_path / "s.h5") as fh:
        keys = [k.decode() for k in fh["keys"][()]]
        for row, key in enumerate(keys):
            assert np.array_equal(fh["images"][row], np.rint(good[key][0]).astype(np.uint8)), key
        assert fh["labels"][()].tolist() == [good[k][1] for k in keys]
    half = scaled_to_uint8(good[keys[0]][0], 64)
    assert np.array_equal(half, np.rint(good[keys[0]][0].reshape(3, 64, 2, 64, 2).mean(axis=(2, 4))).astype(np.uint8))


# --------------------------------------------------------------------------- the rules
@pytest.fixture
def workdir(tmp_path):
    """A working directory that runs rules/common.smk + rules/data.smk like the main Snakefile."""
    return data_stage_workdir(tmp_path)


def config(workdir, raw, **data):
    path = workdir / "test_config.yaml"
    lines = [f"raw_dir: {str(raw)!r}", "image_size: 128", "data:", "  quarantine_max_fraction: 0.7",
             "  mirror_chunk: 4"] + [f"  {k}: {v}" for k, v in data.items()]
    path.write_text("\n".join(lines) + "\n")
    return ["--configfile", str(path)]


@pytest.mark.slow
def test_shards_target_on_a_faulty_mirror_shards_the_good_files_and_quarantines_every_fault(workdir):
    raw = workdir / "mirror"
    good = write_faulty_mirror(raw)
    res = snakemake("--cores", "2", "shards", *config(workdir, raw), cwd=workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    data, shards = workdir / "results" / "data", workdir / "results" / "shards"
    reasons = {f"{q['file']}/{q['group']}": q["reason"] for q in read_csv(data / "quarantine.csv")}
    assert set(reasons) == set(MIRROR_FAULTS)  # nothing silently dropped
    assert all(reasons[k].startswith(v) for k, v in MIRROR_FAULTS.items())
    report = read_json(data / "manifest_report.json")
    assert report["seen"] == len(good) + len(MIRROR_FAULTS) and report["accepted"] == len(good)
    info = read_json(shards / "data_info.json")
    assert info["bootstrap_unit"] == "sample" and info["material_ids"] is False
    seen = {}
    for split, folders in {"train": ("training",), "dev": ("validation",), "test": ("testing", "inference")}.items():
        ds = ShardDataset(shards, split)
        assert {k.split("/")[0] for k in ds.keys} <= set(folders)
        assert list(ds.materials) == ds.keys  # bootstrap over samples
        for i, key in enumerate(ds.keys):
            assert np.array_equal(ds.image(i), np.rint(good[key][0]).astype(np.uint8)), key
            assert ds.labels[i] == good[key][1]
            seen[key] = split
    assert set(seen) == set(good)
    for rule in ("index_mirror", "shard_mirror"):
        assert (workdir / "logs" / rule / "mirror_training_0.log").exists()
        assert (workdir / "benchmarks" / rule / "mirror_training_0.tsv").exists()


@pytest.mark.slow
def test_resplit_on_the_mirror_stops_the_dry_run_with_one_line(workdir):
    raw = workdir / "mirror"
    write_faulty_mirror(raw)
    res = snakemake("-n", "shards", *config(workdir, raw, resplit="true"), cwd=workdir)
    assert res.returncode != 0
    assert "config error at data.resplit: the STEMDL mirror has no material ids" in res.stdout + res.stderr


@pytest.mark.slow
def test_a_187k_file_mirror_dry_runs_as_96_chunk_jobs_per_rule(workdir, tmp_path_factory):
    raw = write_placeholder_mirror(tmp_path_factory.mktemp("placeholders"))
    cfg = workdir / "big.yaml"
    cfg.write_text(f"raw_dir: {str(raw)!r}\nimage_size: 64\n")
    res = snakemake("-n", "shards", "--configfile", cfg, cwd=workdir, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    stats = job_stats(res.stdout + res.stderr)
    assert stats["index_mirror"] == 96 and stats["shard_mirror"] == 96, stats
    assert "index_raw" not in stats and stats["manifest"] == 1


# --------------------------------------------------------------------------- cbedtdc classify
def test_read_samples_reads_an_npz_like_an_hdf5_sample(tmp_path):
    from cbedtdc.classify import read_samples

    data = mirror_data(1, np.random.default_rng(2))
    [(group, img, truth, why)] = list(read_samples(write_npz_sample(tmp_path / "sample-5.npz", data, 225), 64))
    assert (group, truth, why) == ("data", 225, "") and img.dtype == np.uint8
    assert np.array_equal(img, scaled_to_uint8(data, 64))
    [(group, img, truth, why)] = list(read_samples(write_npz_sample(tmp_path / "sample-6.npz", data), 128))
    assert truth is None and np.array_equal(img, np.rint(data).astype(np.uint8))  # no label: still classified
    (tmp_path / "sample-7.npz").write_bytes(b"PK\x03\x04 cut")
    [(group, img, truth, why)] = list(read_samples(tmp_path / "sample-7.npz", 16))
    assert group == "" and img is None and why.startswith("cannot open: ")


def test_classify_takes_a_mirror_folder_and_rejects_its_bad_files(tmp_path):
    import torch

    from cbedtdc.cli import main
    from cbedtdc.model import build_model
    from cbedtdc.train.checkpoint import model_file

    torch.manual_seed(0)
    meta = {"classes": [14, 225], "rest": False, "output_names": ["14", "225"], "arch": "resnet18",
            "orientation": "stack", "in_channels": 3, "n_outputs": 2, "image_size": 16, "mean": 0.5, "std": 0.25}
    run = tmp_path / "run"
    run.mkdir()
    torch.save(model_file(build_model("resnet18", 3, 2), meta), run / "best.pt")
    good = write_faulty_mirror(tmp_path / "mirror", per_folder={"testing": 2})
    out = tmp_path / "preds.csv"
    args = ["classify", str(run), str(tmp_path / "mirror"), "--out", str(out), "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    truth = {r["key"]: r["true_space_group"] for r in read_csv(out)}
    unlabelled = ["training/sample-103.npz", "validation/sample-109.npz", "validation/sample-110.npz",
                  "validation/sample-111.npz", "testing/sample-112.npz"]  # no or a bad label: classified, no truth
    assert set(truth) == {f"{k}/data" for k in [*good, *unlabelled]}
    assert all(truth[f"{k}/data"] == str(v[1]) for k, v in good.items())
    assert all(truth[f"{k}/data"] == "" for k in unlabelled)
    rejected = {r["key"]: r["reason"] for r in read_csv(tmp_path / "preds.rejected.csv")}
    assert rejected["training/sample-101.npz"].startswith("cannot open: ")
    assert rejected["testing/sample-113.npz"].startswith("values outside 0..255")  # one sample a file: its key
    assert "training/sample-103.npz" not in rejected  # a missing label is fine for new data


def test_index_mirror_cli_exits_2_with_one_line_on_a_wrong_chunk(tmp_path):
    import subprocess
    import sys

    (tmp_path / "training").mkdir()
    res = subprocess.run([sys.executable, str(REPO / "workflow_scripts" / "index_mirror.py"), "--folder",
                          str(tmp_path / "training"), "--stem", "mirror_testing_0", "--chunk", "4", "--out",
                          str(tmp_path / "i.json")], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, res.stderr
    assert "chunk mirror_testing_0 belongs to folder testing" in res.stderr
