"""The NeRF task on CUDA: the ngp preset with float16 autocast learns a generated scene, renders a video."""

import json

import pytest

from nfield.cli import main
from scenes.synthetic import generate

pytestmark = pytest.mark.gpu


def test_ngp_trains_with_mixed_precision_on_cuda_and_renders(tmp_path, capsys):
    scene = generate("primitives", tmp_path / "primitives", size=128, n_train=60, n_val=1, n_test=6)
    out = tmp_path / "run"
    status = main(
        [
            "train-nerf",
            str(scene),
            "--device",
            "cuda",
            "--steps",
            "1500",
            "--eval-every",
            "1500",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert status == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["psnr"] > 28
    assert (
        main(["render", str(out), "--device", "cuda", "--frames", "4", "--width", "320", "--height", "240", "--no-progress"]) == 0
    )
    # an mp4, or its frames where the machine has no ffmpeg (nfield.video.write_video)
    assert (out / "orbit.mp4").is_file() or len(list((out / "orbit_frames").glob("frame_*.png"))) == 4
