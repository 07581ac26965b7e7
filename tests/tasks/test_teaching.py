"""INT (nonparametric teaching): its schedules in closed form, the picks, and exact resume."""

import pytest
import torch

from nfield.data.images import load_image
from nfield.encodings import FrequencyConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig
from nfield.tasks.image import ImageTask, ImageTaskConfig
from nfield.tasks.teaching import Teacher, TeachingConfig, pick_interval, selection_ratio
from nfield.training.trainer import TrainConfig, Trainer, seed_everything

FIELD = FieldConfig(FrequencyConfig(n_frequencies=6), MLPConfig(n_neurons=32, n_hidden_layers=2))


def test_schedules_follow_the_official_defaults_in_closed_form():
    cfg = TeachingConfig(enabled=True)
    assert [selection_ratio(s, 1000, cfg) for s in (0, 99, 100, 550, 999)] == pytest.approx([0.2, 0.2, 0.28, 0.6, 0.92])
    assert selection_ratio(500, 1000, TeachingConfig(schedule="linear")) == pytest.approx(0.6)
    assert selection_ratio(500, 1000, TeachingConfig(schedule="cosine")) == pytest.approx(0.6)
    # incremental picks: every step for the first quarter, then every 10, 20, ... 50 steps
    assert [pick_interval(s, 1000, cfg) for s in (0, 149, 249, 300, 400, 700, 999)] == [1, 1, 1, 10, 20, 40, 50]
    assert pick_interval(700, 1000, TeachingConfig(refresh="every-step")) == 1
    with pytest.raises(NfieldError, match="start_ratio"):
        Teacher(TeachingConfig(start_ratio=0))


def test_the_teacher_picks_exactly_the_worst_fitted_pixels():
    seed_everything(0)
    image = load_image("camera", 16)
    task = ImageTask(image, FIELD, ImageTaskConfig(teaching=TeachingConfig(enabled=True)), seed=0)
    task.update(0, 100)
    coords, targets = task.sample(0)
    with torch.no_grad():
        everything = torch.arange(task.n_pixels)
        error = (task.model(task._coords).float() - task._targets).square().mean(-1)
    picked = set(task.teacher.picked.tolist())
    assert len(coords) == len(picked) == round(0.2 * task.n_pixels)
    inside = error[torch.tensor(sorted(picked))]
    outside = error[torch.tensor([i for i in everything.tolist() if i not in picked])]
    assert float(inside.min()) >= float(outside.max())
    uniform = ImageTask(image, FIELD, ImageTaskConfig(), seed=0)
    assert len(uniform.sample(0)[0]) == task.n_pixels  # without teaching: the whole (small) image


def test_teaching_trains_and_resumes_exactly(tmp_path):
    image = load_image("camera", 16)
    cfg = TrainConfig(steps=60, lr=1e-2, checkpoint_every=20, eval_every=0, progress=False)
    task_cfg = ImageTaskConfig(batch_size=512, teaching=TeachingConfig(enabled=True))  # random candidate batches

    def trainer(run_dir):
        seed_everything(0)
        task = ImageTask(image, FIELD, task_cfg, seed=0)
        return task, Trainer(task, cfg, run_dir)

    whole, run = trainer(tmp_path / "whole")
    metrics = run.fit()
    assert metrics["psnr"] > 12  # measured 14.5 dB after 60 steps on 32x32
    _, paused = trainer(tmp_path / "paused")
    paused.fit(stop_after=30)
    resumed, run = trainer(tmp_path / "paused")
    run.resume()
    run.fit()
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
