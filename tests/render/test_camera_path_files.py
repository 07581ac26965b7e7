"""Reading camera-path files (nerfstudio's and instant-ngp's), against the poses they were written from."""

import json

import numpy as np
import pytest
import torch

from nfield.errors import NfieldError
from nfield.render.camera_path_files import load_camera_path
from nfield.render.camera_paths import orbit_poses


def test_load_nerfstudio_camera_path_round_trip(tmp_path):
    poses = orbit_poses(5, radius=2.5, elevation_deg=15.0, target=(1.0, 2.0, 3.0))
    fovs = [40.0, 45.0, 50.0, 55.0, 60.0]
    document = {
        "camera_type": "perspective",
        "render_width": 640,
        "render_height": 360,
        "fps": 24,
        "camera_path": [
            {"camera_to_world": pose.flatten().tolist(), "fov": fov, "aspect": 16 / 9} for pose, fov in zip(poses, fovs)
        ],
    }
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps(document))
    loaded, fov_y_deg, size = load_camera_path(str(path))
    torch.testing.assert_close(loaded, poses)
    torch.testing.assert_close(fov_y_deg, torch.tensor(fovs))
    assert size == (640, 360)


def test_load_instant_ngp_camera_path(tmp_path):
    """R, T in ngp's frame map back to the NeRF pose that instant-ngp's nerf_matrix_to_ngp sends there."""
    scale, offset = 0.5, np.array([0.5, 0.4, 0.3])
    rng = np.random.default_rng(0)
    quaternions = rng.normal(size=(3, 4))  # (x, y, z, w), as ngp saves them
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    translations = rng.normal(size=(3, 3))
    entries = [
        {"R": q.tolist(), "T": t.tolist(), "fov": 50.0, "scale": 1.0, "slice": 0.0, "dof": 0.0}
        for q, t in zip(quaternions, translations)
    ]
    path = tmp_path / "base_cam.json"
    path.write_text(json.dumps({"path": entries, "time": 0.0}))
    loaded, fov_y_deg, size = load_camera_path(str(path), ngp_scale=scale, ngp_offset=offset.tolist())
    assert size is None
    torch.testing.assert_close(fov_y_deg, torch.full((3,), 50.0))
    for pose, (x, y, z, w), t in zip(loaded.double().numpy(), quaternions, translations):
        # instant-ngp's nerf_matrix_to_ngp, written out
        ngp = np.array(
            [
                [pose[1, 0], -pose[1, 1], -pose[1, 2], pose[1, 3] * scale + offset[0]],
                [pose[2, 0], -pose[2, 1], -pose[2, 2], pose[2, 3] * scale + offset[1]],
                [pose[0, 0], -pose[0, 1], -pose[0, 2], pose[0, 3] * scale + offset[2]],
            ]
        )
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        np.testing.assert_allclose(ngp, np.concatenate([rotation, t[:, None]], axis=1), atol=1e-5)


def test_load_transform_matrix_entries(tmp_path):
    poses = orbit_poses(3, radius=2.0)
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"path": [{"transform_matrix": pose[:3].tolist()} for pose in poses]}))
    loaded, fov_y_deg, size = load_camera_path(str(path))
    torch.testing.assert_close(loaded, poses)
    assert fov_y_deg is None and size is None


GOOD_ENTRY = {"camera_to_world": torch.eye(4).flatten().tolist(), "fov": 50.0}


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not a JSON file"),
        (json.dumps([GOOD_ENTRY]), "expected a nerfstudio camera path"),
        (json.dumps({"camera_path": []}), "non-empty list"),
        (json.dumps({"camera_path": [{"fov": 50.0}]}), "no 'camera_to_world'"),
        (json.dumps({"camera_path": [{"camera_to_world": [1.0] * 15}]}), "16 finite numbers"),
        (
            json.dumps({"camera_path": [{"camera_to_world": [[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]}]}),
            "16 finite",
        ),
        (
            json.dumps({"camera_path": [{**GOOD_ENTRY, "camera_to_world": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 2, 3, 4, 1]}]}),
            "column-major",
        ),
        (json.dumps({"camera_path": [{**GOOD_ENTRY, "fov": 0}]}), "fov"),
        (
            json.dumps({"camera_path": [GOOD_ENTRY, {"camera_to_world": GOOD_ENTRY["camera_to_world"]}]}),
            "some cameras have a 'fov'",
        ),
        (json.dumps({"camera_path": [GOOD_ENTRY], "render_width": 640}), "render_height"),
        (json.dumps({"camera_path": [GOOD_ENTRY], "camera_type": "fisheye"}), "camera_type"),
        (json.dumps({"path": [{"R": [0, 0, 0, 1]}]}), "needs 'R' and 'T'"),
        (json.dumps({"path": [{"R": [0, 0, 0, 0], "T": [0, 0, 0]}]}), "zero quaternion"),
        (json.dumps({"path": [{"R": [0, 0, 1], "T": [0, 0, 0]}]}), "R must be a list of 4"),
    ],
)
def test_bad_camera_path_files_raise_one_line(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(NfieldError, match=match) as error:
        load_camera_path(str(path))
    assert "\n" not in str(error.value)


def test_missing_camera_path_file(tmp_path):
    with pytest.raises(NfieldError, match="cannot read"):
        load_camera_path(str(tmp_path / "missing.json"))
