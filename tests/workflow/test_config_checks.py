"""Mistakes caught before the expensive work: each bad config or folder gives one line naming what is wrong and
what to set, at parse time (dry runs) or in rule check_classes, before any training job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_sample, write_challenge_file

from cbedtdc.checks import ClassCheckError, check_class_counts, check_lsf_submission, check_tdc_config
from cbedtdc.config import ConfigError, schema_defaults
from conftest import REPO

BIN = Path(sys.executable).parent
TINY_SYNTH = "synth={n_materials: 3, materials_per_file: 3, energies_per_material: 1, image_size: 32, gallery: false}"


@pytest.fixture
def workdir(tmp_path):
    for name in ["workflow_scripts", "config", "profiles", "summit", "local"]:
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def snakemake(workdir, *args, path=None, env_extra=None, drop=(), timeout=300):
    env = dict(os.environ, PATH=path or f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env_extra or {}))
    for key in drop:
        env.pop(key, None)
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--cores", "2", *args], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=timeout)


def one_error_line(res) -> str:
    """The run failed with exactly one `Error: config error ...` line and no traceback; return that line."""
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if "config error" in ln]
    assert len(lines) == 1, out
    return lines[0]


def raw_files(root, names, classes=(14, 225, 1, 2)):
    """Tiny challenge files (32 px stacks, 2 samples a class) under the given file names."""
    rng = np.random.default_rng(0)
    for name in names:
        samples = [make_sample(f"sample_{k}_{j}", sg, f"mp-{name}-{sg}", class_index=k, rng=rng, energy_keV=100 + j)
                   for k, sg in enumerate(classes) for j in range(2)]
        write_challenge_file(root / name, samples)
    return root


@pytest.mark.parametrize("classes, message", [
    ("[999, 14]", "config error at classes: space group 999 out of range (allowed 1..230"),
    ("[14, 14]", "config error at classes: duplicate space group 14 in [14, 14]"),
    ("top10", "config error at classes: 'top10' is not a class set; allowed: top20, all, or a list"),
    ("[14]", "config error at classes: a run needs at least 2 classes"),
])
def test_bad_classes_say_what_is_wrong(workdir, classes, message):
    assert message in one_error_line(snakemake(workdir, "-n", "--config", f"classes={classes}"))


def test_image_size_above_the_generated_stacks_fails_at_parse_time(workdir):
    line = one_error_line(snakemake(workdir, "-n", "--config", "image_size=256", "synth={image_size: 128}"))
    assert "256 px shards from 128 px generated stacks; set synth.image_size to at least 256" in line


def test_train_only_raw_dir_fails_at_parse_time_suggesting_resplit(workdir, tmp_path):
    raw = raw_files(tmp_path / "raw", ["batch_train_0.h5", "batch_train_1.h5"])
    line = one_error_line(snakemake(workdir, "-n", "--config", f"raw_dir={raw}"))
    assert "only batch_train_* files (no dev, test split); set data.resplit: true" in line
    ok = snakemake(workdir, "-n", "--config", f"raw_dir={raw}", "data={resplit: true}")
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_raw_dir_without_challenge_names_lists_what_it_ignored(workdir, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ["train_0.h5", "cbed.hdf5", "notes.txt"]:
        (raw / name).write_bytes(b"")
    line = one_error_line(snakemake(workdir, "-n", "--config", f"raw_dir={raw}"))
    assert "holds no batch_{train,dev,test}_N.h5 file; seen and ignored: cbed.hdf5, train_0.h5 (rename them" in line
    missing = one_error_line(snakemake(workdir, "-n", "--config", f"raw_dir={tmp_path / 'nowhere'}"))
    assert "config error at raw_dir:" in missing and "is not a directory" in missing


@pytest.mark.slow
def test_fewer_classes_in_the_data_than_asked_stop_before_training(workdir, tmp_path):
    raw = raw_files(tmp_path / "raw", ["batch_train_0.h5", "batch_dev_0.h5", "batch_test_0.h5"])
    res = snakemake(workdir, "--config", f"raw_dir={raw}", "image_size=16", "classes=[14, 225, 1, 2, 62, 15]",
                    "tdc={level_sizes: [3, 3]}", "train={ranks: 1, arch: resnet18, epochs: 1}", "--", "all")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "rule check_classes" in out
    log = (workdir / "logs" / "check_classes" / "check_classes.log").read_text()
    assert ("2 of the run's 6 classes have no training sample (space group 62, 15); set classes: [14, 225, 1, 2] "
            "(with tdc.levels: explicit, tdc.level_sizes adding up to 4)") in log
    assert not (workdir / "logs" / "train_flat").exists() and not (workdir / "logs" / "plan_levels").exists()


def test_class_counts_check(tmp_path):
    counts = tmp_path / "class_counts.csv"
    counts.write_text("space_group,train,dev,test,total\n14,5,1,1,7\n225,4,0,0,4\n3,9,9,9,27\n")
    assert check_class_counts(counts, [14, 225])[225] == {"train": 4, "dev": 0, "test": 0}
    with pytest.raises(ClassCheckError, match=r"1 of the run's 2 classes have no training sample \(space group 2\); "
                                              r"add files holding the run's classes$"):
        check_class_counts(counts, [14, 2])
    no_dev = tmp_path / "no_dev.csv"
    no_dev.write_text("space_group,train,dev,test,total\n14,5,0,1,6\n225,4,0,1,5\n")
    with pytest.raises(ClassCheckError, match="no dev sample of the run's classes; set data.resplit: true"):
        check_class_counts(no_dev, [14, 225])


@pytest.mark.parametrize("path_has_bsub, project, message", [
    (False, "MAT1", "the profile submits jobs with bsub, which is not on PATH"),
    (True, None, "LSF_PROJECT is not set; export LSF_PROJECT=<your allocation>"),
])
def test_summit_profile_names_a_missing_bsub_or_project(workdir, tmp_path, path_has_bsub, project, message):
    shims = f"{REPO / 'tests' / 'shims'}{os.pathsep}" if path_has_bsub else ""
    res = snakemake(workdir, "--profile", "summit", "results/raw/batch_dev_0.h5", "--config", TINY_SYNTH,
                    "image_size=16", path=f"{shims}{BIN}{os.pathsep}/usr/bin:/bin",
                    env_extra={"FAKELSF_STATE": str(tmp_path / "lsf"), **({"LSF_PROJECT": project} if project else {})},
                    drop=() if project else ("LSF_PROJECT",))
    assert message in one_error_line(res)
    assert not (tmp_path / "lsf" / "submitted.jsonl").exists(), "a job was submitted"


def test_lsf_check_leaves_other_executors_alone():
    check_lsf_submission(None, None, {}, lambda _: None)
    check_lsf_submission("sbatch --parsable", "$LSF_PROJECT", {}, lambda _: None)
    check_lsf_submission("bsub -P MAT1", "MAT1", {}, lambda _: "/usr/bin/bsub")  # project written in the profile
    with pytest.raises(ConfigError, match="not on PATH"):
        check_lsf_submission("bsub -P {resources.lsf_project}", "MAT1", {}, lambda _: None)


# check_tdc_config: the parse-time TDC checks (rules/common.smk calls it), one test per message
TWENTY = list(range(1, 21))


def tdc_config(tdc=None, **sections) -> dict:
    """The schema's defaults (= config/config.yaml) with ``tdc`` keys and whole sections replaced."""
    cfg = schema_defaults()
    cfg["tdc"].update(tdc or {})
    cfg.update(sections)
    return cfg


def test_tdc_config_defaults_pass():
    check_tdc_config(tdc_config(), TWENTY)
    check_tdc_config(tdc_config({"backbone": "own", "mode": "hard", "level_sizes": [2, 8, 10]}), TWENTY)
    check_tdc_config(tdc_config({"levels": "auto", "n_levels": 20}), TWENTY)


@pytest.mark.parametrize("tdc, sections, message", [
    ({"levels": "ratio", "backbone": "own"}, {},
     "config error at tdc.levels: ratio plans the number of levels from the data, which the own-backbone DAG needs "
     "at parse time; set tdc.backbone: shared, or tdc.levels: explicit or auto"),
    ({"shared_loss": "weighted_ce"}, {},
     "config error at tdc.shared_loss: weighted_ce is not among flat.losses ['ce']; add it there or pick one of them"),
    ({"backbone": "own"}, {"heads": {"variants": [{"name": "crt", "backbone": "ce"}, {"name": "w",
                                                                                     "backbone": "weighted_ce"}]}},
     "config error at heads.variants: head w uses backbone weighted_ce, not among flat.losses ['ce']; add it there "
     "or change the head's backbone"),
    ({"level_sizes": [5, 5, 5]}, {},
     "config error at tdc.level_sizes: [5, 5, 5] add up to 15, the run has 20 classes; change tdc.level_sizes or "
     "set tdc.levels: auto"),
    ({"level_sizes": [5, 14, 1]}, {},
     "config error at tdc.level_sizes: [5, 14, 1] leaves a level with one output; a classifier needs at least 2"),
    ({"mode": "hard", "level_sizes": [1, 10, 9]}, {},  # cumulative: level 1 has one output
     "config error at tdc.level_sizes: [1, 10, 9] leaves a level with one output"),
    ({"mode": "hard", "hard_outputs": "own", "level_sizes": [9, 1, 10]}, {},  # own: the middle level has one
     "config error at tdc.level_sizes: [9, 1, 10] leaves a level with one output"),
    ({"levels": "auto", "n_levels": 21}, {}, "config error at tdc.n_levels: 21 levels for 20 classes"),
])
def test_tdc_config_errors_name_the_key(tdc, sections, message):
    with pytest.raises(ConfigError) as info:
        check_tdc_config(tdc_config(tdc, **sections), TWENTY)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_tdc_config_level_checks_follow_the_reading():
    """A one-class level is fine where another output joins it: rest levels before the last, hard cumulative
    levels after the first."""
    check_tdc_config(tdc_config({"level_sizes": [1, 1, 18]}), TWENTY)
    check_tdc_config(tdc_config({"mode": "hard", "level_sizes": [2, 1, 17]}), TWENTY)
