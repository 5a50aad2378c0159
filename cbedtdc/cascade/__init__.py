"""Trickle-Down Classifier (TDC): a cascade of classifiers, most frequent classes first.

- :mod:`cbedtdc.cascade.plan`     levels, budgets, training sets, the training-time trickle (pure numpy)
- :mod:`cbedtdc.cascade.routing`  the routing rules as objects (tune on dev, route, save, load), the posterior,
  estimated accuracy (pure numpy)
- :mod:`cbedtdc.cascade.jobs`     the rules' jobs on files: plan, level job, missed samples, routing.json
- :mod:`cbedtdc.cascade.shared`   the shared-backbone cascade: every level a head on one set of features
- :mod:`cbedtdc.cascade.load`     one loader of a trained cascade (own or shared) for evaluate and classify

The public names of plan, routing and jobs are available here (``from cbedtdc.cascade import LevelPlan, rule_for``).
"""

from cbedtdc.cascade.jobs import (MISSED_FIELDS, check_level_model, collect_missed, level_dir, load_levels,
                                  predict_levels, read_missed, tune_routing, write_level_job, write_missed, write_plan)
from cbedtdc.cascade.plan import (MODES, LevelPlan, check_trainable, level_budgets, level_job, level_training_mask,
                                  order_by_count, plan_levels, plan_levels_ratio, split_by_mass, trickle,
                                  whole_epochs)
from cbedtdc.cascade.routing import (DEFAULT, ROUTINGS, RULES, ArgmaxRule, PosteriorRule, Routing, RoutingRule,
                                     ThresholdRule, calibrate, estimated_accuracy, fit_temperatures, level_report,
                                     load_rule, oracle_predictions, posterior, reading_name, rule_for, softmax,
                                     tune_thresholds, walk)

__all__ = [
    "MODES", "LevelPlan", "order_by_count", "plan_levels", "plan_levels_ratio", "split_by_mass", "level_budgets",
    "whole_epochs", "check_trainable", "level_training_mask", "trickle", "level_job",
    "RoutingRule", "ArgmaxRule", "ThresholdRule", "PosteriorRule", "RULES", "ROUTINGS", "DEFAULT", "rule_for",
    "reading_name", "load_rule", "Routing", "walk", "tune_thresholds", "oracle_predictions", "estimated_accuracy",
    "level_report", "softmax", "posterior", "calibrate", "fit_temperatures",
    "MISSED_FIELDS", "write_plan", "write_level_job", "read_missed", "write_missed", "level_dir", "load_levels",
    "predict_levels", "check_level_model", "collect_missed", "tune_routing",
]
