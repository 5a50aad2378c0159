"""``cbedtdc classify`` on new challenge-layout files: reading, keys, mixed good and bad inputs, argument checks
(the classify run of a whole pipeline, checked against its evaluation, is in test_pipeline)."""

import numpy as np
import pytest
from fixtures import make_sample, write_challenge_file

from cbedtdc.classify import check_device, find_inputs, read_samples
from cbedtdc.cli import main
from cbedtdc.io import read_csv


def test_read_samples_keeps_good_samples_and_names_the_bad_ones(tmp_path):
    rng = np.random.default_rng(0)
    good = make_sample("sample_0_0", 14, "mp-1", side=32, rng=rng)
    nan = make_sample("sample_1_0", 225, "mp-2", side=32, rng=rng)
    nan["stack"] = nan["stack"].copy()
    nan["stack"][1, 2, 3] = np.nan
    unlabelled = make_sample("sample_2_0", 14, "mp-3", side=32, rng=rng)
    del unlabelled["attrs"]["space_group"]  # new data need not carry a label
    small = make_sample("sample_3_0", 14, "mp-4", side=8, rng=rng)
    empty = {"group": "sample_4_0", "stack": None, "attrs": {}}
    path = write_challenge_file(tmp_path / "new.h5", [good, nan, unlabelled, small, empty])
    out = {g: (img, truth, why) for g, img, truth, why in read_samples(path, 16)}
    assert out["sample_0_0"][0].shape == (3, 16, 16) and out["sample_0_0"][0].dtype == np.uint8
    assert out["sample_0_0"][1] == 14 and out["sample_0_0"][2] == ""
    assert out["sample_1_0"][0] is None and "non-finite" in out["sample_1_0"][2]
    assert out["sample_2_0"][1] is None and out["sample_2_0"][2] == ""
    assert "smaller than image_size 16" in out["sample_3_0"][2]
    assert "missing dataset cbed_stack" in out["sample_4_0"][2]
    (tmp_path / "junk.h5").write_bytes(b"junk")
    [(group, img, _, why)] = list(read_samples(tmp_path / "junk.h5", 16))
    assert group == "" and img is None and why.startswith("cannot open")
    files, rejected = find_inputs([tmp_path, tmp_path / "nothing.h5"])
    assert files == [(tmp_path / "junk.h5", "junk.h5"), (tmp_path / "new.h5", "new.h5")]
    assert rejected == [{"key": str(tmp_path / "nothing.h5"), "file": str(tmp_path / "nothing.h5"), "group": "",
                         "reason": "no such file or folder"}]


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory):
    """A flat model folder (``best.pt``) of an untrained resnet18 over classes 14, 225 at 16 px: the
    predictions' values do not matter here, only which samples are classified and under which key."""
    import torch

    from cbedtdc.model import build_model
    from cbedtdc.train.checkpoint import model_file

    torch.manual_seed(0)
    meta = {"classes": [14, 225], "rest": False, "output_names": ["14", "225"], "arch": "resnet18",
            "orientation": "stack", "in_channels": 3, "n_outputs": 2, "image_size": 16, "mean": 0.5, "std": 0.25}
    run = tmp_path_factory.mktemp("flat_run")
    torch.save(model_file(build_model("resnet18", 3, 2), meta), run / "best.pt")
    return run


def _good_file(path, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return write_challenge_file(path, [make_sample(f"sample_{i}_0", 14, f"mp-{i}", side=32, rng=rng) for i in range(n)])


def test_classify_keeps_going_past_a_missing_path_and_an_empty_folder(flat_run, tmp_path):
    a = tmp_path / "a"
    _good_file(a / "good.h5")
    _good_file(a / "sub" / "good.h5", seed=1)  # same base name one folder down: a different key
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train_0.hdf5").write_bytes(b"")
    single = _good_file(tmp_path / "single.h5", n=1, seed=2)
    out, rej = tmp_path / "preds.csv", tmp_path / "preds.rejected.csv"
    args = ["classify", str(flat_run), str(a), str(tmp_path / "missing.h5"), str(tmp_path / "empty"), str(single),
            "--out", str(out), "--device", "cpu", "--threads", "1"]
    assert main(args) == 0
    preds, rejected = read_csv(out), read_csv(rej)
    assert [r["key"] for r in preds] == ["good.h5/sample_0_0", "good.h5/sample_1_0", "sub/good.h5/sample_0_0",
                                         "sub/good.h5/sample_1_0", "single.h5/sample_0_0"]
    assert {r["space_group"] for r in preds} <= {"14", "225"} and all(r["true_space_group"] == "14" for r in preds)
    by_key = {r["key"]: r for r in rejected}
    assert list(by_key) == [str(tmp_path / "missing.h5"), str(tmp_path / "empty")]
    assert by_key[str(tmp_path / "missing.h5")]["reason"] == "no such file or folder"
    empty_reason = by_key[str(tmp_path / "empty")]["reason"]
    assert "folder holds no .h5 or .npz file; saw 1 other file(s), e.g. train_0.hdf5" in empty_reason
    # a bad sample in a folder is keyed like the predictions: path inside the folder, then the group
    broken = make_sample("sample_9_0", 14, "mp-9", side=8)
    write_challenge_file(a / "sub" / "small.h5", [broken])
    assert main(args) == 0
    [row] = [r for r in read_csv(rej) if r["group"]]
    assert row["key"] == "sub/small.h5/sample_9_0" and row["file"] == "sub/small.h5"
    assert "smaller than image_size 16" in row["reason"]


def test_classify_exits_2_only_when_nothing_was_classified(flat_run, tmp_path):
    out = tmp_path / "preds.csv"
    assert main(["classify", str(flat_run), str(tmp_path / "gone"), "--out", str(out), "--device", "cpu"]) == 2
    assert read_csv(out) == [] and read_csv(tmp_path / "preds.rejected.csv")[0]["reason"] == "no such file or folder"


def test_find_inputs_keys_are_relative_to_the_input_and_clashes_are_rejected(tmp_path):
    _good_file(tmp_path / "a" / "x.h5", n=1)
    _good_file(tmp_path / "b" / "x.h5", n=1)
    files, rejected = find_inputs([tmp_path, tmp_path / "a", tmp_path / "a" / "x.h5", tmp_path / "b"])
    # the same file named twice is classified once, under the key of its first naming
    assert files == [(tmp_path / "a" / "x.h5", "a/x.h5"), (tmp_path / "b" / "x.h5", "b/x.h5")] and rejected == []
    files, rejected = find_inputs([tmp_path / "a", tmp_path / "a" / "x.h5", tmp_path / "b"])
    assert files == [(tmp_path / "a" / "x.h5", "x.h5")]
    [clash] = rejected
    assert clash["key"] == "x.h5" and "gives the same key as" in clash["reason"]
    assert str(tmp_path / "b") in clash["reason"]


@pytest.mark.parametrize("extra, message", [
    (["--out", "{tmp}"], "--out {tmp} is a directory: give a CSV file name"),
    (["--out", "{tmp}/p.csv", "--rejected", "{tmp}"], "--rejected {tmp} is a directory"),
    (["--out", "{tmp}/file.txt/p.csv"], "file.txt is a file, not a folder"),
    (["--out", "{tmp}/p.csv", "--device", "gpu"], "--device 'gpu' is not a device: allowed are cpu, cuda, auto"),
    (["--out", "{tmp}/p.csv", "--batch-size", "0"], "--batch-size 0: give a positive number"),
])
def test_classify_rejects_bad_arguments_before_any_work(tmp_path, caplog, monkeypatch, extra, message):
    import cbedtdc.classify as C

    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setattr(C, "load_run", lambda *a, **k: pytest.fail("run loaded before the arguments were checked"))
    extra = [e.format(tmp=tmp_path) for e in extra]
    with caplog.at_level("ERROR"):
        assert main(["classify", str(tmp_path / "no_run"), str(tmp_path), *extra]) == 2
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert message.format(tmp=tmp_path) in line and "\n" not in line


def test_device_cuda_without_a_gpu_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda: torch sees no GPU .*use --device cpu"):
        check_device("cuda")
    assert check_device("auto") == "cpu"
