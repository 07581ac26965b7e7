import torch
import trimesh

from nfield.data.meshes import Normalisation, OrientedPointCloud, TriangleMesh
from nfield.encodings import IdentityConfig
from nfield.encodings.octree import OctreeFeaturesConfig
from nfield.fields import FieldConfig
from nfield.fields.sdf import NGLODConfig
from nfield.geometry.distance import signed_distance
from nfield.networks import SirenConfig
from nfield.tasks.sdf import SDFTask, SDFTaskConfig

SPHERE = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
NGLOD = NGLODConfig(OctreeFeaturesConfig(base_lod=2, n_lods=3, feature_dim=8), n_neurons=32)
SMALL = SDFTaskConfig(batch_size=4096, pool_size=8192, resample_every=50, octree_points=20000, eval_points=4096)


def _sphere_mesh() -> TriangleMesh:
    return TriangleMesh(
        torch.tensor(SPHERE.vertices, dtype=torch.float32), torch.tensor(SPHERE.faces), Normalisation((0.0, 0.0, 0.0), 1.0)
    )


def _fit(task: SDFTask, steps: int, lr: float) -> None:
    optimizer = torch.optim.Adam(task.model.parameters(), lr=lr)
    for step in range(steps):
        loss, _ = task.loss(task.sample(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_samples_have_exact_distances_in_the_configured_mix():
    task = SDFTask(_sphere_mesh(), NGLOD, SMALL, seed=3)
    batch = task.sample(0)
    positions, distance = batch["positions"], batch["distance"]
    assert positions.shape == (4096, 3) and positions.abs().max() <= 1
    torch.testing.assert_close(distance, signed_distance(task.shape, positions), rtol=0, atol=1e-6)
    assert distance[batch["on_surface"]].abs().max() < 1e-5
    assert 0.17 < batch["on_surface"].float().mean() < 0.23  # surface_fraction 0.2, drawn from the pool
    torch.testing.assert_close(batch["normals"][batch["on_surface"]].norm(dim=-1), torch.ones(int(batch["on_surface"].sum())))
    # the same seed draws the same points; the pool is redrawn every resample_every steps
    torch.testing.assert_close(SDFTask(_sphere_mesh(), NGLOD, SMALL, seed=3).sample(0)["positions"], positions)
    first_pool = task._pool["positions"]
    task.sample(49)
    assert task._pool["positions"] is first_pool
    task.sample(50)
    assert task._pool["positions"] is not first_pool


def test_nglod_learns_a_sphere_and_finer_lods_are_more_accurate():
    torch.manual_seed(0)
    task = SDFTask(_sphere_mesh(), NGLOD, SMALL, seed=0)
    before = task.evaluate()
    _fit(task, 150, 5e-3)
    after = task.evaluate()
    assert after["distance_mae"] < 0.01 < before["distance_mae"]
    assert after["sign_iou"] > 0.95
    assert after["distance_mae"] < after["distance_mae_lod0"]


def test_siren_fits_an_oriented_point_cloud_without_distances():
    torch.manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(5000, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    cloud = OrientedPointCloud(normals * 0.5, normals, Normalisation((0.0, 0.0, 0.0), 1.0))
    siren = FieldConfig(IdentityConfig(), SirenConfig(n_neurons=64, n_hidden_layers=2, w0_initial=15.0))
    task = SDFTask(cloud, siren, SDFTaskConfig(batch_size=2048, eval_points=2048), seed=0)
    _fit(task, 200, 5e-4)
    assert task.evaluate()["surface_mae"] < 0.02
    with torch.no_grad():
        probe = torch.tensor([[0.0, 0.0, 0.0], [0.2, -0.1, 0.1], [0.9, 0.0, 0.0], [-0.7, 0.7, 0.0]])
        values = task.model(probe)
    assert (values[:2] < 0).all() and (values[2:] > 0).all()
    # the zero level set sits at the radius: along the axes, f changes sign between 0.45 and 0.55
    axes = torch.eye(3)
    with torch.no_grad():
        assert (task.model(axes * 0.45) < 0).all() and (task.model(axes * 0.55) > 0).all()


def test_eikonal_and_normal_terms_train_through_second_derivatives():
    torch.manual_seed(0)
    siren = FieldConfig(IdentityConfig(), SirenConfig(n_neurons=32, n_hidden_layers=2))
    cfg = SDFTaskConfig(batch_size=512, pool_size=1024, eval_points=512, eikonal_weight=0.1, normal_weight=0.1)
    task = SDFTask(_sphere_mesh(), siren, cfg)
    loss, metrics = task.loss(task.sample(0))
    loss.backward()
    assert torch.isfinite(loss) and "distance_mae" in metrics
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in task.model.parameters())
