"""Test-time perturbations a real detector and microscope bring, applied to raw CBED stacks.

Each function takes one raw stack, ``(3, H, W)`` non-negative intensities as the challenge files store them
(before the log scaling of :func:`cbedtdc.preprocess.preprocess_stack`), and a strength, and returns a new
float32 stack; the random ones take a :class:`numpy.random.Generator`, so a seed gives the same result.
:data:`PERTURBATIONS` names them for the robustness curves (config ``robustness:``):

``dose``
    Electrons per bright-field pixel (the panel's brightest pixel stands for the bright-field disk): the
    intensities are scaled to that count, drawn from a Poisson law and scaled back, so the pattern keeps its
    intensity scale and gains shot noise (10^2: noisy, 10^6: nearly clean).
``centre_offset``
    The pattern moved by this fraction of the field of view, in a random direction per panel (a beam centre
    that is not where the software expects it); the uncovered border is the panel's lowest intensity.
``q_scale``
    The pattern magnified by this factor about the centre (a camera length known to a few percent: 1.05 puts
    every reflection 5 % further out).
``blur``
    An extra Gaussian detector blur of this standard deviation, as a fraction of the field (point-spread
    function of the scintillator and optics).
``blank_panel``
    Panel ``int(strength)`` (0, 1 or 2) replaced by zeros: a zone axis that was not recorded.

Mistilt and thickness beyond the training range change the physics of the pattern, not the image: they are
rendered by the generator (config ``synth.mistilt``, ``synth`` thickness settings) rather than applied here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cbedtdc.errors import InputError

__all__ = ["PERTURBATIONS", "dose", "centre_offset", "q_scale", "blur", "blank_panel", "perturb"]


def _check(stack) -> np.ndarray:
    a = np.asarray(stack, dtype=np.float32)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise InputError(f"a perturbation takes a (panels, H, W) stack of square panels, got shape {a.shape}")
    return a


def dose(stack, electrons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson shot noise at ``electrons`` per bright-field pixel (the panel's maximum).

    >>> s = np.zeros((3, 4, 4), np.float32); s[:, 1:3, 1:3] = 2.0
    >>> out = dose(s, 1e6, np.random.default_rng(0))
    >>> bool(np.allclose(out, s, rtol=0.01)), out.dtype.name
    (True, 'float32')
    """
    if not electrons > 0:
        raise InputError(f"dose: electrons per bright-field pixel must be > 0, got {electrons}")
    a = _check(stack)
    peak = a.reshape(len(a), -1).max(axis=1)
    scale = np.where(peak > 0, float(electrons) / np.maximum(peak, 1e-30), 0.0)[:, None, None]
    counts = rng.poisson(np.clip(a * scale, 0, None)).astype(np.float64)
    return np.where(scale > 0, counts / np.where(scale > 0, scale, 1.0), 0.0).astype(np.float32)


def centre_offset(stack, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Every panel shifted by ``fraction`` of its side in a random direction (bilinear, border = panel minimum).

    >>> s = np.zeros((1, 20, 20), np.float32); s[0, 10, 10] = 1.0
    >>> out = centre_offset(s, 0.1, np.random.default_rng(1))
    >>> r, c = np.unravel_index(out[0].argmax(), out[0].shape); round(float(np.hypot(r - 10, c - 10)), 0)
    2.0
    """
    a = _check(stack)
    out = np.empty_like(a)
    for i, panel in enumerate(a):
        phi = rng.uniform(0.0, 2.0 * np.pi)
        d = float(fraction) * panel.shape[0]
        out[i] = ndimage.shift(panel, (d * np.sin(phi), d * np.cos(phi)), order=1, mode="constant",
                               cval=float(panel.min()))
    return out


def q_scale(stack, factor: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Every panel magnified by ``factor`` about its centre (bilinear; outside the field = panel minimum).

    >>> s = np.zeros((1, 21, 21), np.float32); s[0, 10, 15] = 1.0
    >>> int(np.argmax(q_scale(s, 1.2)[0, 10]))
    16
    """
    if not factor > 0:
        raise InputError(f"q_scale: factor must be > 0, got {factor}")
    a = _check(stack)
    n = a.shape[1]
    c = (n - 1) / 2.0
    inv = 1.0 / float(factor)
    out = np.empty_like(a)
    for i, panel in enumerate(a):
        out[i] = ndimage.affine_transform(panel, [inv, inv], offset=[c - inv * c] * 2, order=1, mode="constant",
                                          cval=float(panel.min()))
    return out


def blur(stack, fraction: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Extra Gaussian blur of standard deviation ``fraction`` of the panel side (0: unchanged).

    >>> s = np.zeros((1, 16, 16), np.float32); s[0, 8, 8] = 1.0
    >>> b = blur(s, 0.1); round(float(b.sum()), 3), bool(b.max() < 0.1)
    (1.0, True)
    """
    if fraction < 0:
        raise InputError(f"blur: sigma must be >= 0, got {fraction}")
    a = _check(stack)
    if fraction == 0:
        return a.copy()
    sigma = float(fraction) * a.shape[1]
    return np.stack([ndimage.gaussian_filter(p, sigma, mode="nearest") for p in a]).astype(np.float32)


def blank_panel(stack, index: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Panel ``int(index)`` set to zero (the other panels unchanged).

    >>> blank_panel(np.ones((3, 2, 2)), 1).sum(axis=(1, 2)).tolist()
    [4.0, 0.0, 4.0]
    """
    a = _check(stack).copy()
    i = int(index)
    if not 0 <= i < len(a):
        raise InputError(f"blank_panel: panel {index} of a stack of {len(a)} panels")
    a[i] = 0.0
    return a


#: The perturbations of the robustness curves, by name (config ``robustness.perturbations``).
PERTURBATIONS = {"dose": dose, "centre_offset": centre_offset, "q_scale": q_scale, "blur": blur,
                 "blank_panel": blank_panel}


def perturb(stack, name: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Apply the perturbation ``name`` (:data:`PERTURBATIONS`) at ``strength`` to one raw stack."""
    try:
        fn = PERTURBATIONS[name]
    except KeyError:
        raise InputError(f"perturbation {name!r}: must be one of {', '.join(PERTURBATIONS)}") from None
    return fn(stack, strength, rng)
