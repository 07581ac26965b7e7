"""End-to-end: the nfield command line on real images, its files, and its errors."""

import json
import os
import re
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nfield.cli import main
from nfield.presets.image import IMAGE_PRESETS
from nfield.run_directory import RunDirectory


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
    a = load_file(str(RunDirectory(tmp_path / "a").latest_checkpoint().model_file))
    b = load_file(str(RunDirectory(tmp_path / "b").latest_checkpoint().model_file))
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


def test_a_malformed_command_line_is_one_line_naming_the_flag(tmp_path, capsys):
    """A wrong-typed value, an unknown (or renamed) flag, a missing argument: one `nfield: error:` line
    naming the flag, what it expects and the closest flags, exit status 2 (not tyro's box)."""
    cases = [
        (("train-nerf", "SCENE", "--steps", "abc"), ["--steps", "an integer", "'abc'"]),
        (("fit-image", "camera", "--lr", "fast"), ["--lr", "a number", "'fast'"]),
        (("distill", "RUN", "--steps", "300"), ["distill has no flag --steps", "did you mean --distill-steps (an integer)"]),
        (("fit-image", "camera", "--n-nuerons", "8"), ["no flag --n-nuerons", "--n-neurons (an integer)"]),
        (("fit-image", "camera", "--lr-schedule", "cosin"), ["--lr-schedule", "one of constant, cosine", "did you mean cosine"]),
        (("fit-image", "camera", "--steps"), ["--steps", "an integer", "no value"]),
        (("render",), ["missing RUN-DIR (a run directory written by fit-image", "nfield render RUN-DIR [OPTIONS]"]),
        (("trian-nerf", "scene"), ["unknown command 'trian-nerf'", "did you mean train-nerf"]),
        ((), ["no command given", "fit-image"]),
    ]
    for argv, pieces in cases:
        status, out, err = run(capsys, *argv)
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and lines[0].startswith("nfield: error:"), (argv, err)
        for piece in pieces:
            assert piece in lines[0], (argv, piece, lines[0])
    done = nfield("fit-image", "camera", "--lr", "fast", cwd=tmp_path)  # a real process: its exit status
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "nfield: error: --lr expects a number, got 'fast' (see nfield fit-image --help)"
    ], done.stderr
    with pytest.raises(SystemExit) as exit_:  # --help still prints the whole help
        main(["distill", "--help"])
    assert exit_.value.code == 0 and "--distill-steps" in capsys.readouterr().out


def help_of(command, capsys):
    """`nfield COMMAND --help` (as it prints to a pipe: plain sections, no boxes): (its text, a
    [flags, help text] row per flag)."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0, text
    rows, current = [], None
    for line in text.splitlines():
        if re.match(r"  (-\w|--\w)", line):  # a flag and, after two spaces, its help (or help on the lines below)
            flags, _, help_text = re.sub(r"\s{2,}", "\0", line.strip(), count=1).partition("\0")
            current = [flags, help_text]
            rows.append(current)
        elif line.startswith("    ") and current is not None:
            current[1] = f"{current[1]} {line.strip()}".strip()
        else:
            current = None
    return text, rows


def test_the_flags_named_in_errors_are_the_flags_tyro_takes(capsys, monkeypatch):
    """`command_flags` (what the one-line errors suggest) lists exactly the flags each --help shows."""
    from nfield.cli import COMMANDS
    from nfield.cli.parse_errors import command_flags

    monkeypatch.setenv("COLUMNS", "100")
    for command, cls in COMMANDS.items():
        shown = {flag for flags, _ in help_of(command, capsys)[1] for flag in re.findall(r"--[\w.-]+", flags)} - {"--help"}
        listed = {name for flag in command_flags(cls) for name in flag.names}
        assert listed == shown, (command, listed ^ shown)


def test_every_flag_has_help_text_under_a_titled_group(capsys, monkeypatch):
    """No flag's help is only its default (a comment after a parenthesised default is lost; a
    docstring under the field is read), and no group is titled "options options"."""
    from nfield.cli import COMMANDS

    monkeypatch.setenv("COLUMNS", "100")
    for command in COMMANDS:
        text, rows = help_of(command, capsys)
        assert "options options" not in text and "model-options options" not in text, command
        assert rows, command
        for flags, help_text in rows:
            assert re.sub(r"\((default|required)\b[^)]*\)", "", help_text).strip(), (command, flags, help_text)
    text, rows = help_of("render", capsys)
    assert " render options" in text
    helps = {flags.split()[0]: help_text for flags, help_text in rows}
    assert helps["--fps"].startswith("frames per second") and helps["--sample-rate"].startswith("audio runs: samples per second")


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


def test_a_grey_exr_stored_as_rgba_is_fitted_grey_and_renders(tmp_path, capsys):
    """R = G = B everywhere and alpha 1 everywhere: one channel is fitted, saved and rendered."""
    import OpenEXR

    y, x = np.mgrid[0:12, 0:12] / 12
    grey = (np.sin(5 * x) * np.cos(4 * y) + 1.5).astype(np.float16)
    channels = {"R": grey, "G": grey, "B": grey, "A": np.ones_like(grey)}
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION}, channels) as exr:
        exr.write(str(tmp_path / "grey.exr"))
    argv = ("fit-image", tmp_path / "grey.exr", "--model", "relu-pe", "--steps", 20, "--out", tmp_path / "run", "--no-progress")
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["image"]["channels"] == 1
    assert iio.imread(tmp_path / "run" / "reconstruction.png").shape == (12, 12)
    assert run(capsys, "render", tmp_path / "run", "--width", 24, "--out", tmp_path / "x2.png")[0] == 0
    assert iio.imread(tmp_path / "x2.png").shape == (24, 24)
    assert run(capsys, "render-image", tmp_path / "run", "--scale", 2, "--out", tmp_path / "x2.tif")[0] == 0
    assert iio.imread(tmp_path / "x2.tif").shape == (24, 24)
    status, out, err = run(capsys, "eval", tmp_path / "run")
    assert status == 0 and "psnr" in last_json(out), err


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


def test_render_keeps_an_image_runs_aspect_ratio(tmp_path, capsys):
    """A 2:1 image: one of --width/--height sets the other; both of another aspect fit the picture inside."""
    y, x = np.mgrid[0:8, 0:16] / 16
    iio.imwrite(tmp_path / "wide.png", (np.stack([x, y, x * y], -1) * 255).astype(np.uint8))
    status, _, err = run(capsys, "fit-image", tmp_path / "wide.png", "--model", "relu", "--steps", 2, "--out", tmp_path / "r")
    assert status == 0, err
    for flags, size in (
        (("--width", 32), (32, 16)),
        (("--height", 4), (8, 4)),
        (("--width", 20, "--height", 10), (20, 10)),
        (("--width", 64, "--height", 36), (64, 32)),  # 16:9 asked: the 2:1 picture inside it
        (("--width", 30, "--height", 30), (30, 15)),
    ):
        status, _, err = run(capsys, "render", tmp_path / "r", *flags, "--out", tmp_path / "out.png", "--no-progress")
        assert status == 0, err
        assert iio.imread(tmp_path / "out.png").shape[:2] == (size[1], size[0]), (flags, err)
        assert f"({size[0]}x{size[1]})" in err
        assert ("aspect kept inside" in err) == (len(flags) == 4 and flags[1::2] != size), (flags, err)
    status, _, err = run(capsys, "render", tmp_path / "r", "--width", 0, "--out", tmp_path / "out.png")
    assert status == 1 and "--width and --height must be positive" in err


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
    step = RunDirectory(out).latest_checkpoint().step
    assert f"interrupted at step {step}; checkpoint saved in {out}; continue with --resume" in err and "Traceback" not in err
    status, lines, err = run(capsys, "fit-image", tiny_image, "--resume", "--steps", step + 3, "--out", out, "--no-progress")
    assert status == 0 and last_json(lines)["step"] == step + 3, err
