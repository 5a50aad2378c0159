"""Feature sources: each a name -> float32 ``(N, D)`` array + keys per split, in ``results/features/<folder>/``.

- :mod:`cbedtdc.features.registry`: the one list of sources (:data:`SOURCES`), where each one's files live;
- :mod:`cbedtdc.features.spec`: what a source is (:class:`FeatureSource`), and the descriptor sources' writer;
- :mod:`cbedtdc.features.store`: the file format (:class:`FeatureWriter`, :func:`read_features`);
- :mod:`cbedtdc.features.cnn`: a trained backbone's penultimate activations (source ``cnn``, and an
  own-backbone TDC level's);
- :mod:`cbedtdc.features.symmetry`: rotation-invariant physics descriptors of every panel (source
  ``symmetry``, no backbone; docs/symmetry.md);
- :func:`load_split` / :func:`load_sources`: several sources of one split joined by key (the heads' input).
"""

from cbedtdc.features.cnn import extract_to_file, pooled_features, torch_threads
from cbedtdc.features.registry import SOURCES, feature_dir, get_source, source_of_folder
from cbedtdc.features.sources import SourceSet, load_sources, load_split, source_files
from cbedtdc.features.spec import FeatureSource, descriptor_source
from cbedtdc.features.store import FEATURES_FORMAT, FeatureSet, FeaturesError, FeatureWriter, read_features, sha256_file
from cbedtdc.features.symmetry import extract_symmetry_to_file

__all__ = ["FEATURES_FORMAT", "SOURCES", "FeatureSet", "FeatureSource", "FeaturesError", "FeatureWriter", "SourceSet",
           "descriptor_source", "extract_symmetry_to_file", "extract_to_file", "feature_dir", "get_source",
           "load_sources", "load_split", "pooled_features", "read_features", "sha256_file", "source_files",
           "source_of_folder", "torch_threads"]
