"""End-to-end: fit-sdf, mesh, render and eval on the bunny (an open, non-watertight mesh) and on
an oriented point cloud, their files, and their errors."""

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from safetensors.torch import load_file

from nfield.cli import main
from nfield.run_directory import RunDirectory

BUNNY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sdf" / "bunny.obj"
pytestmark = pytest.mark.skipif(not BUNNY.exists(), reason="shared data not available")
SMALL_NGLOD = ("--n-lods", 4, "--feature-dim", 16, "--batch-size", 4096)  # bunny_run's (tests/conftest.py)


def run(capsys, *argv):
    """Run `nfield argv` in-process; returns (exit status, stdout lines, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


@pytest.fixture
def small_previews(monkeypatch):
    """fit-sdf writes its render.png at 64x36 instead of 640x360: sphere tracing a barely trained
    grid field at full size takes seconds on a CPU (the bunny fixture keeps the full size)."""
    import nfield.tasks.sdf as sdf_task

    render = sdf_task.render_view_to_files
    monkeypatch.setattr(
        sdf_task, "render_view_to_files", lambda model, out, **kw: render(model, out, **{**kw, "width": 64, "height": 36})
    )


def test_short_nglod_fit_of_the_bunny_exports_a_mesh_within_chamfer_0_01(bunny_run, capsys):
    out, metrics = bunny_run
    report = json.loads((out / "eval.json").read_text())
    assert report["chamfer_l1"] < 0.01  # the acceptance bound; measured 0.0014 (exact point-to-mesh matching)
    assert report["chamfer_l1"] < 0.003
    assert report["normal_consistency"] > 0.95 and report["iou"] > 0.95
    for name in ("config.json", "mesh.ply", "render.png", "render_depth.png"):
        assert (out / name).is_file()
    assert metrics[-1]["kind"] == "eval" and metrics[-1]["step"] == 120
    # one model, one size: eval.json, info and eval say the same number of parameters
    status, lines, err = run(capsys, "info", out)
    assert (
        status == 0
        and f"weights: {report['parameters']:,} parameters + {report['buffer_values']:,} buffer values" in "\n".join(lines)
    )
    status, lines, err = run(capsys, "eval", out, "--resolution", 32, "--no-progress")
    assert status == 0 and json.loads(lines[-1])["parameters"] == report["parameters"], err
    assert all(f"distance_mae_lod{k}" in metrics[-1] for k in range(3))
    # the mesh comes back in the input's coordinates: its bounding box matches the bunny's
    original = trimesh.load(BUNNY, force="mesh", process=False)
    exported = trimesh.load(out / "mesh.ply", process=False)
    scale = (original.bounds[1] - original.bounds[0]).max()
    np.testing.assert_allclose(exported.bounds, original.bounds, atol=0.03 * scale)
    image = iio.imread(out / "render.png")
    assert image.shape == (360, 640, 3) and (image < 250).any(axis=-1).mean() > 0.05  # the bunny covers the view


def test_mesh_command_exports_every_lod_in_input_coordinates(bunny_run, capsys, tmp_path):
    out, _ = bunny_run
    counts = []
    for lod in (0, 3):
        status, _, err = run(
            capsys, "mesh", out, "--resolution", 48, "--lod", lod, "--out", tmp_path / f"lod{lod}.obj", "--no-progress"
        )
        assert status == 0, err
        mesh = trimesh.load(tmp_path / f"lod{lod}.obj", process=False)
        counts.append(len(mesh.faces))
    assert counts[0] != counts[1]
    status, _, err = run(capsys, "mesh", out, "--resolution", 100000)
    assert status == 1 and "largest resolution that fits" in err
    status, _, err = run(capsys, "mesh", out, "--lod", 4)
    assert status == 1 and "LODs 0..3" in err


def test_eval_prints_chamfer_normal_consistency_and_iou_per_lod(bunny_run, capsys):
    out, _ = bunny_run
    status, lines, err = run(capsys, "eval", out, "--resolution", 64)
    assert status == 0 and "marching cubes" in err, err  # a progress bar while it works
    finest = json.loads(lines[-1])
    assert {"chamfer_l1", "normal_consistency", "iou"} <= finest.keys() and finest["lod"] == 3
    assert finest["chamfer_l1"] < 0.003
    status, lines, _ = run(capsys, "eval", out, "--resolution", 64, "--lod", 0)
    coarsest = json.loads(lines[-1])
    assert coarsest["chamfer_l1"] > finest["chamfer_l1"] and coarsest["lod_parameters"] < finest["lod_parameters"]
    assert coarsest["parameters"] == finest["parameters"]  # the model's size, whichever LOD is measured


def test_render_writes_a_view_with_depth_and_a_turntable(bunny_run, capsys, tmp_path):
    out, _ = bunny_run
    status, _, err = run(
        capsys, "render", out, "--width", 64, "--height", 48, "--out", tmp_path / "view.png", "--shading", "normal"
    )
    assert status == 0, err
    assert iio.imread(tmp_path / "view.png").shape == (48, 64, 3)
    assert iio.imread(tmp_path / "view_depth.png").shape == (48, 64, 3)
    status, _, err = run(
        capsys,
        "render",
        out,
        "--orbit",
        "--frames",
        3,
        "--width",
        64,
        "--height",
        48,
        "--lod",
        1,
        "--out",
        tmp_path / "t.mp4",
        "--no-progress",
    )
    assert status == 0, err
    frames = iio.imread(tmp_path / "t.mp4", plugin="FFMPEG", index=None)
    assert frames.shape[0] == 3 and frames.shape[1:3] == (48, 64)
    assert not np.array_equal(frames[0], frames[1])  # the camera moves


def test_sdf_resume_equals_an_uninterrupted_run(tmp_path, capsys, small_previews):
    common = (
        "--n-lods",
        2,
        "--feature-dim",
        4,
        "--n-neurons",
        16,
        "--batch-size",
        1024,
        "--mesh-resolution",
        16,
        "--metric-points",
        4096,
        "--pool-size",
        4096,
    )
    common += ("--lr-schedule", "constant", "--checkpoint-every", 5, "--eval-every", 100, "--no-progress")
    assert run(capsys, "fit-sdf", BUNNY, "--steps", 10, "--out", tmp_path / "a", *common)[0] == 0
    assert run(capsys, "fit-sdf", BUNNY, "--steps", 5, "--out", tmp_path / "b", *common)[0] == 0
    status, lines, err = run(capsys, "fit-sdf", BUNNY, "--resume", "--steps", 10, "--out", tmp_path / "b", "--no-progress")
    assert status == 0, err
    assert json.loads(lines[-1])["step"] == 10
    a = load_file(str(RunDirectory(tmp_path / "a").latest_checkpoint().model_file))
    b = load_file(str(RunDirectory(tmp_path / "b").latest_checkpoint().model_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_oriented_point_cloud_fits_without_distances(tmp_path, capsys, small_previews):
    bunny = trimesh.load(BUNNY, force="mesh", process=False)
    points, face = trimesh.sample.sample_surface(bunny, 20000, seed=0)
    np.savetxt(tmp_path / "bunny.xyz", np.concatenate([points, bunny.face_normals[face]], axis=1))
    status, lines, err = run(
        capsys,
        "fit-sdf",
        tmp_path / "bunny.xyz",
        "--n-lods",
        4,
        "--feature-dim",
        16,
        "--batch-size",
        2048,
        "--steps",
        80,
        "--mesh-resolution",
        64,
        "--out",
        tmp_path / "cloud",
        "--no-progress",
    )
    assert status == 0, err
    result = json.loads(lines[-1])  # measured: 0.0062, 0.976, 0.990
    assert result["chamfer_l1"] < 0.015 and result["normal_consistency"] > 0.96 and result["iou"] > 0.97


def test_bad_sdf_input_gives_one_clear_line_and_nonzero_exit(tmp_path, capsys):
    (tmp_path / "empty.obj").write_text("# no geometry\n")
    (tmp_path / "nan.obj").write_text("v 0 0 0\nv 1 0 nan\nv 0 1 0\nf 1 2 3\n")
    (tmp_path / "garbage.stl").write_bytes(b"\x00\x01garbage" * 3)
    ply = [
        "ply",
        "format ascii 1.0",
        "element vertex 3",
        "property float x",
        "property float y",
        "property float z",
        "end_header",
    ]
    (tmp_path / "bare.ply").write_text("\n".join(ply + ["0 0 0", "1 0 0", "0 1 0"]) + "\n")
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "config.json").write_text(json.dumps({"task": "image"}))
    cases = [
        (("fit-sdf", tmp_path / "missing.obj"), "no such file"),
        (("fit-sdf", tmp_path / "empty.obj"), "empty"),
        (("fit-sdf", tmp_path / "nan.obj"), "NaN"),
        (("fit-sdf", tmp_path / "garbage.stl"), "garbage.stl"),
        (("fit-sdf", tmp_path / "bare.ply"), "without normals"),
        (("fit-sdf", BUNNY, "--model", "octree"), "unknown model"),
        (
            ("fit-sdf", BUNNY, "--model", "siren", "--n-lods", 3),
            "--n-lods does not apply to model 'siren'; it applies to the nglod model only",
        ),
        (
            ("fit-sdf", BUNNY, "--model", "hash", "--feature-dim", 8),
            "--feature-dim does not apply to model 'hash'; it applies to the nglod",
        ),
        (
            ("fit-sdf", BUNNY, "--model", "nglod", "--n-levels", 8),
            "--n-levels does not apply to model 'nglod'; it applies to the hash",
        ),
        (("fit-sdf", BUNNY, "--mesh-resolution", 100000), "largest resolution that fits"),
        (("fit-sdf", BUNNY, "--steps", 0), "--steps"),
        (("render", tmp_path / "image"), "has no checkpoint"),
        (("mesh", tmp_path / "nowhere"), "nowhere"),
    ]
    for argv, message in cases:
        status, _, err = run(
            capsys, *argv, "--out" if argv[0] == "fit-sdf" else "--device", tmp_path / "run" if argv[0] == "fit-sdf" else "cpu"
        )
        lines = err.strip().splitlines()
        assert status == 1, (argv, err)
        assert len(lines) == 1 and lines[0].startswith("nfield: error:") and message in lines[0], (argv, err)


@pytest.mark.parametrize("model", ["nglod", "siren", "hash", "dense", "relu-pe"])
def test_every_sdf_model_trains_from_the_cli(tmp_path, capsys, model, small_previews):
    small = ("--n-neurons", 16, "--n-hidden-layers", 1, "--batch-size", 1024, "--mesh-resolution", 24, "--metric-points", 4096)
    small += ("--pool-size", 4096)
    status, lines, err = run(
        capsys, "fit-sdf", BUNNY, "--model", model, *small, "--steps", 20, "--out", tmp_path / model, "--no-progress"
    )
    assert status == 0, err
    result = json.loads(lines[-1])
    assert np.isfinite(result["distance_mae"]) and result["distance_mae"] < 0.5
    config = json.loads((tmp_path / model / "config.json").read_text())
    assert config["model"] == model and config["field"]["otype"] == ("NGLOD" if model == "nglod" else "Field")
    assert (tmp_path / model / "render.png").is_file()


def test_one_loader_serves_sdf_runs(bunny_run, capsys, tmp_path):
    from tests.run_checks import check_run_commands

    out, _ = bunny_run
    metrics = check_run_commands(out, "sdf", capsys, tmp_path)
    assert metrics["lod"] == 3 and metrics["resolution"] == 32 and metrics["chamfer_l1"] < 0.05


def test_renamed_sdf_flags_keep_their_old_spellings_out_of_help(capsys):
    """--lods became --n-lods (as on fit-image), --hidden-dim and --hidden-layers tiny-cuda-nn's
    --n-neurons and --n-hidden-layers: the old spellings still parse, and --help shows the new ones only."""
    import re

    import tyro

    from nfield.cli import COMMANDS

    with pytest.raises(SystemExit):
        main(["fit-sdf", "--help"])
    shown = capsys.readouterr().out
    assert all(flag in shown for flag in ("--n-lods", "--n-neurons", "--n-hidden-layers"))
    assert not re.search(r"(?<![\w-])--(lods|hidden-dim|hidden-layers)\b", shown), shown
    config = (tyro.conf.DisallowNone, tyro.conf.PositionalMetavarFromFieldName)
    old = tyro.cli(COMMANDS["fit-sdf"], args=["s.obj", "--lods", "3", "--hidden-dim", "8", "--hidden-layers", "2"], config=config)
    new = tyro.cli(
        COMMANDS["fit-sdf"], args=["s.obj", "--n-lods", "3", "--n-neurons", "8", "--n-hidden-layers", "2"], config=config
    )
    assert old.model_options.overrides() == new.model_options.overrides() == {"n_lods": 3, "n_neurons": 8, "n_hidden_layers": 2}


def test_lod_and_level_are_one_flag_each_in_help(capsys):
    """render-image's --lod also answers to --level, which --help does not show: `mesh --level` is a
    density threshold, and both commands show --lod for a level of detail."""
    import re

    import tyro

    from nfield.cli import COMMANDS

    shown = {}
    for command in ("render-image", "mesh"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown[command] = capsys.readouterr().out
    assert "--lod" in shown["render-image"] and not re.search(r"(?<![\w-])--level\b", shown["render-image"])
    assert "--lod" in shown["mesh"] and "--level FLOAT" in shown["mesh"]
    config = (tyro.conf.DisallowNone, tyro.conf.PositionalMetavarFromFieldName)
    assert tyro.cli(COMMANDS["render-image"], args=["run", "--level", "2"], config=config).lod == 2
    assert tyro.cli(COMMANDS["mesh"], args=["run", "--level", "2"], config=config).level == 2.0
