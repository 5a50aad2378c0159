"""The routing rules as objects: chosen from the config, tuned on dev, saved and loaded, and every bad
routing.json an error naming the file, the key and the rule to rerun."""

import json
import re

import numpy as np
import pytest
from conftest import REPO

from cbedtdc.cascade import LevelPlan
from cbedtdc.cascade.load import load_cascade
from cbedtdc.cascade.routing import RULES, ArgmaxRule, PosteriorRule, ThresholdRule, load_rule, reading_name, rule_for
from cbedtdc.errors import InputError

COUNTS = {1: 400, 2: 300, 3: 60, 4: 40, 5: 10}


def dev_case(mode="rest", n=300, seed=0):
    """A two-level plan and noisy but informative level probabilities with their labels."""
    rng = np.random.default_rng(seed)
    plan = LevelPlan([[1, 2], [3, 4, 5]], mode=mode, counts=COUNTS)
    labels = rng.choice(plan.classes, size=n, p=np.array([COUNTS[c] for c in plan.classes]) / sum(COUNTS.values()))
    probs = []
    for k in range(plan.n_levels):
        outs = plan.outputs(k)
        width = len(outs) + plan.has_rest(k)
        target = np.array([outs.index(c) if c in outs else width - 1 for c in labels])
        logits = rng.normal(0, 1, (n, width))
        logits[np.arange(n), target] += 2.0
        p = np.exp(logits)
        probs.append(p / p.sum(1, keepdims=True))
    return plan, probs, labels


@pytest.mark.parametrize("name, mode", [("argmax", "rest"), ("threshold", "rest"), ("posterior", "rest"),
                                        ("posterior", "hard"), ("gate", "rest")])
def test_a_tuned_rule_round_trips_through_routing_json(tmp_path, name, mode):
    plan, probs, labels = dev_case(mode)
    rule = rule_for(name, mode).tune(plan, probs, labels)
    assert len(rule.temperatures) == plan.n_levels and 0 <= rule.dev["balanced_accuracy"] <= 1
    path = tmp_path / "routing.json"
    rule.save(path, plan)
    back = load_rule(path, plan)
    assert type(back) is type(rule) and back == rule and back.dev == rule.dev
    np.testing.assert_array_equal(back.route(plan, probs).pred, rule.route(plan, probs).pred)
    d = json.loads(path.read_text())
    assert d["routing"] == rule.name and d["mode"] == mode and d["levels"] == plan.levels


def test_the_hard_reading_always_thresholds_and_the_reading_names_follow():
    assert {rule_for(name, "hard").name for name in RULES} == {"threshold"}
    assert [rule_for(name).name for name in RULES] == list(RULES)
    assert [reading_name("rest", n) for n in RULES] == ["rest", "rest_threshold", "rest", "rest_gate"]
    assert reading_name("hard", "threshold") == "hard"
    with pytest.raises(InputError, match=r"tdc.routing='softmax': must be one of argmax, threshold, posterior"):
        rule_for("softmax")


def test_tuning_chooses_on_dev():
    plan, probs, labels = dev_case()
    th = rule_for("threshold").tune(plan, probs, labels)
    assert th.dev["balanced_accuracy"] >= th.dev["default_0.5"]["balanced_accuracy"]
    post = rule_for("posterior").tune(plan, probs, labels)
    best = max(post.dev["with_prior"]["balanced_accuracy"], post.dev["without_prior"]["balanced_accuracy"])
    assert post.dev["balanced_accuracy"] == best
    assert post.prior == (post.dev["with_prior"]["balanced_accuracy"] > post.dev["without_prior"]["balanced_accuracy"])
    with pytest.raises(InputError, match="no dev sample"):
        rule_for("argmax").tune(plan, [p[:0] for p in probs], labels[:0])


def test_a_gate_learns_what_the_posterior_misreads_and_is_scored_cross_fitted():
    """Level 1 misreads class 3: it gives class 1 about 0.95 on class-3 samples (0.8 on its own, 0.6 on class 2),
    so no rule on level 1's output (posterior, prior or thresholds) keeps class 3 from class 1. Level 2 is sure on
    its classes and undecided on class 1; a gate fitted on dev reads that, and its dev score comes from gates that
    never saw the scored sample."""
    rng = np.random.default_rng(1)
    plan = LevelPlan([[1], [2, 3]], counts={1: 300, 2: 100, 3: 100})

    def case(labels):
        p1 = np.select([labels == 1, labels == 2], [0.8, 0.6], 0.95) + rng.normal(0, 0.02, labels.size)
        p2 = np.select([labels == 1, labels == 2], [0.5, 0.85], 0.15) + rng.normal(0, 0.03, labels.size)
        return [np.stack([p1, 1 - p1], axis=1), np.stack([p2, 1 - p2], axis=1)]

    labels = rng.choice([1, 2, 3], size=400, p=[0.5, 0.25, 0.25])
    probs = case(labels)
    post = rule_for("posterior").tune(plan, probs, labels)
    gate = rule_for("gate").tune(plan, probs, labels)
    assert post.dev["balanced_accuracy"] < 0.7 < 0.95 < gate.dev["balanced_accuracy"]
    assert gate.dev["balanced_accuracy"] == gate.dev["cross_fitted_by_C"][str(gate.C)]
    assert set(gate.dev["cross_fitted_by_C"]) == {str(c) for c in type(gate).CS} and "in_sample" in gate.dev
    # the cut is learned, not memorised: fresh samples of the same kind are routed as well
    fresh = rng.choice([1, 2, 3], size=200)
    assert (gate.route(plan, case(fresh)).pred == fresh).mean() > 0.95


def test_a_gate_of_the_wrong_shape_names_the_rule_to_rerun(tmp_path):
    plan, path, d = good_file(tmp_path, "gate")
    d["coef"] = d["coef"][:1]
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match=r"a gate of shape \(1, 6\) with 2 intercepts for 2 levels of 6 outputs"):
        load_rule(path, plan)


def good_file(tmp_path, rule="threshold"):
    plan, probs, labels = dev_case()
    path = tmp_path / "routing.json"
    rule_for(rule).tune(plan, probs, labels).save(path, plan)
    return plan, path, json.loads(path.read_text())


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("thresholds"), r"key 'thresholds' of routing threshold missing; rerun rule tune_routing"),
    (lambda d: d.pop("dev"), r"key 'dev' missing .*; rerun rule tune_routing"),
    (lambda d: d.update(dev={"n": 3}), r"key 'dev' holds no balanced_accuracy .*; rerun rule tune_routing"),
    (lambda d: d.update(routing="softmax"), r"routing 'softmax' is not a rule \(argmax, threshold, posterior, gate\)"),
    (lambda d: d.update(levels=[[1], [2, 3, 4, 5]]), r"was tuned for mode rest levels \[\[1\], \[2, 3, 4, 5\]\]"),
    (lambda d: d.update(thresholds=[0.5, 0.5]), r"2 thresholds for 2 levels"),
    (lambda d: d.update(temperatures=[1.0]), r"1 temperatures for 2 levels"),
    (lambda d: d.update(thresholds=["high"]), r"bad value of the routing"),
])
def test_a_bad_routing_json_names_the_file_the_key_and_the_rule_to_rerun(tmp_path, change, message):
    plan, path, d = good_file(tmp_path)
    change(d)
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match=message) as err:
        load_rule(path, plan)
    assert str(path) in str(err.value)


def test_a_missing_or_unreadable_routing_json_says_which_rule_writes_it(tmp_path):
    plan, path, d = good_file(tmp_path, "posterior")
    path.write_text("{not json")
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}: not a readable routing.json .* rerun rule "
                                         "tune_routing_shared"):
        load_rule(path, plan, redo="tune_routing_shared")
    with pytest.raises(InputError, match=r"missing: finish the run \(rule tune_routing\) first"):
        load_rule(tmp_path / "none.json", plan)
    d["prior"] = "yes"
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match="prior='yes' is not true or false"):
        load_rule(path, plan)


def test_evaluate_and_classify_load_the_cascade_with_its_rule_or_fail_naming_the_file(tmp_path):
    """The cascade loader (evaluate, classify) refuses a routing.json without the dev score that ranks the TDC
    among the variants, where it used to leave the TDC out of the comparison silently."""
    plan, path, d = good_file(tmp_path)
    plan.save(tmp_path / "levels.json")
    cas = load_cascade(tmp_path / "levels.json", path, models=False)
    assert isinstance(cas.rule, ThresholdRule) and cas.rule.dev["balanced_accuracy"] == d["dev"]["balanced_accuracy"]
    del d["dev"]
    path.write_text(json.dumps(d))
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}: key 'dev' missing"):
        load_cascade(tmp_path / "levels.json", path, models=False)


def test_a_rule_checks_the_reading_it_routes():
    hard = LevelPlan([[1, 2], [3]], mode="hard")
    probs = [np.array([[0.9, 0.1]]), np.array([[0.2, 0.3, 0.5]])]
    for rule in (ArgmaxRule(), PosteriorRule()):
        with pytest.raises(InputError, match=f"routing rule {rule.name} for a hard-reading cascade"):
            rule.route(hard, probs)
    assert ThresholdRule(thresholds=(0.5,)).route(hard, probs).kept.tolist() == [0]


def test_no_module_outside_the_routing_rules_compares_rule_names():
    """A new rule touches cascade/routing/rules.py, the schema and the docs only: no other module of the library
    or workflow script branches on a rule's name."""
    pattern = re.compile(r"""(==|!=|\bin\b)\s*\(?\s*["'](argmax|threshold|posterior)["']|["'](argmax|threshold|"""
                         r"""posterior)["']\s*(==|!=)""")
    rules = REPO / "cbedtdc" / "cascade" / "routing" / "rules.py"
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}"
             for p in sorted([*(REPO / "cbedtdc").rglob("*.py"), *(REPO / "workflow_scripts").glob("*.py"),
                              *(REPO / "rules").glob("*.smk")]) if p != rules
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)
