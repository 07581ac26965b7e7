"""Rendering a radiance model against closed forms: a box of constant density and colour, by both samplers."""

import math

import pytest
import torch
from torch import nn

from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.radiance import RadianceRenderSettings, march_step, ray_bounds, render_image, render_nerf_rays
from nfield.render.rays import ray_aabb

CUBE = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
SIGMA, COLOUR = 0.7, torch.tensor([0.2, 0.5, 0.9])


class ConstantField(nn.Module):
    """Density SIGMA and colour COLOUR everywhere in its box; with `split`, also the density and
    colour networks apart (`density_and_features`, `color_of`), as fields that rendering culls."""

    def __init__(self, split: bool):
        super().__init__()
        self.register_buffer("aabb", CUBE.clone())
        if split:
            self.density_and_features = lambda x: (self.density(x), x.new_zeros(len(x), 2))
            self.color_of = lambda features, d: COLOUR.expand(len(features), 3)

    def density(self, x):
        return torch.full((len(x),), SIGMA)

    def forward(self, x, d):
        return COLOUR.expand(len(x), 3), self.density(x)


def settings(sampler: str) -> RadianceRenderSettings:
    return RadianceRenderSettings(
        sampler=sampler,
        n_samples=16,
        n_importance=32,
        steps_per_ray=256,
        early_stop_eps=1e-4,
        chunk=3,
        max_samples=100,
        backend="torch",
    )


def model(sampler: str, split: bool) -> nn.ModuleDict:
    modules = {"field": ConstantField(split)}
    if sampler == "hierarchical":
        modules["coarse"] = ConstantField(split)
    else:
        grid = OccupancyGrid(OccupancyGridConfig(resolution=4), CUBE)
        grid.occupied.fill_(True)
        modules["grid"] = grid
    return nn.ModuleDict(modules)


def test_ray_bounds_are_the_span_in_the_box_from_the_near_plane():
    generator = torch.Generator().manual_seed(0)
    origins, directions = 4 * torch.rand(200, 3, generator=generator) - 2, torch.randn(200, 3, generator=generator)
    for near in (0.0, 0.3, 1.5):
        t_near, t_far = ray_bounds(origins, directions, CUBE, near)
        entry, exit_t, hit = ray_aabb(origins, directions, CUBE)
        assert torch.equal(t_near, entry.clamp_min(near))
        assert torch.equal(t_far, torch.where(hit, torch.maximum(exit_t, t_near), t_near))
        assert bool((t_far >= t_near).all())


def test_march_step_is_the_diagonal_over_the_steps():
    assert march_step(CUBE, 256) == pytest.approx(2 * math.sqrt(3) / 256)


@pytest.mark.parametrize("sampler, split", [("occupancy", False), ("occupancy", True), ("hierarchical", False)])
def test_a_box_of_constant_density_renders_its_opacity_and_colour(sampler, split):
    # along z through the box (2 long), diagonally through it (2 sqrt 3 long), and beside it
    origins = torch.tensor([[0.0, 0.0, 3.0], [-2.0, -2.0, -2.0], [0.0, 5.0, 3.0], [0.5, 0.5, 3.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    directions = directions / directions.norm(dim=-1, keepdim=True)
    background = torch.tensor([1.0, 1.0, 1.0])
    out = render_image(model(sampler, split), settings(sampler), 0.1, origins, directions, background)
    lengths = torch.tensor([2.0, 2 * math.sqrt(3), 0.0, 2.0])
    opacity = 1 - torch.exp(-SIGMA * lengths)
    torch.testing.assert_close(out["opacity"], opacity)
    torch.testing.assert_close(out["rgb"], opacity[:, None] * COLOUR + (1 - opacity)[:, None] * background)
    assert out["depth"][2] == 0.0 and 2.0 < float(out["depth"][0]) < 3.0  # nearer than the middle: light is absorbed


def test_hierarchical_sampling_returns_the_fine_and_the_coarse_pass():
    origins, directions = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    fine, coarse = render_nerf_rays(
        model("hierarchical", False), settings("hierarchical"), 0.1, origins, directions, torch.zeros(3), True
    )
    expected = 1 - math.exp(-2 * SIGMA)
    assert float(fine["opacity"]) == pytest.approx(expected, rel=1e-5) and float(coarse["opacity"]) == pytest.approx(
        expected, rel=1e-5
    )
    assert len(fine["weights"]) > len(coarse["weights"]) == 16
