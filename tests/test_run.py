"""nfield.runs.single as a library: train a run from a request, load it back with or without its data."""

import json

import pytest
import torch

from nfield.errors import NfieldError
from nfield.runs.single import RunRequest, load_run, train
from nfield.tasks.image import ImageTask


def small_camera_run(out, model, steps):
    """A request for a short fit of the camera image at 32x32."""
    return RunRequest(
        "image", "camera", model=model, out=out, train={"steps": steps, "progress": False}, data_options={"downscale": 16}
    )


def test_train_then_load_a_run_with_and_without_its_data(tmp_path):
    result = train(small_camera_run(tmp_path / "run", "hash", steps=20))
    assert result["step"] == 20 and result["run_dir"] == str(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["steps"] == 20 and config["task_config"]["batch_size"] == 2**16  # the CPU's batch
    bare = load_run(tmp_path / "run")
    assert isinstance(bare.task, ImageTask) and bare.step == 20 and not bare.task.model.training
    assert bare.task.render(8, 8).shape == (8, 8, 1)
    with pytest.raises(NfieldError, match="without its image"):
        bare.task.evaluate()
    full = load_run(tmp_path / "run", data=True)
    assert full.task.evaluate()["psnr"] == pytest.approx(result["psnr"], abs=1e-6)
    assert torch.equal(full.task.render(8, 8), bare.task.render(8, 8))


def test_resuming_refuses_what_cannot_change(tmp_path):
    base = dict(out=tmp_path / "run", train={"steps": 4, "progress": False}, data_options={"downscale": 16})
    train(RunRequest("image", "camera", model="relu", **base))
    cases = [
        (dict(model="siren"), "without changing the model"),
        (dict(overrides={"n_neurons": 8}), "model options cannot change"),
        (dict(train={"seed": 3}), "without changing the seed"),
        (dict(overwrite=True), "contradict"),
    ]
    for change, message in cases:
        with pytest.raises(NfieldError, match=message):
            train(RunRequest("image", "camera", resume=True, **{**base, **change}))
    with pytest.raises(NfieldError, match="is a 'image' run, not a sdf run"):
        train(RunRequest("sdf", "bunny.obj", resume=True, out=tmp_path / "run"))
    assert train(RunRequest("image", "camera", resume=True, **{**base, "train": {"steps": 6, "progress": False}}))["step"] == 6


def test_resuming_says_from_which_step_and_checkpoint(tmp_path, capsys):
    base = dict(model="relu", out=tmp_path / "run", data_options={"downscale": 16})
    train(RunRequest("image", "camera", train={"steps": 4, "progress": False}, **base))
    assert not any(line.startswith("resuming") for line in capsys.readouterr().err.splitlines())  # a fresh run does not
    train(RunRequest("image", "camera", resume=True, train={"steps": 6, "progress": False}, **base))
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000004"
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resuming")]
    assert lines == [f"resuming {tmp_path / 'run'} from step 4 of 6 (checkpoint {checkpoint})"]


def test_a_config_missing_a_key_is_one_line(tmp_path):
    train(small_camera_run(tmp_path / "run", "relu", steps=2))
    config_file = tmp_path / "run" / "config.json"
    config = json.loads(config_file.read_text())
    del config["image"]["channels"]
    config_file.write_text(json.dumps(config))
    with pytest.raises(NfieldError, match=r"config.json: missing key 'channels'"):
        load_run(tmp_path / "run")
