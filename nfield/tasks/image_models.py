"""Named image models: one preset per coordinate-network family, tuned defaults, same budget.

Every family gets the network its paper uses for images, at comparable size: ReLU MLPs with 3
hidden layers of 256 (Tancik et al.'s 4 linear layers), SIREN and SPDER with 4 sine layers of 256
(the SIREN paper's 5 linear layers), the grids a small 64 x 2 MLP as in instant-ngp; and the
learning rate its authors use.
Any hyper-parameter can be overridden by key through `ModelOptions` (the CLI's flat options):
a key is applied to whichever part (encoding or network) has it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

from nfield.components import replace_fields
from nfield.encodings import (
    DenseGridConfig,
    FrequencyConfig,
    GaussianFourierConfig,
    HashGridConfig,
    IdentityConfig,
    LearnableFourierConfig,
    ProgressiveFrequencyConfig,
    SpatiallyAdaptiveProgressiveConfig,
)
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig, ProgressiveNetworkConfig, SirenConfig, SpderConfig


@dataclass(frozen=True)
class ImageModel:
    """A named preset: the field, its learning rate, and whether float16 autocast suits it."""

    field: FieldConfig
    lr: float
    description: str
    mixed_precision: bool = True


_MLP = MLPConfig(n_neurons=256, n_hidden_layers=3, activation="relu")
_SMALL_MLP = MLPConfig(n_neurons=64, n_hidden_layers=2, activation="relu")

IMAGE_MODELS: dict[str, ImageModel] = {
    "relu": ImageModel(FieldConfig(IdentityConfig(), _MLP), 1e-3, "ReLU MLP on raw coordinates (the spectral-bias baseline)"),
    "relu-pe": ImageModel(FieldConfig(FrequencyConfig(n_frequencies=10), _MLP), 1e-3, "ReLU MLP on NeRF positional encoding"),
    "fourier": ImageModel(
        FieldConfig(GaussianFourierConfig(n_features=256, sigma=5.0), _MLP), 1e-3, "ReLU MLP on Gaussian random Fourier features"
    ),
    "learnable-fourier": ImageModel(
        FieldConfig(LearnableFourierConfig(n_features=256, sigma=5.0), _MLP), 1e-3, "ReLU MLP on trained Fourier features"
    ),
    "siren": ImageModel(
        FieldConfig(IdentityConfig(), SirenConfig()), 1e-4, "SIREN: sine activations, w0 = 30", mixed_precision=False
    ),
    "spder": ImageModel(
        FieldConfig(IdentityConfig(), SpderConfig()),
        1e-4,
        "SPDER: sin(z) sqrt|z| activations",
        mixed_precision=False,
    ),
    "progressive": ImageModel(
        FieldConfig(ProgressiveFrequencyConfig(n_frequencies=10), _MLP), 1e-3, "ReLU MLP on coarse-to-fine positional encoding"
    ),
    "pins": ImageModel(
        FieldConfig(IdentityConfig(), ProgressiveNetworkConfig()),
        1e-3,
        "PINs: hierarchical levels of detail",
    ),
    "sape": ImageModel(
        FieldConfig(SpatiallyAdaptiveProgressiveConfig(n_frequencies=10), _MLP),
        1e-3,
        "ReLU MLP on spatially adaptive progressive encoding",
    ),
    "hash": ImageModel(
        FieldConfig(HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=16), _SMALL_MLP),
        1e-2,
        "multiresolution hash grid + 64x2 MLP",
    ),
    "dense": ImageModel(
        FieldConfig(DenseGridConfig(n_levels=8, n_features_per_level=2), _SMALL_MLP),
        1e-2,
        "multiresolution dense grid + 64x2 MLP",
    ),
}


@dataclass(frozen=True)
class ModelOptions:
    """Hyper-parameter overrides; unset keys keep the model's preset value.

    Each key goes to the encoding or network config that has a field of that name; setting a key
    the chosen model does not have is an error.
    """

    n_neurons: Optional[int] = None  # hidden layer width
    n_hidden_layers: Optional[int] = None  # number of hidden layers
    activation: Optional[str] = None  # MLP activation: relu, leaky_relu, softplus, gelu, silu, tanh, sigmoid
    w0: Optional[float] = None  # SIREN / SPDER frequency of the hidden layers
    w0_initial: Optional[float] = None  # SIREN / SPDER frequency of the first layer
    n_frequencies: Optional[int] = None  # octave bands of frequency encodings (relu-pe, progressive, sape, pins)
    n_features: Optional[int] = None  # number of random Fourier features (fourier, learnable-fourier)
    sigma: Optional[float] = None  # standard deviation of Fourier frequencies, cycles per unit on [-1, 1]
    start_fraction: Optional[float] = None  # progressive schedules: fraction of training where bands start opening
    end_fraction: Optional[float] = None  # progressive schedules: fraction of training where all are open
    grid_resolution: Optional[int] = None  # SAPE: resolution of the per-region progress grid
    error_threshold: Optional[float] = None  # SAPE: local squared error under which a region stops progressing
    n_levels: Optional[int] = None  # grid levels (hash, dense) or levels of detail (pins)
    n_features_per_level: Optional[int] = None  # grid features per level
    log2_hashmap_size: Optional[int] = None  # hash table size per level, log2
    base_resolution: Optional[int] = None  # coarsest grid resolution
    per_level_scale: Optional[float] = None  # growth factor between grid levels (default: finest level = image size)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def resolve_image_model(name: str, options: ModelOptions, height: int, width: int) -> ImageModel:
    """The preset `name` with `options` applied and grid scales fitted to the image size."""
    if name not in IMAGE_MODELS:
        raise NfieldError(f"unknown model '{name}'; choose one of: {', '.join(IMAGE_MODELS)}")
    preset = IMAGE_MODELS[name]
    overrides = options.overrides()
    encoding, used_e = replace_fields(preset.field.encoding, overrides)
    network, used_n = replace_fields(preset.field.network, overrides)
    unused = sorted(set(overrides) - used_e - used_n)
    if unused:
        valid = sorted({f.name for part in (encoding, network) for f in dataclasses.fields(part)})
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        options = ", ".join("--" + k.replace("_", "-") for k in valid) or "none"
        raise NfieldError(f"{flags} does not apply to model '{name}'; its options: {options}")
    if isinstance(encoding, (HashGridConfig, DenseGridConfig)) and "per_level_scale" not in overrides:
        encoding = dataclasses.replace(encoding, per_level_scale=grid_scale_for(encoding, max(height, width)))
    return dataclasses.replace(preset, field=FieldConfig(encoding, network))


def grid_scale_for(grid: HashGridConfig | DenseGridConfig, finest_resolution: int) -> float:
    """Per-level scale that takes `base_resolution` to `finest_resolution` over `n_levels` levels."""
    if grid.n_levels <= 1 or finest_resolution <= grid.base_resolution:
        return 1.0
    return math.exp(math.log(finest_resolution / grid.base_resolution) / (grid.n_levels - 1))
