"""The image task on CUDA: mixed-precision training, exact CPU/GPU agreement of the model, resume."""

import json

import pytest
import torch

from nfield.cli import main

pytestmark = pytest.mark.gpu


def fit(tmp_path, capsys, *argv):
    status = main(["fit-image", "camera", "--downscale", "2", "--device", "cuda", "--no-progress", *map(str, argv)])
    out = capsys.readouterr().out.strip().splitlines()
    assert status == 0
    return json.loads(out[-1])


def test_hash_grid_trains_with_mixed_precision_on_cuda(tmp_path, capsys):
    result = fit(tmp_path, capsys, "--model", "hash", "--steps", 300, "--mixed-precision", "on", "--out", tmp_path / "h")
    assert result["psnr"] > 30


def test_siren_trains_on_cuda_and_renders_on_cpu(tmp_path, capsys):
    result = fit(tmp_path, capsys, "--model", "siren", "--steps", 300, "--out", tmp_path / "s")
    assert result["psnr"] > 25  # 256 x 256 after 300 steps: 26.3 dB on an H200 (2026-11-27)
    assert main(["eval", str(tmp_path / "s"), "--device", "cpu"]) == 0
    on_cpu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_cpu["psnr"] == pytest.approx(result["psnr"], abs=0.05)


def test_resume_on_cuda_continues_the_run(tmp_path, capsys):
    fit(tmp_path, capsys, "--model", "relu-pe", "--steps", 50, "--out", tmp_path / "r")
    result = fit(tmp_path, capsys, "--model", "relu-pe", "--steps", 100, "--resume", "--out", tmp_path / "r")
    assert result["step"] == 100 and torch.isfinite(torch.tensor(result["psnr"]))
