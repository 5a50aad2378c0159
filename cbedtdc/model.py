"""The classifier: a torchvision ResNet that reads uint8 CBED panels directly.

Normalisation lives in the model (buffers ``mean``/``std``), so a checkpoint carries it and
``predict`` feeds raw shard bytes: ``x -> (x / 255 - mean) / std -> ResNet``.
"""

from __future__ import annotations

import numpy as np
from cbedtdc.errors import InputError

__all__ = ["ARCHS", "build_model", "augment"]

ARCHS = ("resnet18", "resnet34", "resnet50")


def _torch():
    import torch

    return torch


def build_model(arch: str, in_channels: int, n_outputs: int, *, mean: float = 0.5, std: float = 0.25):
    """Randomly initialised ResNet for ``in_channels`` uint8 panels and ``n_outputs`` logits.

    Parameters
    ----------
    arch : {"resnet18", "resnet34", "resnet50"}
    in_channels : {1, 3}
        1 for one panel per sample (``orientation: random``), 3 for the stacked panels.
    n_outputs : int
        Classes of the job (+1 for the "rest" output).
    mean, std : float
        Normalisation of the pixel values after scaling to [0, 1].
    """
    import torch
    import torchvision

    if arch not in ARCHS:
        raise InputError(f"arch={arch!r}: must be one of {', '.join(ARCHS)}")
    if in_channels not in (1, 3):
        raise InputError(f"in_channels={in_channels}: must be 1 (one panel) or 3 (stack)")
    if n_outputs < 2:
        raise InputError(f"n_outputs={n_outputs}: a classifier needs at least 2 outputs")

    class CBEDNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            net = getattr(torchvision.models, arch)(weights=None, num_classes=n_outputs)
            if in_channels != 3:
                old = net.conv1
                net.conv1 = torch.nn.Conv2d(in_channels, old.out_channels, kernel_size=old.kernel_size,
                                            stride=old.stride, padding=old.padding, bias=False)
                torch.nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.backbone = net
            self.register_buffer("mean", torch.tensor(float(mean)))
            self.register_buffer("std", torch.tensor(float(std)))

        def _prep(self, x):
            x = x.float().div_(255.0).sub_(self.mean).div_(self.std)
            return x.contiguous(memory_format=torch.channels_last)

        def features(self, x):
            """Penultimate-layer activations (after global average pooling)."""
            b = self.backbone
            x = self._prep(x)
            x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
            x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
            return torch.flatten(b.avgpool(x), 1)

        def forward(self, x):
            return self.backbone.fc(self.features(x))

    model = CBEDNet()
    return model.to(memory_format=torch.channels_last)


def augment_params(seed: int, epoch: int, index: int, n_panels: int) -> list[tuple[int, bool]]:
    """Physics-valid augmentation of one sample: per panel, a rot90 multiple and a flip flag.

    In-plane rotations by multiples of 90 degrees and mirror flips map a diffraction pattern to a
    pattern of the same crystal (the zone axis stays), so they keep the label; intensities are not
    touched. The draw depends only on (seed, epoch, index), so it is the same in any rank, worker or
    resumed run.

    >>> augment_params(0, 0, 5, 1) == augment_params(0, 0, 5, 1)
    True
    """
    rng = np.random.default_rng([int(seed), int(epoch), int(index), 0xA06])
    ks = rng.integers(0, 4, size=n_panels)
    flips = rng.integers(0, 2, size=n_panels)
    return [(int(k), bool(f)) for k, f in zip(ks, flips)]


def augment(x, params):
    """Apply :func:`augment_params` output to a (C, S, S) tensor (one (k, flip) per channel)."""
    torch = _torch()
    out = []
    for c, (k, flip) in enumerate(params):
        p = x[c]
        if k:
            p = torch.rot90(p, k, dims=(0, 1))
        if flip:
            p = torch.flip(p, dims=(1,))
        out.append(p)
    return torch.stack(out).contiguous()
