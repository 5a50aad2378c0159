"""robustness: the run's four models on perturbed test stacks (results/metrics/robustness.csv).

Reads the raw test stacks of a seeded choice of test materials, perturbs them (cbedtdc.perturb) at every strength
of --perturbations and scores the headline flat model, the TDC, the descriptor-only head and the flat CNN on each;
then the same models on the --rendered files (the first test materials rendered with more mistilt or thicker),
paired with the run's own rendering of the same samples.
Exit code 2 on a known error (missing files, a run of another version).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import inference_parser, run_cli, set_torch_threads  # noqa: E402


def _perturbations(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text!r}") from err
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise argparse.ArgumentTypeError(f'expected {{"NAME": [strength, ...]}}, got {text!r}')
    return value


def _rendered(text: str) -> tuple[str, float, str]:
    name, sep, rest = text.partition("=")
    strength, sep2, path = rest.partition("=")
    try:
        value = float(strength)
    except ValueError:
        value = None
    if not (sep and sep2 and name and path) or value is None:
        raise argparse.ArgumentTypeError(f"expected PERTURBATION=STRENGTH=FILE, got {text!r}")
    return name, value, path


def get_parser(add_help=True):
    from cbedtdc.config import schema_defaults

    d = schema_defaults("robustness")
    seed, n_boot = schema_defaults()["seed"], schema_defaults("evaluate")["bootstrap"]
    mistilt = schema_defaults("synth")["mistilt"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--summary", required=True, help="the run's results/metrics/summary.json (required)")
    p.add_argument("--splits", required=True, help="results/data/splits.csv: the test samples (required)")
    p.add_argument("--run-classes", required=True, help="results/data/run_classes.json (required)")
    p.add_argument("--raw", nargs="+", required=True, help="the run's raw challenge files (required)")
    p.add_argument("--out", required=True, help="robustness.csv to write (required)")
    p.add_argument("--perturbations", type=_perturbations, default=d["perturbations"], metavar="JSON",
                   help=f"strengths of each perturbation (default: {json.dumps(d['perturbations'])})")
    p.add_argument("--n-materials", type=int, default=d["n_materials"],
                   help=f"test materials perturbed (default: {d['n_materials']})")
    p.add_argument("--rendered", nargs="+", type=_rendered, default=[], metavar="PERTURBATION=STRENGTH=FILE",
                   help="test materials rendered again by rule robustness_synthesize, e.g. "
                        "mistilt=0.2=results/robustness/mistilt/0.2/batch_test_0.h5 (default: none)")
    p.add_argument("--own-mistilt", type=float, default=mistilt,
                   help=f"the run's synth.mistilt, where the mistilt curve starts (default: {mistilt})")
    p.add_argument("--bootstrap", type=int, default=n_boot, help=f"bootstrap resamples (default: {n_boot})")
    p.add_argument("--seed", type=int, default=seed, help=f"choice, perturbation and bootstrap seed (default: {seed})")
    return p


def run(args):
    from cbedtdc.evaluate.robustness import run_robustness

    set_torch_threads(args.threads)
    rendered: dict[tuple[str, float], list[str]] = {}
    for name, strength, path in args.rendered:
        rendered.setdefault((name, strength), []).append(path)
    run_robustness(args.summary, args.splits, args.run_classes, args.raw, args.out, perturbations=args.perturbations,
                   n_materials=args.n_materials, seed=args.seed, n_boot=args.bootstrap, device=args.device,
                   batch_size=args.batch_size, rendered=rendered, own_mistilt=args.own_mistilt)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
