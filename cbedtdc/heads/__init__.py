"""Heads: classifiers on frozen features (one or more feature sources), trained in seconds to minutes on a CPU.

- :mod:`cbedtdc.heads.options`: the one table of head options and booster settings, and their check;
- :mod:`cbedtdc.heads.head`: :class:`Head` (linear, mlp or XGBoost), :func:`fit_head`, :func:`load_head`;
- :mod:`cbedtdc.heads.mlp`: the layers of the torch heads (linear, mlp);
- :mod:`cbedtdc.heads.booster`: the one XGBoost implementation;
- :mod:`cbedtdc.heads.resample`: imbalanced-learn resampling;
- :mod:`cbedtdc.heads.jobs`: the head jobs on features files (flat heads, CNN-XGBoost heads of a job).

The shared-backbone TDC, whose levels are heads, is in :mod:`cbedtdc.cascade.shared`.
"""

from cbedtdc.heads.head import Head, fit_head, load_head, standardisation
from cbedtdc.heads.options import (DEFAULTS, HEAD_FORMAT, KINDS, LINEAR_LOSSES, RESAMPLERS, SAMPLERS,
                                   XGBOOST_DEFAULTS, XGBOOST_LOSSES, HeadError, resolve_spec)
from cbedtdc.heads.resample import resample

__all__ = ["DEFAULTS", "HEAD_FORMAT", "KINDS", "LINEAR_LOSSES", "RESAMPLERS", "SAMPLERS", "XGBOOST_DEFAULTS",
           "XGBOOST_LOSSES", "Head", "HeadError", "fit_head", "load_head", "resample", "resolve_spec",
           "standardisation"]
