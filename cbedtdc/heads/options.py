"""Head options: the one table of defaults of a head (``heads.variants`` entries and ``tdc.head``) and their check.

``hidden``, ``layers`` and ``dropout`` shape an ``mlp`` head; the linear and XGBoost heads ignore them.

The booster settings of ``kind: xgboost`` (:data:`XGBOOST_DEFAULTS`) are the config's ``xgboost:``
section; every other key is an option of one head.
"""

from __future__ import annotations
from cbedtdc.errors import InputError

__all__ = ["HEAD_FORMAT", "KINDS", "LINEAR_LOSSES", "XGBOOST_LOSSES", "SAMPLERS", "RESAMPLERS",
           "XGBOOST_DEFAULTS", "DEFAULTS", "HeadError", "resolve_spec"]

HEAD_FORMAT = "cbedtdc-head/1"
KINDS = ("linear", "mlp", "xgboost")
#: Kinds trained with torch (AdamW, the losses of :data:`LINEAR_LOSSES`, the samplers, tau_norm).
TORCH_KINDS = ("linear", "mlp")
LINEAR_LOSSES = ("ce", "weighted_ce", "drw", "logit_adjusted", "balanced_softmax")
SAMPLERS = ("instance", "class_balanced")
RESAMPLERS = ("none", "smote", "borderline_smote", "cluster_centroids")
XGBOOST_LOSSES = ("ce", "weighted_ce")

#: Booster settings (config ``xgboost:``): shallow trees on ~512-2048 features, histogram method.
XGBOOST_DEFAULTS = {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.1, "subsample": 0.8,
                    "colsample_bytree": 0.5, "early_stopping": 20}

#: Head options (one head of the config); ``xgboost`` holds the booster settings of ``kind: xgboost``.
DEFAULTS = {
    "kind": "linear",
    "loss": "ce",
    "sampler": "instance",
    "resample": "none",
    "resample_k": 5,  # neighbours of SMOTE / BorderlineSMOTE (fewer when a class is smaller)
    "resample_to": 0,  # samples per class the resampler aims at (0: largest class / smallest for cluster_centroids)
    "epochs": 30,
    "batch_size": 512,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "la_tau": 1.0,
    "weight_cap": 10.0,
    "drw_start": 0.5,
    "tau_norm": 0.0,
    "posthoc_tau": 0.0,
    "temperature": True,
    "threads": 0,  # torch / XGBoost threads while fitting (0: their default)
    "hidden": 512,  # mlp: units of each hidden layer
    "layers": 1,  # mlp: hidden layers
    "dropout": 0.2,  # mlp: dropout after each hidden layer while fitting
    "xgboost": XGBOOST_DEFAULTS,
}


class HeadError(InputError):
    """A head file or head input that cannot be used (the message names the file or input)."""


# --------------------------------------------------------------------------- options
def resolve_spec(spec: dict | None = None) -> dict:
    """Head options: :data:`DEFAULTS` updated with ``spec``, checked.

    >>> s = resolve_spec({"loss": "drw", "xgboost": {"max_depth": 6}})
    >>> s["kind"], s["loss"], s["xgboost"]["max_depth"], s["xgboost"]["n_estimators"]
    ('linear', 'drw', 6, 200)
    >>> m = resolve_spec({"kind": "mlp", "loss": "logit_adjusted"})
    >>> m["hidden"], m["layers"], m["dropout"]
    (512, 1, 0.2)
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise HeadError(f"unknown head option(s) {unknown}; allowed: {', '.join(sorted(DEFAULTS))}")
    xgb = dict(spec.pop("xgboost", None) or {})
    bad = sorted(set(xgb) - set(DEFAULTS["xgboost"]))
    if bad:
        raise HeadError(f"unknown xgboost option(s) {bad}; allowed: {', '.join(sorted(DEFAULTS['xgboost']))}")
    out = {**DEFAULTS, **spec, "xgboost": {**DEFAULTS["xgboost"], **xgb}}
    losses = LINEAR_LOSSES if out["kind"] in TORCH_KINDS else XGBOOST_LOSSES
    for key, allowed in (("kind", KINDS), ("loss", losses), ("sampler", SAMPLERS), ("resample", RESAMPLERS)):
        if out[key] not in allowed:
            raise HeadError(f"head {key}={out[key]!r}: must be one of {', '.join(allowed)}"
                            + (f" for a {out['kind']} head" if key == "loss" else ""))
    if out["kind"] == "xgboost" and (out["sampler"] != "instance" or float(out["tau_norm"])):
        raise HeadError("an xgboost head takes neither sampler: class_balanced nor tau_norm (linear and mlp heads "
                        "only)")
    for key in ("epochs", "batch_size", "resample_k", "hidden", "layers"):
        if int(out[key]) < 1:
            raise HeadError(f"head {key}={out[key]}: must be >= 1")
    for key in ("lr", "weight_cap"):
        if not float(out[key]) > 0:
            raise HeadError(f"head {key}={out[key]}: must be > 0")
    if int(out["resample_to"]) < 0:
        raise HeadError(f"head resample_to={out['resample_to']}: must be >= 0 (0: the resampler's default)")
    for key in ("weight_decay", "tau_norm", "posthoc_tau", "la_tau"):
        if not float(out[key]) >= 0:
            raise HeadError(f"head {key}={out[key]}: must be >= 0")
    if not 0.0 <= float(out["drw_start"]) <= 1.0:
        raise HeadError(f"head drw_start={out['drw_start']}: must be a fraction of the epochs in [0, 1]")
    if not 0.0 <= float(out["dropout"]) < 1.0:
        raise HeadError(f"head dropout={out['dropout']}: must be a probability in [0, 1)")
    return out
