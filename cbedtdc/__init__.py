"""cbedtdc: Trickle-Down Classifier for CBED space-group classification.

Modules (import what you need; torch and xgboost are imported lazily):

- :mod:`cbedtdc.classes`    class sets and the real class frequencies
- :mod:`cbedtdc.layout`     raw-file discovery and the static file plan
- :mod:`cbedtdc.io`         defensive reading of challenge-layout HDF5
- :mod:`cbedtdc.synth`      built-in physics-based CBED generator
- :mod:`cbedtdc.preprocess` log scaling, resize, shards
- :mod:`cbedtdc.data`       ``ShardDataset`` over the uint8 shards
- :mod:`cbedtdc.train`      training engine: ``fit``, ``load_model``, ``predict``, ``extract_features``
- :mod:`cbedtdc.distributed`, :mod:`cbedtdc.model`, :mod:`cbedtdc.losses`  its process group, ResNet, losses
- :mod:`cbedtdc.cascade`    Trickle-Down Classifier levels and routing
- :mod:`cbedtdc.metrics`, :mod:`cbedtdc.plots`  evaluation
- :mod:`cbedtdc.cli`        the ``cbedtdc`` console script (``classify``, ``table``)
"""

__version__ = "0.1.0"
