"""Pieces shared by the thin CLIs in workflow_scripts/: the ``main()`` wrapper, argparse types and
parents, logging, torch threads.

Every script is ``main(argv=None) -> int: return run_cli(get_parser, run, argv)``: ``run(args)`` calls
one :mod:`cbedtdc` function; a known data error (:func:`known_errors`) logs one line and returns 2,
anything else propagates (a traceback, exit 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["run_cli", "known_errors", "int_list", "classes_arg", "inference_parser", "level_parser", "add_routing_arg", "setup_logging",
           "set_torch_threads"]

log = logging.getLogger("cbedtdc.workflow")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input, config, data or checkpoint: the project's own (:class:`cbedtdc.errors.CbedtdcError`,
    whose message names the file and what to do) and the operating system's (a missing or unreadable file). Any
    other error, a ``KeyError`` or ``ValueError`` of a bug included, keeps its traceback."""
    from cbedtdc.errors import CbedtdcError

    return (CbedtdcError, OSError)


def run_cli(get_parser, run, argv=None, *, setup=None, on_error=None) -> int:
    """Parse ``argv`` with ``get_parser()``, set up logging, return ``run(args)`` (``None`` counts as 0).

    ``setup(args)`` replaces :func:`setup_logging` (the training CLI tags lines with the rank). A known
    data error logs one line, ``TypeName: message``, and returns 2. With ``on_error(err)`` (the
    training CLI ends every MPI rank), any other failure, interrupts included, is logged with its
    traceback and returns 1, after ``on_error`` ran; without it, it propagates.
    """
    args = get_parser().parse_args(argv)
    (setup or (lambda _: setup_logging()))(args)
    try:
        return int(run(args) or 0)
    except BaseException as err:
        if isinstance(err, known_errors()):
            log.error("%s: %s", type(err).__name__, " ".join(str(err).split()))
            code = 2
        elif on_error is not None:
            log.exception("failed")
            code = 1
        else:
            raise
        if on_error is not None:
            on_error(err)
        return code


def int_list(text: str) -> list[int]:
    """argparse type: integers separated by commas and/or spaces.

    >>> int_list("14,225 1"), int_list("")
    ([14, 225, 1], [])
    >>> int_list("14,x")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected integers separated by commas or spaces, got '14,x'
    """
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas or spaces, got {text!r}") from err


def classes_arg(text: str):
    """argparse type of a class set: ``top20``, ``all`` or integers (see :func:`int_list`).

    >>> classes_arg(" top20 "), classes_arg("14, 225")
    ('top20', [14, 225])
    """
    text = text.strip()
    return text if text in ("top20", "all") else int_list(text)


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


def level_parser() -> argparse.ArgumentParser:
    """Parent parser of the TDC level CLIs: ``--levels``, ``--level``, ``--missed``.

    >>> level_parser().parse_args(["--levels", "l.json", "--level", "2", "--missed"]).missed
    []
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--levels", required=True, help="levels.json from plan_levels (required)")
    p.add_argument("--level", required=True, type=int, help="level, 1-based (required)")
    p.add_argument("--missed", nargs="*", default=[],
                   help="missed.csv of the previous level (hard reading, level > 1); "
                   "given with no file = none (default: none)")
    return p


def add_routing_arg(p: argparse.ArgumentParser) -> None:
    """``--routing``, the rest reading's rule; its allowed values are :data:`cbedtdc.cascade.routing.ROUTINGS`
    (the schema's enum of ``tdc.routing`` is checked against them in the tests). Required: the rules pass
    ``tdc.routing``, whose default lives in the schema only."""
    from cbedtdc.cascade.routing import ROUTINGS

    p.add_argument("--routing", required=True, choices=ROUTINGS,
                   help="rest reading's routing rule (config tdc.routing); the hard reading always thresholds "
                   "(required)")


def setup_logging(verbose: bool = False, *, rank_tag: bool = False) -> None:
    """INFO (DEBUG when ``verbose``) and above to stderr, which the rule redirects to its log: file.

    ``rank_tag``: prefix every line with the MPI/torchrun rank and keep only warnings on ranks > 0.
    """
    level = logging.DEBUG if verbose else logging.INFO
    fmt = LOG_FORMAT
    if rank_tag:
        from cbedtdc.distributed import MPI_RANK_VARS

        rank = next((os.environ[k] for k in ("RANK", *MPI_RANK_VARS) if k in os.environ), "0")
        level = level if rank == "0" else logging.WARNING
        fmt = f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, stream=sys.stderr, format=fmt)


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads when ``threads`` > 0 (0 keeps torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
