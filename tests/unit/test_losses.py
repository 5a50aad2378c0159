"""The training losses of cbedtdc.losses: decomposable over ranks, logit adjustment equal to balanced softmax at
tau 1, capped class weights."""

import pytest
import torch

from cbedtdc.losses import class_weights, make_loss


def test_losses_are_decomposable_and_related():
    counts = [50, 10, 2]
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    for name in ("ce", "weighted_ce", "logit_adjusted", "balanced_softmax"):
        f = make_loss(name, counts, label_smoothing=0.1)
        whole = f(logits, y)
        halves = (f(logits[:4], y[:4]) + f(logits[4:], y[4:])) / 2
        assert torch.allclose(whole, halves, atol=1e-6), name  # mean of per-rank losses = global loss
    la1 = make_loss("logit_adjusted", counts, la_tau=1.0)(logits, y)
    assert torch.allclose(la1, make_loss("balanced_softmax", counts)(logits, y), atol=1e-6)
    assert make_loss("weighted_ce", counts)(logits, y) != make_loss("ce", counts)(logits, y)
    w = class_weights(counts, cap=5.0)
    assert w[2] == 5.0 and w[0] < w[1] < w[2]
    with pytest.raises(ValueError, match="must be one of"):
        make_loss("focal", counts)
