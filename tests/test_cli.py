"""End-to-end: the nfield command line on real images, its files, and its errors."""

import json
import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nfield.checkpoint import latest_checkpoint
from nfield.cli import main
from nfield.presets.image import IMAGE_PRESETS


def run(capsys, *argv):
    """Run `nfield argv` in-process; returns (exit status, stdout lines, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err


def last_json(lines):
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16] / 16
    array = np.stack([np.sin(6 * x), np.cos(5 * y), x * y], -1) * 0.4 + 0.5 + 0.05 * rng.standard_normal((16, 16, 3))
    path = tmp_path_factory.mktemp("img") / "tiny.png"
    iio.imwrite(path, (np.clip(array, 0, 1) * 255).astype(np.uint8))
    return path


def test_siren_fits_camera_64_to_33_db_in_300_steps_and_relu_is_clearly_worse(tmp_path, capsys):
    def fit(model):
        return run(
            capsys,
            "fit-image",
            "camera",
            "--downscale",
            8,
            "--model",
            model,
            "--steps",
            300,
            "--out",
            tmp_path / model,
            "--no-progress",
        )

    status, out, _ = fit("siren")
    assert status == 0
    siren = last_json(out)
    assert siren["step"] == 300 and siren["psnr"] >= 33.0
    status, out, _ = fit("relu")
    relu = last_json(out)
    assert status == 0 and relu["psnr"] < siren["psnr"] - 10 and relu["psnr"] < 25
    for name in ("reconstruction.png", "error.png", "config.json", "metrics.jsonl"):
        assert (tmp_path / "siren" / name).is_file()
    evals = [json.loads(l) for l in (tmp_path / "siren" / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert evals[-1]["step"] == 300 and evals[-1]["psnr"] == pytest.approx(siren["psnr"])

    # eval recomputes the same metrics from the run directory
    status, out, _ = run(capsys, "eval", tmp_path / "siren")
    assert status == 0 and last_json(out)["psnr"] == pytest.approx(siren["psnr"], abs=1e-6)

    # render-image at scale 1 reproduces the reconstruction; at scale 4 it super-resolves
    status, _, _ = run(capsys, "render-image", tmp_path / "siren", "--scale", 1, "--out", tmp_path / "x1.png")
    assert status == 0
    assert np.array_equal(iio.imread(tmp_path / "x1.png"), iio.imread(tmp_path / "siren" / "reconstruction.png"))
    status, _, _ = run(capsys, "render-image", tmp_path / "siren", "--scale", 4, "--out", tmp_path / "x4.png")
    big = iio.imread(tmp_path / "x4.png").astype(np.float64) / 255
    assert status == 0 and big.shape == (256, 256)
    # the 4x render, box-filtered back down, still matches the target closely
    target = iio.imread(tmp_path / "x1.png").astype(np.float64) / 255
    down = big.reshape(64, 4, 64, 4).mean(axis=(1, 3))
    assert 10 * np.log10(1 / np.mean((down - target) ** 2)) > 25


@pytest.mark.parametrize("model", sorted(IMAGE_PRESETS))
def test_every_model_trains_from_the_cli(tmp_path, capsys, tiny_image, model):
    status, out, err = run(
        capsys, "fit-image", tiny_image, "--model", model, "--steps", 30, "--out", tmp_path / model, "--no-progress"
    )
    assert status == 0, err
    result = last_json(out)
    assert np.isfinite(result["psnr"]) and result["psnr"] > 12
    assert (tmp_path / model / "reconstruction.png").is_file()
    config = json.loads((tmp_path / model / "config.json").read_text())
    assert config["model"] == model and config["field"]["encoding"]["otype"]
    if model == "pins":
        lods = sorted((tmp_path / model / "lods").iterdir())
        assert len(lods) == IMAGE_PRESETS["pins"].field.network.n_lods - 1
        assert all(f"psnr_lod{k}" in result for k in range(len(lods)))
    if model == "sape":
        assert (tmp_path / model / "progress.png").is_file()


def test_model_hyper_parameters_are_settable(tmp_path, capsys, tiny_image):
    status, _, err = run(
        capsys,
        "fit-image",
        tiny_image,
        "--model",
        "hash",
        "--n-levels",
        4,
        "--log2-hashmap-size",
        8,
        "--n-neurons",
        16,
        "--steps",
        5,
        "--out",
        tmp_path / "h",
        "--no-progress",
    )
    assert status == 0, err
    field = json.loads((tmp_path / "h" / "config.json").read_text())["field"]
    assert field["encoding"]["n_levels"] == 4 and field["encoding"]["log2_hashmap_size"] == 8
    assert field["network"]["n_neurons"] == 16
    status, _, err = run(
        capsys, "fit-image", tiny_image, "--model", "relu", "--w0", 10, "--steps", 5, "--out", tmp_path / "r", "--no-progress"
    )
    assert status == 1 and "--w0 does not apply to model 'relu'" in err


def test_cli_resume_equals_an_uninterrupted_run(tmp_path, capsys, tiny_image):
    common = ("--model", "relu-pe", "--n-neurons", 32, "--lr-schedule", "constant", "--checkpoint-every", 10, "--no-progress")
    assert run(capsys, "fit-image", tiny_image, "--steps", 40, "--out", tmp_path / "a", *common)[0] == 0
    assert run(capsys, "fit-image", tiny_image, "--steps", 20, "--out", tmp_path / "b", *common)[0] == 0
    status, out, err = run(capsys, "fit-image", tiny_image, "--resume", "--steps", 40, "--out", tmp_path / "b", "--no-progress")
    assert status == 0, err
    assert last_json(out)["step"] == 40
    a = load_file(str(latest_checkpoint(tmp_path / "a").model_file))
    b = load_file(str(latest_checkpoint(tmp_path / "b").model_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # an existing run is never silently replaced
    status, _, err = run(capsys, "fit-image", tiny_image, "--steps", 5, "--out", tmp_path / "a", "--no-progress")
    assert status == 1 and "--resume" in err and "--overwrite" in err


def test_info_reports_versions_and_backends(capsys):
    status, out, _ = run(capsys, "info")
    text = "\n".join(out)
    assert status == 0 and "nfield" in text and f"torch {torch.__version__}" in text and "tiny-cuda-nn" in text


def nfield(*argv, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "nfield.cli", *map(str, argv)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_an_unreadable_image_or_video_gives_one_line_in_a_fresh_process(tmp_path):
    """imageio's probing of a file no plugin reads imports its deprecated legacy plugins (DICOM) once
    per process; their notice must not print beside the error where deprecation warnings are shown
    (PYTHONWARNINGS, pytest). In-process tests can miss this: a warning shows only
    the first time in a process."""
    env = {**os.environ, "PYTHONWARNINGS": "default::DeprecationWarning"}
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "notes.mp4").write_text("not a video")
    for command, name, message in (
        ("fit-image", "notes.png", "cannot read it as an image"),
        ("fit-video", "notes.mp4", "cannot read it as a video"),
    ):
        done = nfield(command, tmp_path / name, "--out", tmp_path / "run", "--no-progress", env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("nfield: error:") and message in lines[0], (
            done.stderr
        )


def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path, tiny_image, capsys, monkeypatch):
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "badrun").mkdir()
    (tmp_path / "badrun" / "config.json").write_text("{ broken")
    assert (
        run(capsys, "fit-image", tiny_image, "--steps", 2, "--out", tmp_path / "trained", "--model", "relu", "--no-progress")[0]
        == 0
    )
    (tmp_path / "untrained").mkdir()
    shutil.copy(tmp_path / "trained" / "config.json", tmp_path / "untrained")
    shutil.copytree(tmp_path / "trained", tmp_path / "corrupt")
    weights = next((tmp_path / "corrupt" / "checkpoints").glob("step_*/model.safetensors"))
    shutil.copytree(tmp_path / "trained", tmp_path / "truncated")
    truncated = next((tmp_path / "truncated" / "checkpoints").glob("step_*/model.safetensors"))
    truncated.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    shutil.copytree(tmp_path / "trained", tmp_path / "resized")
    resized = next((tmp_path / "resized" / "checkpoints").glob("step_*/model.safetensors"))
    save_file({k: v[:1].contiguous() for k, v in load_file(str(resized)).items()}, str(resized))
    weights.write_bytes(b"\x00" * 64)
    cases = [
        (("fit-image", tmp_path / "missing.png"), "no such file"),
        (("fit-image", tmp_path / "notes.png"), "cannot read it as an image"),
        (("fit-image", tmp_path / "empty.png"), "cannot read it as an image"),
        (("fit-image", tiny_image, "--model", "transformer"), "unknown model 'transformer'"),
        (("fit-image", tiny_image, "--steps", 0), "--steps must be a positive"),
        (("fit-image", tiny_image, "--steps", -5), "--steps must be a positive"),
        (("render-image", tmp_path / "nowhere"), "no such run directory"),
        (("render-image", tmp_path / "notarun"), "not an nfield run directory"),
        (("eval", tmp_path / "badrun"), "unreadable"),
        (("fit-image", tiny_image, "--resume", "--out", tmp_path / "notarun"), "not an nfield run directory"),
        (("render-image", tmp_path / "untrained"), "has no checkpoint"),
        (("render-image", tmp_path / "corrupt"), "cannot read the weights"),
        (("info", tmp_path / "truncated"), "cannot read the weights (Error while deserializing header"),
        (("eval", tmp_path / "truncated"), "cannot read the weights"),
        (("info", tmp_path / "resized"), "the weights do not fit this model (size mismatch for"),
        (("render-image", tmp_path / "trained", "--scale", 0), "--scale must be a positive finite number"),
        (("render-image", tmp_path / "trained", "--level", 3), "--lod 3"),
        (("render-image", tmp_path / "trained", "--lod", 3), "--lod 3"),
    ]
    monkeypatch.chdir(tmp_path)
    for argv, message in cases:  # in-process (each a second's import less); the first also as a real process
        status, _, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert status == 1, (argv, err)
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("nfield: error:"), (argv, err)
        assert "Traceback" not in err
    result = nfield(*cases[0][0], cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("nfield: error:") and cases[0][1] in lines[0]


@pytest.mark.parametrize("kind", ["grey-alpha-8", "grey-16", "hdr-float-tiff", "hdr-half-exr"])
def test_other_pixel_formats_fit_end_to_end(tmp_path, capsys, kind):
    y, x = np.mgrid[0:12, 0:12] / 12
    if kind == "grey-alpha-8":
        path, array = tmp_path / "la.png", (np.stack([x, y], -1) * 255).astype(np.uint8)
    elif kind == "grey-16":
        path, array = tmp_path / "g16.png", (x * 65535).astype(np.uint16)
    elif kind == "hdr-float-tiff":
        path, array = tmp_path / "hdr.tif", np.stack([x, y, x * y], -1).astype(np.float32) * 4
    else:
        path, array = tmp_path / "hdr.exr", np.stack([x, y, x * y], -1).astype(np.float16) * 4
    if kind.endswith("exr"):
        import OpenEXR

        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, {"RGB": array}) as exr:
            exr.write(str(path))
    else:
        iio.imwrite(path, array)
    status, out, err = run(
        capsys, "fit-image", path, "--model", "hash", "--steps", 150, "--out", tmp_path / "run", "--no-progress"
    )
    assert status == 0, err
    assert last_json(out)["psnr"] > 20
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["image"]["high_dynamic_range"] == kind.startswith("hdr")
    written = iio.imread(tmp_path / "run" / "reconstruction.png")
    assert written.shape[:2] == (12, 12) and written.dtype == np.uint8
    assert run(capsys, "render-image", tmp_path / "run", "--scale", 2, "--out", tmp_path / "x2.tif")[0] == 0
    raw = iio.imread(tmp_path / "x2.tif")
    assert raw.dtype == np.float32 and raw.shape[:2] == (24, 24)
    if kind.startswith("hdr"):  # the float render keeps the HDR range; the PNG is clipped
        assert raw.max() > 2.5


def test_one_loader_serves_image_runs(tmp_path, capsys, tiny_image):
    from tests.run_checks import check_run_commands

    status, out, err = run(
        capsys, "fit-image", tiny_image, "--model", "hash", "--steps", 20, "--out", tmp_path / "r", "--no-progress"
    )
    assert status == 0, err
    metrics = check_run_commands(tmp_path / "r", "image", capsys, tmp_path)
    assert metrics["psnr"] == pytest.approx(last_json(out)["psnr"], abs=1e-6)


def test_cli_functions_are_short():
    """cli/ is flag definitions: every function there stays under 60 lines."""
    import ast
    from pathlib import Path

    import nfield.cli

    for path in Path(nfield.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, (
                    f"{path.name}: {node.name} has {node.end_lineno - node.lineno + 1} lines"
                )


@pytest.mark.parametrize(
    "command,shown",
    [
        ("fit-image", ["(default: 2,000)", "siren 0.0001", "(default: 262,144 on CUDA, 65,536 on the CPU)"]),
        ("fit-sdf", ["(default: 2,000)", "nglod 0.005", "(default: 65,536 on CUDA, 8,192 on the CPU)", "siren 0.1"]),
        ("train-nerf", ["(default: 5,000)", "ngp 0.01", "(default: 4,096 on CUDA, 1,024 on the CPU)", "(default: 1,000)"]),
    ],
)
def test_help_states_the_presets_real_defaults(command, shown, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for piece in shown:
        assert piece in text, piece


def test_no_help_says_default_none(capsys, monkeypatch):
    """An unset flag's help says what it means (the preset's value, or what its text states), never
    "(default: None)"."""
    from nfield.cli import COMMANDS

    monkeypatch.setenv("COLUMNS", "400")
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "--help" in text, command


def test_presets_size_batches_by_device():
    from nfield.presets.nerf import NERF_PRESETS
    from nfield.presets.sdf import SDF_PRESETS

    for presets, key in ((IMAGE_PRESETS, "batch_size"), (SDF_PRESETS, "batch_size"), (NERF_PRESETS, "batch_rays")):
        for preset in presets.values():
            assert getattr(preset.task_for("cpu"), key) < getattr(preset.task_for("cuda"), key)
            assert preset.task_for("cuda") == preset.task


def test_runs_written_before_0_3_still_load(tmp_path, capsys, tiny_image):
    """Old key names (PINs' n_levels, the top-level seed) are read; the run renders and evaluates."""
    argv = ("fit-image", tiny_image, "--model", "pins", "--n-lods", 2, "--n-frequencies", 4, "--n-neurons", 16)
    status, out, err = run(capsys, *argv, "--steps", 10, "--out", tmp_path / "p", "--no-progress")
    assert status == 0, err
    config_file = tmp_path / "p" / "config.json"
    config = json.loads(config_file.read_text())
    network = config["field"]["network"]
    network["n_levels"] = network.pop("n_lods")
    config["seed"] = config["train"].pop("seed")
    config_file.write_text(json.dumps(config))
    status, lines, err = run(capsys, "eval", tmp_path / "p")
    assert status == 0 and last_json(lines)["psnr"] == pytest.approx(last_json(out)["psnr"], abs=1e-6), err
    assert run(capsys, "render-image", tmp_path / "p", "--lod", 0, "--out", tmp_path / "lod0.png", "--no-progress")[0] == 0
    status, _, err = run(capsys, "fit-image", tiny_image, "--resume", "--steps", 12, "--out", tmp_path / "p", "--no-progress")
    assert status == 0, err


def test_render_image_refuses_a_scale_that_does_not_fit_and_says_which_does(tmp_path, capsys, tiny_image):
    assert run(capsys, "fit-image", tiny_image, "--model", "relu", "--steps", 2, "--out", tmp_path / "r", "--no-progress")[0] == 0
    status, _, err = run(capsys, "render-image", tmp_path / "r", "--scale", 5000)
    lines = err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "the largest --scale for this run is 591.2" in lines[0], err
    status, _, err = run(capsys, "render-image", tmp_path / "r", "--scale", 3, "--out", tmp_path / "x3.png")
    assert status == 0 and "render" in err and "wrote" in err  # a progress bar, then what was written
    assert iio.imread(tmp_path / "x3.png").shape == (48, 48, 3)


def test_sigterm_saves_a_checkpoint_and_says_how_to_resume(tmp_path, tiny_image, capsys):
    """What `kill` and job schedulers send stops training as Ctrl-C does."""
    import signal
    import time

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "nfield.cli", "fit-image", str(tiny_image), "--model", "relu", "--steps", 10**6]
    argv += ["--checkpoint-every", 0, "--log-every", 5, "--out", out, "--no-progress"]
    job = subprocess.Popen(list(map(str, argv)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    step = latest_checkpoint(out).step
    assert f"interrupted at step {step}; checkpoint saved in {out}; continue with --resume" in err and "Traceback" not in err
    status, lines, err = run(capsys, "fit-image", tiny_image, "--resume", "--steps", step + 3, "--out", out, "--no-progress")
    assert status == 0 and last_json(lines)["step"] == step + 3, err
