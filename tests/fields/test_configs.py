"""Field configs: the FIELDS registry, old config.json keys under their current names, and the one
override function that sets the keys a user gave on nested configs and refuses the others."""

import pytest
import torch

from nfield.components import apply_overrides, config_from_dict, config_keys
from nfield.encodings import HashGridConfig, IdentityConfig
from nfield.encodings.octree import OctreeFeaturesConfig
from nfield.errors import NfieldError
from nfield.fields import FIELDS, FieldConfig
from nfield.fields.kilonerf import KiloNeRFConfig, KiloNeRFField
from nfield.fields.radiance import (
    RADIANCE_FIELDS,
    GenericRadianceConfig,
    NGPFieldConfig,
    RadianceField,
    VanillaNeRFConfig,
    build_radiance_field,
)
from nfield.fields.sdf import (
    SDF_FIELDS,
    NGLODConfig,
    NGLODField,
    SDFField,
    build_sdf_field,
    needs_octree,
    sdf_field_config_from_dict,
    sdf_field_config_to_dict,
)
from nfield.networks import MLPConfig, SirenConfig

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
SMALL_GRID = HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)


def test_fields_registry_maps_every_otype_to_its_config_and_module():
    assert set(FIELDS.names) == set(RADIANCE_FIELDS) | set(SDF_FIELDS)
    expected = {
        "VanillaNeRF": (VanillaNeRFConfig, RadianceField),
        "NGP": (NGPFieldConfig, RadianceField),
        "Generic": (GenericRadianceConfig, RadianceField),
        "KiloNeRF": (KiloNeRFConfig, KiloNeRFField),
        "Field": (FieldConfig, SDFField),
        "NGLOD": (NGLODConfig, NGLODField),
    }
    for otype, (config_cls, module_cls) in expected.items():
        assert FIELDS.config_class(otype) is config_cls and FIELDS.otype(config_cls()) == otype
        assert FIELDS.module_class(config_cls()) is module_cls
    assert isinstance(FIELDS.build(NGPFieldConfig(grid=SMALL_GRID), AABB), RadianceField)  # the config first
    assert isinstance(build_radiance_field(KiloNeRFConfig(longest_axis_cells=2, n_neurons=4), AABB), KiloNeRFField)
    with pytest.raises(NfieldError, match="unknown field type 'Octree'; known: Field, Generic"):
        FIELDS.from_dict({"otype": "Octree"})
    with pytest.raises(NfieldError, match="not a radiance field config"):
        build_radiance_field(NGLODConfig(), AABB)
    with pytest.raises(NfieldError, match="not an SDF field config"):
        build_sdf_field(NGPFieldConfig())


def test_the_sdf_task_asks_the_field_whether_it_needs_an_octree():
    assert needs_octree(NGLODConfig()) and not needs_octree(FieldConfig())
    old = {"otype": "NGLOD", "octree": {"n_lods": 2, "feature_dim": 4}, "hidden_dim": 16, "n_hidden_layers": 1}
    cfg = sdf_field_config_from_dict(old)  # "hidden_dim": its name before 0.3
    assert cfg == NGLODConfig(OctreeFeaturesConfig(n_lods=2, feature_dim=4), n_neurons=16, n_hidden_layers=1)
    assert sdf_field_config_from_dict(sdf_field_config_to_dict(cfg)) == cfg
    assert "hidden_dim" not in sdf_field_config_to_dict(cfg)


def test_an_old_key_and_its_new_name_together_are_refused():
    with pytest.raises(NfieldError, match="'hidden' is the older name of 'n_neurons'"):
        config_from_dict(KiloNeRFConfig, {"hidden": 8, "n_neurons": 16}, what="KiloNeRF")


def test_overrides_reach_nested_configs():
    ngp = apply_overrides(NGPFieldConfig(), {"n_levels": 4, "log2_hashmap_size": 12, "sh_degree": 2}, "ngp")
    assert (ngp.grid.n_levels, ngp.grid.log2_hashmap_size, ngp.sh_degree) == (4, 12, 2)
    nglod = apply_overrides(NGLODConfig(), {"n_lods": 3, "base_lod": 1, "n_neurons": 32}, "nglod")
    assert (nglod.octree.n_lods, nglod.octree.base_lod, nglod.n_neurons) == (3, 1, 32)
    field = apply_overrides(FieldConfig(HashGridConfig(), MLPConfig()), {"n_neurons": 16, "backend": "torch"}, "hash")
    assert field.network.n_neurons == 16 and field.encoding.backend == field.network.backend == "torch"  # every part with it
    kilo = apply_overrides(KiloNeRFConfig(), {"n_neurons": 8}, "kilonerf")
    assert kilo.n_neurons == 8
    placed = apply_overrides(NGPFieldConfig(), {"width": 16}, "ngp", paths={"width": "density.n_neurons"})
    assert placed.density.n_neurons == 16 and placed.color.n_neurons == 64  # a path sends a key to one place
    with pytest.raises(NfieldError, match="NGPFieldConfig.color.output_activation must be 'sigmoid'"):
        apply_overrides(NGPFieldConfig(), {"output_activation": "none"}, "ngp")  # each replaced config checked again
    assert "n_lods" in config_keys(NGLODConfig()) and "octree" not in config_keys(NGLODConfig())


def test_an_override_the_model_lacks_names_the_flag_and_the_model():
    others = {
        "ngp": NGPFieldConfig(),
        "kilonerf": KiloNeRFConfig(),
        "siren": GenericRadianceConfig(IdentityConfig(), SirenConfig()),
    }
    with pytest.raises(NfieldError) as refused:
        apply_overrides(NGPFieldConfig(), {"longest_axis_cells": 8}, "ngp", others=others)
    assert str(refused.value) == "--longest-axis-cells does not apply to model 'ngp'; it applies to the kilonerf model only"
    with pytest.raises(NfieldError) as refused:
        apply_overrides(KiloNeRFConfig(), {"w0": 3.0, "n_levels": 4}, "kilonerf", others=others)
    assert str(refused.value) == "--w0 does not apply to model 'kilonerf'; it applies to the siren model only"
    with pytest.raises(NfieldError) as refused:  # no model has it: the model's own options
        apply_overrides(KiloNeRFConfig(), {"n_kernels": 4}, "kilonerf", others=others)
    assert str(refused.value) == (
        "--n-kernels does not apply to model 'kilonerf'; its options: --direction-frequencies, --feature-dim, "
        "--longest-axis-cells, --n-neurons, --position-frequencies"
    )


def test_sdf_and_nerf_presets_take_their_overrides_through_it():
    from nfield.presets.nerf import resolve_nerf_preset
    from nfield.presets.sdf import resolve_sdf_preset

    assert resolve_sdf_preset("nglod", {"lods": 3}).field == resolve_sdf_preset("nglod", {"n_lods": 3}).field  # 0.2.0's key
    assert resolve_sdf_preset("nglod", {"n_lods": 3, "feature_dim": 8}).field.octree.feature_dim == 8
    with pytest.raises(NfieldError, match="--n-lods does not apply to model 'siren'; it applies to the nglod model only"):
        resolve_sdf_preset("siren", {"n_lods": 3})
    preset = resolve_nerf_preset("ngp", {"n_levels": 4, "occupancy_resolution": 32, "occupancy_warmup": 5, "n_samples": 8})
    occupancy = preset.task.occupancy
    assert (preset.field.grid.n_levels, occupancy.resolution, occupancy.warmup_steps, preset.task.n_samples) == (4, 32, 5, 8)
    assert resolve_nerf_preset("kilonerf", {"longest_axis_cells": 4}).field.longest_axis_cells == 4
    with pytest.raises(NfieldError, match="--n-levels does not apply to model 'kilonerf'; it applies to the ngp model only"):
        resolve_nerf_preset("kilonerf", {"n_levels": 4})
