"""Radiance fields: shapes and ranges, the box, view dependence, configs as JSON, trunc_exp, a tiny fit."""

import json

import pytest
import torch

from nfield.encodings import FrequencyConfig, GaussianFourierConfig, HashGridConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import FIELDS
from nfield.fields.kilonerf import KiloNeRFConfig
from nfield.fields.radiance import (
    TRUNC_EXP_MAX,
    GenericRadianceConfig,
    NGPFieldConfig,
    RadianceField,
    VanillaNeRFConfig,
    build_radiance_field,
    radiance_config_from_dict,
    radiance_config_to_dict,
    trunc_exp,
)
from nfield.networks import MLPConfig, SirenConfig

AABB = torch.tensor([[-1.0, -2.0, 0.0], [3.0, 2.0, 1.0]])  # not a cube, not centred
SMALL_GRID = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=12, base_resolution=4, per_level_scale=2.0)
CONFIGS = {
    "vanilla": VanillaNeRFConfig(position_frequencies=4, direction_frequencies=2, trunk=MLPConfig(32, 4), skip_layer=2),
    "ngp": NGPFieldConfig(
        grid=SMALL_GRID, density=MLPConfig(16, 1), color=MLPConfig(16, 2, output_activation="sigmoid"), sh_degree=3
    ),
    "generic": GenericRadianceConfig(
        encoding=GaussianFourierConfig(n_features=16, sigma=2.0),
        network=SirenConfig(n_neurons=32, n_hidden_layers=2),
        direction_encoding=FrequencyConfig(n_frequencies=2),
        geometry_features=7,
        color=MLPConfig(16, 1, output_activation="sigmoid"),
    ),
}


def _field(kind: str) -> RadianceField:
    torch.manual_seed(0)
    return build_radiance_field(CONFIGS[kind], AABB)


def _inside(n: int, seed: int = 0) -> torch.Tensor:
    u = torch.rand(n, 3, generator=torch.Generator().manual_seed(seed))
    return AABB[0] + u * (AABB[1] - AABB[0])


def _directions(n: int, seed: int = 1) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_shapes_ranges_and_density_zero_outside_the_box(kind):
    field = _field(kind)
    outside = torch.stack([AABB[0] - torch.tensor([0.0, 0.0, 0.01]), AABB[1] + torch.tensor([0.5, 0.0, 0.0])])
    x = torch.cat([_inside(64), outside])
    x[-3] = AABB[1]  # a corner of the box is inside
    rgb, sigma = field(x, _directions(len(x)))
    assert rgb.shape == (66, 3) and sigma.shape == (66,)
    assert rgb.dtype == sigma.dtype == torch.float32
    assert bool(((rgb >= 0) & (rgb <= 1)).all()) and bool((sigma >= 0).all())
    assert sigma[-2:].tolist() == [0.0, 0.0]
    if kind != "vanilla":  # exp > 0 everywhere inside (ReLU may be exactly 0)
        assert bool((sigma[:-2] > 0).all())
    torch.testing.assert_close(field.density(x), sigma)


def test_box_maps_to_the_unit_cube():
    field = _field("ngp")
    corners = torch.stack([AABB[0], AABB[1], AABB.mean(0)])
    expected = torch.tensor([[-1.0] * 3, [1.0] * 3, [0.0] * 3])
    torch.testing.assert_close(field.normalize(corners), expected)
    assert field.aabb.tolist() == AABB.tolist() and "aabb" in field.state_dict()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_colour_depends_on_direction_and_density_does_not(kind):
    field = _field(kind)
    x = _inside(32, seed=3)
    rgb_a, sigma_a = field(x, _directions(32, seed=4))
    rgb_b, sigma_b = field(x, _directions(32, seed=5))
    assert torch.equal(sigma_a, sigma_b)
    assert (rgb_a - rgb_b).abs().max() > 1e-4
    x.requires_grad_(True)
    d = _directions(32, seed=6).requires_grad_(True)
    _, sigma = field(x, d)
    grad_x, grad_d = torch.autograd.grad(sigma.sum(), (x, d), allow_unused=True)
    assert grad_d is None or bool((grad_d == 0).all())
    assert grad_x.abs().sum() > 0


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_gradients_reach_every_parameter(kind):
    field = _field(kind)
    rgb, sigma = field(_inside(256, seed=7), _directions(256))
    (rgb.sum() + sigma.sum()).backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_vanilla_is_the_nerf_paper_network():
    field = build_radiance_field(VanillaNeRFConfig(), AABB)
    trunk = field.geometry
    assert trunk.encoding.out_dim == 63 and field.direction_encoding.out_dim == 27
    linears = [m for m in trunk.before_skip.modules() if isinstance(m, torch.nn.Linear)]
    linears += [m for m in trunk.after_skip.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(63, 256)] + [(256, 256)] * 4 + [(319, 256)] + [(256, 256)] * 2
    # The reference network: 8 trunk layers (one of them on 256 + 63 inputs), sigma and a 256 feature from
    # the trunk, a 128-unit view layer on [feature, encoded d] and the rgb layer.
    trunk_params = (63 * 256 + 256) + 6 * (256 * 256 + 256) + (319 * 256 + 256)
    heads = (256 + 1) + (256 * 256 + 256) + (283 * 128 + 128) + (128 * 3 + 3)
    assert sum(p.numel() for p in field.parameters()) == trunk_params + heads == 595844
    assert field.density_activation is torch.relu


def test_ngp_defaults_follow_instant_ngp():
    cfg = NGPFieldConfig()
    grid = cfg.grid
    assert (grid.n_levels, grid.n_features_per_level, grid.log2_hashmap_size, grid.base_resolution) == (16, 2, 19, 16)
    assert abs(grid.base_resolution * grid.per_level_scale ** (grid.n_levels - 1) - 4096) < 1e-6
    field = build_radiance_field(NGPFieldConfig(grid=SMALL_GRID), AABB)
    assert field.direction_encoding.out_dim == 16 and field.geometry.network.out_dim == 16
    assert field.color.in_dim == 16 + 15
    assert field.density_activation is trunc_exp


@pytest.mark.parametrize("kind", list(CONFIGS) + ["ngp_defaults"])
def test_config_json_round_trip_rebuilds_the_same_field(kind):
    cfg = NGPFieldConfig() if kind == "ngp_defaults" else CONFIGS[kind]
    data = json.loads(json.dumps(radiance_config_to_dict(cfg)))
    assert data["otype"] == {"vanilla": "VanillaNeRF", "ngp": "NGP", "ngp_defaults": "NGP", "generic": "Generic"}[kind]
    assert radiance_config_from_dict(data) == cfg
    if kind == "ngp_defaults":
        assert data["grid"]["otype"] == "HashGrid"
        return
    if kind == "generic":
        assert data["network"] == {"otype": "Siren", "n_neurons": 32, "n_hidden_layers": 2, "w0": 30.0, "w0_initial": 30.0}
        assert data["direction_encoding"]["otype"] == "Frequency"
    field = _field(kind)
    copy = build_radiance_field(radiance_config_from_dict(data), torch.zeros(2, 3) + torch.tensor([[0.0], [1.0]]))
    copy.load_state_dict(field.state_dict())
    x, d = _inside(16), _directions(16)
    for a, b in zip(field(x, d), copy(x, d)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_configs_of_runs_before_0_3_load_under_tiny_cuda_nn_names():
    """0.2.0 wrote the MLP sizes flat (``density_width``, ``width``, ``depth``, ``direction_width``,
    ``hidden``); they load into the nested `MLPConfig`s, keeping every other key at the field's default,
    and the field built from them holds the same parameters under the same names."""
    old = {
        "otype": "NGP",
        "grid": radiance_config_to_dict(NGPFieldConfig(grid=SMALL_GRID))["grid"],
        "density_width": 16,
        "density_layers": 2,
        "geometry_features": 15,
        "sh_degree": 3,
        "color_width": 8,
        "color_layers": 1,
    }
    cfg = radiance_config_from_dict(old)
    assert cfg == NGPFieldConfig(
        grid=SMALL_GRID, density=MLPConfig(16, 2), color=MLPConfig(8, 1, output_activation="sigmoid"), sh_degree=3
    )
    vanilla = {"otype": "VanillaNeRF", "position_frequencies": 4, "direction_frequencies": 2, "width": 16, "depth": 3}
    vanilla = radiance_config_from_dict({**vanilla, "skip_layer": 1, "direction_width": 8})
    assert (vanilla.trunk, vanilla.color) == (MLPConfig(16, 3), MLPConfig(8, 1, output_activation="sigmoid"))
    generic = radiance_config_from_dict({"otype": "Generic", "color_width": 8, "color_layers": 3})
    assert generic.color == MLPConfig(8, 3, output_activation="sigmoid")
    kilonerf = radiance_config_from_dict({"otype": "KiloNeRF", "longest_axis_cells": 2, "hidden": 8})
    assert kilonerf == KiloNeRFConfig(longest_axis_cells=2, n_neurons=8)

    def linears(*modules):
        return {f"{m}.layers.{i}.{p}" for m, n in modules for i in range(0, 2 * n, 2) for p in ("weight", "bias")}

    expected = {
        "NGP": {"aabb"} | linears(("geometry.network", 3), ("color", 2)),
        "VanillaNeRF": {"aabb", "geometry.head.weight", "geometry.head.bias"}
        | linears(("geometry.before_skip", 1), ("geometry.after_skip", 2), ("color", 2)),
    }
    for config in (cfg, vanilla):
        state = build_radiance_field(config, AABB).state_dict()
        assert {k for k in state if not k.startswith("geometry.encoding.")} == expected[FIELDS.otype(config)]
    # what the current configs write reads back, and carries tiny-cuda-nn's keys
    data = radiance_config_to_dict(cfg)
    assert data["density"]["otype"] == "MLP" and data["density"]["n_neurons"] == 16 and "density_width" not in data


def test_config_errors_are_one_line_nfield_errors():
    good = radiance_config_to_dict(CONFIGS["generic"])
    cases = [
        ({"otype": "Mystery"}, "needs 'otype': one of VanillaNeRF, NGP, Generic"),
        ({"width": 3}, "needs 'otype'"),
        ({**radiance_config_to_dict(CONFIGS["vanilla"]), "n_levels": 4}, "unknown key.*'n_levels'.*VanillaNeRF"),
        ({**good, "encoding": {"otype": "Nope"}}, "unknown encoding type 'Nope'"),
        ({**good, "network": {"otype": "MLP", "n_neurons": 8, "depth": 2}}, "unknown key.*'depth' for MLP"),
        ({"otype": "NGP", "grid": {"otype": "DenseGrid"}}, "grid must be a HashGrid config"),
        ({"otype": "NGP", "sh_degree": 9}, "sh_degree must be an integer in"),
        (
            {"otype": "VanillaNeRF", "trunk": {"n_hidden_layers": 4}, "skip_layer": 4},
            "skip_layer must be below trunk.n_hidden_layers=4",
        ),
        ({"otype": "VanillaNeRF", "depth": 4, "skip_layer": 4}, "skip_layer must be below trunk.n_hidden_layers=4"),
        ({"otype": "NGP", "color": {"otype": "MLP", "n_neurons": 8}}, r"color.output_activation must be 'sigmoid'"),
        ({"otype": "NGP", "density": {"otype": "Siren"}}, "density must be an MLP config"),
        (
            {"otype": "NGP", "density_width": 8, "density": {"n_neurons": 16}},
            "'density_width' is the older name of 'density.n_neurons'",
        ),
    ]
    for data, message in cases:
        with pytest.raises(NfieldError, match=message):
            radiance_config_from_dict(data)
    with pytest.raises(NfieldError, match="not a registered network config"):
        GenericRadianceConfig(network=IdentityConfig())
    with pytest.raises(NfieldError, match="not a radiance field config"):
        radiance_config_to_dict(MLPConfig())
    with pytest.raises(NfieldError, match="min < max"):
        build_radiance_field(CONFIGS["ngp"], torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]))


def test_trunc_exp_forward_is_exp_and_gradient_is_clamped():
    x = torch.tensor([-30.0, 0.0, 2.0, 14.0, 20.0, 80.0, 200.0], dtype=torch.float64, requires_grad=True)
    y = trunc_exp(x)
    torch.testing.assert_close(y, torch.exp(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert bool(torch.isfinite(grad).all())
    torch.testing.assert_close(grad, torch.exp(x.detach().clamp(max=TRUNC_EXP_MAX)))
    assert grad[4] == grad[6] == torch.exp(torch.tensor(TRUNC_EXP_MAX, dtype=torch.float64))
    x32 = torch.tensor([100.0], requires_grad=True)  # exp overflows float32, its truncated gradient does not
    (grad32,) = torch.autograd.grad(trunc_exp(x32).sum(), x32)
    assert torch.isinf(trunc_exp(x32.detach())).all() and torch.isfinite(grad32).all()


def test_ngp_learns_a_red_ball():
    # Inside a ball of radius 0.6 (world units): red and dense; elsewhere in the box: empty.
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]) * 1.5
    cfg = NGPFieldConfig(
        grid=SMALL_GRID, density=MLPConfig(16, 1), color=MLPConfig(16, 1, output_activation="sigmoid"), sh_degree=2
    )
    field = build_radiance_field(cfg, aabb)
    optimizer = torch.optim.Adam(field.parameters(), lr=1e-2)
    red, dense = torch.tensor([1.0, 0.0, 0.0]), torch.log1p(torch.tensor(50.0))
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):  # about 1 s on one CPU core
        x = (torch.rand(512, 3, generator=generator) * 2 - 1) * 1.5
        d = torch.nn.functional.normalize(torch.randn(512, 3, generator=generator), dim=-1)
        inside = x.norm(dim=-1) < 0.6
        rgb, sigma = field(x, d)
        # log1p(sigma) = softplus(log-density): a well-scaled target for both regions.
        loss = (torch.log1p(sigma) - torch.where(inside, dense, 0.0)).pow(2).mean()
        loss = loss + (rgb[inside] - red).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        core = _ball(1000, 0.0, 0.45)
        shell = _ball(1000, 0.8, 1.4)
        rgb, sigma_core = field(core, _directions(1000))
        sigma_shell = field.density(shell)
    # At initialisation sigma is about 1 everywhere and rgb about 0.5.
    assert sigma_core.median() > 20 and sigma_core.quantile(0.05) > 5, sigma_core.quantile(torch.tensor([0.05, 0.5]))
    assert sigma_shell.median() < 0.05 and sigma_shell.quantile(0.95) < 0.5, sigma_shell.quantile(torch.tensor([0.5, 0.95]))
    assert (rgb - red).abs().max() < 0.05


def _ball(n: int, r_min: float, r_max: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    return directions * (r_min + (r_max - r_min) * torch.rand(n, 1, generator=generator))
