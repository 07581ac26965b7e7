"""The SDF task on CUDA: exact ground truth on the GPU, an NGLOD fit, and its renders."""

import json
from pathlib import Path

import pytest
import torch

from nfield.cli import main
from nfield.data.meshes import load_shape, sample_surface
from nfield.geometry.distance import signed_distance

BUNNY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdf" / "bunny.obj"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not BUNNY.exists(), reason="shared data not available")]


def test_torch_signed_distance_on_cuda_matches_libigl():
    bunny = load_shape(BUNNY)
    generator = torch.Generator().manual_seed(0)
    points = torch.cat([torch.rand(50000, 3, generator=generator) * 2 - 1, sample_surface(bunny, 50000, generator)[0]])
    on_gpu = signed_distance(bunny.to("cuda"), points.cuda(), "torch").cpu()
    torch.testing.assert_close(on_gpu, signed_distance(bunny, points, "libigl"), atol=2e-5, rtol=0)


def test_nglod_fits_the_bunny_on_cuda_and_renders(tmp_path, capsys):
    out = tmp_path / "bunny"
    status = main(["fit-sdf", str(BUNNY), "--device", "cuda", "--steps", "500", "--out", str(out), "--no-progress"])
    assert status == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["chamfer_l1"] < 0.003 and result["iou"] > 0.98
    assert main(["render", str(out), "--device", "cuda", "--orbit", "--frames", "4", "--no-progress"]) == 0
    # an mp4, or its frames where the machine has no ffmpeg (nfield.video.write_video)
    assert (out / "turntable.mp4").is_file() or len(list((out / "turntable_frames").glob("frame_*.png"))) == 4
    assert main(["eval", str(out), "--device", "cpu", "--resolution", "128"]) == 0
    on_cpu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_cpu["chamfer_l1"] < 0.005
