"""Ray samplers against closed forms: box intersections, bins, inverse CDFs, an analytic sphere in an occupancy grid."""

import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.render import occupancy
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.rays import RaySamples, ray_aabb
from nfield.render.samplers import importance_samples, stratified_samples
from nfield.render.volume import composite

CUBE = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RADIUS, SPHERE_DENSITY = 0.3, 10.0


def sphere_density(points):
    return SPHERE_DENSITY * (points.norm(dim=-1) < RADIUS).to(points)


def check_packed(samples, n_rays):
    """Grouped by ray, increasing and non-overlapping in t within a ray, non-empty intervals."""
    assert samples.ray_indices.dtype == torch.int64
    assert bool((samples.ray_indices[1:] >= samples.ray_indices[:-1]).all())
    assert bool((samples.ray_indices < n_rays).all())
    assert bool((samples.t_ends > samples.t_starts).all())
    same_ray = samples.ray_indices[1:] == samples.ray_indices[:-1]
    assert bool((samples.t_starts[1:][same_ray] >= samples.t_ends[:-1][same_ray]).all())


def test_ray_aabb_hand_cases():
    origins = torch.tensor(
        [[0.0, 0.0, 3.0], [0.0, 5.0, 3.0], [0.5, 0.0, 0.0], [0.0, 0.0, 3.0], [2.0, 0.0, 0.0], [-3.0, 0.5, 0.0]]
    )
    directions = torch.tensor(
        [[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]
    )
    t_near, t_far, hit = ray_aabb(origins, directions, CUBE)
    # through the box; beside it; from inside (t_near = 0); pointing away; parallel outside a slab; unnormalised direction
    assert hit.tolist() == [True, False, True, False, False, True]
    torch.testing.assert_close(t_near[hit], torch.tensor([2.0, 0.0, 1.0]))
    torch.testing.assert_close(t_far[hit], torch.tensor([4.0, 0.5, 2.0]))
    assert bool((t_far[~hit] < t_near[~hit]).all())
    with pytest.raises(NfieldError, match="aabb"):
        ray_aabb(origins, directions, torch.zeros(3))


def test_stratified_samples_are_the_bins_without_perturbation():
    samples = stratified_samples(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([3.0, 1.0, 2.0]), 4, perturb=False)
    assert samples.ray_indices.tolist() == [0] * 4 + [1] * 4  # ray 2 has far <= near: no samples
    torch.testing.assert_close(samples.t_starts, torch.tensor([1.0, 1.5, 2.0, 2.5, 0.0, 0.25, 0.5, 0.75]))
    torch.testing.assert_close(samples.t_ends, torch.tensor([1.5, 2.0, 2.5, 3.0, 0.25, 0.5, 0.75, 1.0]))


def test_perturbed_stratified_samples_tile_near_far_with_midpoints_in_their_bins():
    n_rays, n = 2000, 8
    generator = torch.Generator().manual_seed(0)
    near = torch.rand(n_rays, generator=generator)
    far = near + 0.5 + torch.rand(n_rays, generator=generator)
    samples = stratified_samples(near, far, n, perturb=True, generator=generator)
    check_packed(samples, n_rays)
    starts, ends = samples.t_starts.reshape(n_rays, n), samples.t_ends.reshape(n_rays, n)
    torch.testing.assert_close(starts[:, 0], near)
    torch.testing.assert_close(ends[:, -1], far)
    torch.testing.assert_close(starts[:, 1:], ends[:, :-1])  # contiguous
    # where each midpoint lies in its bin, in units of the bin: inside [0, 1], and over many rays all of it
    bin_size = ((far - near) / n)[:, None]
    place = (samples.midpoints().reshape(n_rays, n) - near[:, None]) / bin_size - torch.arange(n)
    assert float(place.min()) >= -1e-4 and float(place.max()) <= 1 + 1e-4
    assert float(place.min()) < 0.05 and float(place.max()) > 0.95
    again = stratified_samples(near, far, n, perturb=True, generator=torch.Generator().manual_seed(0).manual_seed(0))
    assert not torch.equal(again.t_starts, samples.t_starts)  # a different draw for a different generator state


def inverse_cdf(edges, weights, levels):
    """Reference inverse CDF in float64 of the piecewise-constant density of (weights + 1e-5) over contiguous bins."""
    mass = [w + 1e-5 for w in weights]
    total, result = sum(mass), []
    for level in levels:
        target, acc = level * total, 0.0
        for i, m in enumerate(mass):
            if acc + m >= target:
                result.append(edges[i] + (target - acc) / m * (edges[i + 1] - edges[i]))
                break
            acc += m
    return result


def test_importance_samples_invert_the_cdf_of_the_coarse_weights():
    coarse = stratified_samples(
        torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([4.0, 3.0], dtype=torch.float64), 4, perturb=False
    )
    weights = torch.tensor([0.1, 0.6, 0.0, 0.3, 0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    n = 5
    fine = importance_samples(coarse, weights, 2, n, perturb=False)
    check_packed(fine, 2)
    levels = [(i + 0.5) / n for i in range(n)]
    for ray, (edges, ray_weights) in enumerate(
        [([0.0, 1.0, 2.0, 3.0, 4.0], weights[:4]), ([1.0, 1.5, 2.0, 2.5, 3.0], weights[4:])]
    ):
        new = inverse_cdf(edges, ray_weights.tolist(), levels)
        expected = sorted(set(edges) | set(new))
        mine = fine.ray_indices == ray
        torch.testing.assert_close(fine.t_starts[mine], torch.tensor(expected[:-1], dtype=torch.float64), atol=1e-10, rtol=0)
        torch.testing.assert_close(fine.t_ends[mine], torch.tensor(expected[1:], dtype=torch.float64), atol=1e-10, rtol=0)


def test_importance_samples_concentrate_where_the_weight_is():
    n_rays, n_coarse, n_fine = 64, 16, 32
    generator = torch.Generator().manual_seed(1)
    near, far = torch.full((n_rays,), 2.0), torch.full((n_rays,), 6.0)
    far[5] = near[5]  # a ray without samples
    coarse = stratified_samples(near, far, n_coarse, perturb=True, generator=generator)
    weights = torch.full((len(coarse),), 0.01, requires_grad=True)
    heavy = torch.arange(len(coarse)) % n_coarse == 7
    with torch.no_grad():
        weights[heavy] = 1.0  # a delta-like weight at bin 7 of every ray
    fine = importance_samples(coarse, weights, n_rays, n_fine, perturb=True, generator=generator)
    assert not fine.t_starts.requires_grad and not fine.t_ends.requires_grad
    check_packed(fine, n_rays)
    counts = torch.bincount(fine.ray_indices, minlength=n_rays)
    assert counts[5] == 0 and bool((counts[torch.arange(n_rays) != 5] == n_coarse + n_fine).all())
    # the union: contiguous intervals over [near, far], whose boundaries include every coarse one
    same_ray = fine.ray_indices[1:] == fine.ray_indices[:-1]
    torch.testing.assert_close(fine.t_starts[1:][same_ray], fine.t_ends[:-1][same_ray])
    assert set(coarse.t_starts.tolist()) <= set(fine.t_starts.tolist())
    new_points = fine.t_starts[~torch.isin(fine.t_starts, torch.cat([coarse.t_starts, coarse.t_ends]))]
    assert len(new_points) == (n_rays - 1) * n_fine
    in_heavy_bin = torch.zeros_like(new_points, dtype=torch.bool)
    for start, end in zip(coarse.t_starts[heavy].tolist(), coarse.t_ends[heavy].tolist()):
        in_heavy_bin |= (new_points > start) & (new_points < end)
    assert float(in_heavy_bin.float().mean()) > 0.8  # expected 1 / (1 + 15 * 0.01) = 0.87


def test_importance_samples_leave_gaps_between_coarse_intervals():
    coarse = RaySamples(torch.tensor([0, 0]), torch.tensor([0.0, 2.0]), torch.tensor([1.0, 3.0]))
    fine = importance_samples(coarse, torch.tensor([0.5, 0.5]), 1, 8, perturb=True, generator=torch.Generator().manual_seed(0))
    check_packed(fine, 1)
    assert not bool(((fine.midpoints() > 1.0) & (fine.midpoints() < 2.0)).any())
    assert float((fine.t_ends - fine.t_starts).sum()) == pytest.approx(2.0)


def cells_against_sphere(resolution, lo=-1.0, hi=1.0):
    """(R^3,) bool masks of cells inside the sphere (every corner) and cells meeting it, x * R^2 + y * R + z order."""
    size = (hi - lo) / resolution
    corner = lo + size * torch.stack(
        torch.meshgrid(*[torch.arange(resolution, dtype=torch.float64)] * 3, indexing="ij"), dim=-1
    ).reshape(-1, 3)
    nearest = torch.clamp(torch.zeros(3, dtype=torch.float64), corner, corner + size)
    farthest = torch.maximum(corner.abs(), (corner + size).abs())
    return farthest.norm(dim=-1) < RADIUS, nearest.norm(dim=-1) <= RADIUS


def warm_grid(resolution=32, n_levels=1, density_fn=sphere_density):
    torch.manual_seed(0)
    grid = OccupancyGrid(OccupancyGridConfig(resolution=resolution, n_levels=n_levels), CUBE, density_fn)
    for step in range(0, 256, 16):
        grid.update(step, 10_000)
    return grid


def test_occupancy_grid_finds_the_cells_of_a_sphere():
    grid = warm_grid()
    inside, meets = cells_against_sphere(32)
    occupied = grid.occupied[0]
    assert bool(occupied[inside].all())  # every cell inside the sphere
    assert not bool(occupied[~meets].any())  # no cell away from it
    assert int(occupied.sum()) > 0.8 * int(meets.sum())  # and most of the boundary cells
    assert grid.density.dtype == torch.float32 and float(grid.density.max()) == SPHERE_DENSITY
    points = torch.tensor([[0.0, 0.0, 0.0], [0.9, 0.9, 0.9], [0.0, 0.0, 1.5]])
    assert grid.occupied_at(points).tolist() == [True, False, False]  # the last one is outside the grid


def test_cascades_cover_the_scaled_boxes():
    centre = torch.tensor([1.5, 0.0, 0.0])
    grid = warm_grid(resolution=16, n_levels=2, density_fn=lambda p: sphere_density(p - centre))
    assert grid.density.shape == (2, 16**3) and grid.occupied.shape == (2, 16**3)
    assert not bool(grid.occupied[0].any()) and bool(grid.occupied[1].any())
    points = torch.tensor([[1.5, 0.0, 0.0], [0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [1.5, 0.5, 0.0]])
    assert grid.occupied_at(points).tolist() == [True, False, False, False]


def test_update_acts_every_update_every_steps_only():
    calls = []

    def density(points):
        calls.append(len(points))
        return sphere_density(points)

    grid = OccupancyGrid(OccupancyGridConfig(resolution=16, update_every=4, warmup_steps=8), CUBE)
    grid.density_fn = density
    grid.update(0, 100)
    assert calls == [16**3]
    before = grid.density.clone(), grid.occupied.clone()
    for step in (1, 2, 3, 5, 9):
        grid.update(step, 100)
    assert calls == [16**3]
    assert torch.equal(grid.density, before[0]) and torch.equal(grid.occupied, before[1])
    grid.update(12, 100)  # after warm-up: a quarter of the cells, plus the occupied ones
    assert calls[1:] == [16**3 // 4 + int(before[1].sum())]


def test_update_needs_a_density_fn():
    grid = OccupancyGrid(OccupancyGridConfig(resolution=4), CUBE)
    grid.update(1, 100)  # not an update step: nothing to do
    with pytest.raises(NfieldError, match="density_fn"):
        grid.update(0, 100)


def test_state_dict_round_trip_keeps_the_grid():
    grid = warm_grid(resolution=8)
    grid.density_fn = torch.nn.Linear(3, 1)  # a module as density_fn stays out of the state dict
    state = grid.state_dict()
    assert set(state) == {"aabb", "density", "occupied"}
    restored = OccupancyGrid(OccupancyGridConfig(resolution=8), CUBE)
    restored.load_state_dict(state)
    assert torch.equal(restored.density, grid.density) and torch.equal(restored.occupied, grid.occupied)
    assert list(grid.parameters()) == []


def rays_through_the_sphere(n=48, seed=0):
    """Rays from outside the cube towards random points inside the sphere (up to 0.9 of its radius from the centre)."""
    generator = torch.Generator().manual_seed(seed)
    origins, aims = torch.randn(2, n, 3, generator=generator)
    origins = 2.5 * origins / origins.norm(dim=-1, keepdim=True)
    aims = 0.9 * RADIUS * torch.rand(n, 1, generator=generator) * aims / aims.norm(dim=-1, keepdim=True)
    directions = aims - origins
    return origins, directions / directions.norm(dim=-1, keepdim=True)


def test_march_keeps_only_samples_in_occupied_cells_and_renders_like_dense_samples():
    grid = warm_grid()
    origins, directions = rays_through_the_sphere()
    near, far, _ = ray_aabb(origins, directions, CUBE)
    step = 2 * math.sqrt(3) / 1024
    marched = grid.march(origins, directions, near, far, step)
    check_packed(marched, len(origins))
    assert bool(grid.occupied_at(marched.positions(origins, directions)).all())
    assert len(marched) < 0.5 * float(((far - near) / step).sum())  # most of the way was skipped
    dense = stratified_samples(near, far, 4096, perturb=False)
    opacities = []
    for samples in (marched, dense):
        sigmas = sphere_density(samples.positions(origins, directions))
        opacities.append(composite(torch.zeros(len(samples), 3), sigmas, samples, len(origins))["opacity"])
    assert float(opacities[1].min()) > 0.05  # every ray does cross the sphere
    torch.testing.assert_close(opacities[0], opacities[1], atol=1e-2, rtol=0)


def test_march_visits_the_same_steps_as_marching_all_of_near_far():
    grid = warm_grid(resolution=16)
    origins, directions = rays_through_the_sphere(n=12, seed=3)
    near, far = torch.full((12,), 0.5), torch.full((12,), 4.0)
    step = 0.01
    marched = grid.march(origins, directions, near, far, step)
    for ray in range(12):
        t = torch.minimum(near[ray] + torch.arange(351) * step, far[ray])  # every step of [0.5, 4]
        points = origins[ray] + 0.5 * (t[:-1] + t[1:])[:, None] * directions[ray]
        keep = grid.occupied_at(points)
        mine = marched.ray_indices == ray
        assert int(keep.sum()) > 0
        torch.testing.assert_close(marched.t_starts[mine], t[:-1][keep], atol=1e-6, rtol=0)
        torch.testing.assert_close(marched.t_ends[mine], t[1:][keep], atol=1e-6, rtol=0)


def test_march_stops_behind_an_opaque_surface():
    grid = warm_grid()
    origins, directions = rays_through_the_sphere(seed=1)
    near, far, _ = ray_aabb(origins, directions, CUBE)
    step = 2 * math.sqrt(3) / 1024
    opaque = lambda points: 1e3 * (points.norm(dim=-1) < RADIUS).to(points)  # noqa: E731
    full = grid.march(origins, directions, near, far, step)
    stopped = grid.march(origins, directions, near, far, step, sigma_fn=opaque)
    assert len(stopped) < 0.5 * len(full)
    # the first point of each ray inside the sphere, along the ray
    b = (origins * directions).sum(-1)
    entry = -b - torch.sqrt(b**2 - (origins.norm(dim=-1) ** 2 - RADIUS**2))
    assert bool((stopped.t_starts <= entry[stopped.ray_indices] + 0.05).all())
    out = composite(torch.zeros(len(stopped), 3), opaque(stopped.positions(origins, directions)), stopped, len(origins))
    assert float(out["opacity"].min()) > 1 - 1e-3
    faint = grid.march(
        origins, directions, near, far, step, sigma_fn=lambda p: torch.full_like(p[:, 0], 0.1), alpha_threshold=0.01
    )
    assert len(faint) == 0  # alpha = 1 - exp(-0.1 * step) < 0.01 everywhere


def test_march_in_chunks_gives_the_same_samples(monkeypatch):
    grid = warm_grid(resolution=16)
    origins, directions = rays_through_the_sphere(n=20, seed=2)
    near, far, _ = ray_aabb(origins, directions, CUBE)
    far[3] = near[3]  # a ray with nothing to march
    whole = grid.march(origins, directions, near, far, 0.01, sigma_fn=sphere_density)
    monkeypatch.setattr(occupancy, "_CHUNK", 1000)
    chunked = grid.march(origins, directions, near, far, 0.01, sigma_fn=sphere_density)
    assert 3 not in whole.ray_indices.tolist()
    for name in ("ray_indices", "t_starts", "t_ends"):
        assert torch.equal(getattr(whole, name), getattr(chunked, name))


def test_march_hand_case_and_misses():
    grid = OccupancyGrid(OccupancyGridConfig(resolution=4), torch.tensor([[0.0] * 3, [1.0] * 3]))
    grid.occupied[0, 0] = True  # the cell [0, 1/4]^3
    origins = torch.tensor([[0.1, 0.1, -1.0], [5.0, 5.0, 5.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    samples = grid.march(origins, directions, torch.zeros(2), torch.full((2,), 3.0), 0.1)
    torch.testing.assert_close(samples.t_starts, torch.tensor([1.0, 1.1]))
    torch.testing.assert_close(samples.t_ends, torch.tensor([1.1, 1.2]))
    assert samples.ray_indices.tolist() == [0, 0]
    none = grid.march(origins[1:], directions[1:], torch.zeros(1), torch.full((1,), 3.0), 0.1)
    assert len(none) == 0 and none.ray_indices.dtype == torch.int64
    with pytest.raises(NfieldError, match="step_size"):
        grid.march(origins, directions, torch.zeros(2), torch.ones(2), 0.0)
