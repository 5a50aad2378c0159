"""Built-in physics-based CBED generator writing the SMC 2020 challenge layout.

Modules:

- :mod:`cbedtdc.synth.scattering`  electron wavelength, 4-Gaussian form factors, structure factors
- :mod:`cbedtdc.synth.crystal`     random crystals on Wyckoff orbits, verified with spglib
- :mod:`cbedtdc.synth.zone_axes`   zone-axis policies (``lowindex``, ``namsa``)
- :mod:`cbedtdc.synth.render`      CBED renderer (kinematic two-beam or dynamical Bloch waves), detector model
- :mod:`cbedtdc.synth.multislice`  abTEM multislice panels with frozen phonons (``synth.mode: multislice``)
- :mod:`cbedtdc.synth.generate`    class plan, materials, samples, atomic file writing
- :mod:`cbedtdc.synth.gallery`     PNG with one stack per class

Rule synthesize runs ``workflow_scripts/synthesize.py``, which calls :func:`synthesize_file` with the
``synth`` settings passed as flags. From Python, with the whole pipeline config::

    cfg = SynthConfig.from_config(config)
    write_file("results/raw/batch_train_0.h5", cfg, first_material=0, n_materials=100)
"""

from .crystal import Crystal, CrystalError, crystal_family, random_crystal
from .generate import (SynthConfig, class_sequence, make_material, materials_per_class, render_sample,
                       synthesize_file, tail_per_class, write_file)
from .render import Optics, detector, prepare_panels, render_panel
from .zone_axes import zone_axes

__all__ = ["Crystal", "CrystalError", "crystal_family", "random_crystal", "SynthConfig", "class_sequence",
           "make_material", "materials_per_class", "render_sample", "synthesize_file", "tail_per_class", "write_file",
           "Optics", "detector", "prepare_panels", "render_panel", "zone_axes"]
