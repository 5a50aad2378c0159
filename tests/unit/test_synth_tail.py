"""The tail option (synth.tail_min_train): extra training materials for the rare classes, in train files of their own.

What a user relies on: the plan is fixed by the config (which classes get how many extra materials, which files
hold them), dev, test and the plain train files are byte-identical with and without the option, the extra
materials are new materials of the right classes that the data stage reads as training samples, and the same seed
writes the same bytes."""

from __future__ import annotations

import hashlib
import importlib.util
from collections import Counter

import h5py
import pytest

from cbedtdc.data.manifest import build_manifest
from cbedtdc.data.splits import assign_splits, class_counts
from cbedtdc.errors import InputError
from cbedtdc.io import index_file
from cbedtdc.layout import synth_file_plan
from cbedtdc.synth import SynthConfig, class_sequence, materials_per_class, tail_per_class, write_file
from conftest import REPO, SNAKEFILE, job_stats, link_workdir, snakemake

CLASSES = (14, 62, 225, 229)  # real training counts 11,764 / 6,642 / 11,160 / 379
SPLIT = {"train": 14, "dev": 4, "test": 4}
PER_FILE = 4
ENERGIES = 2
MIN_TRAIN = 10


def _cfg(tail_min_train=0, **kw):
    return SynthConfig(**{"classes": CLASSES, "n_materials": sum(SPLIT.values()), "split_counts": dict(SPLIT),
                          "energies_per_material": ENERGIES, "image_size": 16, "floor": 1,
                          "tail_min_train": tail_min_train, **kw})


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- plan arithmetic
def test_classes_below_min_train_get_the_materials_up_to_it_and_the_others_none():
    plain = materials_per_class(CLASSES, SPLIT["train"], "real", 1)
    assert plain == {14: 5, 62: 3, 225: 5, 229: 1}  # 10, 6, 10, 2 training samples
    cfg = _cfg(MIN_TRAIN)
    assert tail_per_class(cfg) == {62: 2, 229: 4}  # 14 and 225 have 10 samples: not below 10
    assert cfg.n_tail == 6
    assert tail_per_class(_cfg(11)) == {14: 1, 62: 3, 225: 1, 229: 5}
    # 3 energies: 20 samples need ceil(20 / 3) = 7 materials: the fewest that reach 20 samples
    cfg3 = _cfg(20, energies_per_material=3, split_counts={"train": 20, "dev": 4, "test": 4})
    per = materials_per_class(CLASSES, 20, "real", 1)
    assert per == {14: 7, 62: 5, 225: 7, 229: 1} and tail_per_class(cfg3) == {62: 2, 229: 6}
    for c, extra in tail_per_class(cfg3).items():
        assert 3 * (per[c] + extra) >= 20 > 3 * (per[c] + extra - 1)


def test_tail_off_adds_nothing():
    cfg = _cfg(0)
    assert tail_per_class(cfg) == {} and cfg.n_tail == 0
    assert len(class_sequence(cfg, "train")) == SPLIT["train"]
    assert synth_file_plan(dict(SPLIT), PER_FILE, 0) == synth_file_plan(dict(SPLIT), PER_FILE)
    assert not any(f.tail for f in synth_file_plan(dict(SPLIT), PER_FILE))
    assert tail_per_class(_cfg(1)) == {}  # every class already has >= 1 sample


def test_bad_tail_settings_name_the_key():
    with pytest.raises(InputError, match="synth.tail_min_train=-1"):
        _cfg(-1)
    with pytest.raises(InputError, match="tail_materials=-2"):
        synth_file_plan(100, 10, -2)


def test_config_section_reaches_the_generator():
    cfg = SynthConfig.from_config({"classes": list(CLASSES), "synth": {"n_materials": dict(SPLIT), "floor": 1,
                                                                       "energies_per_material": 2,
                                                                       "tail_min_train": MIN_TRAIN}})
    assert cfg.tail_min_train == MIN_TRAIN and cfg.n_tail == 6


def test_train_plan_is_the_plain_plan_followed_by_the_tail():
    plain, tail = class_sequence(_cfg(0), "train"), class_sequence(_cfg(MIN_TRAIN), "train")
    assert (tail[: len(plain)] == plain).all()
    assert Counter(tail[len(plain):].tolist()) == tail_per_class(_cfg(MIN_TRAIN))
    for split in ("dev", "test"):
        assert (class_sequence(_cfg(0), split) == class_sequence(_cfg(MIN_TRAIN), split)).all()


def test_file_plan_puts_the_tail_in_train_files_of_its_own_after_the_plain_ones():
    plain = synth_file_plan(dict(SPLIT), PER_FILE)
    tail = synth_file_plan(dict(SPLIT), PER_FILE, 6)
    assert [f for f in tail if not f.tail] == plain  # every plain file as it was, same materials
    extra = [f for f in tail if f.tail]
    assert [(f.stem, f.split, f.first_material, f.n_materials) for f in extra] == [
        ("batch_train_4", "train", 14, 4), ("batch_train_5", "train", 18, 2)]
    # a plain train file ending mid-file (14 = 4 + 4 + 4 + 2) does not share a file with tail materials
    assert max(f.first_material + f.n_materials for f in plain if f.split == "train") == SPLIT["train"]


# --------------------------------------------------------------------------- written files
def _write(root, cfg, plan):
    root.mkdir(parents=True)
    for f in plan:
        write_file(root / f"{f.stem}.h5", cfg, f.first_material, f.n_materials)
    return {f.stem: root / f"{f.stem}.h5" for f in plan}


def _cli():
    spec = importlib.util.spec_from_file_location("_cli_synthesize", REPO / "workflow_scripts" / "synthesize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cli_args(out, f, tail=None):
    args = ["--out", str(out), "--first-material", str(f.first_material), "--file-materials", str(f.n_materials),
            "--split-materials", *(str(SPLIT[s]) for s in ("train", "dev", "test")),
            "--classes", ",".join(map(str, CLASSES)), "--energies", str(ENERGIES), "--image-size", "16",
            "--floor", "1", "--no-progress"]
    return args + (["--tail-min-train", str(tail)] if tail is not None else [])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The plain run and the tail run (every file written with the tail's settings), by the library."""
    root = tmp_path_factory.mktemp("tail")
    cfg = _cfg(MIN_TRAIN)
    plain = _write(root / "plain", _cfg(0), synth_file_plan(dict(SPLIT), PER_FILE))
    plan = synth_file_plan(dict(SPLIT), PER_FILE, cfg.n_tail)
    tail = _write(root / "tail", cfg, plan)
    return plain, tail, [f for f in plan if f.tail], root


def test_dev_test_and_plain_train_files_are_byte_identical_with_and_without_the_tail(runs):
    plain, tail, extra, _ = runs
    assert set(tail) - set(plain) == {f.stem for f in extra} == {"batch_train_4", "batch_train_5"}
    assert {s.split("_")[1] for s in plain} == {"train", "dev", "test"}
    for stem, path in plain.items():
        assert _sha(path) == _sha(tail[stem]), stem


def test_tail_files_hold_new_materials_of_the_rare_classes(runs):
    plain, tail, extra, _ = runs
    got = Counter()
    cells = {}
    for stem, path in tail.items():
        with h5py.File(path) as fh:
            for name, g in fh.items():
                material = g.attrs["material"].decode()
                cells.setdefault(material, tuple(g.attrs["abc_angstrom"]) + tuple(g.attrs["angles_degree"]))
                if stem in {f.stem for f in extra}:
                    got[int(g.attrs["space_group"])] += 1
                    assert int(material.rsplit("-", 1)[1]) >= SPLIT["train"], material  # index range after train
    assert got == {c: ENERGIES * m for c, m in tail_per_class(_cfg(MIN_TRAIN)).items()}
    assert len(cells) == sum(SPLIT.values()) + 6  # one id per material, none reused
    assert len(set(cells.values())) == len(cells)  # every material its own crystal: no copies


def test_data_stage_reads_the_tail_files_as_train(runs):
    plain, tail, extra, _ = runs
    counts = {}
    for name, files in (("plain", plain), ("tail", tail)):
        indexes = [index_file(p, expected_side=16) for p in files.values()]
        manifest, quarantine, report = build_manifest(indexes)
        assert quarantine == [] and report["materials_in_several_splits"] == []
        counts[name] = {r["space_group"]: r for r in class_counts(assign_splits(manifest))}
    for c in CLASSES:
        assert counts["tail"][c]["train"] == max(MIN_TRAIN, counts["plain"][c]["train"]), c
        for split in ("dev", "test"):
            assert counts["tail"][c][split] == counts["plain"][c][split], (c, split)
    assert [counts["plain"][c]["train"] for c in CLASSES] == [10, 6, 10, 2]


def test_cli_writes_the_tail_files_byte_identical_for_a_seed(runs):
    _, tail, extra, root = runs
    cli = _cli()
    for f in extra:
        out = root / "cli" / f"{f.stem}.h5"
        assert cli.main(_cli_args(out, f, MIN_TRAIN)) == 0
        assert _sha(out) == _sha(tail[f.stem]), f.stem
    # without the option a tail file's materials lie outside the train split: a clear error, no file
    bad = root / "bad" / f"{extra[0].stem}.h5"
    assert cli.main(_cli_args(bad, extra[0])) == 2 and not bad.exists()
    # another seed: other tail materials
    other = root / "seed1" / f"{extra[0].stem}.h5"
    assert cli.main(_cli_args(other, extra[0], MIN_TRAIN) + ["--seed", "1"]) == 0
    assert _sha(other) != _sha(tail[extra[0].stem])


# --------------------------------------------------------------------------- the workflow's static plan
def _synth_commands(out: str) -> dict[str, str]:
    return {line.split("--out results/raw/")[1].split(".h5")[0]: line.split("synthesize.py", 1)[1]
            for line in out.splitlines() if "workflow_scripts/synthesize.py" in line and "--out results/raw/" in line}


@pytest.mark.slow
def test_dry_run_adds_the_tail_jobs_and_leaves_the_plain_commands_alone(tmp_path):
    """config/longtail_tail.yaml on top of config/longtail.yaml: 4 more synthesize jobs, only they get the flag."""
    work = link_workdir(tmp_path)
    runs = {}
    for name, extra in (("longtail", []), ("tail", ["config/longtail_tail.yaml"])):
        done = snakemake("-n", "-p", "--cores", "1", "-s", SNAKEFILE, "--configfile", "config/config.yaml",
                         "config/longtail.yaml", *extra, cwd=work)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = (job_stats(done.stdout + done.stderr), _synth_commands(done.stdout + done.stderr))
    (stats, plain), (stats_tail, tail) = runs["longtail"], runs["tail"]
    assert stats["synthesize"] == 34 and stats_tail["synthesize"] == 38
    new = sorted(set(tail) - set(plain))
    assert new == [f"batch_train_{i}" for i in range(26, 30)]
    assert all("--tail-min-train 20" in tail[s] for s in new)
    assert all(tail[s] == plain[s] for s in plain), "switching the tail on must not change a plain file's job"
