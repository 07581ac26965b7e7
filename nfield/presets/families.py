"""Every family on every signal, and at one parameter budget (the size rule of a fair comparison).

The image presets (`nfield.presets.image`) are the families' reference settings. Three functions
carry them to other signals and sizes:

- `family_field(family, in_dim, signal, signal_size)`: the family's field for a signal (below);
- `family_preset(...)`: that field as a model of another task (fit-audio, fit-video, fit-sdf
  take every family this way, with the family's image learning rate and the task's schedule);
- `sized_field(family, in_dim, out_dim, n_params, signal, signal_size)`: the field with one *size
  knob* set so that the parameter count is the closest it can get to `n_params`.

==================================  ===========================================================
family                              knob (everything else stays at the preset's value)
==================================  ===========================================================
relu, relu-pe, progressive, sape,   hidden width ``n_neurons`` (depth fixed)
shifted-gaussian, siren, spder,
finer, gauss, wire, pins
fourier, learnable-fourier, cam     width, with as many Fourier features as neurons
                                    (Tancik et al. and CAM use 256 features for width 256);
                                    CAM's modulation grids keep their size
relu-pe-fr                          the width relu-pe gets: FR-INR re-parameterises the same
                                    network, so its budget is that network's (its training-time
                                    coefficients Lambda are not counted; they fold into W)
hash                                rows per level ``log2_hashmap_size`` (16 levels, 2 features,
                                    MLP 64 x 2 as instant-ngp; powers of two, so the coarsest
                                    rule: the count lands within a factor of about 1.4)
dense                               vertices per axis of the finest level (8 levels, geometric;
                                    2 features, MLP 64 x 2)
planes                              features per line/plane ``n_features`` (MLP 64 x 2)
neurbf                              kernels ``n_kernels`` (grid part and MLP 64 x 2 fixed)
==================================  ===========================================================

Parameters are the stored values of the representation: every `nn.Parameter`, trained or not
(NeuRBF's fixed centres and shapes count), complex ones as two reals.

Adapting to a signal (`signal_size` = its largest side in samples): grids put their finest level
at the signal's size (NeuRBF's grid part at half of it, as its paper), K-planes' resolutions
(64 .. 512) are scaled so the finest is the signal's size, dense grids and NeuRBF start at most
at a quarter of it, shifted bases sample one lattice point per signal sample up to 512 per direction.
1-D audio (time in [-1, 1] over thousands of samples) takes SIREN's audio setting: first-layer
w0 = 3000 for the sine families, 16 octaves for frequency encodings, sigma 2000 for Fourier
features and CAM (whose grid gets 256 cells along time). 3-D signals (video, SDF, NeRF) give CAM a
grid of a quarter of the signal's size per axis, between 4 and 16. `NOT_FOR` lists the families
a signal does not take, and why (1-D grids hold the samples themselves; SAPE needs a per-sample
reconstruction error).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from torch import nn

from nfield.encodings import (
    DenseGridConfig,
    FeaturePlanesConfig,
    GaussianFourierConfig,
    HashGridConfig,
    LearnableFourierConfig,
    NeuRBFConfig,
    ShiftedBasisConfig,
)
from nfield.errors import NfieldError
from nfield.fields import Field, FieldConfig
from nfield.networks import CamConfig, FinerConfig, SirenConfig, SpderConfig
from nfield.presets import Preset, apply_overrides
from nfield.presets.image import IMAGE_PRESETS, shifted_lattice_for

SIGNALS = ("image", "audio", "video", "sdf", "nerf")
#: Families without a form for a signal, and why.
NOT_FOR = {
    "audio": {
        "hash": "a 1-D grid as fine as the clip holds the samples themselves",
        "dense": "a 1-D grid as fine as the clip holds the samples themselves",
        "neurbf": "NeuRBF's kernels are defined for 2-D and 3-D coordinates",
        "sape": "SAPE's progress grid is defined for 2-D and 3-D coordinates",
    },
    "sdf": {"sape": "SAPE's masks follow a per-sample reconstruction error; an SDF's loss is not one"},
    "nerf": {"sape": "SAPE's masks follow a per-sample reconstruction error; a NeRF's is per ray, not per point"},
}
NOT_FOR_AUDIO = NOT_FOR["audio"]
_WIDTHS = range(2, 4097)
_GRID_MLP = 64  # the grids' decoder width (instant-ngp's 64 x 2)


def count_parameters(module: nn.Module) -> int:
    """Stored parameters of `module`: every nn.Parameter, complex ones counted as two reals."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


def family_field(family: str, in_dim: int, signal: str = "image", signal_size: int = 512) -> FieldConfig:
    """The family's field for a signal: its image preset, adapted to 1-D audio and 3-D signals
    (video, SDF) where needed. `signal_size` is the signal's largest side in samples (it sets
    shifted bases' lattice, the planes' and grids' finest resolution)."""
    if family not in IMAGE_PRESETS:
        raise NfieldError(f"unknown family '{family}'; choose one of: {', '.join(IMAGE_PRESETS)}")
    if signal not in SIGNALS:
        raise NfieldError(f"unknown signal kind '{signal}'; choose one of: {', '.join(SIGNALS)}")
    if family in NOT_FOR.get(signal, {}):
        raise NfieldError(f"{family} does not apply to {signal}: {NOT_FOR[signal][family]}")
    field = IMAGE_PRESETS[family].field
    encoding, network = field.encoding, field.network
    if isinstance(encoding, ShiftedBasisConfig):
        encoding = shifted_lattice_for(encoding, signal_size)
    if signal == "audio":
        if isinstance(network, (SirenConfig, SpderConfig, FinerConfig)):
            network = dataclasses.replace(network, w0_initial=3000.0)
        if _has(encoding, "n_frequencies"):
            encoding = dataclasses.replace(encoding, n_frequencies=16)
        if _has(network, "n_frequencies"):
            network = dataclasses.replace(network, n_frequencies=16)
        if isinstance(encoding, (GaussianFourierConfig, LearnableFourierConfig)):
            encoding = dataclasses.replace(encoding, sigma=2000.0)
        if isinstance(network, CamConfig):
            network = dataclasses.replace(network, sigma=2000.0, modulation_resolution=256)
    if in_dim == 3 and isinstance(network, CamConfig):
        network = dataclasses.replace(network, modulation_resolution=max(4, min(16, signal_size // 4)))
    if isinstance(encoding, FeaturePlanesConfig):  # K-planes' 64 .. 512, scaled so the finest matches the signal
        resolutions = sorted({max(2, round(r * signal_size / max(encoding.resolutions))) for r in encoding.resolutions})
        encoding = dataclasses.replace(encoding, resolutions=tuple(resolutions))
    if isinstance(encoding, (DenseGridConfig, NeuRBFConfig)):
        encoding = dataclasses.replace(encoding, base_resolution=max(2, min(encoding.base_resolution, signal_size // 4)))
    return FieldConfig(encoding, network)


def _has(config: Any, key: str) -> bool:
    return any(f.name == key for f in dataclasses.fields(config))


def _knob(family: str, field: FieldConfig, signal_size: int) -> tuple[Callable[[int], dict[str, Any]], range]:
    """The family's size knob: value -> overrides, and the values it may take (ascending)."""
    encoding, network = field.encoding, field.network
    if family == "hash":
        return (lambda v: {"log2_hashmap_size": v}), range(3, 25)
    if family == "dense":
        base = encoding.base_resolution

        def dense(v: int) -> dict[str, Any]:
            scale = (v / base) ** (1 / (encoding.n_levels - 1)) if v > base else 1.0
            return {"per_level_scale": scale}

        return dense, range(base, max(base, 4 * signal_size) + 1)  # finer than 4x the signal is never needed
    if family == "planes":
        return (lambda v: {"n_features": v}), range(1, 1025)
    if family == "neurbf":
        return (lambda v: {"n_kernels": v}), range(4, 2**18)
    if isinstance(encoding, (GaussianFourierConfig, LearnableFourierConfig)) or isinstance(network, CamConfig):
        return (lambda v: {"n_neurons": v, "n_features": v}), _WIDTHS
    return (lambda v: {"n_neurons": v}), _WIDTHS


def _adapt_grids(field: FieldConfig, signal_size: int) -> FieldConfig:
    """Grid parts fitted to the signal as the image presets do (finest level at its size)."""
    encoding = field.encoding
    if isinstance(encoding, (HashGridConfig, DenseGridConfig)):
        from nfield.presets.image import grid_scale_for

        encoding = dataclasses.replace(encoding, per_level_scale=grid_scale_for(encoding, signal_size))
    if isinstance(encoding, NeuRBFConfig) and encoding.n_levels > 1:
        scale = max(1.0, (signal_size / 2 / encoding.base_resolution) ** (1 / (encoding.n_levels - 1)))
        encoding = dataclasses.replace(encoding, per_level_scale=scale)
    return FieldConfig(encoding, field.network)


def family_preset(family: str, in_dim: int, signal: str, signal_size: int, base: Preset) -> Preset:
    """The image family `family` as a model for another signal: its field (`family_field`, grids'
    finest level at `signal_size`), its image learning rate and target range, with `base`'s
    schedule, task settings and CPU sizes (`base` is that signal's own preset of the nearest kind)."""
    image = IMAGE_PRESETS[family]
    field = _adapt_grids(family_field(family, in_dim, signal, signal_size), signal_size)
    mixed = base.train.mixed_precision and image.train.mixed_precision
    train = dataclasses.replace(base.train, lr=image.train.lr, mixed_precision=mixed)
    return Preset(field, train, base.task, image.description, base.cpu, image.target_range)


def field_parameters(field: FieldConfig, in_dim: int, out_dim: int) -> int:
    """Parameters of the field `field` would build (FR-INR counted as the network it re-parameterises)."""
    network = field.network
    if getattr(network, "fourier_reparam", False):
        field = FieldConfig(field.encoding, dataclasses.replace(network, fourier_reparam=False))
    return count_parameters(Field(in_dim, out_dim, field))


def sized_field(
    family: str, in_dim: int, out_dim: int, n_params: int, signal: str = "image", signal_size: int = 512
) -> tuple[FieldConfig, int]:
    """(the family's field with its knob set so its parameter count is closest to `n_params`, that
    count). `signal_size` is the signal's largest side in samples (grids' finest level, shifted
    bases' lattice)."""
    if n_params <= 0:
        raise NfieldError(f"--params must be positive, got {n_params}")
    field = _adapt_grids(family_field(family, in_dim, signal, signal_size), signal_size)
    knob, values = _knob(family, field, signal_size)
    cache: dict[int, int] = {}

    def count(i: int) -> int:
        if i not in cache:
            try:
                cache[i] = field_parameters(apply_overrides(field, knob(values[i]), family), in_dim, out_dim)
            except NfieldError:  # a size the component refuses (a table past its limit) is over any budget
                cache[i] = 2**62
        return cache[i]

    lo, hi = 0, len(values) - 1  # the count grows with the knob: find the first value at or above the budget
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) < n_params:
            lo = mid + 1
        else:
            hi = mid
    best = min({max(lo - 1, 0), lo}, key=lambda i: abs(count(i) - n_params))
    return apply_overrides(field, knob(values[best]), family), count(best)
