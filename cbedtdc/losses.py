"""Training losses for imbalanced classes, all per-sample means (so they split over ranks exactly).

- ``ce``: cross-entropy with label smoothing.
- ``weighted_ce``: each sample's cross-entropy times the inverse frequency of its class,
  ``w_c = min(cap, mean(n) / n_c)``; the loss is the plain mean of the weighted terms over the batch
  (not torch's ``sum(w l) / sum(w)``), so the mean of the per-rank losses is the global loss.
- ``logit_adjusted`` (Menon et al., ICLR 2021): cross-entropy of ``logits + tau * log(prior)``,
  ``tau = train.la_tau``; prediction uses the raw logits.
- ``balanced_softmax`` (Ren et al., NeurIPS 2020): cross-entropy of ``logits + log(n_c)``; this is
  the ``tau = 1`` case of the logit adjustment (the log of the counts and of the priors differ by a
  constant, which the softmax ignores).

Class counts come from the job's own training labels (after the mapping to output indices, "rest"
included). A class with no training sample gets a count of 1 for the priors and weights.
"""

from __future__ import annotations

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["LOSSES", "class_weights", "make_loss"]

LOSSES = ("ce", "weighted_ce", "logit_adjusted", "balanced_softmax")


def class_weights(counts, cap: float = 10.0) -> np.ndarray:
    """Inverse-frequency class weights, ``min(cap, mean(counts) / count)``.

    >>> class_weights([100, 10, 1], cap=10.0).round(2).tolist()
    [0.37, 3.7, 10.0]
    """
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return np.minimum(float(cap), n.mean() / n)


def make_loss(name: str, counts, *, label_smoothing: float = 0.0, la_tau: float = 1.0, weight_cap: float = 10.0):
    """Loss ``f(logits, target) -> scalar`` for training.

    Parameters
    ----------
    name : {"ce", "weighted_ce", "logit_adjusted", "balanced_softmax"}
    counts : sequence of int
        Training samples per output index of the job.
    label_smoothing : float
    la_tau : float
        Temperature of ``logit_adjusted``.
    weight_cap : float
        Largest class weight of ``weighted_ce``.
    """
    import torch
    import torch.nn.functional as F

    if name not in LOSSES:
        raise InputError(f"loss={name!r}: must be one of {', '.join(LOSSES)}")
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    ls = float(label_smoothing)

    if name == "ce":
        def loss(logits, target):
            return F.cross_entropy(logits.float(), target, label_smoothing=ls)
    elif name == "weighted_ce":
        w = torch.tensor(class_weights(n, weight_cap), dtype=torch.float32)

        def loss(logits, target):
            per = F.cross_entropy(logits.float(), target, label_smoothing=ls, reduction="none")
            return (per * w.to(per.device)[target]).mean()
    else:
        tau = float(la_tau) if name == "logit_adjusted" else 1.0
        shift = torch.tensor(tau * np.log(n / n.sum()), dtype=torch.float32)

        def loss(logits, target):
            return F.cross_entropy(logits.float() + shift.to(logits.device), target, label_smoothing=ls)
    loss.__name__ = name
    return loss
