"""Distillation against an analytic teacher whose density and colour are known everywhere."""

import pytest
import torch
from torch import nn

from nfield.data.scenes import load_scene
from nfield.errors import NfieldError
from nfield.fields.kilonerf import KiloNeRFConfig
from nfield.render.occupancy import OccupancyGridConfig
from nfield.tasks.distill import DistillConfig, DistillTask, check_box_contains, student_task_config, teacher_occupancy
from nfield.tasks.nerf import NeRFTaskConfig
from scenes.synthetic import generate

BOX = torch.tensor([[-1.0] * 3, [1.0] * 3])


class BallTeacher(nn.Module):
    """Density 40 inside a ball of radius 0.45 around (0.4, 0.4, 0.4), zero elsewhere; colour
    (x + 1) / 2 tinted by the direction's z."""

    def __init__(self):
        super().__init__()
        self.register_buffer("aabb", BOX.clone())
        self.centre = torch.tensor([0.4, 0.4, 0.4])

    def density(self, x):
        return 40.0 * ((x - self.centre).norm(dim=-1) < 0.45).float()

    def forward(self, x, d):
        rgb = ((x + 1) / 2 * (0.8 + 0.2 * d[:, 2:3])).clamp(0, 1)
        return rgb, self.density(x)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return load_scene(generate("primitives", tmp_path_factory.mktemp("scene") / "p", size=16, n_train=8, n_val=1, n_test=1))


def _task(scene, seed=0):
    teacher = nn.ModuleDict({"field": BallTeacher()})  # sampled hierarchically: no occupancy grid of its own
    task_cfg = student_task_config(NeRFTaskConfig(sampler="hierarchical", steps_per_ray=64), l2_last_layers=0.0)
    task_cfg = NeRFTaskConfig(**{**task_cfg.__dict__, "occupancy": OccupancyGridConfig(resolution=16, frozen=True)})
    grid = teacher_occupancy(teacher, task_cfg.occupancy, step_size=0.05)
    student = KiloNeRFConfig(longest_axis_cells=4, position_frequencies=3, direction_frequencies=1, n_neurons=16, feature_dim=8)
    cfg = DistillConfig(batch_points=2048, rays_per_step=128)
    return DistillTask(teacher, grid, scene, student, BOX, task_cfg, cfg, seed=seed), teacher


def test_student_matches_the_teachers_alpha_and_colour_and_skips_empty_cells(scene):
    torch.manual_seed(0)
    task, teacher = _task(scene)
    # the grid computed from the teacher's density marks the ball: only the cells it overlaps train
    occupied = task.occupied
    assert 0 < int(occupied.sum()) < task.student.n_cells
    assert bool(occupied[task.student.cell_index(torch.tensor([[0.4, 0.4, 0.4]]))].all())
    assert not bool(occupied[task.student.cell_index(torch.tensor([[-0.6, -0.6, -0.6]]))].any())
    before = [p.detach().clone() for p in task.student.parameters()]
    optimizer = torch.optim.Adam(task.student.parameters(), lr=1e-2)
    for step in range(300):
        loss, _ = task.loss(task.sample(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # held-out points in the occupied cells: alpha and colour close to the teacher's
    x = torch.rand(4000, 3) * 2 - 1
    x = x[occupied[task.student.cell_index(x)]]
    d = torch.nn.functional.normalize(torch.randn(len(x), 3), dim=-1)
    with torch.no_grad():
        rgb, sigma = task.student(x, d)
        want_rgb, want_sigma = teacher["field"](x, d)
    alpha_error = (task.alpha(sigma) - task.alpha(want_sigma)).abs()
    inside = want_sigma > 0  # teacher alpha 0.89 there (untrained student: errors 0.023 overall, 0.097 in colour)
    assert float(alpha_error.mean()) < 0.012 and float(alpha_error[inside].mean()) < 0.1
    assert float((rgb - want_rgb)[inside].abs().mean()) < 0.03
    # cells the teacher marks empty keep their initialisation
    for p, p0 in zip(task.student.parameters(), before):
        assert torch.equal(p[~occupied], p0[~occupied]) and not torch.equal(p[occupied], p0[occupied])


def test_the_student_grid_is_the_teachers_and_stays_frozen(scene):
    task, _ = _task(scene)
    grid = task.model["grid"]
    occupied = grid.occupied.clone()
    grid.density_fn = lambda x: torch.full((len(x),), 1e3)  # an update would fill every cell
    grid.update(0, 10)
    assert torch.equal(grid.occupied, occupied) and grid.cfg.frozen


def test_a_box_missing_the_teachers_occupied_region_is_refused(scene):
    teacher = nn.ModuleDict({"field": BallTeacher()})
    grid = teacher_occupancy(teacher, OccupancyGridConfig(resolution=16), step_size=0.05)
    check_box_contains(BOX, grid)
    check_box_contains(torch.tensor([[-0.1] * 3, [0.9] * 3]), grid)  # the ball fits
    with pytest.raises(NfieldError, match="does not contain the teacher's occupied region"):
        check_box_contains(torch.tensor([[-1.0] * 3, [0.5] * 3]), grid)
