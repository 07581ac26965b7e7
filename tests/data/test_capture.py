"""process-data: a generated textured scene rendered from known cameras goes through COLMAP and comes
back with the cameras' poses; a generated video is sampled to its sharpest frames; bad inputs get
one line and leave no scene folder."""

import json
import math
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from nfield.data.capture import (
    CaptureOptions,
    compare_poses,
    focus_point,
    normalise_poses,
    rotation_between,
    sample_video,
)
from nfield.data.scenes import load_scene
from nfield.errors import NfieldError
from tests.run_checks import cli

pycolmap = pytest.importorskip("pycolmap", reason="process-data's COLMAP tests need pycolmap (nfield[capture])")

WIDTH, HEIGHT, FOCAL = 200, 150, 180.0


def texture(seed: int, size: int = 256) -> np.ndarray:
    """(size, size, 3) float texture with detail at several scales (SIFT finds features in it)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size, 3))
    for cells in (4, 16, 64):
        coarse = rng.random((cells, cells, 3))
        out += np.kron(coarse, np.ones((size // cells, size // cells, 1))) / 3
    return out


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) OpenGL camera-to-world at `eye` looking at `target`, +z up."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def render(c2w: np.ndarray, faces: list) -> np.ndarray:
    """A pinhole view (HEIGHT, WIDTH, 3) uint8 of textured axis-aligned squares: (axis, offset, texture)."""
    j, i = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5
    directions = np.stack([(i - WIDTH / 2) / FOCAL, -(j - HEIGHT / 2) / FOCAL, -np.ones_like(i)], -1) @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    image, depth = np.full((HEIGHT, WIDTH, 3), 0.5), np.full((HEIGHT, WIDTH), np.inf)
    for axis, offset, half, tex in faces:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (offset - origin[axis]) / directions[..., axis]
        hit = origin + t[..., None] * directions
        others = [a for a in range(3) if a != axis]
        u, v = hit[..., others[0]], hit[..., others[1]]
        inside = (t > 0) & (np.abs(u) < half) & (np.abs(v) < half) & (t < depth)
        rows = ((v / half * 0.5 + 0.5) * (tex.shape[0] - 1)).clip(0, tex.shape[0] - 1).astype(int)
        cols = ((u / half * 0.5 + 0.5) * (tex.shape[1] - 1)).clip(0, tex.shape[1] - 1).astype(int)
        image[inside] = tex[rows[inside], cols[inside]]
        depth = np.where(inside, t, depth)
    return (image * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """12 photos of a textured floor and two textured walls from cameras on an arc: (folder, c2w)."""
    folder = tmp_path_factory.mktemp("capture") / "photos"
    folder.mkdir()
    faces = [(2, -1.0, 3.0, texture(0)), (0, -2.5, 3.0, texture(1)), (1, -2.5, 3.0, texture(2))]
    poses = []
    for k, angle in enumerate(np.linspace(0.2, 1.4, 12)):
        eye = np.array([2.5 * math.cos(angle), 2.5 * math.sin(angle), 0.6])
        c2w = look_at(eye, np.array([-0.5, -0.5, -0.6]))
        iio.imwrite(folder / f"view_{k:02d}.png", render(c2w, faces))
        poses.append(c2w)
    return folder, np.stack(poses)


def test_photos_of_a_known_scene_come_back_with_their_poses(captured, tmp_path, capsys):
    folder, truth = captured
    argv = ("process-data", folder, "--out", tmp_path / "scene", "--downscale", 2, "--camera-model", "PINHOLE", "--no-progress")
    status, out, err = cli(capsys, *argv)  # the views have no distortion: the fox checks the default OPENCV model
    assert status == 0, err
    summary = json.loads(out[-1])
    assert summary["registered"] == summary["images"] == 12
    assert summary["mean_reprojection_error"] < 1.0 and summary["points"] > 100
    assert "registered 12 of 12 images" in err
    header = json.loads((tmp_path / "scene" / "transforms.json").read_text())
    assert header["fl_x"] == pytest.approx(FOCAL, rel=0.03) and header["cx"] == pytest.approx(WIDTH / 2, abs=2)
    c2w = np.array([frame["transform_matrix"] for frame in header["frames"]])
    rotation_deg, centre_share = compare_poses(c2w, truth)
    assert np.median(rotation_deg) < 0.5 and np.median(centre_share) < 0.01
    assert np.linalg.norm(c2w[:, :3, 3], axis=1).mean() == pytest.approx(4.0)
    assert (tmp_path / "scene" / "images_2" / "view_00.png").is_file() and (
        tmp_path / "scene" / "colmap" / "sparse" / "0"
    ).is_dir()
    scene = load_scene(tmp_path / "scene")  # what train-nerf reads
    assert scene.dialect == "instant-ngp" and len(scene.train) + len(scene.test) == 12
    assert not list(tmp_path.glob(".scene.tmp-*"))

    model = tmp_path / "scene" / "colmap" / "sparse" / "0"  # the same model, converted again
    status, out, err = cli(capsys, "process-data", folder, "--out", tmp_path / "again", "--colmap-model", model, "--no-progress")
    assert status == 0, err
    again = json.loads((tmp_path / "again" / "transforms.json").read_text())
    assert np.allclose(np.array([f["transform_matrix"] for f in again["frames"]]), c2w)


def test_bad_inputs_get_one_line_and_leave_no_scene(captured, tmp_path, capsys):
    folder, _ = captured
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    for name in ("view_00.png", "view_01.png"):
        (tmp_path / "two" / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 100)
    unrelated = tmp_path / "unrelated"  # 4 views of the scene and 6 of noise nothing else shows
    unrelated.mkdir()
    for name in sorted(p.name for p in folder.iterdir())[:4]:
        (unrelated / name).write_bytes((folder / name).read_bytes())
    for k in range(6):
        iio.imwrite(unrelated / f"noise_{k}.png", np.random.default_rng(k).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    cases = [
        (tmp_path / "nothing", "no such folder or video file"),
        (tmp_path / "empty", "no images"),
        (tmp_path / "two", "2 image(s); a scene needs at least 3"),
        (tmp_path / "broken.mp4", "cannot read it as a video"),
        (unrelated, "COLMAP registered"),
    ]
    for source, message in cases:
        status, _, err = cli(capsys, "process-data", source, "--out", tmp_path / "scene", "--no-progress")
        assert status == 1 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "scene").exists() and not list(tmp_path.glob(".scene.tmp-*"))
    status, _, err = cli(capsys, "process-data", unrelated, "--out", tmp_path / "scene", "--no-progress")
    assert "noise_" in err and "dropped" in err
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("x")
    status, _, err = cli(capsys, "process-data", folder, "--out", tmp_path / "kept", "--no-progress")
    assert status == 1 and "is not empty" in err and (tmp_path / "kept" / "mine.txt").is_file()


def test_without_pycolmap_the_command_says_how_to_install_it(captured, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycolmap", None)  # import pycolmap now raises ImportError
    status, _, err = cli(capsys, "process-data", captured[0], "--out", tmp_path / "scene", "--no-progress")
    assert status == 1 and "pip install 'nfield[capture]'" in err and not (tmp_path / "scene").exists()


def test_a_video_keeps_the_sharpest_frame_of_each_stretch(tmp_path):
    base = texture(5)[:120, :160]
    frames = []
    for k in range(30):
        frame = np.roll(base, 2 * k, axis=1)
        if k % 3 != 1:  # two of every three frames blurred: only the middle one of each stretch is sharp
            frame = (frame + np.roll(frame, 1, 0) + np.roll(frame, -1, 0) + np.roll(frame, 1, 1) + np.roll(frame, -1, 1)) / 5
        frames.append((frame * 255).astype(np.uint8))
    iio.imwrite(tmp_path / "clip.mp4", np.stack(frames), fps=10, codec="libx264", quality=9)
    (tmp_path / "frames").mkdir()
    names, sharpness = sample_video(tmp_path / "clip.mp4", tmp_path / "frames", 10, progress=False)
    assert names == [f"frame_{3 * w + 2:05d}.jpg" for w in range(10)]  # frame 3w + 1, numbered from 1
    assert all(sharpness[n] > 0 for n in names) and len(list((tmp_path / "frames").iterdir())) == 10


def test_orientation_centre_and_scale_follow_the_anchors():
    up = np.array([0.3, -0.2, 0.9]) / np.linalg.norm([0.3, -0.2, 0.9])
    rotation = rotation_between(up, np.array([0.0, 0.0, 1.0]))
    assert np.allclose(rotation @ up, [0, 0, 1]) and np.allclose(rotation.T @ rotation, np.eye(3))
    origins = np.array([[3.0, 0, 0], [0, 3.0, 0], [-3.0, 0, 0], [0, -3.0, 0]]) + [1.0, 2.0, 3.0]
    assert np.allclose(focus_point(origins, [1.0, 2.0, 3.0] - origins), [1.0, 2.0, 3.0])
    parallel = np.tile([[0.0, 0.0, -1.0]], (4, 1))
    assert np.allclose(focus_point(origins, parallel), origins.mean(axis=0))  # forward-facing: the mean centre
    poses = np.stack([look_at(o * 10, np.array([10.0, 20.0, 30.0])) for o in origins])
    c2w, _, aabb_scale = normalise_poses(poses, np.zeros((0, 3)))
    assert np.allclose(np.linalg.norm(c2w[:, :3, 3], axis=1), 4.0) and aabb_scale == 4  # 4 / (2 x 0.33) = 6.1 >= 4
    assert np.allclose(c2w[:, :3, 1].mean(0) / np.linalg.norm(c2w[:, :3, 1].mean(0)), [0, 0, 1])
    with pytest.raises(NfieldError, match="--frames must be at least 3"):
        CaptureOptions(frames=2)
