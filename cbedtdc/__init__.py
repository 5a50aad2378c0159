"""cbedtdc: Trickle-Down Classifier for CBED space-group classification.

Modules, one room per concern (import what you need; torch, h5py and xgboost are imported lazily).
docs/architecture.md says what each room may import; tests/unit/test_architecture.py enforces it.

- :mod:`cbedtdc.errors`      the project's error types (what a user can fix; the CLIs print them in one line)
- :mod:`cbedtdc.classes`     class sets, the real class frequencies (``cbedtdc/tables/``), the run's class order
- :mod:`cbedtdc.crystallography`  the space-group hierarchy and extinction classes, derived from spglib
- :mod:`cbedtdc.layout`      raw-file discovery and the static file plan
- :mod:`cbedtdc.io`          defensive reading of challenge-layout HDF5, atomic writers, CSV/JSON
- :mod:`cbedtdc.mirror`, :mod:`cbedtdc.fetch`  the public STEMDL mirror: its ``.npz`` samples, download and checks
- :mod:`cbedtdc.synth`       built-in physics-based CBED generator
- :mod:`cbedtdc.preprocess`  log scaling, resize, shards
- :mod:`cbedtdc.data`        manifest, splits, shard index, ``ShardDataset`` over the uint8 shards
- :mod:`cbedtdc.train`       training engine: ``fit``, ``load_model``, ``predict``, ``extract_features``
- :mod:`cbedtdc.distributed`, :mod:`cbedtdc.model`, :mod:`cbedtdc.losses`  its process group, ResNet, losses
- :mod:`cbedtdc.features`    feature sources: a backbone's activations, the symmetry descriptors, joined by key
- :mod:`cbedtdc.heads`       heads on feature sources: linear and XGBoost, long-tail losses, resampling
- :mod:`cbedtdc.cascade`     Trickle-Down Classifier: level plan, routing (pure numpy), the level jobs, the
  shared-backbone cascade and one loader of a trained cascade
- :mod:`cbedtdc.calibration`, :mod:`cbedtdc.metrics`, :mod:`cbedtdc.plots`  pure temperature scaling, scores and
  figures (no torch, no h5py)
- :mod:`cbedtdc.evaluate`    loads the models and predictions of a run, writes ``summary.json`` and tables
- :mod:`cbedtdc.classify`    classifies new files with any trained variant of a run
- :mod:`cbedtdc.cli`, :mod:`cbedtdc.cliutil`  the ``cbedtdc`` console script; the workflow scripts' wrapper
- :mod:`cbedtdc.dag`, :mod:`cbedtdc.checks`, :mod:`cbedtdc.cluster`  config in, paths and params out for the
  Snakefile; parse-time and submission checks
"""

__version__ = "0.1.0"
