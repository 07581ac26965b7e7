"""Radiance fields over a world-space box: (points, view directions) -> (colour, volume density).

A `RadianceField` owns an axis-aligned box ``aabb`` (2, 3) in world units. Points are mapped to
u = 2 (x - aabb[0]) / (aabb[1] - aabb[0]) - 1 in [-1, 1]^3 for the encodings, and the density is
0 outside the box. Every kind has the same shape:

    geometry(u) -> (raw density, F geometry features)     sigma = activation(raw density)
    colour MLP([direction encoding(d), features]) -> sigmoid rgb

so the density never depends on the view direction. Three kinds, one config each:

- `VanillaNeRFConfig`: the NeRF paper's network (Mildenhall et al. 2020, Fig. 7): frequency
  encodings of position and direction, a trunk of 8 ReLU layers of 256 with the encoded input
  concatenated again part-way, sigma = ReLU(raw density), a 256-feature (no activation) and a
  128-unit view branch.
- `NGPFieldConfig`: instant-ngp (Müller et al. 2022): hash grid -> tiny density MLP -> (log-density,
  15 features); sigma = `trunc_exp`(log-density); colour MLP on [spherical harmonics of d, features].
- `GenericRadianceConfig`: the NGP layout with any registered encoding and network as the geometry
  part (SIREN, SPDER, Fourier features, ...) and any direction encoding.
- `KiloNeRFConfig`: a grid of tiny MLPs (`nfield.fields.kilonerf`).

The MLPs are `MLPConfig`s in tiny-cuda-nn's key names (``n_neurons``, ``n_hidden_layers``, ...):
NGP's ``density`` and ``color``, vanilla's ``trunk`` and ``color``. Configs travel as
``{"otype": "VanillaNeRF" | "NGP" | "Generic" | "KiloNeRF", ...}`` (the `FIELDS` registry), nested
configs as ``{"otype": "HashGrid", ...}`` and ``{"otype": "MLP", ...}``; runs written before 0.3
say ``density_width``, ``width``, ``depth``, ``hidden``, ... and load under the current names.

Example::

    >>> import torch
    >>> field = build_radiance_field(NGPFieldConfig(), torch.tensor([[-1.5] * 3, [1.5] * 3]))
    >>> rgb, sigma = field(torch.zeros(4, 3), torch.tensor([[0.0, 0.0, 1.0]] * 4))
    >>> rgb.shape, sigma.shape
    (torch.Size([4, 3]), torch.Size([4]))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from nfield.encodings import (
    ENCODINGS,
    Frequency,
    FrequencyConfig,
    HashGridConfig,
    IdentityConfig,
    SphericalHarmonicsConfig,
)
from nfield.encodings.sh import check_sh_degree
from nfield.errors import NfieldError
from nfield.fields.density import TRUNC_EXP_MAX, trunc_exp  # noqa: F401 (re-exported)
from nfield.fields.field import Field, FieldConfig
from nfield.fields.kilonerf import KiloNeRFConfig, KiloNeRFField
from nfield.fields.registry import FIELDS
from nfield.networks import MLP, NETWORKS, MLPConfig
from nfield.networks.mlp import check_int


def _mlp(n_neurons: int, n_hidden_layers: int, output_activation: str = "none") -> Callable[[], MLPConfig]:
    return lambda: MLPConfig(n_neurons=n_neurons, n_hidden_layers=n_hidden_layers, output_activation=output_activation)


@dataclass(frozen=True)
class VanillaNeRFConfig:
    position_frequencies: int = 10  # octaves of the position encoding (input included): 63 features
    direction_frequencies: int = 4  # octaves of the direction encoding (input included): 27 features
    # the position network: n_hidden_layers layers of n_neurons (the colour feature's size too), each
    # followed by the activation, then a linear layer to (raw density, features)
    trunk: MLPConfig = field(default_factory=_mlp(256, 8))
    skip_layer: int = 5  # the encoded position is concatenated again after this many trunk layers
    # the view-dependent colour branch: [features, encoded direction] -> n_neurons -> sigmoid rgb
    color: MLPConfig = field(default_factory=_mlp(128, 1, "sigmoid"))

    def __post_init__(self) -> None:
        for key, minimum in dict(position_frequencies=0, direction_frequencies=0, skip_layer=1).items():
            check_int("VanillaNeRFConfig", key, getattr(self, key), minimum)
        _check_mlp("VanillaNeRFConfig", "trunk", self.trunk, "none")
        check_int("VanillaNeRFConfig", "trunk.n_hidden_layers", self.trunk.n_hidden_layers, 2)
        if self.trunk.fourier_reparam:
            raise NfieldError("VanillaNeRFConfig.trunk: fourier_reparam does not apply to the trunk (its skip splits it)")
        if self.skip_layer >= self.trunk.n_hidden_layers:
            raise NfieldError(
                f"VanillaNeRFConfig.skip_layer must be below trunk.n_hidden_layers={self.trunk.n_hidden_layers}, "
                f"got {self.skip_layer}"
            )
        _check_mlp("VanillaNeRFConfig", "color", self.color, "sigmoid")


@dataclass(frozen=True)
class NGPFieldConfig:
    # finest level 16 * 1.4473^15 = 4096 cells across the box
    grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(per_level_scale=(4096 / 16) ** (1 / 15)))
    density: MLPConfig = field(default_factory=_mlp(64, 1))  # the density MLP: grid features -> (log-density, features)
    geometry_features: int = 15  # features passed from the density MLP to the colour MLP
    sh_degree: int = 4  # spherical harmonics bands of the view direction (degree^2 features)
    color: MLPConfig = field(default_factory=_mlp(64, 2, "sigmoid"))  # the colour MLP: [SH(d), features] -> rgb

    def __post_init__(self) -> None:
        if not isinstance(self.grid, HashGridConfig):
            raise NfieldError(f"NGPFieldConfig.grid must be a HashGrid config, got {type(self.grid).__name__}")
        check_sh_degree("NGPFieldConfig", "sh_degree", self.sh_degree)
        _check_mlp("NGPFieldConfig", "density", self.density)
        _check_heads("NGPFieldConfig", self)


@dataclass(frozen=True)
class GenericRadianceConfig:
    encoding: Any = field(default_factory=IdentityConfig)  # any registered encoding config (positions)
    network: Any = field(default_factory=MLPConfig)  # any registered network config: encoding -> 1 + features
    direction_encoding: Any = field(default_factory=SphericalHarmonicsConfig)  # any registered encoding config
    geometry_features: int = 15  # features passed from the geometry network to the colour MLP
    color: MLPConfig = field(default_factory=_mlp(64, 2, "sigmoid"))  # the colour MLP: [encoded d, features] -> rgb

    def __post_init__(self) -> None:
        ENCODINGS.otype(self.encoding)
        NETWORKS.otype(self.network)
        ENCODINGS.otype(self.direction_encoding)
        _check_heads("GenericRadianceConfig", self)


def _check_mlp(owner: str, key: str, cfg: Any, output_activation: str | None = None) -> None:
    """`NfieldError` unless ``owner.key`` is an `MLPConfig` (ending in `output_activation` when given)."""
    if not isinstance(cfg, MLPConfig):
        raise NfieldError(f"{owner}.{key} must be an MLP config, got {type(cfg).__name__}")
    if output_activation is not None and cfg.output_activation.lower() != output_activation:
        raise NfieldError(f"{owner}.{key}.output_activation must be '{output_activation}', got {cfg.output_activation!r}")


def _check_heads(owner: str, cfg: NGPFieldConfig | GenericRadianceConfig) -> None:
    check_int(owner, "geometry_features", cfg.geometry_features, 1)
    _check_mlp(owner, "color", cfg.color, "sigmoid")  # colours in [0, 1]


RadianceConfig = VanillaNeRFConfig | NGPFieldConfig | GenericRadianceConfig | KiloNeRFConfig
#: The `FIELDS` types train-nerf takes (config.json's "field" otype).
RADIANCE_FIELDS = ("VanillaNeRF", "NGP", "Generic", "KiloNeRF")


class NeRFTrunk(nn.Module):
    """The NeRF paper's position network: encoded x -> ``trunk.n_hidden_layers`` layers -> (raw density, features).

    The first `skip_layer` layers see the encoded position; their output, concatenated with the
    encoded position again, feeds the remaining ``n_hidden_layers - skip_layer`` layers. A final
    linear layer gives the raw density and ``trunk.n_neurons`` features (no activation). The default,
    5, is the paper's ("concatenates this input to the fifth layer's activation").

    Input (N, 3) in [-1, 1]; output (N, 1 + trunk.n_neurons).
    """

    def __init__(self, cfg: VanillaNeRFConfig):
        super().__init__()
        trunk, width = cfg.trunk, cfg.trunk.n_neurons
        self.encoding = Frequency(3, FrequencyConfig(cfg.position_frequencies, include_input=True))
        layers = dict(output_activation=trunk.activation)  # every trunk layer ends in the activation
        before, after = cfg.skip_layer - 1, trunk.n_hidden_layers - cfg.skip_layer - 1
        self.before_skip = MLP(self.encoding.out_dim, width, dataclasses.replace(trunk, n_hidden_layers=before, **layers))
        self.after_skip = MLP(width + self.encoding.out_dim, width, dataclasses.replace(trunk, n_hidden_layers=after, **layers))
        self.head = nn.Linear(width, 1 + width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoded = self.encoding(x)
        hidden = self.after_skip(torch.cat([self.before_skip(encoded), encoded], dim=-1))
        return self.head(hidden)


class RadianceField(nn.Module):
    """Colour and volume density of world-space points inside a box.

    Args:
        cfg: the kind and sizes (`VanillaNeRFConfig`, `NGPFieldConfig`, `GenericRadianceConfig`).
        aabb: (2, 3) world box [min corner, max corner], world units; kept as a buffer (float32).

    Attributes: `geometry` ((N, 3) in [-1, 1] -> (N, 1 + F)), `direction_encoding`, `color` (MLP).
    """

    def __init__(self, cfg: VanillaNeRFConfig | NGPFieldConfig | GenericRadianceConfig, aabb: torch.Tensor):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise NfieldError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max, got {aabb.tolist()}")
        self.cfg = cfg
        self.register_buffer("aabb", aabb.clone())  # its own copy: fields built on one box save separately
        if isinstance(cfg, VanillaNeRFConfig):
            self.geometry: nn.Module = NeRFTrunk(cfg)
            n_features = cfg.trunk.n_neurons
            direction: Any = FrequencyConfig(cfg.direction_frequencies, include_input=True)
            self.density_activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu
        else:
            generic = _as_generic(cfg) if isinstance(cfg, NGPFieldConfig) else cfg
            n_features = generic.geometry_features
            self.geometry = Field(3, 1 + n_features, FieldConfig(generic.encoding, generic.network))
            direction = generic.direction_encoding
            self.density_activation = trunc_exp
        self.direction_encoding = ENCODINGS.build(direction, 3)
        self.color = MLP(self.direction_encoding.out_dim + n_features, 3, cfg.color)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(M, 3) world points -> (M, 3) box coordinates, [-1, 1]^3 inside the box."""
        lo, hi = self.aabb.to(x.dtype)
        return 2.0 * (x - lo) / (hi - lo) - 1.0

    def density_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma (M,) in float32 or wider, geometry features (M, F)) of world points x (M, 3): the
        density network's outputs, which `color_of` turns into colours."""
        u = self.normalize(x)
        out = self.geometry(u)
        raw = out[:, 0].to(torch.promote_types(out.dtype, torch.float32))  # exp overflows float16 above 11
        inside = (u.abs() <= 1.0).all(dim=-1)
        sigma = torch.where(inside, self.density_activation(raw), torch.zeros_like(raw))
        return sigma, out[:, 1:]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Volume density sigma >= 0 (M,) per world unit of length at world points x (M, 3); 0 outside the box."""
        return self.density_and_features(x)[0]

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Colour and density at world points.

        Args:
            x: (M, 3) world points.
            d: (M, 3) unit view directions (from the camera towards the point).

        Returns:
            rgb (M, 3) in [0, 1], and sigma (M,) >= 0 (0 outside the box), independent of `d`.
        """
        sigma, features = self.density_and_features(x)
        return self.color_of(features, d), sigma

    def color_of(self, features: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """rgb (M, 3) in [0, 1] of points with geometry features (M, F) (`density_and_features`)
        seen along unit directions d (M, 3)."""
        return self.color(torch.cat([self.direction_encoding(d).to(features.dtype), features], dim=-1))

    def extra_repr(self) -> str:
        activation = getattr(self.density_activation, "__name__", self.density_activation)
        return f"aabb={self.aabb.tolist()}, density_activation={activation}"


# One module class, three kinds of config; config.json keys of runs before 0.3 under their current names.
FIELDS.register(
    "VanillaNeRF",
    VanillaNeRFConfig,
    renamed={"width": "trunk.n_neurons", "depth": "trunk.n_hidden_layers", "direction_width": "color.n_neurons"},
)(RadianceField)
FIELDS.register(
    "NGP",
    NGPFieldConfig,
    renamed={
        "density_width": "density.n_neurons",
        "density_layers": "density.n_hidden_layers",
        "color_width": "color.n_neurons",
        "color_layers": "color.n_hidden_layers",
    },
)(RadianceField)
FIELDS.register(
    "Generic", GenericRadianceConfig, renamed={"color_width": "color.n_neurons", "color_layers": "color.n_hidden_layers"}
)(RadianceField)


def _as_generic(cfg: NGPFieldConfig) -> GenericRadianceConfig:
    """The NGP layout as a generic config: hash grid + density MLP, spherical harmonics of d."""
    return GenericRadianceConfig(
        encoding=cfg.grid,
        network=cfg.density,
        direction_encoding=SphericalHarmonicsConfig(cfg.sh_degree),
        geometry_features=cfg.geometry_features,
        color=cfg.color,
    )


def build_radiance_field(cfg: RadianceConfig, aabb: torch.Tensor) -> RadianceField | KiloNeRFField:
    """The radiance field for `cfg` over the world box `aabb` (2, 3) (a grid of tiny MLPs for KiloNeRF)."""
    _otype(cfg)  # NfieldError for a config of another kind
    return FIELDS.build(cfg, aabb)


def _otype(cfg: RadianceConfig) -> str:
    """The kind name of a radiance field config; `NfieldError` for anything else."""
    otype = FIELDS.otype(cfg) if cfg in FIELDS else None
    if otype not in RADIANCE_FIELDS:
        valid = ", ".join(FIELDS.config_class(name).__name__ for name in RADIANCE_FIELDS)
        raise NfieldError(f"{type(cfg).__name__} is not a radiance field config; use one of {valid}")
    return otype


def radiance_config_to_dict(cfg: RadianceConfig) -> dict[str, Any]:
    """JSON form ``{"otype": "VanillaNeRF" | "NGP" | "Generic" | "KiloNeRF", ...}``; nested configs carry their own otype."""
    _otype(cfg)
    return FIELDS.to_dict(cfg)


def radiance_config_from_dict(data: dict[str, Any]) -> RadianceConfig:
    """Inverse of `radiance_config_to_dict` (runs before 0.3 too); unknown kinds, keys or component
    types raise `NfieldError`."""
    if not isinstance(data, dict) or data.get("otype") not in RADIANCE_FIELDS:
        raise NfieldError(f"a radiance field config needs 'otype': one of {', '.join(RADIANCE_FIELDS)}")
    return FIELDS.from_dict(data)
