"""Replicate seeds: the spread of every variant over training seeds, from each seed's summary.json."""

from __future__ import annotations

import json

import pytest

from cbedtdc.errors import InputError
from cbedtdc.evaluate.replicates import aggregate, csv_rows, load_summaries


def summary(ba, diff, extra=()):
    variants = [{"name": "flat/ce/cnn", "family": "flat", "balanced_accuracy": ba, "top1": ba}, *extra]
    return {"variants": variants, "best": {"balanced_accuracy_difference": diff}}


def test_mean_spread_and_interval_over_seeds():
    out = aggregate({0: summary(0.30, 0.01), 1: summary(0.34, 0.03), 2: summary(0.32, -0.01)})
    row = out["variants"][0]
    assert row["seeds"] == [0, 1, 2] and row["balanced_accuracy"]["mean"] == pytest.approx(0.32)
    assert row["balanced_accuracy"]["sd"] == pytest.approx(0.02)
    lo, hi = out["difference"]["ci95_over_seeds"]
    assert out["difference"]["mean"] == pytest.approx(0.01) and lo < 0.01 < hi


def test_a_variant_without_a_score_in_one_seed_is_written_as_nan_not_a_crash():
    """summary.json writes a NaN score as null; the table keeps the seed and says nan."""
    rows = csv_rows(aggregate({0: summary(None, None), 1: summary(0.4, 0.02)}))
    assert rows[0]["per_seed"] == "0:nan 1:0.4000" and rows[0]["balanced_accuracy_mean"] == pytest.approx(0.4)


def test_a_bad_summary_or_a_repeated_seed_names_the_file_and_seed(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(summary(0.3, 0.0)))
    bad.write_text(json.dumps({"variants": [{"name": "x"}]}))
    assert list(load_summaries([(0, good)])) == [0]
    with pytest.raises(InputError, match=r"bad\.json \(seed 1\)"):
        load_summaries([(0, good), (1, bad)])
    with pytest.raises(InputError, match="seed 0 given twice"):
        load_summaries([(0, good), (0, good)])


def test_a_seed_without_a_variant_the_others_have_names_the_seed_and_file(tmp_path):
    """A missing score must not leave the mean silently (the mean over the other seeds would look complete)."""
    extra = {"name": "tdc/rest/cnn", "family": "tdc", "balanced_accuracy": 0.4, "top1": 0.4}
    paths = []
    for seed, s in [(0, summary(0.3, 0.01, [extra])), (1, summary(0.32, 0.02)), (2, summary(0.31, 0.0, [extra]))]:
        paths.append((seed, tmp_path / f"seed_{seed}.json"))
        paths[-1][1].write_text(json.dumps(s))
    with pytest.raises(InputError, match=r"seed_1\.json \(seed 1\): no variant tdc/rest/cnn, which seeds 0, 2 have; "
                                         r"rerun that seed's evaluation"):
        aggregate(load_summaries(paths), dict(paths))  # load_summaries reads; aggregate checks, once
    with pytest.raises(InputError, match=r"the summary of seed 1: no variant tdc/rest/cnn, which seeds 0, 2 have"):
        aggregate({seed: json.loads(p.read_text()) for seed, p in paths})


def test_a_seed_without_the_difference_the_others_have_names_the_seed():
    no_best = summary(0.3, 0.0)
    del no_best["best"]
    with pytest.raises(InputError, match=r"seed 1: no best\.balanced_accuracy_difference .*which seed 0 has"):
        aggregate({0: summary(0.3, 0.01), 1: no_best})
    # present but NaN (null) stays, written nan
    rows = csv_rows(aggregate({0: summary(0.3, 0.01), 1: summary(0.3, None)}))
    assert rows[-1]["per_seed"] == "0:0.0100 1:nan" and rows[-1]["balanced_accuracy_mean"] == pytest.approx(0.01)
