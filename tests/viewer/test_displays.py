"""What the viewer draws, checked against the fields it draws: exact pixels on the image plane,
row bands equal to whole frames, the depth/opacity modes, the SDF surface and the page's objects."""

import math
from unittest.mock import MagicMock

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

from nfield.cli import main
from nfield.colormap import inferno
from nfield.encodings import HashGridConfig
from nfield.fields.kilonerf import KiloNeRFConfig, occupied_cells
from nfield.fields.radiance import NGPFieldConfig
from nfield.render.cameras import camera_rays, look_at
from nfield.render.occupancy import OccupancyGridConfig
from nfield.runs.single import load_run
from nfield.tasks.image import ERROR_MAP_MAX
from nfield.tasks.nerf import NeRFTask, NeRFTaskConfig, write_cameras
from nfield.viewer.cameras import ViewCamera
from nfield.viewer.displays import PANEL_BACKGROUND, PULL_BACK, RadianceDisplay, SDFDisplay, SignalDisplay, display_for
from scenes.synthetic import generate


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image")
    rng = np.random.default_rng(0)
    iio.imwrite(folder / "target.png", rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    out = folder / "run"
    assert (
        main(["fit-image", str(folder / "target.png"), "--steps", "10", "--out", str(out), "--no-progress", "--device", "cpu"])
        == 0
    )
    return load_run(out, "cpu", data=True)


def _looking_at(x: float, y: float, size: int, fov_deg: float = 10.0) -> ViewCamera:
    c2w = look_at((x, y, 3.0), (x, y, 0.0), up=(0.0, 1.0, 0.0))
    return ViewCamera(c2w, math.radians(fov_deg), size, size)


def test_signal_scene_draws_the_field_the_target_and_the_error_at_exact_points(image_run):
    scene = SignalDisplay(image_run.task, image_run.config)
    assert scene.panels == ("reconstruction", "target", "error")
    a, b = scene.half
    assert (a, b) == (1.0, 12 / 20)
    # the centre pixel of an odd frame looks at the panel's centre: image coordinates (0, 0)
    model = image_run.task.model
    with torch.no_grad():
        field = model(torch.zeros(1, 2)).clamp(0, 1)[0]
    target = image_run.task.image.as_float()[6, 10]  # the nearest pixel to the image centre
    recon_px = scene.render_rows(_looking_at(0.0, 0.0, 9), 0, 9)[4, 4]
    target_px = scene.render_rows(_looking_at(scene.pitch, 0.0, 9), 0, 9)[4, 4]
    error_px = scene.render_rows(_looking_at(2 * scene.pitch, 0.0, 9), 0, 9)[4, 4]
    np.testing.assert_allclose(recon_px, field.numpy(), atol=1e-6)
    np.testing.assert_allclose(target_px, target.numpy(), atol=1e-6)
    error = (field - target.clamp(0, 1)).abs().mean() / ERROR_MAP_MAX
    np.testing.assert_allclose(error_px, inferno(error.clamp(0, 1)[None])[0].numpy(), atol=1e-5)
    # a point between two panels, and rays that miss the plane, show the background
    gap = scene.render_rows(_looking_at(scene.pitch / 2, 0.0, 9), 0, 9)[4, 4]
    np.testing.assert_allclose(gap, [PANEL_BACKGROUND] * 3)
    away = ViewCamera(look_at((0.0, 0.0, 3.0), (0.0, 0.0, 6.0), up=(0.0, 1.0, 0.0)), 1.0, 5, 5)
    np.testing.assert_allclose(scene.render_rows(away, 0, 5), PANEL_BACKGROUND)


def test_signal_scene_zooms_into_the_field_between_pixels(image_run):
    """Zoomed in on one target pixel, the target stays constant while the field is evaluated at
    sub-pixel positions (super-resolution): the reconstruction panel matches the model there."""
    scene = SignalDisplay(image_run.task, image_run.config)
    u, v = 2 * 10.5 / 20 - 1, 2 * 6.5 / 12 - 1  # the centre of pixel (row 6, column 10)
    x, y = u * scene.half[0], -v * scene.half[1]
    camera = _looking_at(x, y, 7, fov_deg=0.5)  # a window of about a fifth of a pixel
    drawn = scene.render_rows(camera, 0, 7)
    origins, directions = camera_rays(camera.rows(0, 7), camera.c2w)
    points = origins - origins[:, 2:3] / directions[:, 2:3] * directions
    coords = torch.stack([points[:, 0] / scene.half[0], -points[:, 1] / scene.half[1]], dim=-1)
    with torch.no_grad():
        expected = image_run.task.model(coords).clamp(0, 1).reshape(7, 7, 3)
    np.testing.assert_allclose(drawn, expected.numpy(), atol=1e-6)
    assert np.ptp(drawn[..., 0]) > 0  # distinct values within what is one target pixel
    truth = scene.render_rows(_looking_at(x + scene.pitch, y, 7, fov_deg=0.5), 0, 7)
    np.testing.assert_allclose(truth, np.broadcast_to(image_run.task.image.as_float()[6, 10].numpy(), truth.shape))


def test_signal_scene_bands_make_the_whole_frame(image_run):
    scene = SignalDisplay(image_run.task, image_run.config)
    framing = scene.framing()
    c2w = look_at(framing.position, framing.look_at, framing.up)
    camera = ViewCamera(c2w, framing.fov_y, 64, 40)
    whole = scene.render_rows(camera, 0, 40)
    np.testing.assert_allclose(np.concatenate([scene.render_rows(camera, a, b) for a, b in [(0, 7), (7, 30), (30, 40)]]), whole)
    assert (np.abs(whole - PANEL_BACKGROUND).max(axis=-1) > 0.01).mean() > 0.2  # the framing shows the panels


@pytest.mark.parametrize("aspect", [0.8, 1.33, 1.6, 2.4])
def test_signal_scene_frames_every_panel_whole_at_any_aspect(image_run, aspect):
    """The first view of a page `aspect` wide: three panels across the middle row, grey on every
    side of the frame; and the default rows show the image's rows one to one or finer."""
    scene = SignalDisplay(image_run.task, image_run.config)
    framing = scene.framing(aspect)
    rows = 120
    camera = ViewCamera(look_at(framing.position, framing.look_at, framing.up), framing.fov_y, round(rows * aspect), rows)
    drawn = scene.render_rows(camera, 0, rows)
    pane = np.abs(drawn - PANEL_BACKGROUND).max(axis=-1) > 1e-4
    assert not pane[0].any() and not pane[-1].any() and not pane[:, 0].any() and not pane[:, -1].any()
    edges = np.flatnonzero(np.diff(pane[rows // 2].astype(np.int8)))
    assert len(edges) == 6  # three panels, each entered and left
    full = scene.default_rows(aspect, on_cuda=False)
    panel_rows = full * scene.half[1] / (framing.position[2] * math.tan(framing.fov_y / 2))
    assert panel_rows >= scene.height and full % 16 == 0


class _Sphere(nn.Module):
    """An exact sphere SDF of radius 0.5 with the interface of nfield's SDF fields."""

    n_lods = 1

    def __init__(self):
        super().__init__()
        self.radius = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, lod=None):
        return x.norm(dim=-1) - self.radius


def test_sdf_scene_traces_the_surface_and_bands_make_the_whole_frame(tmp_path):
    task = MagicMock(model=_Sphere())
    scene = SDFDisplay(task, tmp_path)
    framing = scene.framing()
    c2w = look_at(framing.position, framing.look_at, framing.up)
    camera = ViewCamera(c2w, framing.fov_y, 33, 33)
    whole = scene.render_rows(camera, 0, 33)
    np.testing.assert_allclose(
        np.concatenate([scene.render_rows(camera, a, b) for a, b in [(0, 10), (10, 33)]]), whole, atol=1e-6
    )
    # the sphere's silhouette: radius 0.5 at distance 3.4 under a 40 degree fov
    covered = (np.abs(whole - 1.0).max(axis=-1) > 1e-3).mean()
    expected = math.pi * (math.tan(math.asin(0.5 / 3.4)) / math.tan(math.radians(20))) ** 2 / 4
    assert abs(covered - expected) < 0.02
    assert scene.draws_frames()


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return generate("primitives", tmp_path_factory.mktemp("scene") / "primitives", size=16, n_train=6, n_val=1, n_test=1)


SMALL_NGP = NGPFieldConfig(grid=HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=8, per_level_scale=1.5))
SAMPLING = NeRFTaskConfig(batch_rays=256, steps_per_ray=32, occupancy=OccupancyGridConfig(resolution=16, warmup_steps=4))


def test_radiance_scene_modes_bands_and_frustums(scene_dir, tmp_path):
    from nfield.data.scenes import load_scene

    scene_data = load_scene(scene_dir)
    task = NeRFTask(scene_data, SMALL_NGP, SAMPLING, seed=0)
    write_cameras(tmp_path, task.cameras)
    scene = RadianceDisplay(task, tmp_path)
    server = MagicMock()
    scene.add_controls(server, lambda: None)
    assert server.scene.add_camera_frustum.call_count == len(task.cameras)
    framing = scene.framing()
    centre = task.aabb.mean(dim=0)
    expected = centre + PULL_BACK * (task.cameras.c2w[0, :3, 3] - centre)
    np.testing.assert_allclose(framing.position, expected.numpy(), rtol=1e-6)
    c2w = look_at(framing.position, framing.look_at, framing.up)
    camera = ViewCamera(c2w, framing.fov_y, 12, 10)
    for mode in RadianceDisplay.MODES:
        scene.mode = MagicMock(value=mode)
        whole = scene.render_rows(camera, 0, 10)
        bands = np.concatenate([scene.render_rows(camera, 0, 4), scene.render_rows(camera, 4, 10)])
        np.testing.assert_allclose(bands, whole, atol=1e-5)
        assert whole.shape == (10, 12, 3) and whole.min() >= 0 and whole.max() <= 1
        if mode == "opacity":
            assert np.ptp(whole, axis=-1).max() == 0  # grey levels


def test_radiance_scene_shows_the_kilonerf_cells(scene_dir, tmp_path):
    from nfield.data.scenes import load_scene

    task = NeRFTask(load_scene(scene_dir), KiloNeRFConfig(longest_axis_cells=4, position_frequencies=2), SAMPLING, seed=0)
    scene = RadianceDisplay(task, tmp_path)
    assert scene.is_kilonerf
    server = MagicMock()
    scene.add_controls(server, lambda: None)
    scene.cells.value = True
    scene._show_cells()
    points = server.scene.add_point_cloud.call_args.args[1]
    assert len(points) == int(occupied_cells(task.model["field"], task.model["grid"]).sum())


def test_audio_runs_are_refused_in_one_line(tmp_path):
    from nfield.errors import NfieldError

    with pytest.raises(NfieldError, match="render a 'audio' run"):
        display_for(None, {"task": "audio"}, tmp_path)
