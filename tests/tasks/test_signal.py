"""The signal tasks' shared base (`nfield.tasks.signal`): the image, audio and video tasks read a
run's seed the same way, keep the same checkpoint state, and refuse to be used without their data."""

import numpy as np
import pytest
import torch

from nfield.data.audio import Audio
from nfield.data.images import Image
from nfield.data.video import Video
from nfield.encodings import IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig
from nfield.tasks.audio import AudioTask, AudioTaskConfig
from nfield.tasks.image import ImageTask, ImageTaskConfig
from nfield.tasks.signal import SignalTask, recorded_seed
from nfield.tasks.teaching import TeachingConfig
from nfield.tasks.video import VideoTask, VideoTaskConfig

SMALL = FieldConfig(IdentityConfig(), MLPConfig(n_neurons=8, n_hidden_layers=1))
RNG = np.random.default_rng(0)
IMAGE = Image(torch.from_numpy(RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)), 1 / 255, "image")
AUDIO = Audio(torch.from_numpy(RNG.uniform(-0.5, 0.5, (200, 2)).astype(np.float32)), 8000, "clip")
VIDEO = Video(torch.from_numpy(RNG.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)), 10.0, "video")
TASKS = {
    "image": lambda **settings: ImageTask(IMAGE, SMALL, ImageTaskConfig(batch_size=16, **settings), seed=4),
    "audio": lambda **settings: AudioTask(AUDIO, SMALL, AudioTaskConfig(batch_size=16, **settings), seed=4),
    "video": lambda **settings: VideoTask(VIDEO, SMALL, VideoTaskConfig(batch_size=16, **settings), seed=4),
}


def run_config(kind):
    """config.json of an untrained run of `kind`, without its train section."""
    if kind == "image":
        return ImageTask.run_config(IMAGE, 1, SMALL, ImageTaskConfig())
    if kind == "audio":
        return AudioTask.run_config(AUDIO, SMALL, AudioTaskConfig())
    return VideoTask.run_config(VIDEO, 1, SMALL, VideoTaskConfig())


def test_the_seed_is_the_train_sections_or_the_top_level_one_of_older_runs():
    assert recorded_seed({"train": {"seed": 3}, "seed": 5}) == 3
    assert recorded_seed({"train": {}, "seed": 5}) == 5
    assert recorded_seed({"train": {}}) == 0


@pytest.mark.parametrize("kind", TASKS)
def test_every_signal_task_seeds_its_sampler_from_the_recorded_seed(kind):
    config = run_config(kind)
    assert list(config) == [kind, "field", "task_config"]
    cls = type(TASKS[kind]())
    assert issubclass(cls, SignalTask) and cls.kind == kind
    expected = torch.Generator(cls.sampler_device or "cpu").manual_seed(7).get_state()
    for seeds in ({"train": {"seed": 7}}, {"train": {}, "seed": 7}):  # 0.3 and later; before 0.3
        task = cls.from_config({**config, **seeds}, "cpu")
        assert torch.equal(task.generator.get_state(), expected)
        assert task.model.out_dim == (3 if kind != "audio" else 2)


@pytest.mark.parametrize("kind", TASKS)
def test_the_checkpoint_state_is_the_generator_and_the_teachers_picks(kind):
    task = TASKS[kind](teaching=TeachingConfig(enabled=True))
    task.update(0, 10)
    task.sample(0)
    state = task.state_dict()
    assert list(state) == ["generator", "teacher"] and list(state["teacher"]) == ["picked", "picked_at"]
    task.update(1, 10)
    expected = task.sample(1)
    other = TASKS[kind](teaching=TeachingConfig(enabled=True))
    other.model.load_state_dict(task.model.state_dict())  # a checkpoint holds the weights beside the task's state
    other.load_state_dict(state)
    other.update(1, 10)
    assert all(torch.equal(a, b) for a, b in zip(other.sample(1), expected))
    assert list(TASKS[kind]().state_dict()) == ["generator"]


@pytest.mark.parametrize("kind, noun", [("image", "image"), ("audio", "clip"), ("video", "video")])
def test_a_task_built_without_its_data_renders_but_refuses_to_describe_it(kind, noun):
    cls = type(TASKS[kind]())
    task = cls.from_config({**run_config(kind), "train": {"seed": 0}}, "cpu")
    assert getattr(task, kind) is None and len(task.param_groups()[0]["params"]) == 4
    with pytest.raises(NfieldError, match=f"this {kind} task was loaded without its {noun}; load the run with its data"):
        task.describe()
