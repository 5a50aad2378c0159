"""transfer: the run's four models on its test materials rendered by other intensity models (transfer.csv).

Pairs every --rendered sample with the run's own test sample of the same material and energy, scores the headline
flat model, the TDC, the descriptor-only head and the flat CNN on both and the paired difference.
Exit code 2 on a known error (missing files, files rendered for another run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbedtdc.cliutil import inference_parser, run_cli, set_torch_threads  # noqa: E402


def _rendered(text: str) -> tuple[str, str]:
    mode, sep, path = text.partition("=")
    if not sep or not mode or not path:
        raise argparse.ArgumentTypeError(f"expected MODE=FILE, got {text!r}")
    return mode, path


def get_parser(add_help=True):
    from cbedtdc.config import schema_defaults

    seed, n_boot = schema_defaults()["seed"], schema_defaults("evaluate")["bootstrap"]
    own = schema_defaults("synth")["mode"]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], add_help=add_help, parents=[inference_parser()])
    p.add_argument("--summary", required=True, help="the run's results/metrics/summary.json (required)")
    p.add_argument("--splits", required=True, help="results/data/splits.csv: the test samples (required)")
    p.add_argument("--run-classes", required=True, help="results/data/run_classes.json (required)")
    p.add_argument("--raw", nargs="+", required=True, help="the run's raw files: its own rendering (required)")
    p.add_argument("--rendered", nargs="+", type=_rendered, required=True, metavar="MODE=FILE",
                   help="transfer files, e.g. multislice=results/transfer/multislice/batch_test_0.h5 (required)")
    p.add_argument("--own-mode", default=own, help=f"the run's synth.mode (default: {own})")
    p.add_argument("--out", required=True, help="transfer.csv to write (required)")
    p.add_argument("--bootstrap", type=int, default=n_boot, help=f"bootstrap resamples (default: {n_boot})")
    p.add_argument("--seed", type=int, default=seed, help=f"bootstrap seed (default: {seed})")
    return p


def run(args):
    from cbedtdc.evaluate.transfer import run_transfer

    set_torch_threads(args.threads)
    rendered: dict[str, list[str]] = {}
    for mode, path in args.rendered:
        rendered.setdefault(mode, []).append(path)
    run_transfer(args.summary, args.splits, args.run_classes, args.raw, rendered, args.out, own_mode=args.own_mode,
                 n_boot=args.bootstrap, seed=args.seed, device=args.device, batch_size=args.batch_size)


def main(argv=None) -> int:
    return run_cli(get_parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
