"""Pieces shared by the thin CLIs in workflow_scripts/ (argparse parents, logging, torch threads)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["inference_parser", "setup_logging", "set_torch_threads"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def inference_parser() -> argparse.ArgumentParser:
    """Parent parser of the inference CLIs: ``--batch-size``, ``--threads``, ``--device``.

    >>> inference_parser().parse_args([]).device
    'auto'
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--batch-size", type=int, default=64, help="inference batch (default: 64)")
    p.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default (default: 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: a GPU when torch sees one "
                   "(default: auto)")
    return p


def setup_logging() -> None:
    """INFO and above to stderr, which the rule redirects to its log: file."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads when ``threads`` > 0 (0 keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
