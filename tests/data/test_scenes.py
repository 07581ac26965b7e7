import json
import math
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfield.data.scenes import load_scene
from nfield.errors import NfieldError
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import look_at

FOX = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nerf" / "fox"


def pixels(seed, height=6, width=8, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def single_file_scene(folder, n=10, header=None, frame_extra=None, size=(6, 8), camera_model=None):
    """An instant-ngp (or, with camera_model, nerfstudio) scene of n PNGs listed in reverse name order."""
    poses = orbit_poses(n, radius=4.0)
    frames, images = [], {}
    for index in reversed(range(n)):
        name = f"images/{index:03d}.png"
        images[name] = pixels(index, *size)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        iio.imwrite(folder / name, images[name])
        frames.append({"file_path": name, "transform_matrix": poses[index].tolist(), **(frame_extra or {}).get(index, {})})
    data = {"fl_x": 7.0, "w": size[1], "h": size[0], **(header or {}), "frames": frames}
    if camera_model:
        data = {"camera_model": camera_model, "fl_y": 7.5, **data}
    write_json(folder / "transforms.json", data)
    return images, poses


def blender_scene(folder, angle=0.6):
    images = {}
    for split, count in (("train", 3), ("test", 2), ("val", 1)):
        frames = []
        for index in range(count):
            images[f"{split}/r_{index}.png"] = pixels(len(images), channels=4)
            (folder / split).mkdir(parents=True, exist_ok=True)
            iio.imwrite(folder / f"{split}/r_{index}.png", images[f"{split}/r_{index}.png"])
            pose = look_at((4.0 * math.cos(index), 1.0, 4.0 * math.sin(index)))
            frames.append({"file_path": f"./{split}/r_{index}", "rotation": 0.1, "transform_matrix": pose.tolist()})
        write_json(folder / f"transforms_{split}.json", {"camera_angle_x": angle, "frames": frames})
    return images


def test_blender_scene_reads_rgba_and_focal_from_camera_angle(tmp_path):
    images = blender_scene(tmp_path)
    for source in (tmp_path, tmp_path / "transforms_train.json"):
        scene = load_scene(source)
        assert scene.dialect == "blender"
        assert scene.train.names == ["train/r_0.png", "train/r_1.png", "train/r_2.png"]
        assert scene.test.names == ["test/r_0.png", "test/r_1.png"]
        assert scene.train.images.dtype == torch.uint8 and scene.train.images.shape == (3, 6, 8, 4)
        for split in (scene.train, scene.test):
            for name, image in zip(split.names, split.images):
                assert np.array_equal(image.numpy(), images[name])
        cameras = scene.train.cameras
        focal = 0.5 * 8 / math.tan(0.3)
        assert torch.allclose(cameras.fx, torch.full((3,), focal)) and torch.allclose(cameras.fy, torch.full((3,), focal))
        assert cameras.cx.tolist() == [4.0] * 3 and cameras.cy.tolist() == [3.0] * 3
        assert cameras.width.tolist() == [8] * 3 and cameras.height.tolist() == [6] * 3
        assert cameras.c2w.dtype == torch.float32 and torch.allclose(
            cameras.c2w[1], look_at((4 * math.cos(1), 1.0, 4 * math.sin(1)))
        )
        assert not cameras.distortion.any()
        assert torch.equal(scene.aabb, torch.tensor([[-1.5] * 3, [1.5] * 3]))
        assert 0 < scene.near < 0.1


def test_ngp_scene_holds_out_every_8th_frame_and_reads_intrinsics(tmp_path):
    distortion = {"k1": 0.1, "k2": -0.05, "p1": 0.001, "p2": -0.002}
    header = {"fl_y": 7.5, "cx": 3.9, "cy": 3.1, "aabb_scale": 4, "scale": 0.5, "offset": [0.5, 0.25, 1.0], **distortion}
    images, poses = single_file_scene(tmp_path, n=10, header=header)
    scene = load_scene(tmp_path)
    assert scene.dialect == "instant-ngp"
    assert scene.test.names == ["images/000.png", "images/008.png"]
    assert scene.train.names == [f"images/{i:03d}.png" for i in (1, 2, 3, 4, 5, 6, 7, 9)]
    assert torch.allclose(scene.test.cameras.c2w, poses[[0, 8]])
    assert np.array_equal(scene.train.images[-1].numpy(), images["images/009.png"])
    assert scene.train.images.shape == (8, 6, 8, 3)
    cameras = scene.train.cameras
    assert torch.allclose(torch.stack([cameras.fx, cameras.fy, cameras.cx, cameras.cy])[:, 0], torch.tensor([7.0, 7.5, 3.9, 3.1]))
    assert torch.allclose(cameras.distortion, torch.tensor([[0.1, -0.05, 0.001, -0.002]]).expand(8, 4))
    # ((0.5 -+ 4 / 2) - offset) / 0.5 per axis
    assert torch.allclose(scene.aabb, torch.tensor([[-4.0, -3.5, -5.0], [4.0, 4.5, 3.0]]))


def test_ngp_defaults_camera_angle_fallback_and_per_frame_override(tmp_path):
    header = {"fl_x": None, "camera_angle_x": 1.0, "camera_angle_y": 0.8}
    single_file_scene(tmp_path, n=3, header=header, frame_extra={1: {"fl_x": 9.0, "cx": 5.0}})
    data = json.loads((tmp_path / "transforms.json").read_text())
    del data["fl_x"], data["w"], data["h"]
    write_json(tmp_path / "transforms.json", data)
    scene = load_scene(tmp_path / "transforms.json", holdout_every=3)
    cameras = scene.train.cameras  # frames 1 and 2
    assert cameras.fx.tolist() == pytest.approx([9.0, 4.0 / math.tan(0.5)])
    assert cameras.fy.tolist() == pytest.approx([3.0 / math.tan(0.4)] * 2)
    assert cameras.cx.tolist() == [5.0, 4.0] and cameras.cy.tolist() == [3.0, 3.0]
    half = 0.5 / 0.33  # aabb_scale 1, scale 0.33, offset 0.5
    assert torch.allclose(scene.aabb, torch.tensor([[-half] * 3, [half] * 3]))


def test_nerfstudio_per_frame_intrinsics_and_camera_box(tmp_path):
    extra = {index: {"fl_x": 6.0 + index, "k1": 0.01 * index} for index in range(9)}
    _, poses = single_file_scene(tmp_path, n=9, frame_extra=extra, camera_model="OPENCV")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scene = load_scene(tmp_path)
    assert scene.dialect == "nerfstudio"
    assert scene.test.names == ["images/000.png", "images/008.png"] and len(scene.train) == 7
    assert scene.train.cameras.fx.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0]
    assert scene.test.cameras.distortion[:, 0].tolist() == pytest.approx([0.0, 0.08])
    assert scene.train.cameras.fy.tolist() == [7.5] * 7
    centres = poses[:, :3, 3].double()
    low, high = centres.min(0).values, centres.max(0).values
    half = 1.1 * (high - low).max() / 2
    expected = torch.stack([(low + high) / 2 - half, (low + high) / 2 + half]).float()
    assert torch.allclose(scene.aabb, expected, atol=1e-6)
    assert (scene.aabb[0] < centres.float()).all() and (centres.float() < scene.aabb[1]).all()


@pytest.mark.parametrize(
    "eyes, targets, match",
    [
        ([(math.cos(a), 0.0, math.sin(a)) for a in np.linspace(0, 6, 9)], "outward", "look towards the centre"),
        ([(0.0, 0.0, 3.0)] * 9, [(0.0, 0.0, 0.0)] * 9, "span no volume"),
    ],
    ids=["outward-facing", "degenerate"],
)
def test_nerfstudio_box_warns_when_bounds_look_wrong(tmp_path, eyes, targets, match):
    single_file_scene(tmp_path, n=9, camera_model="PINHOLE")
    data = json.loads((tmp_path / "transforms.json").read_text())
    for frame in data["frames"]:
        index = int(frame["file_path"][7:10])
        eye = torch.tensor(eyes[index])
        target = 3 * eye if targets == "outward" else targets[index]
        frame["transform_matrix"] = look_at(eye, target).tolist()
    write_json(tmp_path / "transforms.json", data)
    with pytest.warns(UserWarning, match=match):
        scene = load_scene(tmp_path)
    assert torch.isfinite(scene.aabb).all() and (scene.aabb[1] > scene.aabb[0]).all()


@pytest.mark.parametrize("factor, size", [(2, (6, 8)), (3, (7, 8))])
def test_downscale_box_filters_images_and_scales_intrinsics(tmp_path, factor, size):
    images, _ = single_file_scene(tmp_path, n=3, size=size, header={"cx": 3.0, "cy": 2.5})
    scene = load_scene(tmp_path, downscale=factor, holdout_every=3)
    height, width = size[0] // factor, size[1] // factor
    assert scene.train.images.shape == (2, height, width, 3) and scene.train.images.dtype == torch.uint8
    original = images["images/001.png"][: height * factor, : width * factor].astype(np.float64)
    mean = original.reshape(height, factor, width, factor, 3).mean(axis=(1, 3))
    assert np.array_equal(scene.train.images[0].numpy(), np.floor(mean + 0.5).astype(np.uint8))
    cameras = scene.train.cameras
    assert cameras.fx.tolist() == pytest.approx([7.0 / factor] * 2)
    assert cameras.cx.tolist() == pytest.approx([3.0 / factor] * 2) and cameras.cy.tolist() == pytest.approx([2.5 / factor] * 2)
    assert cameras.width.tolist() == [width] * 2 and cameras.height.tolist() == [height] * 2


def test_jpeg_grey_and_mixed_alpha_images(tmp_path):
    single_file_scene(tmp_path, n=3)
    iio.imwrite(tmp_path / "images/001.png", pixels(1, channels=4))
    iio.imwrite(tmp_path / "images/002.png", pixels(2)[..., 0])
    scene = load_scene(tmp_path, holdout_every=3)
    assert scene.train.images.shape == (2, 6, 8, 4)
    assert (scene.train.images[1, ..., 3] == 255).all()
    assert torch.equal(scene.train.images[1, ..., 0], scene.train.images[1, ..., 2])
    data = json.loads((tmp_path / "transforms.json").read_text())
    for frame in data["frames"]:
        iio.imwrite(tmp_path / frame["file_path"].replace(".png", ".jpg"), pixels(0))
        frame["file_path"] = frame["file_path"].replace(".png", ".jpg")
    write_json(tmp_path / "transforms.json", data)
    assert load_scene(tmp_path, holdout_every=2).train.images.shape == (1, 6, 8, 3)


def edit_json(change=lambda data: None):
    """Makes an instant-ngp scene of 3 frames whose json `change` (dict -> None) edits."""

    def make(folder):
        single_file_scene(folder, n=3)
        data = json.loads((folder / "transforms.json").read_text())
        change(data)
        write_json(folder / "transforms.json", data)

    return make


def set_matrix(data, matrix):
    data["frames"][1]["transform_matrix"] = matrix


def scaled(data):
    matrix = np.array(data["frames"][1]["transform_matrix"])
    matrix[:3, :3] *= 1.01
    set_matrix(data, matrix.tolist())


def reflected(data):
    matrix = np.array(data["frames"][1]["transform_matrix"])
    matrix[:3, 0] *= -1
    set_matrix(data, matrix.tolist())


def write_raw(text):
    def make(folder):
        single_file_scene(folder, n=3)
        (folder / "transforms.json").write_text(text)

    return make


def without_blender_test(folder):
    blender_scene(folder)
    (folder / "transforms_test.json").unlink()


def blender_without_angle(folder):
    blender_scene(folder)
    data = json.loads((folder / "transforms_test.json").read_text())
    del data["camera_angle_x"]
    write_json(folder / "transforms_test.json", data)


def different_sizes(folder):
    single_file_scene(folder, n=3)
    data = json.loads((folder / "transforms.json").read_text())
    del data["w"], data["h"]
    write_json(folder / "transforms.json", data)
    iio.imwrite(folder / "images/002.png", pixels(0, 6, 10))


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda folder: None, {}, "holds neither transforms.json"),
        (edit_json(), {"holdout_every": True}, "holdout_every must be an integer"),
        (without_blender_test, {}, "no transforms_test.json"),
        (write_raw('{"fl_x": 7,\n "frames": [\n  {"file_path": "a.png",}\n]}'), {}, "malformed JSON at line 3 column"),
        (write_raw("[1, 2]"), {}, "expected a JSON object"),
        (edit_json(lambda data: data.pop("frames")), {}, "missing key 'frames'"),
        (edit_json(lambda data: data.update(frames=[])), {}, "'frames' is empty"),
        (edit_json(lambda data: data["frames"][1].pop("transform_matrix")), {}, "frame 1: missing key 'transform_matrix'"),
        (edit_json(lambda data: data["frames"][0].pop("file_path")), {}, "frame 0: missing key 'file_path'"),
        (edit_json(lambda data: data.pop("fl_x")), {}, "missing key 'fl_x' \\(or 'camera_angle_x'\\)"),
        (edit_json(lambda data: data.update(fl_x="7")), {}, "'fl_x' must be a finite number"),
        (edit_json(lambda data: data.update(camera_model="OPENCV")), {}, "missing key 'fl_y'"),
        (edit_json(lambda data: data.update(camera_model="OPENCV_FISHEYE", fl_y=7)), {}, "not supported"),
        (edit_json(lambda data: data.update(k3=0.1)), {}, "'k3' is not supported"),
        (blender_without_angle, {}, "transforms_test.json: missing key 'camera_angle_x'"),
        (
            edit_json(lambda data: data["frames"][2].update(file_path="images/nope.png")),
            {},
            "1 of 3 frames point to missing images .*nope.png",
        ),
        (edit_json(lambda data: data.update(w=9)), {}, "image is 8x6 pixels but the json says w=9, h=6"),
        (different_sizes, {}, "the images of a split must share one size"),
        (edit_json(scaled), {}, r"frame 1 \(images/001.png\): transform_matrix is not rigid"),
        (edit_json(lambda data: set_matrix(data, [[0, 0, 0, 1]] * 4)), {}, "frame 1.*not rigid"),
        (edit_json(reflected), {}, "frame 1.*reflection"),
        (edit_json(lambda data: data["frames"][1]["transform_matrix"][0].__setitem__(0, float("nan"))), {}, "frame 1.*NaN"),
        (edit_json(lambda data: data["frames"][1]["transform_matrix"][3].__setitem__(0, 0.5)), {}, "last row"),
        (edit_json(lambda data: data["frames"][1]["transform_matrix"].pop()), {}, "must be 4 x 4"),
        (edit_json(lambda data: data["frames"][1]["transform_matrix"][0].pop()), {}, "4 rows of 4 numbers"),
        (edit_json(lambda data: data.update(offset=[0.5])), {}, "'offset' must be a list of 3"),
        (edit_json(lambda data: data.update(frames=data["frames"][:1])), {}, "none left to train on"),
        (edit_json(), {"downscale": 0}, "downscale must be an integer >= 1"),
        (edit_json(), {"downscale": 1.5}, "downscale must be an integer"),
        (edit_json(), {"downscale": 7}, "cannot be downscaled by 7"),
        (edit_json(), {"holdout_every": 1}, "holdout_every must be an integer >= 2"),
    ],
)
def test_bad_inputs_raise_one_line_errors(tmp_path, make, kwargs, match):
    make(tmp_path)
    with pytest.raises(NfieldError, match=match) as info:
        load_scene(tmp_path, **kwargs)
    assert "\n" not in str(info.value)


def test_missing_folder_and_unreadable_image(tmp_path):
    with pytest.raises(NfieldError, match="no such scene folder"):
        load_scene(tmp_path / "nope")
    single_file_scene(tmp_path, n=3)
    (tmp_path / "images/001.png").write_bytes(b"not a png")
    with pytest.raises(NfieldError, match="frame 1 .*cannot read"):
        load_scene(tmp_path)


def test_skip_missing_images_drops_frames_with_a_warning(tmp_path):
    single_file_scene(tmp_path, n=4)
    (tmp_path / "images/003.png").unlink()
    with pytest.warns(UserWarning, match="dropped 1 of 4 frames"):
        scene = load_scene(tmp_path, holdout_every=2, skip_missing_images=True)
    assert scene.test.names == ["images/000.png", "images/002.png"] and scene.train.names == ["images/001.png"]


@pytest.mark.skipif(not FOX.is_dir(), reason="shared data not available")
def test_fox_capture():
    frames = json.loads((FOX / "transforms.json").read_text())["frames"]
    present = sorted(frame["file_path"] for frame in frames if (FOX / frame["file_path"]).is_file())
    if len(present) < len(frames):  # the shared copy lists frames whose images it lacks
        with pytest.raises(NfieldError, match="point to missing images"):
            load_scene(FOX, downscale=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = load_scene(FOX, downscale=8, skip_missing_images=True)
    assert scene.dialect == "instant-ngp"
    assert scene.test.names == present[::8] and len(scene.train) + len(scene.test) == len(present)
    assert scene.train.images.shape[1:] == (240, 135, 3) and scene.test.images.shape[1:] == (240, 135, 3)
    half = 4 / 2 / 0.33  # aabb_scale 4, default scale and offset
    assert torch.allclose(scene.aabb, torch.tensor([[-half] * 3, [half] * 3]))
    cameras = scene.train.cameras
    assert cameras.width.unique().tolist() == [135] and cameras.height.unique().tolist() == [240]
    assert cameras.fx[0].item() == pytest.approx(1375.52 / 8) and cameras.cy[0].item() == pytest.approx(965.268 / 8)
    assert cameras.distortion[0].tolist() == pytest.approx([0.0578421, -0.0805099, -0.000980296, 0.00015575])
    c2w = torch.cat([scene.train.cameras.c2w, scene.test.cameras.c2w]).double()
    assert torch.isfinite(c2w).all()
    rotation = c2w[:, :3, :3]
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, torch.eye(3, dtype=torch.float64).expand_as(rotation), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(len(c2w), dtype=torch.float64), atol=1e-5)
