"""Radiance fields over a world-space box: (points, view directions) -> (colour, volume density).

A `RadianceField` owns an axis-aligned box ``aabb`` (2, 3) in world units. Points are mapped to
u = 2 (x - aabb[0]) / (aabb[1] - aabb[0]) - 1 in [-1, 1]^3 for the encodings, and the density is
0 outside the box. Every kind has the same shape:

    geometry(u) -> (raw density, F geometry features)     sigma = activation(raw density)
    colour MLP([direction encoding(d), features]) -> sigmoid rgb

so the density never depends on the view direction. Three kinds, one config each:

- `VanillaNeRFConfig`: the NeRF paper's network (Mildenhall et al. 2020, Fig. 7): frequency
  encodings of position and direction, 8 ReLU layers of 256 with the encoded input concatenated
  again part-way, sigma = ReLU(raw density), a 256-feature (no activation) and a 128-unit view
  branch.
- `NGPFieldConfig`: instant-ngp (Müller et al. 2022): hash grid -> tiny MLP -> (log-density,
  15 features); sigma = `trunc_exp`(log-density); colour MLP on [spherical harmonics of d, features].
- `GenericRadianceConfig`: the NGP layout with any registered encoding and network as the geometry
  part (SIREN, SPDER, Fourier features, ...) and any direction encoding.

Configs travel as ``{"otype": "VanillaNeRF" | "NGP" | "Generic", ...}``, nested component
configs as ``{"otype": "HashGrid", ...}`` through the registries.

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

from nfield.components import config_from_dict
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
from nfield.networks import MLP, NETWORKS, MLPConfig
from nfield.networks.mlp import check_int


@dataclass(frozen=True)
class VanillaNeRFConfig:
    position_frequencies: int = 10  # octaves of the position encoding (input included): 63 features
    direction_frequencies: int = 4  # octaves of the direction encoding (input included): 27 features
    width: int = 256  # neurons of the trunk layers, and size of the colour feature
    depth: int = 8  # ReLU layers of the trunk
    skip_layer: int = 5  # the encoded position is concatenated again after this many trunk layers
    direction_width: int = 128  # neurons of the view-dependent colour layer

    def __post_init__(self) -> None:
        minimums = dict(position_frequencies=0, direction_frequencies=0, width=1, depth=2, skip_layer=1, direction_width=1)
        for key, minimum in minimums.items():
            check_int("VanillaNeRFConfig", key, getattr(self, key), minimum)
        if self.skip_layer >= self.depth:
            raise NfieldError(f"VanillaNeRFConfig.skip_layer must be below depth={self.depth}, got {self.skip_layer}")


@dataclass(frozen=True)
class NGPFieldConfig:
    # finest level 16 * 1.4473^15 = 4096 cells across the box
    grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(per_level_scale=(4096 / 16) ** (1 / 15)))
    density_width: int = 64  # neurons of the density MLP
    density_layers: int = 1  # hidden layers of the density MLP
    geometry_features: int = 15  # features passed from the density MLP to the colour MLP
    sh_degree: int = 4  # spherical harmonics bands of the view direction (degree^2 features)
    color_width: int = 64  # neurons of the colour MLP
    color_layers: int = 2  # hidden layers of the colour MLP

    def __post_init__(self) -> None:
        if not isinstance(self.grid, HashGridConfig):
            raise NfieldError(f"NGPFieldConfig.grid must be a HashGrid config, got {type(self.grid).__name__}")
        check_sh_degree("NGPFieldConfig", "sh_degree", self.sh_degree)
        _check_heads("NGPFieldConfig", self)
        check_int("NGPFieldConfig", "density_width", self.density_width, 1)
        check_int("NGPFieldConfig", "density_layers", self.density_layers, 0)


@dataclass(frozen=True)
class GenericRadianceConfig:
    encoding: Any = field(default_factory=IdentityConfig)  # any registered encoding config (positions)
    network: Any = field(default_factory=MLPConfig)  # any registered network config: encoding -> 1 + features
    direction_encoding: Any = field(default_factory=SphericalHarmonicsConfig)  # any registered encoding config
    geometry_features: int = 15  # features passed from the geometry network to the colour MLP
    color_width: int = 64  # neurons of the colour MLP
    color_layers: int = 2  # hidden layers of the colour MLP

    def __post_init__(self) -> None:
        ENCODINGS.otype(self.encoding)
        NETWORKS.otype(self.network)
        ENCODINGS.otype(self.direction_encoding)
        _check_heads("GenericRadianceConfig", self)


def _check_heads(owner: str, cfg: NGPFieldConfig | GenericRadianceConfig) -> None:
    check_int(owner, "geometry_features", cfg.geometry_features, 1)
    check_int(owner, "color_width", cfg.color_width, 1)
    check_int(owner, "color_layers", cfg.color_layers, 0)


RadianceConfig = VanillaNeRFConfig | NGPFieldConfig | GenericRadianceConfig | KiloNeRFConfig
_KINDS: dict[str, type] = {
    "VanillaNeRF": VanillaNeRFConfig,
    "NGP": NGPFieldConfig,
    "Generic": GenericRadianceConfig,
    "KiloNeRF": KiloNeRFConfig,
}
_COMPONENTS = {"grid": ENCODINGS, "encoding": ENCODINGS, "direction_encoding": ENCODINGS, "network": NETWORKS}  # nested configs


class NeRFTrunk(nn.Module):
    """The NeRF paper's position network: encoded x -> `depth` ReLU layers -> (raw density, features).

    The first `skip_layer` layers see the encoded position; their output, concatenated with the
    encoded position again, feeds the remaining ``depth - skip_layer`` layers. A final linear
    layer gives the raw density and `width` features (no activation). The default, 5, is the
    paper's ("concatenates this input to the fifth layer's activation").

    Input (N, 3) in [-1, 1]; output (N, 1 + width).
    """

    def __init__(self, cfg: VanillaNeRFConfig):
        super().__init__()
        self.encoding = Frequency(3, FrequencyConfig(cfg.position_frequencies, include_input=True))
        layers = dict(n_neurons=cfg.width, activation="relu", output_activation="relu")
        self.before_skip = MLP(self.encoding.out_dim, cfg.width, MLPConfig(n_hidden_layers=cfg.skip_layer - 1, **layers))
        self.after_skip = MLP(
            cfg.width + self.encoding.out_dim, cfg.width, MLPConfig(n_hidden_layers=cfg.depth - cfg.skip_layer - 1, **layers)
        )
        self.head = nn.Linear(cfg.width, 1 + cfg.width)

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

    def __init__(self, cfg: RadianceConfig, aabb: torch.Tensor):
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        if aabb.shape != (2, 3) or not bool((aabb[1] > aabb[0]).all()):
            raise NfieldError(f"aabb must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max, got {aabb.tolist()}")
        self.cfg = cfg
        self.register_buffer("aabb", aabb.clone())  # its own copy: fields built on one box save separately
        if _otype(cfg) == "VanillaNeRF":
            self.geometry: nn.Module = NeRFTrunk(cfg)
            n_features = cfg.width
            direction = FrequencyConfig(cfg.direction_frequencies, include_input=True)
            color = MLPConfig(n_neurons=cfg.direction_width, n_hidden_layers=1, output_activation="sigmoid")
            self.density_activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu
        else:
            generic = _as_generic(cfg) if isinstance(cfg, NGPFieldConfig) else cfg
            n_features = generic.geometry_features
            self.geometry = Field(3, 1 + n_features, FieldConfig(generic.encoding, generic.network))
            direction = generic.direction_encoding
            color = MLPConfig(n_neurons=generic.color_width, n_hidden_layers=generic.color_layers, output_activation="sigmoid")
            self.density_activation = trunc_exp
        self.direction_encoding = ENCODINGS.build(direction, 3)
        self.color = MLP(self.direction_encoding.out_dim + n_features, 3, color)

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


def _as_generic(cfg: NGPFieldConfig) -> GenericRadianceConfig:
    """The NGP layout as a generic config: hash grid + ReLU MLP, spherical harmonics of d."""
    return GenericRadianceConfig(
        encoding=cfg.grid,
        network=MLPConfig(n_neurons=cfg.density_width, n_hidden_layers=cfg.density_layers),
        direction_encoding=SphericalHarmonicsConfig(cfg.sh_degree),
        geometry_features=cfg.geometry_features,
        color_width=cfg.color_width,
        color_layers=cfg.color_layers,
    )


def build_radiance_field(cfg: RadianceConfig, aabb: torch.Tensor) -> RadianceField | KiloNeRFField:
    """The radiance field for `cfg` over the world box `aabb` (2, 3) (a grid of tiny MLPs for KiloNeRF)."""
    if isinstance(cfg, KiloNeRFConfig):
        return KiloNeRFField(cfg, aabb)
    return RadianceField(cfg, aabb)


def _otype(cfg: RadianceConfig) -> str:
    """The kind name of a radiance field config; `NfieldError` for anything else."""
    for name, config_cls in _KINDS.items():
        if type(cfg) is config_cls:
            return name
    valid = ", ".join(config_cls.__name__ for config_cls in _KINDS.values())
    raise NfieldError(f"{type(cfg).__name__} is not a radiance field config; use one of {valid}")


def radiance_config_to_dict(cfg: RadianceConfig) -> dict[str, Any]:
    """JSON form ``{"otype": "VanillaNeRF" | "NGP" | "Generic" | "KiloNeRF", ...}``; component configs carry their own otype."""
    data: dict[str, Any] = {"otype": _otype(cfg)}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        data[f.name] = _COMPONENTS[f.name].to_dict(value) if f.name in _COMPONENTS else value
    return data


def radiance_config_from_dict(data: dict[str, Any]) -> RadianceConfig:
    """Inverse of `radiance_config_to_dict`; unknown kinds, keys or component types raise `NfieldError`."""
    if not isinstance(data, dict) or data.get("otype") not in list(_KINDS):
        raise NfieldError(f"a radiance field config needs 'otype': one of {', '.join(_KINDS)}")
    config_cls = _KINDS[data["otype"]]
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {
        key: _COMPONENTS[key].from_dict(value) if key in names and key in _COMPONENTS else value
        for key, value in data.items()
        if key != "otype"
    }
    return config_from_dict(config_cls, values, what=data["otype"])
