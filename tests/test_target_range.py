"""--target-range: the network learns the signal mapped to [lo, hi]; the run's outputs, metrics and
renders stay in the signal's own units, for images (8-bit and HDR), audio and video."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import soundfile
import torch

from nfield.errors import NfieldError
from nfield.fields.field import output_map
from nfield.runs.single import load_run
from tests.run_checks import cli


def network_outputs(run, coords: torch.Tensor) -> torch.Tensor:
    """The raw network's outputs (before the field's output map) at `coords`."""
    model = run.task.model
    with torch.no_grad():
        return model.network(model.encoding(coords))


def test_output_map_closed_form():
    assert output_map((0.0, 1.0), (-1.0, 1.0)) == {"output_scale": 0.5, "output_shift": 0.5}
    assert output_map((-1.0, 1.0), (0.0, 1.0)) == {"output_scale": 2.0, "output_shift": -1.0}
    mapped = output_map((0.0, 4.0), (-1.0, 1.0))  # an HDR image up to 4
    assert [mapped["output_scale"] * v + mapped["output_shift"] for v in (-1.0, 1.0)] == [0.0, 4.0]
    for bad in ((1.0, 1.0), (2.0, -1.0), (0.0, float("inf"))):
        with pytest.raises(NfieldError, match="--target-range"):
            output_map((0.0, 1.0), bad)


def test_an_hdr_image_is_learned_in_the_target_range_and_rendered_in_its_own(tmp_path, capsys):
    y, x = np.mgrid[0:16, 0:16] / 15.0
    hdr = np.stack([4.0 * x * y, 2.0 * x, 0.5 + y], axis=-1).astype(np.float32)  # linear light up to 4
    iio.imwrite(tmp_path / "hdr.tif", hdr)
    argv = ("fit-image", tmp_path / "hdr.tif", "--model", "relu", "--target-range", -1, 1, "--steps", 150)
    status, out, err = cli(capsys, *argv, "--out", tmp_path / "run", "--no-progress", "--device", "cpu")
    assert status == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    data_range = config["image"]["data_range"]
    assert config["field"]["output"] == pytest.approx({"scale": data_range / 2, "shift": data_range / 2})
    run = load_run(tmp_path / "run", "cpu", data=True)
    rendered = run.task.render(16, 16)
    assert rendered.amax().item() > 2.0  # the image's units, not [-1, 1]
    assert run.task.evaluate()["psnr"] == pytest.approx(json.loads(out[-1])["psnr"], abs=1e-4)
    from nfield.data.images import pixel_coordinates

    raw = network_outputs(run, pixel_coordinates(torch.arange(256), 16, 16)).reshape(16, 16, 3)
    assert torch.allclose(raw, 2 * rendered / data_range - 1, atol=1e-4)


def test_audio_and_video_runs_keep_their_units(tmp_path, capsys):
    rate = 4000
    t = np.arange(1000) / rate
    samples = (0.8 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
    soundfile.write(tmp_path / "tone.wav", samples, rate, subtype="FLOAT")
    argv = ("fit-audio", tmp_path / "tone.wav", "--target-range", 0, 1, "--steps", 60, "--out", tmp_path / "audio")
    status, _, err = cli(capsys, *argv, "--no-progress", "--device", "cpu")
    assert status == 0, err
    run = load_run(tmp_path / "audio", "cpu", data=True)
    assert json.loads((tmp_path / "audio" / "config.json").read_text())["field"]["output"] == {"scale": 2.0, "shift": -1.0}
    fitted = run.task.render(1000)
    assert fitted.amin().item() < -0.3 and fitted.amax().item() > 0.3  # full scale [-1, 1], not [0, 1]

    frames = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    for k in range(4):
        frames[k, 4:12, 2 + 2 * k : 8 + 2 * k] = 255
    iio.imwrite(tmp_path / "clip.mp4", frames, fps=4, codec="libx264", quality=10, macro_block_size=8)
    small = ("--model", "hash", "--n-levels", 4, "--log2-hashmap-size", 10, "--target-range", -1, 1, "--steps", 60)
    status, out, err = cli(capsys, "fit-video", tmp_path / "clip.mp4", *small, "--out", tmp_path / "video", "--no-progress")
    assert status == 0, err
    run = load_run(tmp_path / "video", "cpu", data=True)
    assert json.loads((tmp_path / "video" / "config.json").read_text())["field"]["output"] == {"scale": 0.5, "shift": 0.5}
    rendered = run.task.render(4, 16, 16)
    target = run.task._data().frames.float() / 255
    assert (rendered - target).abs().mean().item() < 0.15  # [0, 1] frames
    result = json.loads(out[-1])  # the run's metrics are of the [0, 1] frames
    for frame, reported in zip(result["scored_frames"], result["psnr_per_frame"]):
        mse = (rendered[frame] - target[frame]).square().mean().item()
        assert -10 * np.log10(mse) == pytest.approx(reported, abs=1e-2)


def test_a_run_made_before_target_ranges_resumes_as_before(tmp_path, capsys):
    """A SIREN run whose config.json has no output map (every run before `field.output` existed,
    when SIREN learned [0, 1] intensities) resumes unmapped, although the preset now maps to
    [-1, 1]: it continues exactly as the same run made at once with the identity map."""
    from safetensors.torch import load_file

    from nfield.run_directory import RunDirectory

    y, x = np.mgrid[0:12, 0:12] / 11.0
    iio.imwrite(tmp_path / "ramp.png", (255 * (0.2 + 0.6 * x * y)).astype(np.uint8))
    common = ("--model", "siren", "--n-neurons", 16, "--n-hidden-layers", 2, "--checkpoint-every", 10, "--no-progress")
    identity = ("--target-range", 0, 1)  # what every run did before: the network learns [0, 1], no map recorded
    status, uninterrupted, _ = cli(
        capsys, "fit-image", tmp_path / "ramp.png", *common, *identity, "--steps", 30, "--out", tmp_path / "a"
    )
    assert status == 0
    assert cli(capsys, "fit-image", tmp_path / "ramp.png", *common, *identity, "--steps", 10, "--out", tmp_path / "b")[0] == 0
    config_file = tmp_path / "b" / "config.json"
    assert "output" not in json.loads(config_file.read_text())["field"]  # config.json as written before the change
    status, out, err = cli(
        capsys, "fit-image", tmp_path / "ramp.png", "--resume", "--steps", 30, "--out", tmp_path / "b", "--no-progress"
    )
    assert status == 0, err
    assert "output" not in json.loads(config_file.read_text())["field"]  # still unmapped
    a = load_file(str(RunDirectory(tmp_path / "a").latest_checkpoint().model_file))
    b = load_file(str(RunDirectory(tmp_path / "b").latest_checkpoint().model_file))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = load_run(tmp_path / "b", "cpu", data=True)
    from nfield.data.images import pixel_coordinates

    coords = pixel_coordinates(torch.arange(144), 12, 12)
    assert torch.equal(network_outputs(run, coords), run.task.model(coords))  # the network's own values are the image's
    assert json.loads(out[-1])["psnr"] == json.loads(uninterrupted[-1])["psnr"]
