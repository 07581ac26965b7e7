"""Coordinate encodings: (N, in_dim) coordinates in [-1, 1] -> (N, out_dim) features.

Every encoding is an ``nn.Module`` with ``in_dim`` and ``out_dim``, built from a frozen config
dataclass through `ENCODINGS` (``ENCODINGS.build(cfg, in_dim)``). Progress-aware encodings expose
``update(step, total)``; the trainer calls it before every step. The configs of the encodings
tiny-cuda-nn also has write its JSON (``tcnn_config()``, see `tcnn_encoding_config`).
"""

from nfield.encodings.fourier import GaussianFourier, GaussianFourierConfig, LearnableFourier, LearnableFourierConfig
from nfield.encodings.frequency import Frequency, FrequencyConfig, band_window, frequency_features
from nfield.encodings.grid import DenseGrid, DenseGridConfig, GridLevel, HashGrid, HashGridConfig
from nfield.encodings.identity import Identity, IdentityConfig
from nfield.encodings.neurbf import NeuRBF, NeuRBFConfig, image_gradient_weights
from nfield.encodings.planes import FeaturePlanes, FeaturePlanesConfig
from nfield.encodings.progressive import (
    ProgressiveFrequency,
    ProgressiveFrequencyConfig,
    windowed_frequency_features,
)
from nfield.encodings.registry import ENCODINGS, tcnn_encoding_config
from nfield.encodings.sape import SpatiallyAdaptiveProgressive, SpatiallyAdaptiveProgressiveConfig
from nfield.encodings.sh import SphericalHarmonics, SphericalHarmonicsConfig, spherical_harmonics
from nfield.encodings.shifted_basis import ShiftedBasis, ShiftedBasisConfig, shifted_basis_features

__all__ = [
    "ENCODINGS",
    "tcnn_encoding_config",
    "Identity",
    "IdentityConfig",
    "Frequency",
    "FrequencyConfig",
    "band_window",
    "frequency_features",
    "GaussianFourier",
    "GaussianFourierConfig",
    "LearnableFourier",
    "LearnableFourierConfig",
    "ProgressiveFrequency",
    "ProgressiveFrequencyConfig",
    "windowed_frequency_features",
    "SpatiallyAdaptiveProgressive",
    "SpatiallyAdaptiveProgressiveConfig",
    "HashGrid",
    "HashGridConfig",
    "DenseGrid",
    "DenseGridConfig",
    "GridLevel",
    "ShiftedBasis",
    "ShiftedBasisConfig",
    "shifted_basis_features",
    "FeaturePlanes",
    "FeaturePlanesConfig",
    "SphericalHarmonics",
    "SphericalHarmonicsConfig",
    "spherical_harmonics",
    "NeuRBF",
    "NeuRBFConfig",
    "image_gradient_weights",
]
