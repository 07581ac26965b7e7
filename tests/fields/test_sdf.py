import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from nfield.encodings import HashGridConfig, IdentityConfig
from nfield.encodings.octree import OctreeFeaturesConfig, SparseOctree
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.fields.sdf import (
    NGLODConfig,
    NGLODField,
    SDFField,
    build_sdf_field,
    distance_fn,
    sdf_field_config_from_dict,
    sdf_field_config_to_dict,
)
from nfield.networks import MLPConfig, SirenConfig

SMALL_NGLOD = NGLODConfig(OctreeFeaturesConfig(base_lod=1, n_lods=3, feature_dim=4, feature_std=0.1), n_neurons=16)


def _sphere_points(n: int, seed: int = 0) -> torch.Tensor:
    directions = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(directions, dim=-1) * 0.5


def _nglod(dtype=torch.float32) -> NGLODField:
    torch.manual_seed(0)
    return NGLODField(SMALL_NGLOD, SparseOctree.from_points(_sphere_points(2000), SMALL_NGLOD.octree)).to(dtype)


def test_nglod_lods_share_features_and_report_their_sizes():
    field = _nglod()
    x = torch.rand(300, 3) * 2 - 1
    all_lods = field.forward_all_lods(x)
    assert all_lods.shape == (300, 3)
    for lod in range(3):
        torch.testing.assert_close(field(x, lod=lod), all_lods[:, lod])
    torch.testing.assert_close(field(x), all_lods[:, -1])
    per_level = field.features.level_parameter_counts()
    decoder = sum(p.numel() for p in field.decoders[0].parameters())
    assert field.lod_parameter_counts() == [sum(per_level[: k + 1]) + decoder for k in range(3)]
    assert field.lod_parameter_counts()[-1] == sum(p.numel() for p in field.features.parameters()) + decoder
    with pytest.raises(NfieldError, match="LODs 0..2"):
        field(x, lod=3)


def test_nglod_reloads_from_its_weights_alone(tmp_path):
    field = _nglod()
    save_file(field.state_dict(), str(tmp_path / "model.safetensors"))
    config = sdf_field_config_from_dict(json.loads(json.dumps(sdf_field_config_to_dict(SMALL_NGLOD))))
    assert config == SMALL_NGLOD
    reloaded = build_sdf_field(config)  # an empty octree, sized by the checkpoint
    reloaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")))
    x = torch.rand(200, 3) * 2 - 1
    for lod in range(3):
        torch.testing.assert_close(reloaded(x, lod=lod), field(x, lod=lod), rtol=0, atol=0)


def _finite_difference_gradient(fn, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    columns = []
    for axis in range(3):
        step = torch.zeros_like(x)
        step[:, axis] = h
        columns.append((fn(x + step) - fn(x - step)) / (2 * h))
    return torch.stack(columns, dim=-1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: _nglod(torch.float64),
        lambda: SDFField(FieldConfig(IdentityConfig(), SirenConfig(n_neurons=32, n_hidden_layers=2))).double(),
        lambda: SDFField(
            FieldConfig(HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=4), MLPConfig(16, 1))
        ).double(),
    ],
    ids=["nglod", "siren", "hash"],
)
def test_normals_by_autograd_match_finite_differences_and_second_derivatives_train(make):
    torch.manual_seed(1)
    field = make()
    x = (torch.rand(64, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_(True)
    (gradient,) = torch.autograd.grad(field(x).sum(), x, create_graph=True)
    with torch.no_grad():
        torch.testing.assert_close(gradient, _finite_difference_gradient(field, x.detach()), atol=1e-6, rtol=1e-5)
    eikonal = (gradient.norm(dim=-1) - 1).pow(2).mean()
    eikonal.backward()  # second derivatives reach the parameters
    grads = [p.grad for p in field.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_generic_sdf_field_config_round_trip_and_distance_fn():
    cfg = FieldConfig(IdentityConfig(), SirenConfig(n_neurons=16, n_hidden_layers=1))
    assert sdf_field_config_from_dict(json.loads(json.dumps(sdf_field_config_to_dict(cfg)))) == cfg
    field = build_sdf_field(cfg)
    assert isinstance(field, SDFField) and field.n_lods == 1
    values = distance_fn(field)(torch.zeros(5, 3))
    assert values.shape == (5,) and values.dtype == torch.float32
    with pytest.raises(NfieldError, match="otype"):
        sdf_field_config_from_dict({"otype": "Octree"})
