"""Volume rendering against a float64 per-ray loop, autograd's numerical gradients and closed forms."""

import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.rays import RaySamples
from nfield.render.samplers import stratified_samples
from nfield.render.volume import accumulate, composite, render_rays, render_weights


def random_packed(seed, n_rays=9, max_samples=7, dtype=torch.float64):
    """Packed samples with 0..max_samples per ray (rays 0 and 4 have none), gaps between some intervals."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, max_samples + 1, (n_rays,), generator=generator)
    counts[0] = counts[4] = 0
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    lengths = torch.rand(len(ray_indices), generator=generator, dtype=dtype) * 0.5
    gaps = (
        torch.rand(len(ray_indices), generator=generator, dtype=dtype)
        * 0.2
        * (torch.rand(len(ray_indices), generator=generator) < 0.5)
    )
    t_starts, t_ends, start = [], [], 0
    for count in counts.tolist():
        t = 1.0
        for i in range(start, start + count):
            t_starts.append(t + gaps[i])
            t_ends.append(t + gaps[i] + lengths[i])
            t = float(t_ends[-1])
        start += count
    samples = RaySamples(ray_indices, torch.tensor(t_starts, dtype=dtype), torch.tensor(t_ends, dtype=dtype))
    sigmas = torch.rand(len(ray_indices), generator=generator, dtype=dtype) * 6.0
    rgbs = torch.rand(len(ray_indices), 3, generator=generator, dtype=dtype)
    return samples, sigmas, rgbs


def reference(samples, sigmas, rgbs, n_rays, background):
    """The NeRF quadrature ray by ray in Python floats: weights, transmittances, alphas, rgb, opacity, depth."""
    weights, transmittances, alphas = [], [], []
    rgb, opacity, depth = [[0.0] * 3 for _ in range(n_rays)], [0.0] * n_rays, [0.0] * n_rays
    for ray in range(n_rays):
        transmittance = 1.0
        for i in torch.nonzero(samples.ray_indices == ray).squeeze(1).tolist():
            delta = float(samples.t_ends[i] - samples.t_starts[i])
            alpha = 1.0 - math.exp(-float(sigmas[i]) * delta)
            weight = transmittance * alpha
            weights.append(weight)
            transmittances.append(transmittance)
            alphas.append(alpha)
            opacity[ray] += weight
            depth[ray] += weight * 0.5 * float(samples.t_starts[i] + samples.t_ends[i])
            for c in range(3):
                rgb[ray][c] += weight * float(rgbs[i, c])
            transmittance *= 1.0 - alpha
        depth[ray] = depth[ray] / opacity[ray] if opacity[ray] > 0 else 0.0
        for c in range(3):
            rgb[ray][c] += (1.0 - opacity[ray]) * float(background[ray][c])
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    return tuple(map(as_tensor, (weights, transmittances, alphas, rgb, opacity, depth)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_render_weights_match_a_per_ray_loop(seed):
    samples, sigmas, rgbs = random_packed(seed)
    weights, transmittance, alphas = render_weights(samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, 9)
    expected = reference(samples, sigmas, rgbs, 9, torch.zeros(9, 3))
    for got, want in zip((weights, transmittance, alphas), expected[:3]):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("background", ["none", "shared", "per-ray"])
def test_composite_matches_a_per_ray_loop(background):
    samples, sigmas, rgbs = random_packed(3)
    n_rays = 9
    colours = {
        "none": (None, torch.zeros(n_rays, 3, dtype=torch.float64)),
        "shared": (
            torch.tensor([0.2, 0.5, 1.0], dtype=torch.float64),
            torch.tensor([[0.2, 0.5, 1.0]] * n_rays, dtype=torch.float64),
        ),
        "per-ray": (torch.rand(n_rays, 3, dtype=torch.float64),) * 2,
    }
    given, expanded = colours[background]
    out = composite(rgbs, sigmas, samples, n_rays, given)
    weights, _, _, rgb, opacity, depth = reference(samples, sigmas, rgbs, n_rays, expanded)
    torch.testing.assert_close(out["weights"], weights, atol=1e-10, rtol=0)
    torch.testing.assert_close(out["rgb"], rgb, atol=1e-10, rtol=0)
    torch.testing.assert_close(out["opacity"], opacity, atol=1e-10, rtol=0)
    torch.testing.assert_close(out["depth"], depth, atol=1e-10, rtol=0)
    # rays without samples show the background, at zero opacity and depth
    assert out["opacity"][0] == 0 and out["depth"][4] == 0
    torch.testing.assert_close(out["rgb"][[0, 4]], expanded[[0, 4]])


def test_composite_gradients_match_finite_differences():
    samples, sigmas, rgbs = random_packed(4, n_rays=5, max_samples=5)
    sigmas.requires_grad_(True)
    rgbs.requires_grad_(True)
    background = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)

    def rendered(sigmas, rgbs):
        out = composite(rgbs, sigmas, samples, 5, background)
        return out["rgb"], out["opacity"], out["depth"]

    assert torch.autograd.gradcheck(rendered, (sigmas, rgbs))


def test_depth_of_an_opaque_slab_is_its_distance():
    origins, directions = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    samples = stratified_samples(torch.zeros(1), torch.full((1,), 4.0), 400, perturb=False)
    slab = lambda points, dirs: (torch.ones_like(points), 1e4 * (points[:, 2] > 1.5).to(points))  # noqa: E731
    out = render_rays(slab, origins, directions, samples, background=torch.zeros(3))
    assert float(out["opacity"]) == pytest.approx(1.0, abs=1e-6)
    assert float(out["depth"]) == pytest.approx(1.505, abs=1e-5)  # the midpoint of the first interval past 1.5
    torch.testing.assert_close(out["rgb"], torch.ones(1, 3))


def test_float32_keeps_precision_over_a_large_batch():
    n_rays, per_ray = 4096, 64
    samples = stratified_samples(torch.zeros(n_rays), torch.full((n_rays,), 2.0), per_ray, perturb=False)
    sigmas = torch.full((n_rays * per_ray,), 3.0)  # optical depth 6 per ray, 24576 over the batch
    _, transmittance, _ = render_weights(samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, n_rays)
    expected = torch.exp(-3.0 * samples.t_starts.double())  # exclusive: the optical depth before each start
    torch.testing.assert_close(transmittance.double(), expected, atol=1e-6, rtol=0)


def test_accumulate_sums_per_ray():
    weights = torch.tensor([0.5, 0.25, 1.0])
    values = torch.tensor([[1.0, 2.0], [4.0, 0.0], [3.0, 3.0]])
    ray_indices = torch.tensor([0, 0, 2])
    torch.testing.assert_close(accumulate(weights, None, ray_indices, 3), torch.tensor([0.75, 0.0, 1.0]))
    torch.testing.assert_close(accumulate(weights, values, ray_indices, 3), torch.tensor([[1.5, 1.0], [0.0, 0.0], [3.0, 3.0]]))


def test_render_rays_evaluates_the_field_at_midpoints_along_each_rays_direction():
    origins = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    directions = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    samples = RaySamples(torch.tensor([0, 1, 1]), torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 4.0]))
    seen = {}

    def field(positions, dirs):
        seen["positions"], seen["directions"] = positions, dirs
        return torch.zeros(len(positions), 3), torch.zeros(len(positions), 1)  # an (M, 1) sigma is accepted

    render_rays(field, origins, directions, samples)
    torch.testing.assert_close(seen["positions"], torch.tensor([[0.0, 0.5, 0.0], [1.0, 0.0, 1.5], [1.0, 0.0, 3.0]]))
    torch.testing.assert_close(seen["directions"], directions[[0, 1, 1]])


def test_render_rays_without_samples_shows_the_background():
    def field(positions, dirs):
        raise AssertionError("the field must not be called without samples")

    empty = RaySamples(torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))
    out = render_rays(field, torch.zeros(2, 3), torch.ones(2, 3), empty, background=torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(out["rgb"], torch.tensor([[0.1, 0.2, 0.3]] * 2))
    assert out["opacity"].tolist() == [0.0, 0.0] and out["depth"].tolist() == [0.0, 0.0] and out["weights"].shape == (0,)


def test_user_errors_are_one_line_nfield_errors():
    samples, sigmas, rgbs = random_packed(5, dtype=torch.float32)
    with pytest.raises(NfieldError, match="background"):
        composite(rgbs, sigmas, samples, 9, torch.zeros(4, 3))
    with pytest.raises(NfieldError, match="rgb_sigma_fn"):
        render_rays(lambda p, d: (p[:, :2], p[:, 0]), torch.zeros(9, 3), torch.ones(9, 3), samples)
