"""Signed distance fields: x in [-1, 1]^3 -> signed distance (normalised box units), normals by autograd.

Two kinds, with one interface (`forward(x, lod=None) -> (N,)`, `n_lods`, `lod_parameter_counts()`):

- `SDFField`: any encoding + network of the foundation (SIREN, hash grid + MLP, ...) with one
  output. Networks with levels of detail (PINs) expose them as LODs.
- `NGLODField`: Neural Geometric Level of Detail (Takikawa et al. 2021). A sparse octree built from
  the shape holds a feature vector per cell corner at every level; a query sums the trilinearly
  interpolated features of levels 0..k and decodes [features, x] with LOD k's own small MLP, as
  the paper's reference implementation does. All LODs train jointly (`forward_all_lods`).

Configs travel as ``{"otype": "Field", "encoding": ..., "network": ...}`` or
``{"otype": "NGLOD", "octree": {...}, "n_neurons": ..., "n_hidden_layers": ...}``, the `FIELDS`
types ``Field`` and ``NGLOD`` (runs written before 0.3 say ``hidden_dim`` for ``n_neurons``; both load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from nfield.encodings.octree import OctreeFeatures, OctreeFeaturesConfig, SparseOctree
from nfield.errors import NfieldError
from nfield.fields.field import Field, FieldConfig, field_config_from_dict, field_config_to_dict
from nfield.fields.registry import FIELDS
from nfield.networks import MLP, MLPConfig


@dataclass(frozen=True)
class NGLODConfig:
    octree: OctreeFeaturesConfig = field(default_factory=OctreeFeaturesConfig)
    n_neurons: int = 128  # neurons of each LOD's decoder
    n_hidden_layers: int = 1  # hidden layers of each LOD's decoder


@FIELDS.register("Field", FieldConfig)
class SDFField(nn.Module):
    """A signed distance field from any encoding + network: (N, 3) -> (N,)."""

    def __init__(self, cfg: FieldConfig):
        super().__init__()
        self.cfg = cfg
        self.field = Field(3, 1, cfg)

    @property
    def n_lods(self) -> int:
        return self.field.n_lods

    def forward(self, x: torch.Tensor, lod: int | None = None) -> torch.Tensor:
        check_lod(lod, self.n_lods)
        return self.field(x, lod=None if lod is None or self.n_lods == 1 else lod)[:, 0]

    def forward_all_lods(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_lods) distances at every LOD (one column for single-level fields)."""
        if self.n_lods == 1:
            return self(x)[:, None]
        return torch.stack([self(x, lod) for lod in range(self.n_lods)], dim=-1)

    def lod_parameter_counts(self) -> list[int]:
        """Parameters used by each LOD (all of them for single-level fields)."""
        total = sum(p.numel() for p in self.parameters())
        return [total] * self.n_lods


@FIELDS.register("NGLOD", NGLODConfig, renamed={"hidden_dim": "n_neurons"})  # "hidden_dim" before 0.3
class NGLODField(nn.Module):
    """NGLOD: sparse-octree features summed over levels 0..k, decoded by LOD k's MLP; (N, 3) -> (N,).

    Args:
        cfg: octree and decoder sizes.
        octree: the occupied cells, from `SparseOctree.from_points` on surface samples; None makes
            an empty one that `load_state_dict` fills from a checkpoint.
    """

    def __init__(self, cfg: NGLODConfig = NGLODConfig(), octree: SparseOctree | None = None):
        super().__init__()
        self.cfg = cfg
        self.features = OctreeFeatures(cfg.octree, octree)
        decoder = MLPConfig(n_neurons=cfg.n_neurons, n_hidden_layers=cfg.n_hidden_layers, activation="relu")
        self.decoders = nn.ModuleList([MLP(cfg.octree.feature_dim + 3, 1, decoder) for _ in range(cfg.octree.n_lods)])

    @property
    def octree(self) -> SparseOctree:
        return self.features.octree

    @property
    def n_lods(self) -> int:
        return self.cfg.octree.n_lods

    def forward(self, x: torch.Tensor, lod: int | None = None) -> torch.Tensor:
        lod = self.n_lods - 1 if lod is None else check_lod(lod, self.n_lods)
        features = self.features(x, lod=lod)
        return self.decoders[lod](torch.cat([features, x.to(features.dtype)], dim=-1))[:, 0]

    def forward_all_lods(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n_lods) distances at every LOD, sharing the feature lookups."""
        total, out = None, []
        for lod in range(self.n_lods):
            level = self.features.level_features(x, lod)
            total = level if total is None else total + level
            out.append(self.decoders[lod](torch.cat([total, x.to(total.dtype)], dim=-1))[:, 0])
        return torch.stack(out, dim=-1)

    def lod_parameter_counts(self) -> list[int]:
        """Stored values LOD k uses: the features of levels 0..k plus decoder k."""
        per_level = self.features.level_parameter_counts()
        return [sum(per_level[: k + 1]) + sum(p.numel() for p in self.decoders[k].parameters()) for k in range(self.n_lods)]


def distance_fn(model: SDFField | NGLODField, lod: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` at `lod` as a plain (M, 3) -> (M,) float32 callable, for renderers and mesh extraction."""

    def distance(points: torch.Tensor) -> torch.Tensor:
        return model(points, lod=lod).float()

    return distance


def check_lod(lod: int | None, n_lods: int) -> int | None:
    """`lod` itself when it names one of `n_lods` levels of detail (or is None); NfieldError otherwise."""
    if lod is not None and not 0 <= lod < n_lods:
        raise NfieldError(f"--lod {lod}: this model has LODs 0..{n_lods - 1}")
    return lod


SDFFieldConfig = FieldConfig | NGLODConfig
#: The `FIELDS` types fit-sdf takes (config.json's "field" otype).
SDF_FIELDS = ("Field", "NGLOD")


def needs_octree(cfg: SDFFieldConfig) -> bool:
    """Whether the field for `cfg` is built on a sparse octree of the shape's surface (NGLOD), which
    `build_sdf_field` takes."""
    return isinstance(cfg, NGLODConfig)


def build_sdf_field(cfg: SDFFieldConfig, octree: SparseOctree | None = None) -> SDFField | NGLODField:
    """The field for `cfg`; NGLOD takes its octree (None: empty, to be loaded from a checkpoint)."""
    if FIELDS.otype(cfg) not in SDF_FIELDS:
        raise NfieldError(f"{type(cfg).__name__} is not an SDF field config; use FieldConfig or NGLODConfig")
    return FIELDS.build(cfg, octree) if needs_octree(cfg) else FIELDS.build(cfg)


def sdf_field_config_to_dict(cfg: SDFFieldConfig) -> dict[str, Any]:
    """``{"otype": "Field", **field_config_to_dict(cfg)}`` or ``{"otype": "NGLOD", ...}``."""
    if isinstance(cfg, FieldConfig):  # a generic field keeps `field_config_to_dict`'s form
        return {"otype": "Field", **field_config_to_dict(cfg)}
    return FIELDS.to_dict(cfg)


def sdf_field_config_from_dict(data: dict[str, Any]) -> SDFFieldConfig:
    """Inverse of `sdf_field_config_to_dict` (runs before 0.3 too)."""
    if not isinstance(data, dict) or data.get("otype") not in SDF_FIELDS:
        raise NfieldError("an SDF field config needs 'otype': 'Field' or 'NGLOD'")
    if data["otype"] == "Field":
        return field_config_from_dict({k: v for k, v in data.items() if k != "otype"})
    return FIELDS.from_dict(data)
