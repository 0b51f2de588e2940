"""Linear probes of a trained model's layers and switches (paper Section 4, Fig. 2 left)."""

from .features import SOURCES, feature_names, layer_features
from .linear import ProbeSettings, probe_features

__all__ = ["SOURCES", "ProbeSettings", "feature_names", "layer_features", "probe_features"]
