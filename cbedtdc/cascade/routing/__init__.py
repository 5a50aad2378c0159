"""Routing of the TDC: the rules as objects (:mod:`.rules`) and the arithmetic they share (:mod:`.core`).

Pure numpy (no torch, no h5py). The public names of both are available here
(``from cbedtdc.cascade.routing import rule_for, load_rule, posterior``).
"""

from cbedtdc.cascade.routing.core import (Routing, calibrate, check_level_probs, check_probs, estimated_accuracy,
                                          fit_temperature, fit_temperatures, level_report, level_targets,
                                          oracle_predictions, posterior, posterior_matrix, softmax, walk)
from cbedtdc.cascade.routing.rules import (DEFAULT, ROUTINGS, RULES, ArgmaxRule, PosteriorRule, RoutingRule,
                                           ThresholdRule, load_rule, reading_name, rule_for, tune_thresholds)

__all__ = [
    "RoutingRule", "ArgmaxRule", "ThresholdRule", "PosteriorRule", "RULES", "ROUTINGS", "DEFAULT", "rule_for",
    "reading_name", "load_rule", "tune_thresholds",
    "Routing", "check_probs", "walk", "posterior", "posterior_matrix", "check_level_probs", "level_targets",
    "calibrate", "fit_temperature", "fit_temperatures", "oracle_predictions", "estimated_accuracy", "level_report",
    "softmax",
]
