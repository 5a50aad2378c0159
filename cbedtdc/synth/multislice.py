"""Multislice CBED with abTEM (``synth.mode: multislice``): frozen phonons, any zone axis, the project's detector grid.

One panel of one sample is computed by abTEM's multislice (Madsen & Susi 2021, abTEM 1.0; the algorithm family of
NAMSA, which made the challenge data) from the same material, zone axis, in-plane frame, semi-angle, thickness and
mistilt as the other modes (:mod:`cbedtdc.synth.render` prepares that geometry), then area-binned onto the
project's pixel grid:

* **Specimen.** A box of ``L x L x t`` [A] (L = ``OVERSAMPLE`` / dq, dq = 2 q_max / S the pixel of the written
  pattern, t the sample's thickness) is cut from the infinite crystal turned so that the beam direction n is z and
  the panel's e1 is x (plus the mistilt, a small rotation of the crystal). Any direction works, hexagonal [210],
  monoclinic and triclinic axes included, because the box is *cut*, not an orthogonal supercell: nothing is
  strained, and the lateral edges are a seam far from the probe, as in NAMSA's 100 A box.
* **Frozen phonons.** ``abtem.FrozenPhonons`` with the material's isotropic Debye-Waller B
  (sigma = sqrt(B / 8 pi^2) per direction), ``phonons`` configurations seeded from the sample's generator.
* **Probe.** ``abtem.Probe`` at the sample's energy with the panel's convergence semi-angle, focused on the entrance
  surface at the box centre; infinite-projection Lobato potentials, slices of ``slice_thickness``.
* **Detector grid.** The exit waves are Fourier transformed here on a grid whose pixels are ``1 / OVERSAMPLE`` of
  the written ones, with a half-pixel phase ramp where needed so the optic axis lies at pixel (S - 1) / 2 exactly as
  in :func:`cbedtdc.synth.render.render_panel`; ``OVERSAMPLE x OVERSAMPLE`` pixels are averaged into one and the
  intensities are scaled so that the incident beam is 1 per pixel inside the bright-field disk. The real-space
  grid is fine enough that abTEM's 2/3 anti-aliasing aperture lies outside the corners of the field.

Runs on the CPU (FFTW, estimate planning, one thread, float32, dask's synchronous scheduler: the same seed gives the
same bytes) or, with CuPy and a visible GPU, on the GPU (``device``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

from .crystal import Crystal
from .render import Panel
from .scattering import wavelength
from cbedtdc.errors import CbedtdcError, InputError

__all__ = ["MultisliceError", "DEVICES", "OVERSAMPLE", "MAX_ATOMS", "resolve_device", "specimen", "multislice_panel",
           "grid_points"]

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")
#: Detector pixels simulated per written pixel and direction (area-averaged): L = OVERSAMPLE / dq.
OVERSAMPLE = 2
#: Atoms in one specimen box above which a panel is not simulated (memory of the potential, ~100 B an atom).
MAX_ATOMS = 5_000_000
_FFT_PRIMES = (2, 3, 5, 7)


class MultisliceError(CbedtdcError, RuntimeError):
    """One material cannot be simulated by multislice (too large a specimen, or abTEM failed); the reason says why."""


@lru_cache(maxsize=1)
def _has_gpu() -> bool:
    try:
        import cupy  # noqa: F401  (optional: abTEM's GPU backend)

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver or no device: all mean "no GPU here"
        return False


def resolve_device(device: str = "auto") -> str:
    """``cpu`` or ``gpu`` for a ``synth.device`` setting (``auto``: the GPU when CuPy sees one, else the CPU).

    >>> resolve_device("cpu")
    'cpu'
    """
    if device not in DEVICES:
        raise InputError(f"synth.device={device!r}: must be one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    gpu = _has_gpu()
    if device == "gpu" and not gpu:
        raise InputError("synth.device=gpu: no GPU visible to CuPy (install cupy-cuda12x on a GPU node, "
                         "or set synth.device: auto or cpu)")
    return "gpu" if gpu else "cpu"


def grid_points(size: int) -> int:
    """Real-space grid side N: the 2/3 anti-aliasing aperture must reach the field's corners (q_max sqrt 2).

    N / (3 L) >= sqrt(2) q_max with L = OVERSAMPLE S / (2 q_max) gives N >= 1.5 sqrt(2) OVERSAMPLE S, rounded up
    to an even 7-smooth number (fast FFTs).

    >>> grid_points(64)
    280
    """
    n = int(np.ceil(1.5 * np.sqrt(2.0) * OVERSAMPLE * size))
    while True:
        m = n
        for p in _FFT_PRIMES:
            while m % p == 0:
                m //= p
        if m == 1 and n % 2 == 0:
            return n
        n += 1


def _rotation(n: np.ndarray, e1: np.ndarray, e2: np.ndarray, tilt_rad) -> np.ndarray:
    """Rows: the lab axes x, y, z in crystal Cartesian coordinates (x = e1, z = n), then a small crystal tilt."""
    r = np.vstack([e1, e2, n])
    ax, ay = float(tilt_rad[0]), float(tilt_rad[1])
    # tilt the crystal so that the beam meets it ax, ay [rad] off the zone axis (about lab y, then lab x)
    ry = np.array([[np.cos(ax), 0.0, np.sin(ax)], [0.0, 1.0, 0.0], [-np.sin(ax), 0.0, np.cos(ax)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(ay), np.sin(ay)], [0.0, -np.sin(ay), np.cos(ay)]])
    return rx @ ry @ r


def specimen(crystal: Crystal, panel: Panel, extent: float, thickness: float, tilt_rad=(0.0, 0.0),
             origin=(0.0, 0.0, 0.0)):
    """The atoms of an ``extent x extent x thickness`` [A] box cut from the oriented crystal, as ``ase.Atoms``.

    Lab frame: x along the panel's e1, z along the beam; ``origin`` (fractional, 0..1) shifts the crystal under the
    box centre. Raises :class:`MultisliceError` when the box would hold more than ``MAX_ATOMS`` atoms.
    """
    import ase  # lazy (abTEM's dependency)

    rot = _rotation(panel.axis.direction, panel.e1, panel.e2, tilt_rad)
    box = np.array([extent, extent, thickness])
    centre = box / 2.0
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) * box - centre
    frac_corners = (corners @ rot) @ np.linalg.inv(crystal.cell) - np.asarray(origin)  # lab -> crystal -> fractional
    lo = np.floor(frac_corners.min(axis=0)).astype(int) - 1
    hi = np.ceil(frac_corners.max(axis=0)).astype(int) + 1
    n_cells = int(np.prod(hi - lo + 1))
    expected = int(box.prod() / crystal.volume * len(crystal.frac))
    if expected > MAX_ATOMS:
        raise MultisliceError(f"specimen of {extent:.0f} x {extent:.0f} x {thickness:.0f} A holds ~{expected} atoms "
                              f"(> {MAX_ATOMS}): lower synth.image_size")
    positions, numbers = [], []
    z = np.asarray(crystal.numbers)
    ii, jj = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    plane = np.stack([ii.ravel(), jj.ravel()], axis=1)
    for k in range(lo[2], hi[2] + 1):  # one layer of cells at a time: bounded memory for oblique boxes
        cells = np.column_stack([plane, np.full(len(plane), k)])
        frac = (cells[:, None, :] + crystal.frac[None, :, :] + np.asarray(origin)).reshape(-1, 3)
        lab = (frac @ crystal.cell) @ rot.T + centre
        inside = np.all((lab >= 0.0) & (lab < box), axis=1)
        positions.append(lab[inside])
        numbers.append(np.tile(z, len(cells))[inside])
    log.debug("specimen: %d cells scanned, %d atoms", n_cells, sum(len(p) for p in positions))
    return ase.Atoms(numbers=np.concatenate(numbers), positions=np.concatenate(positions), cell=box, pbc=True)


@contextmanager
def _abtem_settings(device: str):
    import abtem
    import dask

    settings = {"device": device, "fft": "fftw", "fftw.threads": 1, "fftw.planning_effort": "FFTW_ESTIMATE",
                "precision": "float32", "dask.lazy": False, "diagnostics.progress_bar": False}
    with abtem.config.set(settings), dask.config.set(scheduler="synchronous"):
        yield abtem


def _to_numpy(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def multislice_panel(crystal: Crystal, panel: Panel, b_iso: float, energy_kev: float, thickness: float, size: int,
                     rng: np.random.Generator, tilt=(0.0, 0.0), phonons: int = 2, slice_thickness: float = 2.0,
                     device: str = "cpu") -> np.ndarray:
    """Noise-free multislice CBED of one panel, float64 (size, size), incident beam = 1 per pixel.

    Parameters
    ----------
    crystal : Crystal
    panel : Panel
        Geometry from :func:`cbedtdc.synth.render.prepare_panels` (axis, e1, e2, semi-angle, q_max).
    b_iso : float
        Isotropic Debye-Waller B [A^2]; the frozen-phonon displacement s.d. is sqrt(B / 8 pi^2).
    energy_kev, thickness : float
        Beam energy and specimen thickness [A].
    size : int
        Side S of the pattern; the optic axis is pixel (S - 1) / 2, the pixel 2 q_max / S [1/A].
    rng : numpy.random.Generator
        Draws the crystal's offset under the probe and the frozen-phonon seeds.
    tilt : (float, float)
        Mistilt [1/A] in panel coordinates, as in :func:`cbedtdc.synth.render.render_panel`.
    phonons : int
        Frozen-phonon configurations averaged.
    slice_thickness : float
        Multislice slice thickness [A].
    device : str
        ``cpu`` or ``gpu`` (see :func:`resolve_device`).
    """
    lam = wavelength(energy_kev)
    dq = 2.0 * panel.q_max / size
    extent = OVERSAMPLE / dq
    n = grid_points(size)
    origin = rng.uniform(0.0, 1.0, 3)
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, phonons)]
    # a beam tilted by tau [1/A] off the zone axis = the crystal turned by -tau lambda [rad] under a fixed beam
    atoms = specimen(crystal, panel, extent, thickness, -np.asarray(tilt, float) * lam, origin)
    sigma = float(np.sqrt(max(b_iso, 0.0) / (8 * np.pi**2)))
    try:
        with _abtem_settings(device) as abtem:
            sigmas = {s: sigma for s in set(atoms.get_chemical_symbols())}
            fp = abtem.FrozenPhonons(atoms, phonons, sigmas, seed=seeds)
            potential = abtem.Potential(fp, gpts=n, projection="infinite", parametrization="lobato",
                                        slice_thickness=slice_thickness, device=device)
            probe = abtem.Probe(energy=energy_kev * 1e3, semiangle_cutoff=panel.semi_angle * 1e3, device=device)
            probe.grid.match(potential)
            scan = np.array([[extent / 2.0, extent / 2.0]])
            incident = _to_numpy(probe.build(scan=scan, lazy=False).array)
            exit_waves = _to_numpy(probe.multislice(potential, scan=scan, lazy=False).array)
    except (ValueError, RuntimeError, MemoryError) as err:
        raise MultisliceError(f"abTEM failed: {type(err).__name__}: {err}") from err
    waves = exit_waves.reshape(-1, n, n).astype(np.complex128)
    total_in = float(np.sum(np.abs(incident) ** 2))
    return _detector_grid(waves, total_in, size, panel.semi_angle / lam, dq)


def _detector_grid(waves: np.ndarray, total_in: float, size: int, radius: float, dq: float) -> np.ndarray:
    """Mean |FFT|^2 of the exit waves (configs, N, N), on the S x S grid of the project, incident beam = 1."""
    n = waves.shape[-1]
    f = OVERSAMPLE * size  # fine detector side
    off = 0.5 if f % 2 == 0 else 0.0  # fine pixel j sits at (j - N/2 + off) / L: centre at (f - 1) / 2
    ramp = np.exp(-2j * np.pi * off * np.add.outer(np.arange(n), np.arange(n)) / n)
    inten = np.mean(np.abs(np.fft.fftshift(np.fft.fft2(waves * ramp), axes=(-2, -1))) ** 2, axis=0)
    j0 = n // 2 - int(np.floor((f - 1) / 2 + off))
    fine = inten[j0:j0 + f, j0:j0 + f]
    binned = fine.reshape(size, OVERSAMPLE, size, OVERSAMPLE).mean(axis=(1, 3)).T  # abTEM's (x, y) -> rows = y
    # vacuum: the disk spreads N^2 total_in over pi r^2 / (dq / OVERSAMPLE)^2 fine pixels
    per_pixel = n * n * total_in / (np.pi * radius**2 * (OVERSAMPLE / dq) ** 2)
    return binned / per_pixel
