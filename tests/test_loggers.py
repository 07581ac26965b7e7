"""``--logger tensorboard`` and ``--logger wandb`` (`nfield.runs.loggers`): the log holds metrics.jsonl's numbers
at their steps and the evaluations' pictures, each step once after a resume, one log per signal of a folder; a
missing package is one line before training; a failure while logging never stops training."""

import importlib.util
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import soundfile

from nfield.errors import NfieldError
from nfield.run_directory import RunDirectory, read_records
from nfield.runs import loggers
from nfield.runs.single import RunRequest, train
from tests.run_checks import cli
from tests.test_stacked import write_images

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_tensorboard = pytest.mark.skipif(
    not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install 'nfield[tensorboard]')"
)
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'nfield[wandb]')")

FAST = ("--model", "relu-pe", "--n-neurons", 32, "--n-hidden-layers", 1, "--no-progress", "--device", "cpu")
EVERY = ("--log-every", 5, "--eval-every", 10, "--checkpoint-every", 10)
TINY_NERF = ("--n-levels", 4, "--log2-hashmap-size", 12, "--grid-resolution", 16, "--grid-warmup", 8, "--steps-per-ray", 32)
TINY_NERF += ("--batch-rays", 128, "--no-progress", "--device", "cpu")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """A 16x16 RGB image."""
    return write_images(tmp_path_factory.mktemp("image"), 1)[0]


def tensorboard_log(path):
    """({tag: [(step, value)]}, {tag: [(step, (H, W, C) uint8)]}) of the TensorBoard log `path`, as TensorBoard reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    pictures = {tag: [(e.step, iio.imread(e.encoded_image_string)) for e in accumulator.Images(tag)] for tag in tags["images"]}
    return scalars, pictures


def from_metrics(run_dir):
    """{tag: [(step, value)]}: every number of metrics.jsonl's train and eval records, by the logger's tags."""
    expected = {}
    for record in read_records(RunDirectory(run_dir).metrics):
        kind = record.get("kind")
        if kind not in ("train", "eval"):
            continue
        for key, value in record.items():
            if key in ("step", "kind") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            tag = f"{kind}/{key.removeprefix('train_') if kind == 'train' else key}"
            expected.setdefault(tag, []).append((record["step"], float(value)))
    return expected


def assert_log_matches_metrics(run_dir):
    """The run's TensorBoard log holds exactly metrics.jsonl's numbers, each step once; returns its pictures."""
    scalars, pictures = tensorboard_log(RunDirectory(run_dir).tensorboard)
    expected = from_metrics(run_dir)
    assert sorted(scalars) == sorted(expected)
    for tag, values in expected.items():
        assert [step for step, _ in scalars[tag]] == [step for step, _ in values], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in values], rel=1e-6), tag
    return pictures


@needs_tensorboard
def test_the_log_holds_every_number_of_metrics_jsonl_and_each_reconstruction(image, tmp_path, capsys):
    out = tmp_path / "run"
    status, _, err = cli(capsys, "fit-image", image, *FAST, *EVERY, "--steps", 30, "--out", out, "--logger", "tensorboard")
    assert status == 0, err
    assert any(RunDirectory(out).tensorboard.glob("events.out.tfevents.*"))
    pictures = assert_log_matches_metrics(out)
    scalars, _ = tensorboard_log(RunDirectory(out).tensorboard)
    assert {"train/loss", "train/psnr", "train/lr", "train/seconds", "eval/psnr", "eval/ssim"} <= set(scalars)
    assert [step for step, _ in scalars["train/loss"]] == [5, 10, 15, 20, 25, 30]
    assert list(pictures) == ["eval/reconstruction"]
    assert [step for step, _ in pictures["eval/reconstruction"]] == [10, 20, 30]
    assert all(picture.shape == (16, 16, 3) for _, picture in pictures["eval/reconstruction"])
    final = pictures["eval/reconstruction"][-1][1]
    assert np.array_equal(final, iio.imread(out / "reconstruction.png")[..., :3])  # the same render, not another
    assert not np.array_equal(pictures["eval/reconstruction"][0][1], final)


@needs_tensorboard
def test_a_resumed_run_logs_each_step_once(image, tmp_path, capsys):
    """Trained to 20 without a log, resumed to 30 with one (the first 20 steps come from metrics.jsonl),
    then resumed from its step-20 checkpoint after steps 21-30 were logged: the log holds every step once,
    with metrics.jsonl's values."""
    out = tmp_path / "run"
    assert cli(capsys, "fit-image", image, *FAST, *EVERY, "--steps", 20, "--out", out)[0] == 0
    assert not RunDirectory(out).tensorboard.exists()
    resume = ("fit-image", image, "--out", out, "--resume", "--logger", "tensorboard", "--no-progress", "--device", "cpu")
    status, _, err = cli(capsys, *resume, "--steps", 30)
    assert status == 0, err
    assert_log_matches_metrics(out)
    (RunDirectory(out).checkpoints / "step_0000030").rename(tmp_path / "dropped")  # as if killed before saving step 30
    status, _, err = cli(capsys, *resume, "--steps", 40)
    assert status == 0 and "from step 20" in err, err
    pictures = assert_log_matches_metrics(out)
    scalars, _ = tensorboard_log(RunDirectory(out).tensorboard)
    assert [step for step, _ in scalars["train/loss"]] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert [step for step, _ in scalars["eval/psnr"]] == [10, 20, 30, 40]
    assert [step for step, _ in pictures["eval/reconstruction"]] == [30, 40]  # steps 10 and 20 trained without a log
    assert len(list(RunDirectory(out).tensorboard.glob("events.out.tfevents.*"))) == 2


@needs_tensorboard
def test_nerf_and_distilled_runs_log_their_first_held_out_view(tmp_path, capsys):
    from scenes.synthetic import generate

    scene = generate("primitives", tmp_path / "scene", size=16, n_train=8, n_val=1, n_test=2)
    nerf, kilo = tmp_path / "nerf", tmp_path / "kilo"
    argv = ("train-nerf", scene, *TINY_NERF, "--steps", 20, "--eval-every", 10, "--log-every", 5)
    status, _, err = cli(capsys, *argv, "--out", nerf, "--logger", "tensorboard")
    assert status == 0, err
    pictures = assert_log_matches_metrics(nerf)
    assert [step for step, _ in pictures["eval/render"]] == [10, 20]
    truth = sorted((nerf / "renders").glob("*_truth.png"))[0]
    assert np.array_equal(pictures["eval/render"][-1][1], iio.imread(truth.with_name(truth.name.replace("_truth", "")))[..., :3])
    student = ("--longest-axis-cells", 4, "--position-frequencies", 2, "--batch-points", 256, "--no-progress", "--device", "cpu")
    argv = ("distill", nerf, *student, "--distill-steps", 10, "--finetune-steps", 10, "--eval-every", 5, "--out", kilo)
    status, _, err = cli(capsys, *argv, "--logger", "tensorboard")
    assert status == 0, err
    for phase in (kilo / "distill", kilo):  # each phase its own log
        pictures = assert_log_matches_metrics(phase)
        assert [step for step, _ in pictures["eval/render"]] == [5, 10]
    assert "train/rgb_psnr" in tensorboard_log(RunDirectory(kilo / "distill").tensorboard)[0]


@needs_tensorboard
@pytest.mark.parametrize("kind", ["audio", "video"])
def test_audio_and_video_runs_log_their_scalars_only(kind, tmp_path, capsys):
    if kind == "audio":
        t = np.arange(2000) / 8000
        source = tmp_path / "tone.wav"
        soundfile.write(str(source), (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 8000)
        argv = ("fit-audio", source)
    else:
        source = tmp_path / "frames"
        for k, path in enumerate(write_images(source, 4, size=12)):
            path.rename(source / f"{k:03d}.png")
        argv = ("fit-video", source, "--batch-size", 512)
    out = tmp_path / "run"
    status, _, err = cli(
        capsys,
        *argv,
        "--steps",
        20,
        "--eval-every",
        10,
        "--log-every",
        5,
        "--no-progress",
        "--device",
        "cpu",
        "--out",
        out,
        "--logger",
        "tensorboard",
    )
    assert status == 0, err
    assert assert_log_matches_metrics(out) == {}
    scalars, _ = tensorboard_log(RunDirectory(out).tensorboard)
    assert ("eval/snr" if kind == "audio" else "eval/psnr_min") in scalars
    assert "eval/psnr_per_frame" not in scalars  # a list, left out


@needs_tensorboard
@pytest.mark.parametrize("signals_per_batch", [0, 1], ids=["stacked", "one-after-another"])
def test_each_signal_of_a_folder_logs_into_its_own_run(signals_per_batch, tmp_path, capsys):
    folder = tmp_path / "pair"
    write_images(folder, 2)
    out = tmp_path / "c"
    argv = ("fit-image", folder, *FAST, *EVERY, "--steps", 20, "--signals-per-batch", signals_per_batch, "--out", out)
    status, lines, err = cli(capsys, *argv, "--logger", "tensorboard")
    assert status == 0 and json.loads(lines[-1])["ok"] == 2, err
    finals = []
    for name in ("img0", "img1"):
        pictures = assert_log_matches_metrics(out / name)
        assert [step for step, _ in pictures["eval/reconstruction"]] == [10, 20]
        finals.append(pictures["eval/reconstruction"][-1][1])
        assert np.array_equal(finals[-1], iio.imread(out / name / "reconstruction.png")[..., :3])
    assert not np.array_equal(*finals)
    assert not (out / "tensorboard").exists()


@pytest.mark.parametrize("logger,module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_a_missing_package_is_one_line_before_training(logger, module, image, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as it does without the package
    (tmp_path / "folder").mkdir()
    for argv in (("fit-image", image), ("fit-image", tmp_path / "folder"), ("distill", tmp_path / "no-teacher")):
        out = tmp_path / "out"
        status, _, err = cli(capsys, *argv, "--out", out, "--logger", logger, "--no-progress", "--device", "cpu")
        assert status == 1, (argv, err)
        assert err.strip().splitlines() == [
            f"nfield: error: --logger {logger} needs the {logger} package: pip install 'nfield[{logger}]'"
        ]
        assert not out.exists()


def test_an_unknown_logger_is_refused_in_one_line(image, tmp_path, capsys):
    status, _, err = cli(capsys, "fit-image", image, "--out", tmp_path / "out", "--logger", "mlflow")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "--logger" in err and "tensorboard" in err, err
    with pytest.raises(NfieldError, match="unknown --logger 'mlflow'; use none, tensorboard or wandb"):
        train(RunRequest("image", str(image), out=tmp_path / "out", device="cpu", logger="mlflow"))
    assert not (tmp_path / "out").exists()


@needs_tensorboard
def test_a_failure_while_logging_is_one_warning_and_training_goes_on(image, tmp_path, capsys, monkeypatch):
    def full(self, step, values, pictures):
        raise OSError("No space left on device")

    monkeypatch.setattr(loggers._TensorBoardWriter, "write", full)
    out = tmp_path / "run"
    status, lines, err = cli(capsys, "fit-image", image, *FAST, *EVERY, "--steps", 20, "--out", out, "--logger", "tensorboard")
    assert status == 0 and json.loads(lines[-1])["step"] == 20, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert warnings == [f"nfield: warning: --logger tensorboard stopped logging {out}: No space left on device"], err
    assert [r["step"] for r in read_records(RunDirectory(out).metrics) if r.get("kind") == "eval"] == [10, 20]


@needs_wandb
def test_wandb_logs_offline_into_the_run_and_a_resume_continues_its_run(image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")  # offline all the same: nothing is sent
    out = tmp_path / "run"
    argv = ("fit-image", image, *EVERY, "--out", out, "--logger", "wandb", "--no-progress", "--device", "cpu")
    status, lines, err = cli(capsys, *argv, *FAST, "--steps", 20)
    assert status == 0 and json.loads(lines[-1])["step"] == 20, err
    state = json.loads((RunDirectory(out).wandb / loggers.WANDB_RUN_FILE).read_text())
    assert state["step"] == 20
    (first,) = RunDirectory(out).wandb.glob("offline-run-*")
    assert first.name.endswith(state["id"])
    written = b"".join(path.read_bytes() for path in first.glob("*.wandb"))
    assert all(tag in written for tag in (b"train/loss", b"train/psnr", b"eval/psnr", b"eval/reconstruction"))
    status, _, err = cli(capsys, *argv, "--steps", 30, "--resume")
    assert status == 0, err
    runs = sorted(RunDirectory(out).wandb.glob("offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(state["id"]) for run in runs)  # the same W&B run, continued
    assert json.loads((RunDirectory(out).wandb / loggers.WANDB_RUN_FILE).read_text()) == {"id": state["id"], "step": 30}


def test_importing_the_command_line_imports_no_logger_package():
    loaded = "sorted(m for m in sys.modules if m.split('.')[0] in ('tensorboard', 'wandb') or m == 'torch.utils.tensorboard')"
    code = f"import sys, nfield.cli; print({loaded})"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_a_picture_is_logged_as_rgb_at_most_picture_side_pixels_a_side():
    import torch

    grey = loggers._picture(torch.full((2050, 10, 1), 0.5))
    assert grey.shape == (684, 4, 3) and grey.dtype == np.uint8 and (grey == 128).all()
    bright = loggers._picture(torch.full((4, 4, 3), 3.0))  # an HDR image's pictures come divided by its range
    assert bright.shape == (4, 4, 3) and (bright == 255).all()
