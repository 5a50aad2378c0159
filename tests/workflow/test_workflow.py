"""The workflow as a user types it: config errors, profile resolution, static DAG."""

import re
import subprocess

import pytest
from conftest import BIN, REPO, snakemake


@pytest.mark.parametrize(
    "override, key",
    [
        ("train={epochz: 3}", "config error at train: unknown key 'epochz'"),
        ("image_size=big", "config error at image_size: 'big' is not of type 'integer'"),
        ("tdc={mode: soft}", "config error at tdc.mode: 'soft' is not one of"),
    ],
)
def test_wrong_config_key_gives_one_line_naming_it(override, key):
    res = snakemake("-n", "--config", override)
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "config error" in ln]
    assert len(lines) == 1 and key in lines[0], res.stdout + res.stderr


@pytest.mark.parametrize("profile", ["local", "slurm", "summit"])
def test_profile_resolves_from_repo_root(profile):
    """`snakemake --profile NAME -n` works when typed in the repository root (no path, no set-up step)."""
    res = snakemake("--profile", profile, "-n", "--quiet", "rules")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "synthesize" in res.stdout + res.stderr


def test_dry_run_lists_every_stage():
    res = snakemake("-n", "--quiet", "rules")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # the default TDC is the shared-backbone cascade: level heads on the flat model's features
    for rule in ["synthesize", "index_raw", "manifest", "shard", "check_classes", "train_flat", "plan_levels",
                 "features", "head", "tdc_heads", "tune_routing_shared", "evaluate", "plots"]:
        assert rule in out, f"{rule} missing from the default DAG:\n{out}"
    own = snakemake("-n", "--quiet", "rules", "--config", "tdc={backbone: own}")
    for rule in ["train_level", "collect_missed", "tune_routing"]:
        assert rule in own.stdout + own.stderr, f"{rule} missing from the own-backbone DAG"


RULE_HEAD = re.compile(r"^(?:rule (\w+)|use rule \w+ as (\w+) with):[ \t]*$", re.M)


def job_rules(text: str) -> dict[str, set[str]]:
    """``{rule: its directives}`` of every rule in Snakemake text that has an ``output:`` (a job, not a target);
    a ``use rule A as B with:`` block counts with the directives it sets. A block ends at the next line that starts
    in column 0."""
    out = {}
    for m in RULE_HEAD.finditer(text):
        body = re.split(r"\n(?=[^\s#])", text[m.end():], maxsplit=1)[0]
        directives = set(re.findall(r"^    (\w+):", body, re.M))
        if "output" in directives:
            out[m[1] or m[2]] = directives
    return out


def missing_log_or_benchmark(text: str) -> list[str]:
    return [f"rule {name} has no {d}:" for name, directives in job_rules(text).items()
            for d in ("log", "benchmark") if d not in directives]


def test_the_log_and_benchmark_check_finds_a_rule_without_them():
    text = ("rule a:\n    output:\n        \"x\",\n    log:\n        \"l\",\n    shell:\n        \"log: benchmark:\"\n"
            "\n\ndef f():\n    log: int = 0\n\n\nrule all:\n    input:\n        \"x\",\n"
            "\n\nuse rule a as b with:\n    output:\n        \"y\",\n    log:\n        \"m\",\n    benchmark:\n"
            "        \"b\"\n")
    assert set(job_rules(text)) == {"a", "b"}
    assert missing_log_or_benchmark(text) == ["rule a has no benchmark:"]


def test_lint_is_clean_and_every_rule_has_log_and_benchmark():
    res = snakemake("--lint", "text")
    out = res.stdout + res.stderr
    # the snakemake-workflows catalogue requires a clean lint (no rule using an outside variable in its shell)
    assert res.returncode == 0 and "Lints for" not in out, out
    # --lint only asks for a log:; the house style asks every job rule for both (STYLE.md), checked per rule
    text = "".join(p.read_text() + "\n" for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))])
    rules = job_rules(text)
    named = set(re.findall(r"^(?:rule|use rule \w+ as) (\w+)", text, re.M))
    assert {"train_flat", "evaluate", "shard", "evaluate_replicate"} <= set(rules) < named, sorted(rules)
    assert missing_log_or_benchmark(text) == []


def test_rules_are_snakefmt_clean():
    res = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_generator_materials_per_split_from_config():
    """synth.n_materials as {train, dev, test}: files and counts follow the mapping (nested --config is typed)."""
    res = snakemake("-n", "-p", "--config", "synth={n_materials: {train: 30, dev: 5, test: 7}, materials_per_file: 20}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    lines = [ln for ln in out.splitlines() if "synthesize.py" in ln]
    jobs = [ln for ln in lines if "results/raw/" in ln]
    stems = sorted(ln.split("results/raw/")[1].split(".h5")[0] for ln in jobs)
    assert stems == ["batch_dev_0", "batch_test_0", "batch_train_0", "batch_train_1"]
    # the transfer files (rules/robustness.smk) render the same class plan: the run's split sizes
    assert all("--split-materials 30 5 7" in ln for ln in lines) and len(lines) > len(jobs)
    assert "--file-materials 10" in next(ln for ln in jobs if "batch_train_1" in ln)
