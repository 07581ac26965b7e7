"""End-to-end: train-nerf, render and eval on a generated Blender-format scene, and their errors."""

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from nfield.cli import main
from nfield.run_directory import RunDirectory
from scenes.synthetic import generate

SMALL = ("--n-levels", 6, "--log2-hashmap-size", 12, "--occupancy-resolution", 16, "--occupancy-warmup", 8, "--steps-per-ray", 64)
SMALL += ("--batch-rays", 256, "--no-progress")


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate("textured", tmp_path_factory.mktemp("scene") / "textured", size=24, n_train=12, n_val=1, n_test=2)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "nerf"
    assert main([str(a) for a in ("train-nerf", scene, *SMALL, "--steps", 40, "--eval-every", 20, "--out", out)]) == 0
    return out


def test_train_nerf_reports_held_out_metrics_and_writes_renders(trained, capsys):
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if m["kind"] == "eval"]
    assert [m["step"] for m in evals] == [20, 40] and all(np.isfinite(m["psnr"]) for m in evals)
    config = json.loads((trained / "config.json").read_text())
    assert config["task"] == "nerf" and config["scene"]["dialect"] == "blender" and config["field"]["otype"] == "NGP"
    assert config["field"]["grid"]["n_levels"] == 6 and config["task_config"]["occupancy"]["resolution"] == 16
    assert sorted(p.name for p in (trained / "renders").iterdir()) == ["r_0.png", "r_0_truth.png", "r_1.png", "r_1_truth.png"]
    status, lines, err = run(capsys, "eval", trained)
    assert status == 0 and "eval (2 views)" in err and "100%" in err, err  # a progress bar over the views' rays
    result = json.loads(lines[-1])
    assert result["psnr"] == pytest.approx(evals[-1]["psnr"], abs=1e-6) and result["views"] == 2


def test_render_writes_a_playable_orbit_video_and_its_depth(trained, capsys, tmp_path):
    argv = ("--path", "orbit", "--frames", 3, "--fps", 12, "--depth", "--out", tmp_path / "o.mp4")
    status, _, err = run(capsys, "render", trained, *argv)
    assert status == 0, err
    frames = iio.imread(tmp_path / "o.mp4", plugin="FFMPEG", index=None)
    assert frames.shape == (3, 24, 24, 3) and not np.array_equal(frames[0], frames[1])
    assert iio.immeta(tmp_path / "o.mp4", plugin="FFMPEG")["fps"] == 12  # plays at --fps, not at the render speed
    assert iio.imread(tmp_path / "o_depth.mp4", plugin="FFMPEG", index=None).shape[0] == 3
    for path in ("spiral", "interp"):
        status, _, err = run(
            capsys,
            "render",
            trained,
            "--path",
            path,
            "--frames",
            2,
            "--width",
            16,
            "--height",
            12,
            "--out",
            tmp_path / f"{path}.mp4",
        )
        assert status == 0, err
        assert iio.imread(tmp_path / f"{path}.mp4", plugin="FFMPEG", index=None).shape == (2, 12, 16, 3)
    status, _, err = run(capsys, "render", trained, "--lod", 1)
    assert status == 1 and "--lod applies to image and SDF runs" in err


def test_render_without_ffmpeg_writes_png_frames_and_still_succeeds(trained, capsys, tmp_path, monkeypatch):
    import imageio_ffmpeg

    def no_ffmpeg():
        raise RuntimeError("No ffmpeg exe could be found. Install ffmpeg on your system, or set the IMAGEIO_FFMPEG_EXE ...")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_ffmpeg)
    status, _, err = run(capsys, "render", trained, "--frames", 2, "--depth", "--out", tmp_path / "o.mp4")
    assert status == 0, err
    assert "Traceback" not in err and not (tmp_path / "o.mp4").exists()
    for folder in ("o_frames", "o_depth_frames"):
        frames = sorted((tmp_path / folder).iterdir())
        assert [iio.imread(p).shape for p in frames] == [(24, 24, 3)] * 2
    assert sum("pip install imageio-ffmpeg" in line for line in err.splitlines()) == 2  # one line per video
    assert f"wrote {tmp_path / 'o_frames'} and {tmp_path / 'o_depth_frames'}" in err


def test_nerf_resume_equals_an_uninterrupted_run(scene, tmp_path, capsys):
    common = (*SMALL, "--lr-schedule", "constant", "--checkpoint-every", 5, "--eval-every", 100)
    assert run(capsys, "train-nerf", scene, "--steps", 10, "--out", tmp_path / "a", *common)[0] == 0
    assert run(capsys, "train-nerf", scene, "--steps", 5, "--out", tmp_path / "b", *common)[0] == 0
    status, lines, err = run(capsys, "train-nerf", scene, "--resume", "--steps", 10, "--out", tmp_path / "b", "--no-progress")
    assert status == 0, err
    a = load_file(str(RunDirectory(tmp_path / "a").latest_checkpoint().model_file))
    b = load_file(str(RunDirectory(tmp_path / "b").latest_checkpoint().model_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_nerf_input_gives_one_clear_line_and_nonzero_exit(scene, tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "transforms.json").write_text("{ not json")
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "transforms.json").write_text(
        json.dumps({"fl_x": 10, "w": 8, "h": 6, "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]})
    )
    cases = [
        (("train-nerf", tmp_path / "nowhere"), "nowhere"),
        (("train-nerf", tmp_path / "broken"), "transforms.json"),
        (("train-nerf", tmp_path / "missing"), "a.png); restore them, or drop those frames with --skip-missing-images"),
        (("train-nerf", scene, "--model", "octree"), "unknown model"),
        (
            ("train-nerf", scene, "--model", "vanilla", "--n-levels", 4),
            "--n-levels does not apply to model 'vanilla'; it applies to the ngp model only",
        ),
        (
            ("train-nerf", scene, "--longest-axis-cells", 8),
            "--longest-axis-cells does not apply to model 'ngp'; it applies to the kilonerf model only",
        ),
        (("train-nerf", scene, "--model", "kilonerf", "--longest-axis-cells", 0), "positive integer"),
        (("train-nerf", scene, "--downscale", 0), "--downscale"),
    ]
    for argv, message in cases:
        status, _, err = run(capsys, *argv, "--out", tmp_path / "run", "--no-progress")
        lines = err.strip().splitlines()
        assert status == 1, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("nfield: error:") and message in lines[0], (argv, err)


def test_a_warning_is_one_line(scene, tmp_path, capsys):
    shutil.copytree(scene, tmp_path / "scene")
    image = json.loads((tmp_path / "scene" / "transforms_train.json").read_text())["frames"][0]["file_path"]
    next((tmp_path / "scene").glob(image.removeprefix("./") + "*")).unlink()
    status, _, err = run(
        capsys, "train-nerf", tmp_path / "scene", *SMALL, "--steps", 1, "--skip-missing-images", "--out", tmp_path / "r"
    )
    assert status == 0, err
    warned = [line for line in err.splitlines() if "dropped 1 of" in line]
    assert len(warned) == 1 and warned[0].startswith("nfield: warning: ") and "UserWarning" not in err


def test_vanilla_nerf_trains_checkpoints_and_renders_from_the_cli(scene, tmp_path, capsys):
    small = ("--n-samples", 8, "--n-importance", 8, "--batch-rays", 64, "--no-progress")
    out = tmp_path / "v"
    status, lines, err = run(
        capsys, "train-nerf", scene, "--model", "vanilla", *small, "--steps", 4, "--eval-views", 1, "--out", out
    )
    assert status == 0, err
    final = json.loads(lines[-1])
    assert np.isfinite(final["psnr"]) and (final["eval_views"], final["test_views"]) == (1, 2)  # says what it scored
    weights = load_file(str(RunDirectory(tmp_path / "v").latest_checkpoint().model_file))
    assert {key.split(".")[0] for key in weights} == {"field", "coarse"}
    status, _, err = run(capsys, "render", tmp_path / "v", "--frames", 2, "--width", 8, "--height", 8, "--no-progress")
    assert status == 0, err


def test_one_loader_serves_nerf_runs(trained, capsys, tmp_path):
    from tests.run_checks import check_run_commands

    metrics = check_run_commands(trained, "nerf", capsys, tmp_path)
    assert metrics["views"] == 2 and metrics["psnr"] > 10


def test_one_loader_serves_kilonerf_runs_trained_from_images(scene, capsys, tmp_path):
    from tests.run_checks import check_run_commands

    small = ("--occupancy-resolution", 16, "--occupancy-warmup", 8, "--steps-per-ray", 64, "--batch-rays", 256)
    small += ("--longest-axis-cells", 4)
    status, _, err = run(
        capsys, "train-nerf", scene, "--model", "kilonerf", *small, "--steps", 4, "--out", tmp_path / "k", "--no-progress"
    )
    assert status == 0, err
    check_run_commands(tmp_path / "k", "nerf", capsys, tmp_path)
    assert (tmp_path / "k" / "kilonerf.safetensors").is_file()


def test_the_occupancy_grid_flags_keep_their_old_spellings_out_of_help(capsys):
    """--grid-resolution and --grid-warmup became --occupancy-resolution and --occupancy-warmup (fit-image's
    --grid-resolution is SAPE's grid): the old spellings still parse, and --help shows the new ones only."""
    import re

    import tyro

    from nfield.cli import COMMANDS
    from nfield.presets.nerf import resolve_nerf_preset

    with pytest.raises(SystemExit):
        main(["train-nerf", "--help"])
    shown = capsys.readouterr().out
    assert "--occupancy-resolution" in shown and "--occupancy-warmup" in shown
    assert not re.search(r"(?<![\w-])--grid-(resolution|warmup)\b", shown), shown
    config = (tyro.conf.DisallowNone, tyro.conf.PositionalMetavarFromFieldName)
    old = tyro.cli(COMMANDS["train-nerf"], args=["s", "--grid-resolution", "16", "--grid-warmup", "4"], config=config)
    new = tyro.cli(COMMANDS["train-nerf"], args=["s", "--occupancy-resolution", "16", "--occupancy-warmup", "4"], config=config)
    assert old.model_options.overrides() == new.model_options.overrides() == {"occupancy_resolution": 16, "occupancy_warmup": 4}
    # the override keys of runs and scripts before 0.3 too
    for overrides in ({"grid_resolution": 16, "grid_warmup": 4}, {"occupancy_resolution": 16, "occupancy_warmup": 4}):
        occupancy = resolve_nerf_preset("kilonerf", overrides).task.occupancy
        assert (occupancy.resolution, occupancy.warmup_steps) == (16, 4)
