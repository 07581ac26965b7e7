"""Sphere tracing against closed forms: ray-sphere and ray-box intersections, projected discs, analytic normals."""

import math

import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.cameras import PinholeCamera, camera_rays, look_at
from nfield.render.rays import ray_box_intersection
from nfield.render.sphere_tracing import (
    render_sdf,
    sdf_normals,
    shade_matcap,
    shade_normals,
    sphere_trace,
    tetrahedral_normals,
)

HIT_EPS = 1e-3


def sphere_sdf(radius, centre=(0.0, 0.0, 0.0)):
    centre = torch.tensor(centre)
    return lambda points: (points - centre.to(points)).norm(dim=-1) - radius


def box_sdf(half_size):
    """The exact SDF of the box [-half_size, half_size]."""
    half_size = torch.tensor(half_size)

    def sdf(points):
        q = points.abs() - half_size.to(points)
        return q.clamp_min(0.0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0.0)

    return sdf


def random_rays(n, seed, distance=3.0, spread=0.8):
    """Rays from a sphere of radius `distance` (outside [-1, 1]^3) towards random points of [-spread, spread]^3."""
    generator = torch.Generator().manual_seed(seed)
    origins = torch.randn(n, 3, generator=generator)
    origins = distance * origins / origins.norm(dim=-1, keepdim=True)
    aims = (torch.rand(n, 3, generator=generator) * 2 - 1) * spread
    directions = aims - origins
    return origins, directions / directions.norm(dim=-1, keepdim=True)


def ray_sphere(origins, directions, radius, centre=(0.0, 0.0, 0.0)):
    """Closed form in float64 for origins outside the sphere: (first hit t, closest approach to the centre, hits)."""
    offset = origins.double() - torch.tensor(centre, dtype=torch.float64)
    directions = directions.double()
    along = (offset * directions).sum(-1)
    closest = (offset.pow(2).sum(-1) - along**2).clamp_min(0.0).sqrt()
    t_first = -along - (radius**2 - closest**2).clamp_min(0.0).sqrt()
    return t_first, closest, (closest <= radius) & (t_first >= 0)


def ray_box_faces(origins, directions, half_size):
    """Closed form in float64, face by face, for origins outside the box: (first hit t, entry-face |cos|, hits)."""
    origins, directions = origins.double(), directions.double()
    half_size = torch.tensor(half_size, dtype=torch.float64)
    best = torch.full((len(origins),), math.inf, dtype=torch.float64)
    cosine = torch.zeros(len(origins), dtype=torch.float64)
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):
            t = (sign * half_size[axis] - origins[:, axis]) / directions[:, axis]
            point = origins + t[:, None] * directions
            on_face = (point[:, others].abs() <= half_size[others]).all(-1) & (t > 0)
            better = on_face & (t < best)
            best = torch.where(better, t, best)
            cosine = torch.where(better, directions[:, axis].abs(), cosine)
    return best, cosine, torch.isfinite(best)


def segment_sphere_gap(start, end, radius, centre):
    """min | |p - centre| - radius | over the segments [start, end], (n, 3) each, in float64."""
    start, end = start - torch.tensor(centre, dtype=torch.float64), end - torch.tensor(centre, dtype=torch.float64)
    along = end - start
    s = (-(start * along).sum(-1) / along.pow(2).sum(-1).clamp_min(1e-30)).clamp(0.0, 1.0)
    nearest = (start + s[:, None] * along).norm(dim=-1)
    farthest = torch.maximum(start.norm(dim=-1), end.norm(dim=-1))
    return torch.where(nearest > radius, nearest - radius, (radius - farthest).clamp_min(0.0))


def counting(sdf_fn):
    """sdf_fn that records every batch of points it is called on."""
    batches = []

    def wrapped(points):
        batches.append(points.clone())
        return sdf_fn(points)

    return wrapped, batches


def shell_octree(radius, width=0.3, n_cells=8):
    """Fake occupancy: cells of a uniform n^3 grid over [-1, 1]^3 that miss the shell | |p| - radius | <= width are empty."""
    size = 2.0 / n_cells

    def query(points):
        index = ((points + 1.0) / size).floor().clamp(0, n_cells - 1)
        lo = index * size - 1.0
        hi = lo + size
        nearest = torch.minimum(torch.maximum(torch.zeros_like(points), lo), hi).norm(dim=-1)
        farthest = torch.maximum(lo.abs(), hi.abs()).norm(dim=-1)
        return lo, hi, (nearest > radius + width) | (farthest < radius - width)

    return query


def test_ray_box_intersection_hand_cases():
    s = 1 / math.sqrt(2)
    origins = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # inside
            [0.5, 0.2, -0.3],  # inside, diagonal
            [-3.0, 0.0, 0.0],  # outside, through
            [-3.0, 2.0, 0.0],  # misses beside the box
            [3.0, 0.0, 0.0],  # box behind the ray
            [0.5, -5.0, 0.9],  # parallel to two slabs, inside both
            [1.5, -5.0, 0.0],  # parallel to x, outside its slab
            [1.0, -5.0, 0.0],  # parallel, on the x = 1 face
            [-2.0, -2.0, -2.0],  # along the diagonal
        ]
    )
    directions = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [s, s, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 1.0, 0.0],
            [1.0, 1.0, 1.0],
        ]
    )
    t_near, t_far, hits = ray_box_intersection(origins, directions)
    assert hits.tolist() == [True, True, True, False, False, True, False, True, True]
    expected_near = torch.tensor([0.0, 0.0, 2.0, 4.0, 4.0, 1.0])
    expected_far = torch.tensor([1.0, 0.5 / s, 4.0, 6.0, 6.0, 3.0])
    torch.testing.assert_close(t_near[hits], expected_near)
    torch.testing.assert_close(t_far[hits], expected_far)
    assert not torch.isnan(t_near).any() and not torch.isnan(t_far).any()


def test_ray_box_intersection_per_ray_boxes():
    origins = torch.tensor([[0.5, 1.0, -4.0], [0.5, 1.0, -4.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t_near, t_far, hits = ray_box_intersection(origins, directions, torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close((t_near, t_far), (torch.tensor([4.0, 4.0]), torch.tensor([7.0, 7.0])))
    lo = torch.tensor([[0.0, 0.0, -1.0], [0.6, 0.0, -1.0]])
    t_near, t_far, hits = ray_box_intersection(origins, directions, lo, lo + 1.5)
    assert hits.tolist() == [True, False]
    torch.testing.assert_close((t_near[0], t_far[0]), (torch.tensor(3.0), torch.tensor(4.5)))


@pytest.mark.parametrize("radius, centre", [(0.5, (0.0, 0.0, 0.0)), (0.35, (0.3, -0.2, 0.1))])
@pytest.mark.parametrize("step_scale", [1.0, 0.6])
def test_sphere_matches_the_closed_form(radius, centre, step_scale):
    origins, directions = random_rays(3000, seed=0)
    sdf = sphere_sdf(radius, centre)
    result = sphere_trace(sdf, origins, directions, max_steps=256, hit_eps=HIT_EPS, step_scale=step_scale)
    t_first, closest, _ = ray_sphere(origins, directions, radius, centre)
    must_hit, must_miss = closest < radius - 0.02, closest > radius + 2 * HIT_EPS
    assert must_hit.sum() > 300 and must_miss.sum() > 300
    assert result.hit[must_hit].all() and not result.hit[must_miss].any()
    # no overshoot, and a hit is at most hit_eps / cos(incidence) before the surface (the SDF is convex along the ray)
    cosine = (radius**2 - closest**2).clamp_min(0.0).sqrt() / radius
    t = result.t.double()
    assert (t[result.hit] <= t_first[result.hit] + 1e-5).all()
    assert (t[must_hit] >= t_first[must_hit] - HIT_EPS / cosine[must_hit] - 1e-5).all()
    torch.testing.assert_close(result.positions, origins + result.t[:, None] * directions)
    assert sdf(result.positions[result.hit]).abs().max() < HIT_EPS


def test_box_matches_the_closed_form():
    half_size = (0.5, 0.3, 0.4)
    origins, directions = random_rays(3000, seed=1, spread=0.6)
    result = sphere_trace(box_sdf(half_size), origins, directions, max_steps=256, hit_eps=HIT_EPS)
    t_first, cosine, _ = ray_box_faces(origins, directions, half_size)
    must_hit = ray_box_faces(origins, directions, [h - 0.02 for h in half_size])[2]
    must_miss = ~ray_box_faces(origins, directions, [h + 0.01 for h in half_size])[2]
    assert must_hit.sum() > 300 and must_miss.sum() > 300
    assert result.hit[must_hit].all() and not result.hit[must_miss].any()
    t = result.t.double()
    assert (t[result.hit] <= t_first[result.hit] + 1e-5).all()
    assert (t[must_hit] >= t_first[must_hit] - HIT_EPS / cosine[must_hit] - 1e-5).all()


def test_rays_missing_the_bounds_cost_no_evaluation():
    origins = torch.tensor([[3.0, 3.0, 0.0], [0.0, 1.5, 4.0], [0.0, 0.0, 3.0]])
    directions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    sdf, batches = counting(sphere_sdf(0.5))
    result = sphere_trace(sdf, origins, directions, near=0.25)
    assert not result.hit.any() and result.n_steps == 0 and result.n_evaluations == 0 and not batches
    torch.testing.assert_close(result.t, torch.full((3,), 0.25))


def test_the_sdf_is_only_evaluated_inside_the_bounds():
    origins, directions = random_rays(500, seed=2, distance=2.5, spread=1.5)
    sdf, batches = counting(sphere_sdf(0.5))
    result = sphere_trace(sdf, origins, directions, bounds=(-0.8, torch.tensor([0.9, 0.8, 0.7])))
    points = torch.cat(batches)
    assert len(points) == result.n_evaluations > 0
    assert (points >= -0.8 - 1e-5).all() and (points <= torch.tensor([0.9, 0.8, 0.7]) + 1e-5).all()
    assert result.n_evaluations >= result.n_steps


def test_a_surface_partly_outside_the_bounds_is_clipped():
    radius, centre = 0.6, (0.7, 0.0, 0.0)  # reaches x = 1.3, beyond the box [-1, 1]^3
    sdf = sphere_sdf(radius, centre)
    origins, directions = random_rays(3000, seed=3)
    result = sphere_trace(sdf, origins, directions, max_steps=256, hit_eps=HIT_EPS)
    t_first, closest, _ = ray_sphere(origins, directions, radius, centre)
    first_point = origins.double() + t_first[:, None] * directions.double()
    must_hit = (closest < radius - 0.02) & (first_point.abs() <= 1.0 - 0.01).all(-1)
    # a miss where the ray enters the box inside the sphere (it steps back out), or where |sdf| stays above 0.01
    # all along its part inside the box
    t_near, t_far, in_box = ray_box_intersection(origins.double(), directions.double())
    entry, exit = (origins.double() + t[:, None] * directions.double() for t in (t_near, t_far))
    starts_inside = (entry - torch.tensor(centre, dtype=torch.float64)).norm(dim=-1) < radius - 0.01
    must_miss = ~in_box | starts_inside | (segment_sphere_gap(entry, exit, radius, centre) > 0.01)
    clipped = starts_inside & (closest < radius - 0.05)  # rays that would hit the whole sphere outside the box
    assert must_hit.sum() > 300 and clipped.sum() > 100
    assert result.hit[must_hit].all() and not result.hit[must_miss].any()
    cosine = (radius**2 - closest**2).sqrt() / radius
    error = result.t.double()[must_hit] - t_first[must_hit]
    assert (error <= 1e-5).all() and (error >= -HIT_EPS / cosine[must_hit] - 1e-5).all()


def test_near_far_and_the_step_budget():
    origins, directions = torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    sdf = sphere_sdf(0.5)
    # the box starts at t = 2 (sdf 0.5), the surface at t = 2.5 is reached in one step
    result = sphere_trace(sdf, origins, directions)
    assert result.hit.item() and result.t.item() == pytest.approx(2.5) and result.n_steps == result.n_evaluations == 2
    assert not sphere_trace(sdf, origins, directions, far=2.4).hit.item()
    assert sphere_trace(sdf, origins, directions, far=2.6).hit.item()
    assert not sphere_trace(sdf, origins, directions, near=2.7).hit.item()  # starts inside, steps back out
    out_of_steps = sphere_trace(sdf, origins, directions, max_steps=1)
    assert not out_of_steps.hit.item() and out_of_steps.t.item() == pytest.approx(2.5) and out_of_steps.n_steps == 1


def test_chunks_and_column_outputs_give_the_same_result():
    origins, directions = random_rays(200, seed=4)
    reference = sphere_trace(sphere_sdf(0.5), origins, directions)
    sdf, batches = counting(lambda points: sphere_sdf(0.5)(points)[:, None])
    chunked = sphere_trace(sdf, origins, directions, chunk=7)
    assert max(len(batch) for batch in batches) == 7
    assert torch.equal(chunked.hit, reference.hit) and torch.equal(chunked.t, reference.t)
    assert chunked.n_evaluations == reference.n_evaluations


@pytest.mark.parametrize(
    "sdf, directions",
    [
        (sphere_sdf(0.5), torch.tensor([[0.0, 0.0, -2.0]])),  # not unit length
        (lambda points: points.norm(), torch.tensor([[0.0, 0.0, -1.0]])),  # one distance for all points
    ],
)
def test_sphere_trace_rejects_bad_inputs(sdf, directions):
    with pytest.raises(NfieldError):
        sphere_trace(sdf, torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.1, 3.0]]), directions.expand(2, 3))
    with pytest.raises(NfieldError):
        sphere_trace(sphere_sdf(0.5), torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0]] * 2), bounds=(-1.0, 0.0, 1.0))


def test_empty_space_skipping_keeps_the_hits_and_saves_evaluations():
    radius = 0.5
    origins, directions = random_rays(3000, seed=5, spread=0.9)
    octree = shell_octree(radius)
    plain = sphere_trace(sphere_sdf(radius), origins, directions, max_steps=256, hit_eps=HIT_EPS)
    sdf, batches = counting(sphere_sdf(radius))
    skipping = sphere_trace(sdf, origins, directions, max_steps=256, hit_eps=HIT_EPS, empty_space=octree)
    assert torch.equal(skipping.hit, plain.hit) and plain.hit.sum() > 300
    t_first, closest, _ = ray_sphere(origins, directions, radius)
    cosine = (radius**2 - closest**2).clamp_min(0.0).sqrt() / radius
    error = skipping.t.double()[plain.hit] - t_first[plain.hit]
    clear = closest[plain.hit] < radius - 0.02
    assert (error <= 1e-5).all() and (error[clear] >= -HIT_EPS / cosine[plain.hit][clear] - 1e-5).all()
    torch.testing.assert_close(skipping.t[plain.hit], plain.t[plain.hit], atol=HIT_EPS / 0.25, rtol=0)
    assert skipping.n_evaluations < plain.n_evaluations
    # the SDF was only ever evaluated in occupied cells
    assert not octree(torch.cat(batches))[2].any()


def test_empty_space_jumps_to_the_exit_of_the_box():
    origins, directions = torch.tensor([[-3.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])

    def left_half_empty(points):
        lo, hi = torch.full_like(points, -1.0), torch.ones_like(points)
        hi[:, 0] = 0.0
        return lo, hi, points[:, 0] < 0

    sdf, batches = counting(sphere_sdf(0.3, (0.5, 0.0, 0.0)))
    result = sphere_trace(sdf, origins, directions, empty_space=left_half_empty)
    # enter at x = -1, jump to x = 1e-5 without evaluating, one step to the surface at x = 0.2, hit there
    assert result.hit.item() and result.n_steps == 3 and result.n_evaluations == 2
    torch.testing.assert_close(batches[0], torch.tensor([[1e-5, 0.0, 0.0]]), atol=1e-6, rtol=0)
    assert result.t.item() == pytest.approx(3.2, abs=1e-5)


def test_sdf_normals_of_a_sphere():
    centre = torch.tensor([0.2, -0.1, 0.3])
    points = centre + torch.randn(500, 3, generator=torch.Generator().manual_seed(6))
    expected = (points - centre) / (points - centre).norm(dim=-1, keepdim=True)
    with torch.no_grad():
        normals = sdf_normals(sphere_sdf(0.5, centre.tolist()), points, chunk=64)
    assert not normals.requires_grad
    torch.testing.assert_close(normals, expected, atol=1e-5, rtol=0)


def test_sdf_normals_degenerate_gradients_are_zero():
    points = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    constant = sdf_normals(lambda p: p[:, 0] * 0.0 + 1.0, points)
    torch.testing.assert_close(constant, torch.zeros(2, 3))
    singular = sdf_normals(lambda p: p.pow(2).sum(-1).sqrt() - 0.5, points)  # NaN gradient at the centre
    torch.testing.assert_close(singular, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(NfieldError):
        sdf_normals(lambda p: p.detach().norm(dim=-1), points)
    assert sdf_normals(lambda p: 1 / 0, torch.zeros(0, 3)).shape == (0, 3)  # no call for no points


def test_sdf_normals_leave_parameters_alone():
    layer = torch.nn.Linear(3, 1)
    normals = sdf_normals(layer, torch.randn(10, 3))
    expected = layer.weight.detach()[0] / layer.weight.detach().norm()
    torch.testing.assert_close(normals, expected.expand(10, 3))
    assert layer.weight.grad is None


def test_shading():
    torch.testing.assert_close(
        shade_normals(torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])), torch.tensor([[1.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    )
    normals = torch.randn(1000, 3, generator=torch.Generator().manual_seed(7))
    normals = normals / normals.norm(dim=-1, keepdim=True)
    c2w = look_at((1.0, 2.0, 2.0))
    rgb = shade_matcap(normals, c2w)
    assert rgb.shape == (1000, 3) and (rgb >= 0).all() and (rgb <= 1).all()
    # the look depends only on the normal in view space: turn the camera and the normals together
    torch.testing.assert_close(rgb, shade_matcap(normals @ c2w[:3, :3], torch.eye(4)))
    # lit from above-left of the camera: a normal facing up-left is brighter than one facing down-right
    facing = shade_matcap(torch.tensor([[-0.5, 0.5, 0.7071], [0.5, -0.5, 0.7071]]), torch.eye(4)).sum(-1)
    assert facing[0] > facing[1] + 0.3


def test_render_sdf_of_a_sphere_is_the_projected_disc():
    radius, eye = 0.5, (1.1, 0.8, 2.0)
    distance = math.dist(eye, (0.0, 0.0, 0.0))
    size, fov = 61, 40.0
    camera = PinholeCamera.from_fov(size, size, fov)
    c2w = look_at(eye)
    image = render_sdf(sphere_sdf(radius), camera, c2w, background=(0.1, 0.2, 0.3), hit_eps=HIT_EPS, pixel_footprint=0.0)
    # closed form: angular radius asin(r / d), so a disc of radius f tan(asin(r / d)) pixels around the centre
    disc = camera.fy * math.tan(math.asin(radius / distance))
    row, column = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    from_centre = torch.hypot(row - camera.cy, column - camera.cx)
    hit = image["hit"]
    assert hit.shape == (size, size)
    assert hit[from_centre < disc - 1].all() and not hit[from_centre > disc + 1].any()
    assert hit.sum().item() == pytest.approx(math.pi * disc**2, rel=0.02)
    # the centre ray meets the sphere at d - r
    assert image["depth"][size // 2, size // 2].item() == pytest.approx(distance - radius, abs=1e-5)
    assert torch.isinf(image["depth"][~hit]).all()
    # depth, normals and colours at the hits
    origins, directions = camera_rays(camera, c2w)
    t_first, closest, _ = ray_sphere(origins, directions, radius)
    clear = (closest < radius - 0.02).reshape(size, size)
    depth = image["depth"].double()[clear]
    cosine = ((radius**2 - closest**2).clamp_min(0.0).sqrt() / radius).reshape(size, size)[clear]
    assert ((depth - t_first.reshape(size, size)[clear]).abs() <= HIT_EPS / cosine).all()
    positions = origins + image["depth"].reshape(-1, 1) * directions
    expected_normals = positions / positions.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(image["normals"][hit], expected_normals[hit.reshape(-1)], atol=3e-3, rtol=0)
    torch.testing.assert_close(image["normals"][~hit], torch.zeros(int((~hit).sum()), 3))
    torch.testing.assert_close(image["rgb"][hit], 0.5 * image["normals"][hit] + 0.5)
    torch.testing.assert_close(image["rgb"][~hit], torch.tensor([0.1, 0.2, 0.3]).expand(int((~hit).sum()), 3))
    assert image["evaluations"].shape == (size, size) and (image["evaluations"][hit] > 0).all()


def test_hits_within_a_pixel_footprint_grow_the_disc_by_at_most_that_and_save_steps():
    """With pixel_footprint p, a ray passing within p pixels of the sphere's silhouette is a hit:
    the disc's radius grows by at most p pixels, every hit lies within max(hit_eps, p t / f) of the
    surface, and grazing rays stop sooner."""
    radius, eye, size = 0.5, (1.1, 0.8, 2.0), 61
    camera, c2w = PinholeCamera.from_fov(size, size, 40.0), look_at(eye)
    exact = render_sdf(sphere_sdf(radius), camera, c2w, hit_eps=HIT_EPS, pixel_footprint=0.0)
    loose = render_sdf(sphere_sdf(radius), camera, c2w, hit_eps=HIT_EPS, pixel_footprint=0.5)
    disc = camera.fy * math.tan(math.asin(radius / math.dist(eye, (0.0, 0.0, 0.0))))
    row, column = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    from_centre = torch.hypot(row - camera.cy, column - camera.cx)
    assert (exact["hit"] <= loose["hit"]).all() and not loose["hit"][from_centre > disc + 0.5 + 0.1].any()
    assert loose["hit"].sum() > exact["hit"].sum()
    assert loose["evaluations"].sum() < exact["evaluations"].sum()
    origins, directions = camera_rays(camera, c2w)
    hit, depth = loose["hit"].reshape(-1), loose["depth"].reshape(-1)
    gap = ((origins[hit] + depth[hit, None] * directions[hit]).norm(dim=-1) - radius).abs()
    assert (gap <= torch.clamp_min(0.5 * depth[hit] / camera.fy, HIT_EPS) + 1e-6).all()


@pytest.mark.parametrize("compact_every", [1, 4, 64])
def test_compacting_every_few_iterations_gives_the_same_result(compact_every):
    """Between compactions finished rays ride along masked: the same hits and distances, the same
    evaluations per ray, and (with more than one iteration between compactions) a surplus of total
    evaluations from the riders."""
    origins, directions = random_rays(400, seed=11)
    sdf = sphere_sdf(0.6, (0.1, 0.0, -0.1))
    reference = sphere_trace(
        sdf, origins, directions, hit_eps=HIT_EPS, step_scale=0.9, compact_every=1, empty_space=shell_octree(0.6)
    )
    result = sphere_trace(
        sdf, origins, directions, hit_eps=HIT_EPS, step_scale=0.9, compact_every=compact_every, empty_space=shell_octree(0.6)
    )
    assert torch.equal(result.hit, reference.hit)
    assert reference.n_steps <= result.n_steps <= -(-reference.n_steps // compact_every) * compact_every  # whole windows
    torch.testing.assert_close(result.t, reference.t, atol=1e-6, rtol=0)
    assert torch.equal(result.evaluations, reference.evaluations)
    assert reference.n_evaluations == int(reference.evaluations.sum())
    assert (result.n_evaluations > reference.n_evaluations) == (compact_every > 1)


def test_tetrahedral_normals_of_a_sphere_and_a_box():
    generator = torch.Generator().manual_seed(3)
    directions = torch.nn.functional.normalize(torch.randn(300, 3, generator=generator), dim=-1)
    normals = tetrahedral_normals(sphere_sdf(0.7), 0.7 * directions)  # error ~ step x the Hessian's off-diagonal
    torch.testing.assert_close(normals, directions, atol=2e-3, rtol=0)
    assert ((normals * directions).sum(-1) > 1 - 1e-5).all()
    face = torch.tensor([[0.5, 0.1, -0.2], [0.5, -0.3, 0.2]])  # on the x = 0.5 face (away from edges) of a box
    torch.testing.assert_close(tetrahedral_normals(box_sdf((0.5, 0.6, 0.7)), face), torch.tensor([[1.0, 0.0, 0.0]] * 2))
    assert torch.equal(tetrahedral_normals(lambda p: p[:, 0] * 0.0, face), torch.zeros(2, 3))  # flat field: no normal


def test_render_sdf_matcap_and_empty_space():
    camera, c2w = PinholeCamera.from_fov(41, 31, 45.0), look_at((0.0, 1.0, 2.5))
    plain = render_sdf(sphere_sdf(0.5), camera, c2w)
    image = render_sdf(sphere_sdf(0.5), camera, c2w, shading="matcap", empty_space=shell_octree(0.5))
    assert torch.equal(image["hit"], plain["hit"]) and image["evaluations"].sum() < plain["evaluations"].sum()
    assert image["rgb"].shape == (31, 41, 3) and (image["rgb"] >= 0).all() and (image["rgb"] <= 1).all()
    torch.testing.assert_close(image["rgb"][~image["hit"]], torch.ones(int((~image["hit"]).sum()), 3))
    with pytest.raises(NfieldError):
        render_sdf(sphere_sdf(0.5), camera, c2w, shading="phong")
    with pytest.raises(NfieldError):
        render_sdf(sphere_sdf(0.5), camera, c2w, background=(0.0, 2.0, 0.0))


@pytest.mark.gpu
def test_render_sdf_runs_on_the_device_of_the_pose():
    camera, c2w = PinholeCamera.from_fov(33, 33, 40.0), look_at((0.5, 0.4, 2.0))
    on_cpu = render_sdf(sphere_sdf(0.5), camera, c2w, shading="matcap", empty_space=shell_octree(0.5))
    on_gpu = render_sdf(sphere_sdf(0.5), camera, c2w.cuda(), shading="matcap", empty_space=shell_octree(0.5))
    assert on_gpu["rgb"].device.type == "cuda"
    assert (on_gpu["hit"].cpu() != on_cpu["hit"]).sum() <= 2
    both = on_gpu["hit"].cpu() & on_cpu["hit"]
    torch.testing.assert_close(on_gpu["rgb"].cpu()[both], on_cpu["rgb"][both], atol=1e-2, rtol=0)
