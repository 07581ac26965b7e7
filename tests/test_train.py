"""The generic trainer on a tiny deterministic task: schedules, resume, checkpoints, NaN guard."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nfield.errors import NfieldError, TrainingDiverged
from nfield.run_directory import RunDirectory
from nfield.training.checkpoint import load_model_weights
from nfield.training.trainer import (
    TrainConfig,
    Trainer,
    learning_rate_factor,
    progress_aware_modules,
    resolve_device,
    seed_everything,
)


class Recorder(nn.Module):
    """Remembers every update(step, total) call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def update(self, step, total):
        self.calls.append((step, total))


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 1))
        self.recorder = Recorder()

    def forward(self, x):
        return self.net(x)


class RegressionTask:
    """Fit y = sin(3x) with a small MLP on random batches drawn from the task's own generator."""

    name = "regression"

    def __init__(self, seed=0, poison_at=None):
        self.model = SmallNet()
        self.generator = torch.Generator().manual_seed(seed)
        self.poison_at = poison_at
        self.evaluations = 0

    def param_groups(self):
        return [{"params": list(self.model.parameters())}]

    def sample(self, step):
        x = torch.rand(64, 1, generator=self.generator) * 2 - 1
        return step, x, torch.sin(3 * x)

    def loss(self, batch):
        step, x, y = batch
        mse = ((self.model(x) - y) ** 2).mean()
        if self.poison_at is not None and step >= self.poison_at:
            mse = mse * float("nan")
        return mse, {"mse": mse.detach()}

    def evaluate(self, progress=False, leave=True):
        self.evaluations += 1
        x = torch.linspace(-1, 1, 101)[:, None]
        with torch.no_grad():
            return {"psnr": float(-10 * torch.log10(((self.model(x) - torch.sin(3 * x)) ** 2).mean()))}

    def write_outputs(self, run_dir, progress=False):
        (Path(run_dir) / "exported.txt").write_text("ok")

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def make(run_dir, steps, seed=0, **kw):
    seed_everything(seed)
    task = RegressionTask(seed=seed, poison_at=kw.pop("poison_at", None))
    settings = {"eval_every": 10, "checkpoint_every": 10, "log_every": 5, **kw}
    cfg = TrainConfig(steps=steps, lr=1e-2, progress=False, **settings)
    return task, Trainer(task, cfg, run_dir)


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_reduces_loss_and_writes_metrics(tmp_path):
    task, trainer = make(tmp_path, 150)
    before = task.evaluate()["psnr"]
    final = trainer.fit()
    assert final["psnr"] > before + 5
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in l for l in lines)
    evals = [l for l in lines if l["kind"] == "eval"]
    assert [l["step"] for l in evals] == list(range(10, 151, 10))
    assert all("psnr" in l for l in evals)
    assert evals[-1]["psnr"] == pytest.approx(final["psnr"])
    assert (tmp_path / "exported.txt").exists()
    assert task.model.recorder.calls == [(s, 150) for s in range(150)]


@pytest.mark.parametrize("schedule", ["cosine", "constant", "exponential"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path, schedule):
    task_a, trainer_a = make(tmp_path / "a", 30, lr_schedule=schedule)
    trainer_a.fit()

    task_b, trainer_b = make(tmp_path / "b", 30, lr_schedule=schedule)
    assert trainer_b.fit(stop_after=20) == {}
    assert RunDirectory(tmp_path / "b").latest_checkpoint().step == 20
    task_c, trainer_c = make(tmp_path / "b", 30, seed=123, lr_schedule=schedule)  # different init, restored from disk
    assert trainer_c.resume() == 20
    trainer_c.fit()
    for key, value in weights(task_a.model).items():
        assert torch.equal(value, task_c.model.state_dict()[key]), key
    # metrics.jsonl reads like one run
    steps = [
        json.loads(l)["step"]
        for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
        if json.loads(l)["kind"] == "train"
    ]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_extending_a_finished_run_with_more_steps(tmp_path):
    task, trainer = make(tmp_path, 20, lr_schedule="constant")
    trainer.fit()
    task2, trainer2 = make(tmp_path, 40, lr_schedule="constant")
    trainer2.resume()
    trainer2.fit()
    assert trainer2.step == 40 and RunDirectory(tmp_path).latest_checkpoint().step == 40
    ref, ref_trainer = make(tmp_path / "ref", 40, lr_schedule="constant")
    ref_trainer.fit()
    for key, value in weights(ref.model).items():
        assert torch.equal(value, task2.model.state_dict()[key])


def test_checkpoints_hold_safetensors_weights_and_only_the_newest_are_kept(tmp_path):
    task, trainer = make(tmp_path, 50, keep_checkpoints=2)
    trainer.fit()
    kept = RunDirectory(tmp_path).list_checkpoints()
    assert [c.step for c in kept] == [40, 50]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    fresh = RegressionTask().model
    load_model_weights(fresh, kept[-1])
    for key, value in weights(task.model).items():
        assert torch.equal(value, fresh.state_dict()[key])


def test_a_half_written_checkpoint_is_ignored(tmp_path):
    task, trainer = make(tmp_path, 20)
    trainer.fit()
    broken = tmp_path / "checkpoints" / "step_0000030"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"partial")  # no trainer.pt: never completed
    assert RunDirectory(tmp_path).latest_checkpoint().step == 20


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    task, trainer = make(tmp_path, 40, poison_at=23)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 24.*last good checkpoint \(step 20\)"):
        trainer.fit()
    assert [c.step for c in RunDirectory(tmp_path).list_checkpoints()] == [10, 20]
    good = RegressionTask().model
    load_model_weights(good, RunDirectory(tmp_path).latest_checkpoint())
    assert all(torch.isfinite(v).all() for v in good.state_dict().values())


def test_no_checkpoint_is_written_after_an_unchecked_nan(tmp_path):
    seed_everything(0)
    task = RegressionTask(poison_at=12)
    cfg = TrainConfig(steps=40, lr=1e-2, eval_every=0, checkpoint_every=5, log_every=25, progress=False)
    with pytest.raises(TrainingDiverged, match="at step 13"):
        Trainer(task, cfg, tmp_path).fit()
    assert [c.step for c in RunDirectory(tmp_path).list_checkpoints()] == [5, 10]


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    task, trainer = make(tmp_path, 40)
    sample = task.sample

    def interrupt_at_17(step):
        if step == 17:
            raise KeyboardInterrupt
        return sample(step)

    task.sample = interrupt_at_17
    with pytest.raises(NfieldError, match="interrupted at step 17.*--resume"):
        trainer.fit()
    assert RunDirectory(tmp_path).latest_checkpoint().step == 17


def test_a_run_resumes_across_enabled_and_disabled_gradient_scaling(tmp_path):
    """A CPU run (scaler disabled, saved as {}) resumes where scaling is on (CUDA), and back."""
    _, started = make(tmp_path, 30)
    started.fit(stop_after=10)
    task, scaled = make(tmp_path, 30)
    scaled.scaler = torch.amp.GradScaler("cpu", enabled=True)  # as on CUDA with mixed precision
    assert scaled.resume() == 10
    before = weights(task.model)
    assert scaled.fit(stop_after=20) == {}
    assert scaled.scaler.get_scale() == 2.0**16  # fresh: no overflow in 10 steps, growth after 2000
    assert any(not torch.equal(value, task.model.state_dict()[key]) for key, value in before.items())
    _, unscaled = make(tmp_path, 30)
    assert unscaled.resume() == 20
    assert math.isfinite(unscaled.fit()["psnr"]) and RunDirectory(tmp_path).latest_checkpoint().step == 30


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    _, trainer = make(tmp_path, 10)
    with pytest.raises(NfieldError, match="no checkpoint to resume"):
        trainer.resume()


def test_invalid_configs_are_rejected():
    with pytest.raises(NfieldError, match="--steps"):
        TrainConfig(steps=0)
    with pytest.raises(NfieldError, match="--lr"):
        TrainConfig(lr=-1)
    with pytest.raises(NfieldError, match="--device"):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(NfieldError, match="CUDA is not available"):
            resolve_device("cuda")


def test_learning_rate_schedules_closed_form():
    cfg = TrainConfig(steps=101, lr_schedule="cosine", lr_final_factor=0.1)
    assert learning_rate_factor(0, cfg) == pytest.approx(1.0)
    assert learning_rate_factor(50, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate_factor(100, cfg) == pytest.approx(0.1)
    cfg = TrainConfig(steps=101, lr_schedule="exponential", lr_final_factor=0.01)
    assert learning_rate_factor(50, cfg) == pytest.approx(0.1)
    cfg = TrainConfig(steps=100, lr_schedule="constant", lr_warmup_steps=10)
    assert learning_rate_factor(4, cfg) == pytest.approx(0.5)
    assert learning_rate_factor(60, cfg) == 1.0


def test_update_hook_skips_containers():
    model = nn.Module()
    model.parts = nn.ModuleDict({"a": Recorder()})
    found = progress_aware_modules(model)
    assert len(found) == 1 and isinstance(found[0], Recorder)


def test_a_run_says_up_front_how_long_it_will_take(tmp_path, monkeypatch, capsys):
    clock = iter(range(0, 10**6, 5))  # every perf_counter call moves 5 s: each step takes 5 s
    monkeypatch.setattr("nfield.training.trainer.perf_counter", lambda: float(next(clock)))
    _, trainer = make(tmp_path / "slow", 40)
    trainer.fit()
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("about")]
    assert said == ["about 3 min for the remaining 34 steps (5.00 s per step on cpu)"], said
    clock = iter(range(0, 10**6, 1))  # 1 s per step: 34 s left is not worth a line
    monkeypatch.setattr("nfield.training.trainer.perf_counter", lambda: float(next(clock)))
    _, trainer = make(tmp_path / "fast", 40)
    trainer.fit()
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("about")]


def test_the_trainer_seeds_a_new_run_from_its_config(tmp_path):
    """Two trainers with the same config draw the same random streams, whatever ran before them."""
    torch.manual_seed(123)
    task_a, trainer_a = make(tmp_path / "a", 5)
    torch.rand(7)  # disturb the global generator between building the task and training
    trainer_a.fit()
    draw_a = torch.rand(3)
    task_b, trainer_b = make(tmp_path / "b", 5)
    trainer_b.fit()
    assert torch.equal(draw_a, torch.rand(3))
    assert all(torch.equal(a, b) for a, b in zip(task_a.model.parameters(), task_b.model.parameters()))


def test_a_long_stretch_without_a_checkpoint_is_saved_at_the_next_log_step(tmp_path, monkeypatch):
    """checkpoint_seconds: a run whose step checkpoints are far apart still leaves one to resume from."""
    import nfield.training.trainer

    clock = iter(range(0, 10**6, 10))  # every perf_counter call 10 s later: 10 s of training per step
    monkeypatch.setattr(nfield.training.trainer, "perf_counter", lambda: next(clock))
    task, trainer = make(tmp_path, 12, checkpoint_every=0, checkpoint_seconds=25.0, log_every=2, keep_checkpoints=10)
    trainer.fit()
    assert [c.step for c in RunDirectory(tmp_path).list_checkpoints()] == [4, 8, 12]  # 40 s, 80 s, and the end
    with pytest.raises(NfieldError, match="--checkpoint-seconds must be >= 0"):
        TrainConfig(checkpoint_seconds=-1)


def test_a_save_removes_what_a_killed_save_left_behind(tmp_path):
    task, trainer = make(tmp_path, 10)
    left = tmp_path / "checkpoints" / ".tmp-step_0000005-99999"
    left.mkdir(parents=True)
    (left / "model.safetensors").write_bytes(b"half")
    trainer.fit()
    assert not list((tmp_path / "checkpoints").glob(".tmp-*")) and RunDirectory(tmp_path).latest_checkpoint().step == 10
