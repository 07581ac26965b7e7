"""Named SDF models: one preset per field family, with its authors' learning rate and loss.

- ``nglod``: NGLOD's sparse octree (LODs 2^2..2^6 cells per axis by default, 32 features per
  corner) with a 128-wide one-hidden-layer decoder per LOD, as in the paper.
- ``siren``: SIREN with 3 hidden sine layers of 256 (the paper's SDF network), plus an eikonal term.
- ``hash``: instant-ngp's multiresolution hash grid (16 levels up to 2048 cells per axis, 2^19 rows)
  and a 64 x 2 ReLU MLP.
- ``dense``: dense multiresolution grids (6 levels up to 128 cells per axis) and the same MLP.
- ``relu-pe``: a ReLU MLP on NeRF positional encoding (DeepSDF-sized, 256 x 4), a baseline.

`SDFModelOptions` overrides the common sizes from the CLI (``--lods``, ``--base-lod``, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from nfield.encodings import DenseGridConfig, FrequencyConfig, HashGridConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.fields.sdf import NGLODConfig, SDFFieldConfig
from nfield.networks import MLPConfig, SirenConfig


@dataclass(frozen=True)
class SDFModel:
    """A named preset: the field, its learning rate and loss weights for meshes."""

    field: SDFFieldConfig
    lr: float
    description: str
    eikonal_weight: float = 0.0  # weight of (|grad f| - 1)^2 when fitting ground-truth distances


@dataclass(frozen=True)
class SDFModelOptions:
    """Size overrides; unset keys keep the preset's value."""

    lods: Optional[int] = None  # nglod: levels of detail (finest = 2^(base_lod + lods - 1) cells per axis)
    base_lod: Optional[int] = None  # nglod: the coarsest level has 2^base_lod cells per axis
    feature_dim: Optional[int] = None  # nglod: features per octree corner
    hidden_dim: Optional[int] = None  # width of the MLP (nglod: of each decoder)
    hidden_layers: Optional[int] = None  # hidden layers of the MLP (nglod: of each decoder)

    def given(self) -> dict[str, int]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


_SMALL_MLP = MLPConfig(n_neurons=64, n_hidden_layers=2, activation="relu")

SDF_MODELS: dict[str, SDFModel] = {
    "nglod": SDFModel(NGLODConfig(), 5e-3, "NGLOD: sparse octree features with levels of detail"),
    "siren": SDFModel(
        FieldConfig(IdentityConfig(), SirenConfig(n_neurons=256, n_hidden_layers=3)),
        1e-4,
        "SIREN: sine activations, w0 = 30",
        eikonal_weight=0.1,
    ),
    "hash": SDFModel(
        FieldConfig(HashGridConfig(n_levels=16, log2_hashmap_size=19, base_resolution=16, per_level_scale=1.4), _SMALL_MLP),
        1e-2,
        "instant-ngp multiresolution hash grid + 64x2 MLP",
    ),
    "dense": SDFModel(
        FieldConfig(DenseGridConfig(n_levels=6, n_features_per_level=4, base_resolution=4, per_level_scale=2.0), _SMALL_MLP),
        1e-2,
        "dense multiresolution grids + 64x2 MLP",
    ),
    "relu-pe": SDFModel(
        FieldConfig(FrequencyConfig(n_frequencies=6), MLPConfig(n_neurons=256, n_hidden_layers=4)),
        5e-4,
        "ReLU MLP on positional encoding (baseline)",
    ),
}


def resolve_sdf_model(name: str, options: SDFModelOptions = SDFModelOptions()) -> SDFModel:
    """The preset `name` with `options` applied; unknown names or inapplicable options raise."""
    if name not in SDF_MODELS:
        raise NfieldError(f"unknown model '{name}'; choose one of: {', '.join(SDF_MODELS)}")
    model, given = SDF_MODELS[name], options.given()
    field = model.field
    if isinstance(field, NGLODConfig):
        octree_keys = {"lods": "n_lods", "base_lod": "base_lod", "feature_dim": "feature_dim"}
        octree = dataclasses.replace(field.octree, **{octree_keys[k]: v for k, v in given.items() if k in octree_keys})
        decoder = {k: v for k, v in (("hidden_dim", given.get("hidden_dim")), ("n_hidden_layers", given.get("hidden_layers")))}
        field = dataclasses.replace(field, octree=octree, **{k: v for k, v in decoder.items() if v is not None})
    else:
        nglod_only = sorted(set(given) & {"lods", "base_lod", "feature_dim"})
        if nglod_only:
            raise NfieldError(f"--{nglod_only[0].replace('_', '-')} applies to the nglod model only")
        network = field.network
        if "hidden_dim" in given:
            network = dataclasses.replace(network, n_neurons=given["hidden_dim"])
        if "hidden_layers" in given:
            network = dataclasses.replace(network, n_hidden_layers=given["hidden_layers"])
        field = FieldConfig(field.encoding, network)
    return dataclasses.replace(model, field=field)
