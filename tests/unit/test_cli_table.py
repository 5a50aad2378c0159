"""``cbedtdc table`` draws every table once, and a key missing from one of several summaries names that file."""

from __future__ import annotations

import json

import cbedtdc.cli as cli
import cbedtdc.metrics as metrics

SUMMARY = {"chance": {"majority": 0.3, "prior": 0.2}, "flat": {"top1": 0.45, "balanced_accuracy": 0.35},
           "tdc": {"mode": "rest", "levels": [[14, 225], [1]], "routing": "argmax", "top1": 0.5,
                   "balanced_accuracy": 0.4, "estimated_top1": 0.6},
           "n_test": 9, "n_test_materials": 9, "bootstrap": {"resamples": 10}, "data": "tiny"}


def test_each_table_is_drawn_once(tmp_path, monkeypatch, capsys):
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(SUMMARY))
    calls = []
    for module, name in [(metrics, "results_table"), (cli, "hierarchy_table"), (cli, "selective_table")]:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    assert cli.main(["table", *map(str, paths)]) == 0
    assert sorted(calls) == ["hierarchy_table"] * 2 + ["results_table"] + ["selective_table"] * 2
    assert capsys.readouterr().out.count("| TDC rest (2+1, argmax), end to end |") == 2


def test_a_key_missing_from_the_second_summary_names_it(tmp_path, caplog):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(SUMMARY))
    bad.write_text(json.dumps({"chance": {"majority": 0.1}, "flat": {}}))  # no "prior"
    assert cli.main(["table", str(good), str(bad)]) == 2
    assert f"{bad}: no key 'prior'" in caplog.text and f"{good}:" not in caplog.text
