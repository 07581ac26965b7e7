"""Synthetic scenes against the Blender-synthetic layout and closed forms: files and JSON, rigid poses
looking at the origin, exact sphere hits and Lambertian colour in float64, antialiasing, determinism."""

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.cameras import look_at
from scenes.synthetic import (
    AMBIENT,
    BOUND,
    CAMERA_ANGLE_X,
    CAMERA_DISTANCE,
    LIGHT_DIRECTION,
    SCENES,
    Spheres,
    cast_rays,
    checker,
    generate,
    main,
    render_view,
    sphere_checker,
    stripes,
)

SPLITS = {"train": 3, "val": 2, "test": 2}


def small_dataset(name, out_dir, seed=0):
    return generate(name, out_dir, size=32, n_train=SPLITS["train"], n_val=SPLITS["val"], n_test=SPLITS["test"], seed=seed)


def unit(vector):
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def lambert_closed_form(albedo, normal):
    """The shading formula of the module docstring, in float64."""
    return np.asarray(albedo) * (AMBIENT + (1 - AMBIENT) * max(0.0, float(unit(normal) @ unit(LIGHT_DIRECTION))))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return {name: small_dataset(name, root / name) for name in SCENES}


@pytest.mark.parametrize("name", list(SCENES))
def test_dataset_has_the_blender_synthetic_layout(datasets, name):
    out_dir = datasets[name]
    expected = {f"transforms_{split}.json" for split in SPLITS} | set(SPLITS)
    assert {path.name for path in out_dir.iterdir()} == expected
    for split, count in SPLITS.items():
        assert sorted(path.name for path in (out_dir / split).iterdir()) == sorted(f"r_{i}.png" for i in range(count))
        transforms = json.loads((out_dir / f"transforms_{split}.json").read_text())
        assert set(transforms) == {"camera_angle_x", "frames"}
        assert transforms["camera_angle_x"] == pytest.approx(0.6911112, abs=1e-6)
        assert len(transforms["frames"]) == count
        for index, frame in enumerate(transforms["frames"]):
            assert set(frame) == {"file_path", "rotation", "transform_matrix"}
            assert frame["file_path"] == f"./{split}/r_{index}"  # no extension, like Blender's
            assert frame["rotation"] == 0.0
            matrix = frame["transform_matrix"]
            assert len(matrix) == 4 and all(len(row) == 4 and all(isinstance(x, float) for x in row) for row in matrix)
            image = iio.imread(out_dir / f"{frame['file_path']}.png")
            assert image.dtype == np.uint8 and image.shape == (32, 32, 4)
            alpha = image[..., 3]
            assert alpha.min() == 0 and alpha.max() == 255  # transparent background, opaque objects
            assert (image[..., :3][alpha == 0] == 0).all()


@pytest.mark.parametrize("name", list(SCENES))
def test_cameras_are_rigid_on_the_sphere_and_look_at_the_origin(datasets, name):
    for split in SPLITS:
        frames = json.loads((datasets[name] / f"transforms_{split}.json").read_text())["frames"]
        for frame in frames:
            c2w = np.array(frame["transform_matrix"], dtype=np.float64)
            rotation, eye = c2w[:3, :3], c2w[:3, 3]
            np.testing.assert_allclose(rotation.T @ rotation, np.eye(3), atol=1e-6)
            assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-6)
            np.testing.assert_array_equal(c2w[3], [0.0, 0.0, 0.0, 1.0])
            assert np.linalg.norm(eye) == pytest.approx(CAMERA_DISTANCE, abs=1e-5)
            np.testing.assert_allclose(-rotation[:, 2], unit(-eye), atol=1e-6)  # -z points at the origin
            assert abs(rotation[2, 0]) < 1e-6 and rotation[2, 1] > 0  # z-up: image right is horizontal, image up rises
            elevation = math.degrees(math.asin(eye[2] / np.linalg.norm(eye)))
            if split == "test":
                assert elevation == pytest.approx(30.0, abs=1e-4)
            else:
                assert -1e-6 <= elevation <= 80.0 + 1e-6  # upper hemisphere


def central_sphere(name):
    """(radius, albedo) of the solid sphere centred at the origin in scene `name`."""
    sphere = SCENES[name].build()[0]
    assert isinstance(sphere, Spheres) and sphere.centers.tolist() == [[0.0, 0.0, 0.0]]
    albedo = sphere.texture(torch.zeros(1, 3, dtype=torch.float64))[0].numpy()
    return float(sphere.radii[0]), albedo


# directions to the camera from the origin with a clear view of the central sphere's near point
VIEWS = {"top": (0.0, 0.0, 1.0), "side": (0.0, -1.0, 0.3), "lit": LIGHT_DIRECTION, "unlit": (-1.0, 0.6, 0.1)}


@pytest.mark.parametrize("direction", VIEWS.values(), ids=VIEWS.keys())
def test_centre_ray_hits_the_central_sphere_with_lambert_colour(direction):
    radius, albedo = central_sphere("primitives")
    eye = CAMERA_DISTANCE * unit(direction)
    up = (0.0, 1.0, 0.0) if direction == (0.0, 0.0, 1.0) else (0.0, 0.0, 1.0)
    # an odd size puts the centre pixel's ray on the optical axis: it meets the sphere at radius * direction
    rgba = render_view("primitives", look_at(tuple(eye), up=up).double(), 33, 33, CAMERA_ANGLE_X)
    assert rgba.shape == (33, 33, 4) and rgba.dtype == torch.float32
    assert rgba[16, 16, 3] == 1.0
    np.testing.assert_allclose(rgba[16, 16, :3].numpy(), lambert_closed_form(albedo, direction), atol=1e-6)
    depth, rgb = cast_rays("primitives", torch.tensor(eye)[None], torch.tensor(-eye)[None])
    assert depth.item() == pytest.approx(CAMERA_DISTANCE - radius, abs=1e-12)
    np.testing.assert_allclose(rgb[0].numpy(), lambert_closed_form(albedo, direction), atol=1e-12)


# rays onto the faces of the box (primitive 1, [0.4, 1.0] x [-1.0, -0.4] x [-0.9, -0.3]) and of the cylinder
# (primitive 2, axis x = -0.85, y = -0.45, radius 0.3, z in [-0.9, 0.1]) of "primitives": origin, direction, depth, normal
FACES = {
    "box top": (1, (0.7, -0.7, 4.0), (0.0, 0.0, -1.0), 4.3, (0.0, 0.0, 1.0)),
    "box bottom": (1, (0.7, -0.7, -4.0), (0.0, 0.0, 1.0), 3.1, (0.0, 0.0, -1.0)),
    "box side": (1, (4.0, -0.7, -0.6), (-1.0, 0.0, 0.0), 3.0, (1.0, 0.0, 0.0)),
    "box front": (1, (0.7, -4.0, -0.6), (0.0, 1.0, 0.0), 3.0, (0.0, -1.0, 0.0)),
    "box side, oblique": (1, (3.0, -0.7, 1.4), (-(0.5**0.5), 0.0, -(0.5**0.5)), 8**0.5, (1.0, 0.0, 0.0)),
    "cylinder side": (2, (-0.85, -4.0, -0.4), (0.0, 1.0, 0.0), 3.25, (0.0, -1.0, 0.0)),
    "cylinder top": (2, (-0.85, -0.45, 4.0), (0.0, 0.0, -1.0), 3.9, (0.0, 0.0, 1.0)),
    "cylinder bottom": (2, (-0.85, -0.45, -4.0), (0.0, 0.0, 1.0), 3.1, (0.0, 0.0, -1.0)),
}


@pytest.mark.parametrize("index, origin, direction, distance, normal", FACES.values(), ids=FACES.keys())
def test_box_and_cylinder_faces_have_exact_depth_and_lambert_colour(index, origin, direction, distance, normal):
    primitive = SCENES["primitives"].build()[index]
    point = torch.tensor(origin, dtype=torch.float64) + distance * torch.tensor(direction, dtype=torch.float64)
    albedo = primitive.texture(point[None])[0].numpy()
    depth, rgb = cast_rays("primitives", torch.tensor([origin]), torch.tensor([direction]))
    assert depth.item() == pytest.approx(distance, abs=1e-12)
    np.testing.assert_allclose(rgb[0].numpy(), lambert_closed_form(albedo, normal), atol=1e-12)


def test_every_pixel_on_the_sphere_matches_a_float64_closed_form():
    """Rays within the sphere's silhouette are opaque; where the sphere is the first hit, depth and colour are exact."""
    radius, albedo = central_sphere("primitives")
    eye = np.array([1.0, -3.0, 2.0]) / np.sqrt(14.0) * CAMERA_DISTANCE
    c2w = look_at(tuple(eye), up=(0.0, 0.0, 1.0)).double()
    size = 48
    focal = 0.5 * size / math.tan(0.5 * CAMERA_ANGLE_X)
    rows, columns = np.mgrid[0:size, 0:size] + 0.5
    local = np.stack([(columns - size / 2) / focal, (size / 2 - rows) / focal, -np.ones_like(rows)], axis=-1)
    directions = local.reshape(-1, 3) @ c2w[:3, :3].numpy().T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    along = -(directions @ eye)  # ray-sphere: t^2 - 2 along t + |eye|^2 - r^2 = 0
    discriminant = along**2 - (eye @ eye - radius**2)
    inside = discriminant > 1e-4
    t = along - np.sqrt(np.where(inside, discriminant, 0.0))
    normals = eye + t[:, None] * directions
    expected = albedo * (AMBIENT + (1 - AMBIENT) * np.clip(normals @ np.asarray(LIGHT_DIRECTION) / radius, 0, None))[:, None]

    rgba = render_view("primitives", c2w, size, size, CAMERA_ANGLE_X).reshape(-1, 4).double().numpy()
    depth, rgb = cast_rays("primitives", torch.tensor(eye).expand(size * size, 3), torch.tensor(directions))
    depth, rgb = depth.numpy(), rgb.numpy()
    assert inside.sum() > 200
    assert (rgba[inside, 3] == 1.0).all() and (depth[inside] <= t[inside] + 1e-9).all()
    on_sphere = inside & (np.abs(depth - t) < 1e-9)
    assert on_sphere.sum() > 0.8 * inside.sum()  # a few rays meet the box in front first
    np.testing.assert_allclose(rgb[on_sphere], expected[on_sphere], atol=1e-12)
    np.testing.assert_allclose(rgba[on_sphere, :3], expected[on_sphere], atol=1e-6)
    # the images agree with the rays, and misses are transparent black
    np.testing.assert_array_equal(rgba[:, 3], np.isfinite(depth))
    np.testing.assert_allclose(rgba[:, :3], rgb, atol=1e-6)


@pytest.mark.parametrize("name", list(SCENES))
def test_scenes_lie_inside_the_bounding_cube(name):
    generator = torch.Generator().manual_seed(0)
    eyes = torch.nn.functional.normalize(torch.randn(4000, 3, generator=generator, dtype=torch.float64), dim=-1) * CAMERA_DISTANCE
    targets = (torch.rand(4000, 3, generator=generator, dtype=torch.float64) * 2 - 1) * BOUND
    depth, rgb = cast_rays(name, eyes, targets - eyes)
    hit = torch.isfinite(depth)
    assert hit.sum() > 400
    points = eyes[hit] + depth[hit, None] * torch.nn.functional.normalize(targets - eyes, dim=-1)[hit]
    assert points.abs().max() <= BOUND
    assert ((rgb >= 0) & (rgb <= 1)).all() and (rgb[~hit] == 0).all()


def test_textures_pick_cells_by_world_position():
    a, b = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    points = torch.tensor([[0.5, 0.5, 0.5], [1.5, 0.5, 0.5], [-0.5, 0.5, 0.5], [-0.5, -0.5, 0.5], [2.5, 1.5, -0.5]])
    torch.testing.assert_close(checker(1.0, a, b)(points.double()), torch.tensor([a, b, b, a, a], dtype=torch.float64))
    heights = torch.tensor([[0.0, 0.0, 0.05], [0.0, 0.0, 0.15], [0.0, 0.0, -0.05], [9.0, -9.0, 0.25]], dtype=torch.float64)
    torch.testing.assert_close(stripes(2, 0.2, a, b)(heights), torch.tensor([a, b, b, a], dtype=torch.float64))
    # 4 x 2 cells around (1, 1, 1): longitude from -pi, colatitude from the +z pole
    center = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    directions = torch.tensor([[-1.0, -0.1, 0.5], [-1.0, 0.1, 0.5], [1.0, 0.1, 0.5], [1.0, 0.1, -0.5]], dtype=torch.float64)
    expected = torch.tensor([a, b, a, b], dtype=torch.float64)
    torch.testing.assert_close(sphere_checker(center.tolist(), 4, 2, a, b)(center + 0.3 * directions), expected)


def test_supersampling_averages_the_subpixel_rays_with_premultiplied_alpha():
    c2w = look_at((0.0, -CAMERA_DISTANCE, 1.0), up=(0.0, 0.0, 1.0))
    antialiased = render_view("detail", c2w, 24, 24, CAMERA_ANGLE_X, supersample=2).double()
    fine = render_view("detail", c2w, 48, 48, CAMERA_ANGLE_X).double()  # its pixel centres are the 2 x 2 subpixel rays
    premultiplied = torch.cat([fine[..., :3] * fine[..., 3:], fine[..., 3:]], dim=-1).reshape(24, 2, 24, 2, 4).mean(dim=(1, 3))
    torch.testing.assert_close(antialiased[..., 3], premultiplied[..., 3], atol=1e-6, rtol=0)
    torch.testing.assert_close(antialiased[..., :3] * antialiased[..., 3:], premultiplied[..., :3], atol=1e-6, rtol=0)
    assert ((antialiased[..., 3] > 0) & (antialiased[..., 3] < 1)).sum() > 20  # soft edges


def test_detail_scene_has_high_frequencies_and_thin_rings():
    pixels = 1001  # one row or column of an image 1001 pixels wide, about 350 pixels per world unit at the origin
    narrow = 2 * math.atan(math.tan(CAMERA_ANGLE_X / 2) / pixels)  # the field of view of one of its pixels
    # from the side, the sphere's stripes (0.025 world units wide, about 8 pixels here) flip colour along the centre column
    column = render_view("detail", look_at((0.0, -CAMERA_DISTANCE, 0.0), up=(0.0, 0.0, 1.0)), 1, pixels, narrow)[:, 0].numpy()
    luminance = column[column[:, 3] == 1, :3].sum(axis=-1)
    assert (np.abs(np.diff(luminance)) > 0.3).sum() >= 50
    # from above, the 16 rings with gaps alternate opaque and transparent along a radius, beyond the bumpy sphere
    row = render_view("detail", look_at((0.0, 0.0, CAMERA_DISTANCE)), pixels, 1, CAMERA_ANGLE_X)[0].numpy()
    focal = 0.5 * pixels / math.tan(CAMERA_ANGLE_X / 2)
    radius = (np.arange(pixels) + 0.5 - pixels / 2) / focal * CAMERA_DISTANCE  # world units in the plane z = 0
    alpha = row[radius > 0.95, 3]
    assert (np.diff(alpha) == 1).sum() == 16 and (np.diff(alpha) == -1).sum() == 16
    assert 0.4 < alpha.mean() * (radius.max() - 0.95) / (1.35 - 1.0) < 0.6  # rings cover half their annulus


def test_same_seed_writes_identical_bytes_and_another_seed_moves_only_train_and_val(tmp_path):
    first, second = small_dataset("textured", tmp_path / "a"), small_dataset("textured", tmp_path / "b")
    other = small_dataset("textured", tmp_path / "c", seed=1)
    files = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert len(files) == 3 + sum(SPLITS.values())
    for path in files:
        assert (first / path).read_bytes() == (second / path).read_bytes()
    assert (first / "transforms_test.json").read_bytes() == (other / "transforms_test.json").read_bytes()
    for split in ("train", "val"):
        assert (first / f"transforms_{split}.json").read_bytes() != (other / f"transforms_{split}.json").read_bytes()


def test_command_line_writes_a_dataset_and_reports_errors(tmp_path, capsys):
    assert main(["primitives", str(tmp_path / "cli"), "--size", "16", "--train", "2", "--val", "1", "--test", "3"]) == 0
    assert "2 train, 1 val, 3 test" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "cli" / "transforms_test.json").read_text())["frames"]) == 3
    assert iio.imread(tmp_path / "cli" / "test" / "r_2.png").shape == (16, 16, 4)
    assert main(["no-such-scene", str(tmp_path / "bad")]) == 1
    error = capsys.readouterr().err
    assert "no-such-scene" in error and error.count("\n") == 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda tmp: generate("lego", tmp), "unknown synthetic scene 'lego'"),
        (lambda tmp: generate("primitives", tmp, size=0), "size must be an integer >= 1"),
        (lambda tmp: generate("primitives", tmp, n_test=2.5), "n_test must be an integer"),
        (lambda tmp: generate("primitives", tmp, seed=-1), "seed must be an integer >= 0"),
        (lambda tmp: render_view("primitives", torch.eye(4), 8, 8, math.pi), "fov_x must be an angle"),
        (lambda tmp: render_view("primitives", torch.eye(3), 8, 8, 0.7), "c2w must be a (4, 4)"),
        (lambda tmp: render_view("primitives", torch.eye(4), 8, -1, 0.7), "height must be an integer"),
        (lambda tmp: cast_rays("primitives", torch.zeros(4, 3), torch.ones(5, 3)), "origins and directions"),
    ],
)
def test_bad_arguments_raise_one_line_nfield_errors(tmp_path, call, message):
    with pytest.raises(NfieldError) as error:
        call(tmp_path / "out")
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_generator_runs_from_any_folder(tmp_path):
    """`python -m scenes.synthetic` is installed with nfield, not only importable from the repository root."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, "-m", "scenes.synthetic", "primitives", "out", "--size", 8, "--train", 1, "--val", 1, "--test", 1]
    done = subprocess.run(list(map(str, argv)), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "transforms_train.json").is_file()
