"""Evaluation of a trained run on the test split (rule ``evaluate``).

- :mod:`cbedtdc.evaluate.run`: :func:`evaluate_run`, loads the models and writes ``summary.json``;
- :mod:`cbedtdc.evaluate.score`: the scores of flat CNNs, heads and cascades, in the run's class order;
- :mod:`cbedtdc.evaluate.variants`: every variant, the choice on dev, the paired bootstrap;
- :mod:`cbedtdc.evaluate.tables`: per-class, level, confusion and prediction tables.

torch is imported lazily through :mod:`cbedtdc.train`.
"""

from cbedtdc.evaluate.run import evaluate_run, test_set
from cbedtdc.evaluate.score import check_flat_classes, flat_probs, source_label
from cbedtdc.evaluate.tables import LEVEL_FIELDS, jsonable, write_tables
from cbedtdc.evaluate.variants import SHOTS, TestSet, Variants, headline_flat, shot_accuracy

__all__ = ["LEVEL_FIELDS", "SHOTS", "TestSet", "Variants", "check_flat_classes", "evaluate_run", "flat_probs",
           "headline_flat", "jsonable", "shot_accuracy", "source_label", "test_set", "write_tables"]
