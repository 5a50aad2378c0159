"""The settings of the ``symmetry`` descriptors, their version and hash, and the name of every column."""

from __future__ import annotations

import dataclasses

from cbedtdc.features.spec import settings_sha256

__all__ = ["NAME", "VERSION", "REF_SIDE", "SymmetryParams", "params_dict", "params_sha256", "descriptor_names",
           "panel_names"]

NAME = "symmetry"
VERSION = "2"  # 2: no centre.rho column, the dynamic-range floor, featureless values for an unusable panel
REF_SIDE = 64  # lengths in px below are at this side and scale with the image side


@dataclasses.dataclass(frozen=True)
class SymmetryParams:
    """Settings of the descriptor set; lengths are px at a 64-px panel (scaled with the side)."""

    n_radii: int = 30  # rings at r = r_min .. r_max
    r_min: float = 1.0
    r_max: float = 30.0
    n_angles: int = 128  # angles per ring (mirror spectrum resolution 180 / n_angles deg)
    band_edges: tuple = (1.0, 4.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.5)  # radial bands [lo, hi) in px
    n_harmonics: int = 16  # h1..h16 per band
    mirror_harmonics: int = 32  # low-pass of the mirror spectrum (smooth peaks)
    mirror_top: int = 4  # highest mirror peaks kept
    mirror_orders: int = 6  # Fourier orders of the mirror spectrum kept
    rotations: tuple = (2, 3, 4, 6)
    centre_search: int = 6  # the 180-degree self-correlation is searched +-this many px around the image centre
    centre_sigma: float = 5.0  # Gaussian window of the 180-degree self-correlation
    centre_crop: int = 32  # side of the crop the self-correlation is computed on
    centre_prior: float = 0.05  # rho penalty at the search edge (quadratic in the offset)
    min_centre_rho: float = 0.3  # below: no visible centre, fallback to the geometric centre
    min_contrast: float = 2.0  # grey levels (rms in the centre crop): flatter has no visible centre
    bf_max: float = 8.0  # the bright-field disk edge is searched for below this radius
    flat_level: float = 0.05  # angular std / panel std below which a band counts as flat
    harmonic_scale: str = "log10"  # log10 | sqrt: the scale of the harmonic fractions
    log_floor: float = 1e-4  # harmonic fractions are floored here before log10
    dynamic_range: float = 1000.0  # intensities below the panel's brightest / this are floored there (0: off)

    def scaled(self, side: int) -> float:
        return side / REF_SIDE


def params_dict(params: SymmetryParams | None = None) -> dict:
    """The settings as a plain JSON-able dict, with the version.

    >>> params_dict()["version"], params_dict()["n_angles"]
    ('2', 128)
    """
    p = dataclasses.asdict(params or SymmetryParams())
    return {"version": VERSION, **{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}}


def params_sha256(params: SymmetryParams | None = None) -> str:
    """SHA-256 of the sorted JSON of :func:`params_dict`: the features file's ``model_sha256``."""
    return settings_sha256(params_dict(params))


# ----------------------------------------------------------------------------------------------- names
def _band_names(params: SymmetryParams) -> list[str]:
    e = params.band_edges
    return [f"b{lo:g}-{hi:g}" for lo, hi in zip(e[:-1], e[1:])] + ["bf", "all"]


def _band_feature_names(params: SymmetryParams) -> list[str]:
    names = [f"h{m}" for m in range(1, params.n_harmonics + 1)]
    names += [f"rot{n}" for n in params.rotations]
    names += [f"mir.top{k}" for k in range(1, params.mirror_top + 1)] + ["mir.npk50", "mir.npk80"]
    names += [f"mir.f{j}" for j in range(1, params.mirror_orders + 1)]
    return names


def panel_names(params: SymmetryParams) -> list[str]:
    names = [f"radial.r{k}" for k in range(params.n_radii)]
    for b in _band_names(params):
        names += [f"{b}.{f}" for f in _band_feature_names(params)]
    return names + ["bf.radius", "bf.contrast", "centre.nocentre"]


def descriptor_names(params: SymmetryParams | None = None) -> list[str]:
    """Name of every column of :func:`describe`'s output: ``p{panel}.{descriptor}``, panel 0, 1, 2.

    >>> names = descriptor_names()
    >>> len(names), names[0], names[-1]
    (963, 'p0.radial.r0', 'p2.centre.nocentre')
    """
    params = params or SymmetryParams()
    return [f"p{p}.{n}" for p in range(3) for n in panel_names(params)]
