"""Trickle-Down Classifier (TDC): a cascade of classifiers, most frequent classes first.

- :mod:`cbedtdc.cascade.plan`     levels, budgets, training sets, the training-time trickle (pure numpy)
- :mod:`cbedtdc.cascade.routing`  routing at inference, threshold tuning, estimated accuracy (pure numpy)
- :mod:`cbedtdc.cascade.jobs`     the rules' jobs on files: plan, level job, missed samples, routing.json
- :mod:`cbedtdc.cascade.shared`   the shared-backbone cascade: every level a head on one set of features
- :mod:`cbedtdc.cascade.load`     one loader of a trained cascade (own or shared) for evaluate and classify

The public names of all three are available here (``from cbedtdc.cascade import LevelPlan, route``).
"""

from cbedtdc.cascade.jobs import (MISSED_FIELDS, check_level_model, collect_missed, level_dir, load_levels,
                                  predict_levels, read_missed, read_routing, route_tuned, routing_from_json, tune_routing, tune_routing_on,
                                  write_level_job, write_missed, write_plan)
from cbedtdc.cascade.plan import (MODES, LevelPlan, check_trainable, level_budgets, level_job, level_training_mask,
                                  order_by_count, plan_levels, plan_levels_ratio, split_by_mass, trickle,
                                  whole_epochs)
from cbedtdc.cascade.routing import (ROUTINGS, Routing, TunedRouting, calibrate, effective_rule, estimated_accuracy, fit_temperatures,
                                     forward_mask, level_report, oracle_predictions, posterior, route, softmax,
                                     tune_thresholds)

__all__ = [
    "MODES", "LevelPlan", "order_by_count", "plan_levels", "plan_levels_ratio", "split_by_mass", "level_budgets", "whole_epochs",
    "check_trainable", "level_training_mask", "trickle", "level_job",
    "Routing", "forward_mask", "route", "tune_thresholds", "oracle_predictions", "estimated_accuracy",
    "level_report", "softmax", "ROUTINGS", "TunedRouting", "effective_rule", "posterior", "calibrate", "fit_temperatures",
    "MISSED_FIELDS", "write_plan", "write_level_job", "read_missed", "write_missed", "level_dir", "load_levels",
    "predict_levels", "check_level_model", "collect_missed", "tune_routing",
    "tune_routing_on", "read_routing", "route_tuned", "routing_from_json",
]
