"""Training curves: metrics.jsonl read back, curves.png written by every run, and ``nfield plot``."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

from nfield.cli import main
from nfield.errors import NfieldError
from nfield.runs.plots import CurvesDrawer, plot_runs, read_metrics, run_labels, write_curves
from nfield.training.trainer import TrainConfig, Trainer


def run(capsys, *argv):
    """Run `nfield argv` in-process; returns (exit status, stderr lines)."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err.strip().splitlines()


def write_jsonl(path, *records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def picture(path):
    """The image at `path` as (H, W, 3) uint8."""
    return iio.imread(path)[..., :3]


def assert_real_plot(image, size=None):
    """Not blank: plenty of ink in several colours (the curves' blue and the markers' red or orange)."""
    if size is not None:
        assert image.shape[:2] == size
    ink = (image < 230).any(-1)
    assert 0.02 < ink.mean() < 0.5
    colours = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert len(colours) > 30
    blue = (image[..., 2] > 150) & (image[..., 0] < 80)  # tab10's first colour, the train curves
    assert blue.sum() > 200


@pytest.fixture(scope="module", autouse=True)
def runs_draw_curves():
    """Runs draw curves.png here (tests/conftest.py turns it off for the rest of the suite)."""
    before = os.environ.get("NFIELD_CURVES")
    os.environ["NFIELD_CURVES"] = "1"
    yield
    if before is None:
        del os.environ["NFIELD_CURVES"]
    else:
        os.environ["NFIELD_CURVES"] = before


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real short image runs (siren and relu), logged every 5 steps and evaluated every 10."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:16, 0:16] / 16
    array = np.stack([np.sin(6 * x), np.cos(5 * y), x * y], -1) * 0.4 + 0.5 + 0.05 * rng.standard_normal((16, 16, 3))
    iio.imwrite(root / "tiny.png", (np.clip(array, 0, 1) * 255).astype(np.uint8))
    for model, steps in (("siren", 30), ("relu", 40)):
        argv = ["fit-image", root / "tiny.png", "--model", model, "--steps", steps, "--out", root / model]
        argv += ["--n-neurons", 32, "--log-every", 5, "--eval-every", 10, "--device", "cpu", "--no-progress"]
        assert main([str(a) for a in argv]) == 0
    return root / "siren", root / "relu"


def test_every_signal_of_a_stacked_collection_writes_its_curves(runs, tmp_path):
    """The signals of a folder train as one stacked model; each run still draws its own curves."""
    folder = tmp_path / "pair"
    folder.mkdir()
    tiny = iio.imread(runs[0].parent / "tiny.png")
    iio.imwrite(folder / "a.png", tiny)
    iio.imwrite(folder / "b.png", tiny[::-1])
    argv = ["fit-image", folder, "--model", "siren", "--n-neurons", 16, "--steps", 10, "--log-every", 5]
    assert main([str(a) for a in (*argv, "--out", tmp_path / "both", "--device", "cpu", "--no-progress")]) == 0
    for name in ("a", "b"):
        assert_real_plot(picture(tmp_path / "both" / name / "curves.png"))


def test_every_run_writes_its_curves(runs):
    siren, relu = (picture(r / "curves.png") for r in runs)
    assert_real_plot(siren, (820, 1100))
    assert_real_plot(relu, (820, 1100))
    red = (siren[..., 0] > 180) & (siren[..., 1] < 80) & (siren[..., 2] < 80)  # the evaluations' markers
    assert red.sum() > 50
    assert not np.array_equal(siren, relu)  # the picture is the data's
    metrics = read_metrics(runs[0])
    assert [r["step"] for r in metrics.evals] == [10, 20, 30]
    assert [r["step"] for r in metrics.train] == [5, 10, 15, 20, 25, 30]
    assert metrics.main_metric() == "psnr" and metrics.title == "siren: image / siren"


def test_nfield_plot_overlays_runs_and_redraws_one(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "both.png"
    status, err = run(capsys, "plot", *runs, "--out", out)
    assert status == 0 and err == [f"wrote {out}"]
    both = picture(out)
    assert_real_plot(both)
    orange = (both[..., 0] > 200) & (both[..., 1] > 100) & (both[..., 1] < 160) & (both[..., 2] < 60)  # the second run
    assert orange.sum() > 200
    for single in runs:
        curves = picture(single / "curves.png")
        assert curves.shape != both.shape or not np.array_equal(curves, both)

    monkeypatch.chdir(tmp_path)  # several runs without --out: plot.png here; one run: its curves.png
    assert run(capsys, "plot", *runs) == (0, ["wrote plot.png"])
    assert picture(tmp_path / "plot.png").shape == both.shape
    before = picture(runs[0] / "curves.png")
    (runs[0] / "curves.png").unlink()
    assert run(capsys, "plot", runs[0]) == (0, [f"wrote {runs[0] / 'curves.png'}"])
    assert np.array_equal(picture(runs[0] / "curves.png"), before)

    assert plot_runs(runs, tmp_path / "sub" / "both.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in write_curves(runs[1], tmp_path / "relu.svg").read_bytes()[:1000]


def test_bad_inputs_give_one_line_and_exit_1(runs, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("hello")
    (tmp_path / "plain").mkdir()
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text(json.dumps({"task": "image", "model": "siren"}))
    write_jsonl(tmp_path / "empty" / "metrics.jsonl")
    write_jsonl(tmp_path / "corrupt" / "metrics.jsonl", "{not json", '{"step": 3, "kind": "backends"}', "[1, 2]")
    cases = [
        (("plot",), "give one or more run directories"),
        (("plot", tmp_path / "missing"), "no such run directory"),
        (("plot", tmp_path / "file.txt"), "not a run directory"),
        (("plot", tmp_path / "plain"), "not an nfield run directory"),
        (("plot", tmp_path / "untrained"), "no metrics.jsonl yet"),
        (("plot", tmp_path / "empty"), "no usable training records"),
        (("plot", runs[0], tmp_path / "corrupt"), "no usable training records"),
        (("plot", runs[0], "--out", tmp_path / "x.gif"), "cannot write '.gif' figures"),
        (("plot", runs[0], "--out", tmp_path / "x"), "no file extension"),
        (("plot", *runs, "--out", tmp_path / "dir.png"), "is a directory"),
    ]
    for argv, message in cases:
        status, lines = run(capsys, *argv)
        assert status == 1 and len(lines) == 1, (argv, lines)
        assert lines[0].startswith("nfield: error:") and message in lines[0], (argv, lines)
    assert not list(tmp_path.glob("x*"))
    result = subprocess.run(
        [sys.executable, "-m", "nfield.cli", "plot", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("nfield: error:"), result.stderr


def test_metrics_reader_aligns_evaluations_and_skips_corrupt_lines(tmp_path):
    write_jsonl(
        tmp_path / "metrics.jsonl",
        {"step": 1, "kind": "backends", "backends": {}, "kept_own_backend": []},
        {"step": 3, "kind": "eval", "psnr": 9.0},  # before any train line: time 0
        {"step": 5, "kind": "train", "loss": 0.5, "train_psnr": 10.0, "lr": 1e-3, "train_seconds": 1.5},
        '{"step": 8, "kind": "train", "loss": 0.4, "train_se',  # cut off mid-write
        "garbage",
        '{"step": "9", "kind": "train", "loss": 0.3}',
        '{"step": 10, "kind": "train", "loss": NaN, "train_psnr": 12.0, "train_seconds": 2.5}',
        {"step": 10, "kind": "eval", "psnr": 13.0, "ssim": 0.5, "psnr_per_frame": [1.0, 2.0]},
        {"step": 12, "kind": "eval", "psnr": 14.0},  # between train lines: the earlier one's time
        {"step": 15, "kind": "train", "loss": 0.2, "train_psnr": 15.0, "train_seconds": 4.0},
        "",
    )
    metrics = read_metrics(tmp_path)
    assert [r["step"] for r in metrics.train] == [5, 10, 15]
    assert "loss" not in metrics.train[1] and metrics.train[1]["train_psnr"] == 12.0  # the NaN dropped, the line kept
    assert [(r["step"], r["train_seconds"]) for r in metrics.evals] == [(3, 0.0), (10, 2.5), (12, 2.5)]
    assert "psnr_per_frame" not in metrics.evals[1]
    assert metrics.values("psnr", "train") == [(5, 1.5, 10.0), (10, 2.5, 12.0), (15, 4.0, 15.0)]
    assert metrics.main_metric() == "psnr" and metrics.phases == []
    assert metrics.title == tmp_path.name  # no config.json


def test_sdf_runs_plot_their_main_metric_and_runs_without_metrics_plot_loss_only(tmp_path):
    sdf = tmp_path / "sdf"
    (sdf / "config.json").parent.mkdir()
    (sdf / "config.json").write_text(json.dumps({"task": "sdf", "model": "nglod"}))
    records = []
    for step in range(10, 101, 10):
        records.append(
            {"step": step, "kind": "train", "loss": 1 / step, "train_distance_mae": 0.5 / step, "train_seconds": step / 10}
        )
        records.append(
            {"step": step, "kind": "eval", "distance_mae_lod0": 0.3 / step, "distance_mae": 0.2 / step, "sign_iou": 0.9}
        )
    write_jsonl(sdf / "metrics.jsonl", *records)
    metrics = read_metrics(sdf)
    assert metrics.main_metric() == "distance_mae" and metrics.title == "sdf: sdf / nglod"
    assert_real_plot(picture(write_curves(sdf)), (820, 1100))

    bare = tmp_path / "bare"
    write_jsonl(bare / "metrics.jsonl", *({"step": s, "kind": "train", "loss": 1 / s, "train_seconds": s} for s in (1, 2, 3)))
    assert read_metrics(bare).main_metric() is None
    assert picture(write_curves(bare)).shape[:2] == (460, 1100)  # one row: the loss


def test_distilled_runs_read_both_phases_on_one_axis(tmp_path):
    run_dir = tmp_path / "kilo"
    run_dir.mkdir()
    config = {"task": "nerf", "model": "kilonerf", "teacher": {"model": "ngp"}, "distill": {"steps": 20}}
    (run_dir / "config.json").write_text(json.dumps(config))
    write_jsonl(
        run_dir / "distill" / "metrics.jsonl",
        {"step": 10, "kind": "train", "loss": 0.1, "train_alpha_mse": 0.01, "train_rgb_psnr": 20.0, "train_seconds": 1.0},
        {"step": 20, "kind": "train", "loss": 0.05, "train_alpha_mse": 0.005, "train_rgb_psnr": 24.0, "train_seconds": 2.0},
        {"step": 20, "kind": "eval", "psnr": 18.0, "ssim": 0.6},
    )
    write_jsonl(
        run_dir / "metrics.jsonl",
        {"step": 5, "kind": "train", "loss": 0.02, "train_psnr": 19.0, "train_seconds": 0.5},
        {"step": 10, "kind": "train", "loss": 0.01, "train_psnr": 21.0, "train_seconds": 1.0},
        {"step": 10, "kind": "eval", "psnr": 22.0, "ssim": 0.7},
    )
    metrics = read_metrics(run_dir)
    assert metrics.phases == [("distill", 0, 0.0), ("fine-tune", 20, 2.0)]
    assert [(r["step"], r["train_seconds"], r["phase"]) for r in metrics.train][2:] == [
        (25, 2.5, "fine-tune"),
        (30, 3.0, "fine-tune"),
    ]
    assert [v for _, _, v in metrics.values("psnr", "train")] == [20.0, 24.0, 19.0, 21.0]
    assert metrics.values("psnr", "eval") == [(20, 2.0, 18.0), (30, 3.0, 22.0)]
    assert metrics.title == "kilo: nerf / kilonerf (distilled from ngp)"
    assert_real_plot(picture(write_curves(run_dir)), (820, 1100))


def test_legend_names_tell_runs_apart(tmp_path):
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == ["a", "b"]
    assert run_labels([tmp_path / "x" / "run", tmp_path / "y" / "run"]) == ["x/run", "y/run"]
    assert run_labels([tmp_path / "a", tmp_path / "a"]) == ["a (1)", "a (2)"]


class LineTask:
    """Fit a line; raises KeyboardInterrupt at `interrupt_at` (Ctrl-C during training)."""

    name = "line"

    def __init__(self, interrupt_at=None):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        self.interrupt_at = interrupt_at

    def param_groups(self):
        return [{"params": list(self.model.parameters())}]

    def sample(self, step):
        if step == self.interrupt_at:
            raise KeyboardInterrupt
        x = torch.linspace(-1, 1, 16)[:, None]
        return x, 3 * x + 1

    def loss(self, batch):
        x, y = batch
        mse = ((self.model(x) - y) ** 2).mean()
        return mse, {"mse": mse.detach()}

    def evaluate(self, progress=False, leave=True):
        x = torch.linspace(-1, 1, 16)[:, None]
        with torch.no_grad():
            return {"mse": float(((self.model(x) - 3 * x - 1) ** 2).mean())}

    def write_outputs(self, run_dir, progress=False):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def test_a_run_draws_its_curves_when_interrupted_and_never_fails_on_them(tmp_path, capsys, monkeypatch):
    cfg = TrainConfig(steps=20, lr=1e-2, log_every=2, eval_every=5, progress=False)
    stopped = Trainer(LineTask(interrupt_at=12), cfg, tmp_path / "stopped")
    stopped.observers.append(CurvesDrawer())  # what a run's trainer is given (`nfield.runs.single.build`)
    with pytest.raises(NfieldError, match="interrupted at step 12"):
        stopped.fit()
    assert_real_plot(picture(tmp_path / "stopped" / "curves.png"))
    assert read_metrics(tmp_path / "stopped").main_metric() == "mse"

    def broken(run_dir, out=None):
        raise RuntimeError("no fonts\nsecond line")

    monkeypatch.setattr("nfield.runs.plots.write_curves", broken)
    capsys.readouterr()
    done = Trainer(LineTask(), cfg, tmp_path / "done")
    done.observers.append(CurvesDrawer())
    assert "mse" in done.fit()
    err = [line for line in capsys.readouterr().err.splitlines() if "curves.png" in line]
    assert err == [f"nfield: warning: could not write {tmp_path / 'done' / 'curves.png'}: no fonts"]
    assert (tmp_path / "done" / "metrics.jsonl").is_file() and not (tmp_path / "done" / "curves.png").exists()


def test_nfield_curves_0_skips_the_drawing_and_nfield_plot_draws_it_later(tmp_path, capsys, monkeypatch):
    cfg = TrainConfig(steps=10, lr=1e-2, log_every=2, eval_every=5, progress=False)
    monkeypatch.setenv("NFIELD_CURVES", "0")
    quiet = Trainer(LineTask(), cfg, tmp_path / "quiet")
    quiet.observers.append(CurvesDrawer())
    assert "mse" in quiet.fit()
    assert (tmp_path / "quiet" / "metrics.jsonl").is_file() and not (tmp_path / "quiet" / "curves.png").exists()
    capsys.readouterr()
    assert run(capsys, "plot", tmp_path / "quiet") == (0, [f"wrote {tmp_path / 'quiet' / 'curves.png'}"])
    assert_real_plot(picture(tmp_path / "quiet" / "curves.png"))
