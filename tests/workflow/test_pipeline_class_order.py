"""The run's one class order on real-layout data whose class counts are ordered unlike the challenge set's.

Before the one class order, every job ran and `evaluate` then failed: the heads were fitted in the challenge
set's frequency order (14, 225, 1, 2), the plan ordered the classes by this run's training counts (2, 1, 225,
14), and the head's columns were demanded in the plan's order. The generated data hide this (the generator
follows the real frequencies); these files reverse them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, SNAKEFILE, link_workdir, snakemake
from fixtures import make_sample, write_challenge_file

pytestmark = pytest.mark.slow

CLASSES = [14, 225, 1, 2]  # the challenge set's frequency order
TRAIN = {14: 3, 225: 4, 1: 6, 2: 8}  # this run's: 2, 1, 225, 14


def reversed_counts_raw(root):
    rng = np.random.default_rng(0)
    for split, scale in (("train", 1.0), ("dev", 0.5), ("test", 0.5)):
        samples = [make_sample(f"sample_{k}_{j}", sg, f"mp-{split}-{sg}-{j}", side=32, energy_keV=100 + j,
                               class_index=k, rng=rng)
                   for k, sg in enumerate(CLASSES) for j in range(max(1, int(TRAIN[sg] * scale)))]
        write_challenge_file(root / f"batch_{split}_0.h5", samples)
    return root


def test_heads_tdc_and_evaluation_agree_on_data_of_another_class_order(tmp_path_factory):
    raw = reversed_counts_raw(tmp_path_factory.mktemp("raw"))
    workdir = link_workdir(tmp_path_factory.mktemp("class_order"))
    # the evaluation (no plots) of the flat CNN, two linear heads on its features and the shared-backbone TDC's
    # linear heads (no symmetry descriptors: the class order is the CNN's and the heads', test time only)
    res = snakemake("-s", SNAKEFILE, "--cores", "2", "results/metrics/summary.json",
                    "--configfile", "config/config.yaml", REPO / "tests" / "pipeline_config.yaml",
                    REPO / "tests" / "pipeline_shared.yaml",
                    "--config", f"raw_dir={raw}",
                    "tdc={backbone: shared, head: {kind: linear, features: [cnn]}, level_sizes: [2, 2]}",
                    "heads={variants: [{name: crt, backbone: ce, kind: linear, loss: ce, sampler: class_balanced,"
                    " epochs: 10}, {name: smote_la, backbone: ce, kind: linear, loss: logit_adjusted, resample: smote,"
                    " epochs: 10}]}",
                    "synth={gallery: false}", cwd=workdir, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    levels = json.loads((workdir / "results" / "tdc" / "levels.json").read_text())
    assert levels["levels"] == [[2, 1], [225, 14]], "the plan orders the classes by this run's training counts"
    order = list(json.loads((workdir / "results" / "data" / "run_classes.json").read_text()))
    assert [int(c) for c in order] == CLASSES, "the run's one class order, written once"
    s = json.loads((workdir / "results" / "metrics" / "summary.json").read_text())
    assert s["classes"] == CLASSES
    heads = {v["name"] for v in s["variants"]}
    assert {"flat/ce/crt", "flat/ce/smote_la"} <= heads and any(n.startswith("tdc/shared-ce") for n in heads)
    for name in ("crt", "smote_la"):
        meta = json.loads((workdir / "results" / "heads" / "flat" / name / "head.pt.meta.json").read_text())
        assert meta["info"]["classes"] == CLASSES
    rows = (workdir / "results" / "metrics" / "per_class.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == CLASSES
