"""The ``symmetry`` feature source: rotation-invariant physics descriptors of every CBED panel.

No backbone and no torch: vectorised numpy/scipy over a batch of uint8 shard stacks ``(B, 3, S, S)``
(the log-scaled intensities of :mod:`cbedtdc.preprocess`). Every panel goes through:

1. **Centre** (:func:`find_centres`): the centre of the direct beam's disk, found as the maximum of the
   Gaussian-weighted 180-degree self-correlation ``rho(c) = sum_x w(x-c) I(x) I(2c-x) / sum_x w(x-c)
   I(x)^2`` (``w`` of width ``centre_sigma``, ``I`` the crop minus its mean) over every half-pixel ``c``
   within ``centre_search`` px of the image centre, less a mild quadratic prior for the image centre
   (``centre_prior`` at the edge of the search). The disk *positions* of a zone-axis pattern are
   centrosymmetric about the direct beam (``g`` and ``-g`` are both in the zero layer) even where
   Friedel's law fails for their intensities, and the log scale of the shards evens those out. All
   candidates come from one FFT autoconvolution of the windowed crop (a product of two Gaussian windows
   centred at ``c0`` and ``2c - c0`` is a Gaussian centred at ``c``; the normaliser is a separable blur),
   then a parabola through the peak gives the sub-pixel centre. The brightest blob was tried first and
   dropped: on the default data it is not the direct beam in ~40 % of the panels (a strong reflection
   near the centre), while the self-correlation finds every panel's centre within 0.06 px. Strongly
   non-centrosymmetric intensities can pull the centre to a pseudo-centre (tests: a one-mirror pattern
   whose -g disks are at 0.3 of g's). Fallback, never a NaN: a blank, all-zero or non-finite panel, one
   with an rms contrast below ``min_contrast`` grey levels in the centre crop, or ``rho <
   min_centre_rho`` uses the geometric centre ``(S-1)/2``, sets the panel's ``centre.nocentre`` feature
   to 1 and names the reason (a blank or non-finite panel also gets the descriptors of a featureless
   panel, :func:`featureless`). Before the centre, every pixel more than ``10 ln(dynamic_range)`` grey levels
   below the panel's brightest is floored there (:func:`~cbedtdc.features.symmetry.centre.floor_dynamic_range`:
   shot noise at a low dose puts 0 or 1 electrons in those pixels, the largest contrasts after the log scale).
2. **Polar resampling**: the panel is shifted (bilinear, sub-pixel) so that its centre sits on the
   geometric centre, then ONE precomputed sparse bilinear matrix (``n_radii`` radii x ``n_angles``
   angles, plus a fine central profile) maps the whole batch to polar coordinates ``f_r(theta)``.
   Lengths are set for 64 px and scale with the side, so larger panels (the real 512-px stacks after
   :func:`cbedtdc.preprocess.log_scale`) give the same layout; this module reads only shards, and a
   512-px panel would want an area-averaging (not bilinear) polar matrix, which is not built.
3. **Angular Fourier transform** ``F_m(r)`` of every ring: a rotation of the pattern multiplies
   ``F_m`` by ``exp(i m phi)``; only quantities without that phase are kept.

Descriptors of one panel (``descriptor_names`` gives every column's name, ``p{panel}.{group}...``):

- ``radial.r{k}`` (lattice spacings, HOLZ ring): the angular mean ``F_0(r)/T`` minus its mean over r,
  divided by the panel's polar standard deviation ``s``. Peaks sit at the radii of the strongest
  reflections (the reciprocal lattice in the zero layer) and, when it is inside the field, at the first
  HOLZ ring, whose radius ``G = sqrt(2 k H)`` gives the spacing ``1/H`` along the beam. Friedel's law
  hides nothing here (it is already rotation-averaged).
- per *band* (rings ``band_edges`` in px at 64 px, plus ``bf`` = the bright-field disk ``r <= 0.9
  r_bf``, plus ``all`` = every ring), with weights ``r`` (ring area):

  - ``h{m}`` for m = 1..``n_harmonics``: ``log10`` of the fraction of the band's angular energy
    (``sum_r r |F_m(r)|^2`` over all m >= 1, plus a floor ``(flat_level s)^2`` per ring so that a nearly
    isotropic band gives small fractions instead of normalised interpolation noise) in harmonic m. An
    n-fold rotation axis along the beam leaves only multiples of n. Friedel's law (kinematic
    diffraction, ``|F(g)| = |F(-g)|``) makes every zero-layer pattern centrosymmetric, i.e. adds a
    2-fold axis and hides the odd harmonics: a 3-fold axis then shows as 6-fold (trigonal looks
    hexagonal), which only Friedel-breaking, dynamical data (``synth.mode: bloch``, real CBED) tell
    apart (the zero layer shows the *projection* diffraction group, the diffraction group with
    ``1_R`` added; Buxton et al. 1976).
  - ``rot{n}`` for n = 2, 3, 4, 6: the self-correlation of the band under a rotation by 360/n degrees,
    ``sum_m frac_m cos(2 pi m / n)`` (1: an exact n-fold axis). ``rot2`` is the Friedel descriptor:
    ``rot2 = E_even - E_odd``, 1 for a centrosymmetric pattern, less where Friedel's law is broken
    (odd harmonics: polar / non-centrosymmetric projections in dynamical CBED; in kinematic data only
    mistilt and noise lower it).
  - the mirror spectrum ``M(a) = sum_theta f(theta) f(2a - theta) / sum_theta f^2`` for all ``n_angles``
    mirror-line angles ``a`` in [0, 180) deg at once (reflection about ``a`` is a convolution in angle:
    ``M = irfft(sum_r r F_m(r)^2)``, low-passed at ``mirror_harmonics``); summarised rotation-
    invariantly by ``mir.top{k}`` (the k highest local maxima: ``top1`` is the best mirror's strength),
    ``mir.npk50`` / ``mir.npk80`` (the number of mirror peaks above 0.5 / 0.8: mirror lines; with
    Friedel's 2-fold every mirror at ``a`` comes with one at ``a + 90`` deg) and ``mir.f{j}`` for j =
    1..``mirror_orders`` (the magnitude of the j-th Fourier order of ``M(a)``: j equally spaced mirrors,
    as in ``jmm``: 2mm -> j = 2, 3m -> 3, 4mm -> 4, 6mm and 3m plus Friedel's 2-fold -> 6). Buxton et
    al. (1976) identify the diffraction group, hence the candidate point groups, from the rotation
    and mirror symmetry of the bright-field disk and of the whole pattern taken separately: here the
    ``bf`` band and the ``all`` band; the whole pattern's symmetry includes the HOLZ reflections and
    so the 3-D symmetry along the beam.

- ``bf.radius``: the bright-field disk radius in px (at 64 px), the radius of the steepest fall of
  the fine central profile: the convergence semi-angle over the smallest reflection (the generator
  sets it from ``g_min``), i.e. a reciprocal-lattice length; ``bf.contrast``: the disk's mean over the
  ring just outside it, over ``s``.
- ``centre.nocentre``: 1 where the geometric centre was used (documented fallback), else 0. (Version 1
  also wrote ``centre.rho``, the self-correlation of the found centre: 0.998 +- 0.003 on every kinematic
  panel, it turned shot noise and a blank panel into changes of 50 and 320 standard deviations.)

Every descriptor is invariant to rotations about the centre (up to interpolation) and to affine
changes of the log intensities (``a * x + b``, a > 0: a scaled exposure shifts log intensities; a
rescaled uint8 range scales them), since the mean is removed and every quantity is a ratio. None is
ever NaN: a blank panel gives :func:`featureless` values with ``nocentre = 1``. With the dynamic-range floor on
(the default), the affine invariance holds for shifts ``x + b`` only (the floor is in grey levels).

References: Buxton, Eades, Steeds & Rackham (1976), *The symmetry of electron diffraction zone axis
patterns*, Phil. Trans. R. Soc. A 281:171-194 (doi 10.1098/rsta.1976.0024). See ``docs/symmetry.md``.
"""


from __future__ import annotations

from cbedtdc.features.spec import descriptor_source, write_descriptors
from cbedtdc.features.symmetry.centre import find_centres
from cbedtdc.features.symmetry.descriptors import describe, featureless, mirror_spectrum
from cbedtdc.features.symmetry.params import (NAME, VERSION, SymmetryParams, descriptor_names, params_dict,
                                              params_sha256)
from cbedtdc.features.symmetry.plan import polar_matrix

__all__ = ["NAME", "SOURCE", "VERSION", "SymmetryParams", "params_dict", "params_sha256", "descriptor_names",
           "describe", "featureless", "find_centres", "mirror_spectrum", "polar_matrix", "extract_symmetry_to_file"]


def extract_symmetry_to_file(shard_root, split: str, out_path, *, keys=None, batch_size: int = 256,
                             progress: bool = True, params: SymmetryParams | None = None) -> dict:
    """Write the symmetry descriptors of ``split`` to ``out_path`` (a :mod:`cbedtdc.features.store` file).

    :func:`cbedtdc.features.spec.write_descriptors` with :func:`describe` under ``params``: batches of
    ``batch_size`` stacks (memory: one batch), the file renamed when complete; samples with a fallback panel
    are kept (finite features, the ``nocentre`` flag set) and counted in the log, with their keys.

    Returns
    -------
    dict
        ``n``, ``dim``, ``split``, ``seconds``, ``samples_per_s``, ``out``, ``fallback`` (count).
    """
    params = params or SymmetryParams()
    return write_descriptors(shard_root, split, out_path, name=NAME, describe=lambda x: describe(x, params),
                             names=descriptor_names(params), settings=params_dict(params), keys=keys,
                             batch_size=batch_size, progress=progress)


#: The source (default settings): rule ``features`` writes ``results/features/symmetry/{split}.h5``.
SOURCE = descriptor_source(NAME, "physics descriptors of the pattern's rotation and mirror symmetry (no backbone; "
                           "docs/symmetry.md)", describe, descriptor_names(), params_dict())
