"""Training engine in one process: outputs, determinism, resume after SIGKILL, corrupt checkpoints,
losses, sampler, augmentation. Tiny: resnet18 on 16 px shards of 3 classes, 1-2 epochs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, kill_driver

from cbedtdc import train as T
from cbedtdc.model import augment, augment_params, build_model

ROOT = REPO
CLI = ROOT / "workflow_scripts" / "train.py"
CLASSES = [14, 225, 1]
# 18 train samples, batch 4 -> 5 steps per epoch; checkpoints at steps 2 and 4 and at each epoch end
CFG = {"arch": "resnet18", "orientation": "random", "epochs": 2, "batch_size": 4, "lr": 0.002, "lr_scaling": "none",
       "workers": 0, "checkpoint_every": 2, "threads_per_rank": 1, "timeout_s": 60, "seed": 3, "loss": "ce"}
CLI_ARGS = ["--classes", "14,225,1", "--arch", "resnet18", "--orientation", "random", "--epochs", "2",
            "--batch-size", "4", "--lr", "0.002",
            "--lr-scaling", "none", "--workers", "0", "--checkpoint-every", "2", "--threads-per-rank", "1",
            "--timeout-s", "60", "--seed", "3", "--loss", "ce"]


def weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tiny_shards, tmp_path_factory):
    """One uninterrupted run with CFG (the yardstick of determinism and resume)."""
    out = tmp_path_factory.mktemp("reference")
    summary = T.fit(CFG, shard_root=tiny_shards, out_dir=out, classes=CLASSES)
    return out, summary


@pytest.mark.slow
def test_fit_writes_outputs_and_predict_reads_them(reference, tiny_shards):
    out, summary = reference
    for name in ("best.pt", "last.pt", "metrics.csv", "train.json"):
        assert (out / name).is_file()
    assert not (out / "resume").exists(), "resume state must be removed once the outputs are written"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0.0 <= float(r["dev_balanced_accuracy"]) <= 1.0 for r in rows)
    info = json.loads((out / "train.json").read_text())
    assert info["world_size"] == 1 and info["device"] == "cpu" and info["n_train"] == 18
    assert info["steps_per_epoch"] == 5 and info["config"]["loss"] == "ce" and info["images_per_s"] > 0
    assert info == json.loads(json.dumps(summary, default=str))

    model, meta = T.load_model(out / "best.pt")
    assert meta["classes"] == CLASSES and meta["n_outputs"] == 3 and meta["in_channels"] == 1
    assert meta["epoch"] == info["best_epoch"]
    keys, logits = T.predict(model, meta, tiny_shards, "test")
    assert logits.shape == (9, 3) and len(keys) == 9 and keys[0].startswith("batch_test_")
    keys2, logits2 = T.predict(model, meta, tiny_shards, "test", keys=keys[:4], batch_size=3)
    assert keys2 == keys[:4]
    np.testing.assert_allclose(logits2, logits[:4], rtol=1e-5, atol=1e-5)
    _, feats = T.extract_features(model, meta, tiny_shards, "test", keys=keys[:2])
    assert feats.shape == (2, 512)


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_differs(reference, tiny_shards, tmp_path):
    out, _ = reference
    T.fit(CFG, shard_root=tiny_shards, out_dir=tmp_path / "again", classes=CLASSES)
    assert_same(weights(out / "last.pt"), weights(tmp_path / "again" / "last.pt"))
    T.fit({**CFG, "seed": 4, "epochs": 1}, shard_root=tiny_shards, out_dir=tmp_path / "seed4", classes=CLASSES)
    a, b = weights(out / "last.pt"), weights(tmp_path / "seed4" / "last.pt")
    assert not torch.equal(a["backbone.fc.weight"], b["backbone.fc.weight"])


@pytest.mark.slow
def test_an_image_budget_cuts_the_last_epoch_short_and_equals_whole_epochs(reference, tiny_shards, tmp_path):
    """train.images: 18 samples, global batch 4 (5 steps an epoch). 23 images -> 6 steps: epoch 1 whole, epoch 2
    one step; 40 images -> the reference's 2 x 5 steps, the same weights bit for bit (same order, same schedule)."""
    s = T.fit({**CFG, "images": 23}, shard_root=tiny_shards, out_dir=tmp_path / "short", classes=CLASSES)
    assert s["epochs"] == 2 and s["total_steps"] == 6 and s["images_this_run"] == 24
    assert T.images_seen(tmp_path / "short" / "train.json") == 24
    rows = list(csv.DictReader(open(tmp_path / "short" / "metrics.csv")))
    assert [int(r["images"]) for r in rows] == [20, 24]
    T.fit({**CFG, "epochs": 1, "images": 40}, shard_root=tiny_shards, out_dir=tmp_path / "whole", classes=CLASSES)
    assert T.images_seen(tmp_path / "whole" / "train.json") == T.images_seen(reference[0] / "train.json") == 40
    assert_same(weights(reference[0] / "last.pt"), weights(tmp_path / "whole" / "last.pt"))


@pytest.mark.slow
def test_rest_output_and_excluded_count(tiny_shards, tmp_path):
    cfg = {**CFG, "epochs": 2, "orientation": "stack"}
    s = T.fit(cfg, shard_root=tiny_shards, out_dir=tmp_path / "rest", classes=[14], rest=True)
    assert s["output_names"] == ["14", "rest"] and s["n_excluded_train"] == 0
    assert s["train_counts"] == [6, 12] and s["epochs"] == 2
    _, meta = T.load_model(tmp_path / "rest" / "best.pt")
    assert meta["in_channels"] == 3 and meta["rest"] is True
    s = T.fit({**cfg, "loss": "weighted_ce"}, shard_root=tiny_shards, out_dir=tmp_path / "two",
              classes=[225, 1])
    assert s["n_train"] == 12 and s["n_excluded_train"] == 6 and s["n_excluded_dev"] == 3


@pytest.fixture(scope="module")
def killed_run(tiny_shards, tmp_path_factory):
    """Out folder of a run SIGKILLed at step 4 of epoch 2 (last checkpoint: epoch 2, step 2)."""
    tmp = tmp_path_factory.mktemp("killed")
    out = tmp / "job"
    driver = kill_driver(tmp / "killed_run.py", "n == 5 + 4")  # SIGKILL when step 4 of epoch 2 begins
    proc = subprocess.run([sys.executable, str(driver), "--shards", str(tiny_shards), "--model", str(out / "best.pt"),
                           *CLI_ARGS], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (out / "resume" / "state.pt").is_file() and not (out / "last.pt").exists()
    return out


def _resume(out: Path, shards) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), "--shards", str(shards), "--model", str(out / "best.pt"),
                           *CLI_ARGS], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_resume_after_sigkill_gives_same_weights(killed_run, reference, tiny_shards, tmp_path):
    out = tmp_path / "job"
    shutil.copytree(killed_run, out)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1], "the killed run finished epoch 1 only"
    (out / "resume" / ".state.pt.99999.tmp").write_bytes(b"half a checkpoint")  # a write cut by the kill
    proc = _resume(out, tiny_shards)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming from" in proc.stderr and "epoch 2, step 2 of 5" in proc.stderr
    info = json.loads((out / "train.json").read_text())
    assert info["resumed_from"] == {"epoch": 1, "step": 2}
    assert info["images_this_run"] == 3 * 4, "only the 3 remaining steps of epoch 2 are trained"
    assert [int(r["epoch"]) for r in csv.DictReader(open(out / "metrics.csv"))] == [1, 2]
    assert not (out / "resume").exists()
    ref, _ = reference
    assert_same(weights(ref / "last.pt"), weights(out / "last.pt"))
    assert_same(weights(ref / "best.pt"), weights(out / "best.pt"))


@pytest.mark.slow
def test_corrupt_state_falls_back_to_previous(killed_run, reference, tiny_shards, tmp_path):
    out = tmp_path / "job"
    shutil.copytree(killed_run, out)
    state = out / "resume" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # truncated write
    proc = _resume(out, tiny_shards)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{state}: not a readable checkpoint" in proc.stderr and "trying the previous" in proc.stderr
    assert "Traceback" not in proc.stderr
    info = json.loads((out / "train.json").read_text())
    assert info["resumed_from"]["epoch"] in (0, 1)
    assert_same(weights(reference[0] / "last.pt"), weights(out / "last.pt"))


@pytest.mark.slow
def test_all_states_corrupt_is_one_clear_error(killed_run, tiny_shards, tmp_path):
    out = tmp_path / "job"
    shutil.copytree(killed_run, out)
    for name in ("state.pt", "state.prev.pt"):
        (out / "resume" / name).write_bytes(b"\x80\x04garbage")
    proc = _resume(out, tiny_shards)
    assert proc.returncode == 2
    assert "no readable checkpoint to resume from" in proc.stderr
    assert str(out / "resume" / "state.prev.pt") in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_load_model_rejects_truncated_and_foreign_files(reference, tmp_path):
    good = reference[0] / "best.pt"
    bad = tmp_path / "best.pt"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(T.CheckpointError, match=f"{bad}: not a readable checkpoint"):
        T.load_model(bad)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(T.CheckpointError, match="not a cbedtdc-model/1 checkpoint"):
        T.load_model(bad)
    with pytest.raises(T.CheckpointError, match="checkpoint not found"):
        T.load_model(tmp_path / "missing.pt")


@pytest.mark.slow
def test_changed_config_does_not_resume_foreign_state(killed_run, tiny_shards, tmp_path):
    out = tmp_path / "job"
    shutil.copytree(killed_run, out)
    s = T.fit({**CFG, "epochs": 1}, shard_root=tiny_shards, out_dir=out, classes=CLASSES)
    assert s["resumed_from"] is None and s["epochs"] == 1


# --------------------------------------------------------------------------- pieces
def test_epoch_batches_ranks_equal_accumulation_and_resume():
    one = list(T.EpochBatches(23, batch_size=3, world_size=1, rank=0, accum_steps=2, seed=5))
    ranks = [list(T.EpochBatches(23, batch_size=3, world_size=2, rank=r, accum_steps=1, seed=5)) for r in (0, 1)]
    assert len(one) == 2 * len(ranks[0]) == 8  # ceil(23 / 6) = 4 steps
    for k in range(4):
        assert one[2 * k] == ranks[0][k] and one[2 * k + 1] == ranks[1][k]
    assert set(np.concatenate(one)) == set(range(23)), "every sample is seen each epoch"
    b = T.EpochBatches(23, batch_size=3, accum_steps=2, seed=5)
    b.set_position(0, 3)
    assert list(b) == one[6:]
    b.set_position(1, 0)
    assert list(b) != one


def test_augmentation_is_reproducible_and_keeps_pixels():
    x = torch.arange(3 * 8 * 8, dtype=torch.uint8).reshape(3, 8, 8)
    p = augment_params(1, 2, 3, 3)
    assert p == augment_params(1, 2, 3, 3)
    y = augment(x, p)
    assert y.shape == x.shape and y.dtype == torch.uint8
    for c in range(3):
        assert torch.equal(torch.sort(y[c].flatten()).values, torch.sort(x[c].flatten()).values)
    draws = {tuple(augment_params(0, 0, i, 1)) for i in range(64)}
    assert len(draws) == 8, "all 8 rotation/flip combinations occur"


def test_model_shapes_and_config_errors():
    m = build_model("resnet18", 1, 4)
    assert m(torch.zeros(2, 1, 16, 16, dtype=torch.uint8)).shape == (2, 4)
    with pytest.raises(ValueError, match="arch='vgg'"):
        build_model("vgg", 1, 4)
    with pytest.raises(ValueError, match="unknown training option"):
        T.resolve_config({"epochz": 3})
    with pytest.raises(ValueError, match="train.orientation='side'"):
        T.resolve_config({"orientation": "side"})


def test_cli_rejects_bad_model_path_and_missing_shards(tmp_path):
    from importlib import util

    spec = util.spec_from_file_location("train_cli", CLI)
    cli = util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--shards", str(tmp_path), "--model", str(tmp_path / "model.pt"), "--classes", "1,2"]) == 2
    assert cli.main(["--shards", str(tmp_path / "nope"), "--model", str(tmp_path / "o" / "best.pt"),
                     "--classes", "1,2"]) == 2
    assert not (tmp_path / "o" / "best.pt").exists()


def load_cli():
    from importlib import util

    spec = util.spec_from_file_location("train_cli", CLI)
    cli = util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    return cli


def test_cli_flags_are_the_engine_options():
    """One table: a flag per engine option except the launcher's ranks, with the engine's default and choices."""
    parser = load_cli().get_parser()
    args = parser.parse_args(["--shards", "s", "--model", "m/best.pt", "--classes", "1,2"])
    options = {k for k in T.OPTIONS if k not in T.LAUNCHER_KEYS}
    flags = {a.dest for a in parser._actions if a.option_strings and a.dest in T.OPTIONS}
    assert flags == options and "ranks" not in flags
    for key in options:
        assert getattr(args, key) == T.DEFAULTS[key], f"--{key.replace('_', '-')}: default differs from DEFAULTS"
    with pytest.raises(SystemExit):
        parser.parse_args(["--shards", "s", "--model", "m", "--classes", "1", "--arch", "vgg"])


def test_cli_refuses_a_budget_given_twice(tmp_path, capsys):
    """A TDC level's args.txt sets --epochs; a second --epochs on the command line would silently win."""
    (tmp_path / "args.txt").write_text("--classes\n1\n--rest\n--epochs\n7\n")
    parser = load_cli().get_parser()
    base = ["--shards", "s", "--model", "m/best.pt"]
    assert parser.parse_args([*base, f"@{tmp_path / 'args.txt'}"]).epochs == 7
    with pytest.raises(SystemExit):
        parser.parse_args([*base, f"@{tmp_path / 'args.txt'}", "--epochs", "3"])
    assert "--epochs given twice" in capsys.readouterr().err


def test_resolve_config_checks_the_schema_bounds():
    with pytest.raises(ValueError, match=r"train.label_smoothing=0.7: must be <= 0.5"):
        T.resolve_config({"label_smoothing": 0.7})
    with pytest.raises(ValueError, match=r"train.lr=0: must be > 0"):
        T.resolve_config({"lr": 0})
    with pytest.raises(ValueError, match=r"train.batch_size=0: must be >= 1"):
        T.resolve_config({"batch_size": 0})


@pytest.mark.slow
def test_level_subset_without_dev_samples(tiny_shards, tmp_path):
    """A TDC level: training restricted to given keys, no dev sample of its classes -> last epoch is best."""
    from cbedtdc.data import ShardDataset

    keys = ShardDataset(tiny_shards, "train").keys[::2]
    s = T.fit({**CFG, "epochs": 1}, shard_root=tiny_shards, out_dir=tmp_path, classes=CLASSES, train_keys=keys,
              dev_keys=[])
    assert s["n_train"] == len(keys) == 9 and s["n_dev"] == 0 and s["best_dev_balanced_accuracy"] is None
    assert_same(weights(tmp_path / "best.pt"), weights(tmp_path / "last.pt"))
    with pytest.raises(KeyError, match="not in split train"):
        T.fit(CFG, shard_root=tiny_shards, out_dir=tmp_path / "bad", classes=CLASSES, train_keys=["nope.h5/x"])


@pytest.mark.slow
def test_engine_learns_class_patterns(tmp_path):
    """End to end on class-dependent synthetic stacks: the trained model classifies unseen test samples."""
    from fixtures import build_tiny_shards

    from cbedtdc.data import ShardDataset

    root = build_tiny_shards(tmp_path / "data", classes=(14, 225, 1), per_class=20, side=32, image_size=16, seed=0)
    T.fit({"arch": "resnet18", "orientation": "stack", "epochs": 6, "batch_size": 8, "lr": 0.003,
           "lr_scaling": "none", "label_smoothing": 0.0, "workers": 0, "seed": 0}, shard_root=root,
          out_dir=tmp_path / "out", classes=CLASSES)
    model, meta = T.load_model(tmp_path / "out" / "best.pt")
    keys, logits = T.predict(model, meta, root, "test")
    truth = np.array([CLASSES.index(g) for g in ShardDataset(root, "test").labels])
    accuracy = float((logits.argmax(1) == truth).mean())
    assert accuracy >= 0.8, f"test accuracy {accuracy:.2f} on 3 easy classes (chance 0.33)"
