"""Shared by the CLI tests: render, eval, mesh and info on a run of any kind, through the one loader."""

import json

import imageio.v3 as iio
import torch
from safetensors.torch import load_file

from nfield.cli import main
from nfield.run_directory import RunDirectory
from nfield.runs.single import load_run

TASK_CLASSES = {"image": "ImageTask", "sdf": "SDFTask", "nerf": "NeRFTask"}


def cli(capsys, *argv):
    """Run `nfield argv` in-process; returns (exit status, stdout lines, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def check_run_commands(run_dir, kind, capsys, tmp_path):
    """`load_run` rebuilds the run's task with the checkpoint's weights, and render, eval, info and
    mesh (or its one-line refusal) work on it; returns eval's metrics."""
    loaded = load_run(run_dir, "cpu")
    assert type(loaded.task).__name__ == TASK_CLASSES[kind] and loaded.kind == kind
    saved, state = load_file(str(RunDirectory(run_dir).latest_checkpoint().model_file)), loaded.task.model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(state[k], saved[k]) for k in saved)

    status, out, err = cli(capsys, "info", run_dir)
    assert status == 0 and f"task {kind}" in out[0], err

    status, out, err = cli(capsys, "eval", run_dir, "--device", "cpu", *(("--resolution", 32) if kind == "sdf" else ()))
    assert status == 0, err
    metrics = json.loads(out[-1])
    assert metrics["step"] == loaded.step

    if kind == "nerf":
        out_file, size = tmp_path / f"{kind}.mp4", ("--frames", 2, "--width", 8, "--height", 6)
    else:
        out_file, size = tmp_path / f"{kind}.png", ("--width", 8, "--height", 6)
    status, _, err = cli(capsys, "render", run_dir, *size, "--out", out_file, "--device", "cpu", "--no-progress")
    assert status == 0, err
    rendered = iio.imread(out_file, plugin="FFMPEG", index=None) if kind == "nerf" else iio.imread(out_file)
    expected = (6, 8)
    if kind == "image":  # an image run keeps its aspect ratio: the largest such picture inside 8x6
        fitted = loaded.config["image"]
        scale = min(8 / fitted["width"], 6 / fitted["height"])
        expected = (round(fitted["height"] * scale), round(fitted["width"] * scale))
    assert rendered.shape[-3:-1] == expected if rendered.ndim > 2 else rendered.shape == expected

    status, _, err = cli(capsys, "mesh", run_dir, "--resolution", 24, "--out", tmp_path / "mesh.ply", "--no-progress")
    lines = err.strip().splitlines()
    if kind == "sdf":
        assert status == 0 and (tmp_path / "mesh.ply").is_file(), err
    elif kind == "nerf":  # a coloured level set or, for a barely trained field, one line saying the density stays below it
        meshed = status == 0 and (tmp_path / "mesh.ply").is_file()
        assert meshed or (status == 1 and len(lines) == 1 and "never reaches --level" in lines[0]), err
    else:
        assert status == 1 and len(lines) == 1 and "mesh extracts the surface of SDF runs" in lines[0], err
    return metrics
