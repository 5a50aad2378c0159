"""The network of the torch heads: a stack of affine layers on the standardised features.

A ``linear`` head is the output layer alone; an ``mlp`` head puts ``layers`` hidden layers of ``hidden`` units
before it, each ``Linear -> ReLU -> Dropout`` (dropout while fitting only). The hidden layers start from
He-uniform weights (``torch.nn.init.kaiming_uniform_`` for ReLU) and zero biases drawn from a generator seeded
with the head's seed, and dropout draws from the same generator, so the same seed gives the same head on a CPU
without touching torch's global random state. The output layer starts from zero, as the linear head's always has.

Parameters are a list of ``(weight (out, in), bias (out,))`` pairs, the last one the output layer, so that
tau-normalisation and the head file treat a linear and an mlp head alike. A fitted head predicts in numpy
(:func:`hidden_features`), torch being needed only to fit.
"""

from __future__ import annotations

import numpy as np

__all__ = ["init_layers", "forward", "hidden_features"]


def init_layers(dim: int, n_classes: int, *, hidden: int = 0, layers: int = 0, generator=None) -> list:
    """Trainable ``[(weight, bias), ...]`` torch tensors: ``layers`` hidden layers of ``hidden`` units, then a
    zero output layer of ``n_classes`` rows (``layers=0``: the linear head)."""
    import torch

    sizes = [int(dim)] + [int(hidden)] * int(layers)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weight = torch.empty(fan_out, fan_in)
        torch.nn.init.kaiming_uniform_(weight, nonlinearity="relu", generator=generator)
        params.append((weight.requires_grad_(), torch.zeros(fan_out, requires_grad=True)))
    params.append((torch.zeros(int(n_classes), sizes[-1], requires_grad=True),
                   torch.zeros(int(n_classes), requires_grad=True)))
    return params


def forward(params, x, *, dropout: float = 0.0, generator=None):
    """Logits of a batch ``x`` (torch, ``(B, dim)``); ``dropout > 0`` (fitting): inverted dropout after every
    hidden layer, its masks drawn from ``generator``."""
    import torch

    h = x
    for weight, bias in params[:-1]:
        h = torch.relu(h @ weight.T + bias)
        if dropout > 0:
            keep = torch.rand(h.shape, generator=generator) >= dropout
            h = h * keep / (1.0 - dropout)
    weight, bias = params[-1]
    return h @ weight.T + bias


def hidden_features(hidden, X) -> np.ndarray:
    """The input of the output layer in numpy: ``X`` through the hidden ``[(weight, bias), ...]`` (none: ``X``).

    >>> w, b = np.array([[1.0, -1.0], [0.0, 2.0]]), np.array([0.0, -1.0])
    >>> hidden_features([(w, b)], np.array([[1.0, 2.0], [3.0, 0.0]])).tolist()
    [[0.0, 3.0], [3.0, 0.0]]
    """
    h = X
    for weight, bias in hidden:
        h = np.maximum(h @ weight.T + bias, 0.0)
    return h
