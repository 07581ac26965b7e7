"""Rays against boxes with a near plane, and packed samples built from dense rows and selected."""

import torch

from nfield.render.rays import RaySamples, ray_aabb, ray_box_intersection

CUBE = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def random_rays(n=256, seed=0):
    """Rays from inside and around the cube in random directions, some axis-parallel."""
    generator = torch.Generator().manual_seed(seed)
    origins = 3 * torch.rand(n, 3, generator=generator) - 1.5
    directions = torch.randn(n, 3, generator=generator)
    directions[::7, 1:] = 0.0  # parallel to the y and z slabs
    return origins, directions


def test_near_clamps_the_entry_and_a_box_left_before_it_is_missed():
    origins = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -2.0], [1.0, 0.0, 0.0]])
    t_near, t_far, hits = ray_box_intersection(origins, directions, near=3.0)
    # enters at 2, leaves at 4: begins at 3; at twice the speed it leaves at t = 2, before 3; from inside, leaves at 1
    assert hits.tolist() == [True, False, False]
    torch.testing.assert_close((t_near[0], t_far[0]), (torch.tensor(3.0), torch.tensor(4.0)))


def test_near_is_the_same_as_clamping_afterwards():
    origins, directions = random_rays()
    entry, exit_t, hit = ray_aabb(origins, directions, CUBE)
    for near in (0.0, 0.5, 2.0, -1.0):
        t_near, t_far, hits = ray_aabb(origins, directions, CUBE, near=near)
        assert torch.equal(t_near, entry.clamp_min(near)) and torch.equal(t_far, exit_t)
        assert torch.equal(hits, hit & (exit_t >= entry.clamp_min(near)))


def test_ray_aabb_is_the_box_of_its_corners():
    origins, directions = random_rays(seed=1)
    lo, hi = torch.tensor([-0.5, -1.0, 0.0]), torch.tensor([1.0, 0.5, 2.0])
    for mine, theirs in zip(
        ray_aabb(origins, directions, torch.stack([lo, hi])), ray_box_intersection(origins, directions, lo, hi)
    ):
        assert torch.equal(mine, theirs)


def test_samples_from_dense_rows_and_selected():
    t = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 6.0, 7.0, 8.0]])
    keep = torch.tensor([[True, False, True], [False, True, True]])
    samples = RaySamples.from_dense(torch.tensor([[0], [3]]), t[:, :-1], t[:, 1:], keep)
    assert samples.ray_indices.tolist() == [0, 0, 3, 3]
    assert samples.t_starts.tolist() == [0.0, 2.0, 6.0, 7.0] and samples.t_ends.tolist() == [1.0, 3.0, 7.0, 8.0]
    picked = samples.select(torch.tensor([False, True, True, False]))
    assert picked.ray_indices.tolist() == [0, 3] and picked.t_starts.tolist() == [2.0, 6.0] and len(picked) == 2
    origins, directions = torch.zeros(4, 3), torch.tensor([[1.0, 0.0, 0.0]] * 4)
    assert picked.positions(origins, directions)[:, 0].tolist() == [2.5, 6.5]
