"""Feature sources: each a name -> float32 ``(N, D)`` array + keys per split, in ``results/features/<source>/<split>.h5``.

- :mod:`cbedtdc.features.store`: the file format (:class:`FeatureWriter`, :func:`read_features`);
- :mod:`cbedtdc.features.cnn`: a trained backbone's penultimate activations (source ``cnn``, and an
  own-backbone TDC level's);
- :mod:`cbedtdc.features.symmetry`: rotation-invariant physics descriptors of every panel (source
  ``symmetry``, no backbone; docs/symmetry.md);
- :func:`load_sources`: several sources of one split joined by key (the heads' input).
"""

from cbedtdc.features.cnn import extract_to_file, pooled_features, torch_threads
from cbedtdc.features.sources import SourceSet, load_sources
from cbedtdc.features.store import FEATURES_FORMAT, FeatureSet, FeaturesError, FeatureWriter, read_features, sha256_file
from cbedtdc.features.symmetry import extract_symmetry_to_file

__all__ = ["FEATURES_FORMAT", "FeatureSet", "FeaturesError", "FeatureWriter", "SourceSet", "extract_symmetry_to_file",
           "extract_to_file", "load_sources", "pooled_features", "read_features", "sha256_file", "torch_threads"]
