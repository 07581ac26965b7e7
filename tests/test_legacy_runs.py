"""Run directories written by an earlier release (tests/legacy_runs/<version>/, made by its make.py)
still load, render and evaluate to the numbers they recorded, and the resumable ones continue.

Each run's recorded paths are relative to its version folder, so each test works in a copy of it.
"""

import json
import shutil
from pathlib import Path

import pytest

from tests.run_checks import cli

LEGACY = Path(__file__).resolve().parent / "legacy_runs"
VERSIONS = sorted(p.name for p in LEGACY.iterdir() if p.is_dir() and (p / "inputs").is_dir())
SIGNAL_RUNS = ("image", "image-pins", "audio", "video", "sdf", "collection/a")
NERF_RUNS = ("nerf-ngp", "nerf-kilonerf", "nerf-vanilla", "nerf-distilled")
#: Metrics `nfield eval` reports that the run's own final evaluation recorded (eval.json or the JSON line).
SCORED = {"image": "psnr", "image-pins": "psnr", "audio": "psnr", "video": "psnr", "collection/a": "psnr", "sdf": "chamfer_l1"}


@pytest.fixture(params=VERSIONS)
def version(request, tmp_path, monkeypatch):
    """A copy of one release's runs, the working directory of the test."""
    copy = tmp_path / request.param
    shutil.copytree(LEGACY / request.param, copy)
    monkeypatch.chdir(copy)
    return copy


def recorded_metrics(run_dir: Path) -> dict:
    """The run's final evaluation: its eval.json where it wrote one (SDF: the mesh's metrics), else
    the last metrics.jsonl line with a PSNR."""
    if (run_dir / "eval.json").is_file():
        return json.loads((run_dir / "eval.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [m for m in lines if "psnr" in m][-1]


@pytest.mark.parametrize("run", SIGNAL_RUNS + NERF_RUNS)
def test_every_kind_loads_and_renders(version, run, capsys, tmp_path):
    status, out, err = cli(capsys, "info", run)
    assert status == 0, err
    assert any("step" in line for line in out), out
    kind = json.loads((Path(run) / "config.json").read_text())["task"]
    suffix, size = {"audio": (".wav", ()), "video": (".mp4", ("--frames", 2)), "nerf": (".mp4", ("--frames", 2))}.get(
        kind, (".png", ("--width", 16, "--height", 12))
    )
    written = tmp_path / f"render-{run.replace('/', '-')}{suffix}"
    status, _, err = cli(capsys, "render", run, *size, "--out", written, "--device", "cpu", "--no-progress")
    assert status == 0, err
    assert written.stat().st_size > 0


@pytest.mark.parametrize("run", SIGNAL_RUNS)
def test_signal_runs_evaluate_to_what_they_recorded(version, run, capsys):
    resolution = ("--resolution", 24) if run == "sdf" else ()  # the run's --mesh-resolution
    status, out, err = cli(capsys, "eval", run, *resolution, "--device", "cpu", "--no-progress")
    assert status == 0, err
    key = SCORED[run]
    recorded = recorded_metrics(Path(run))[key]
    assert json.loads(out[-1])[key] == pytest.approx(recorded, rel=1e-3, abs=1e-3)


@pytest.mark.parametrize("run", NERF_RUNS)
def test_nerf_runs_evaluate(version, run, capsys):
    status, out, err = cli(capsys, "eval", run, "--device", "cpu", "--no-progress")
    assert status == 0, err
    scores = json.loads(out[-1])
    assert 5.0 < scores["psnr"] < 40.0  # a 20-step field on the generated scene, all held-out views


@pytest.mark.parametrize("run", ("image", "image-pins", "audio", "video", "sdf", "nerf-ngp", "nerf-vanilla"))
def test_runs_resume_past_their_last_step(version, run, capsys):
    config = json.loads((Path(run) / "config.json").read_text())
    command = {"image": "fit-image", "audio": "fit-audio", "video": "fit-video", "sdf": "fit-sdf", "nerf": "train-nerf"}
    source = next(v["source"] for v in config.values() if isinstance(v, dict) and "source" in v)
    argv = (command[config["task"]], source, "--out", run, "--resume", "--steps", 24, "--no-progress", "--device", "cpu")
    status, out, err = cli(capsys, *argv)
    assert status == 0, err
    assert "resum" in err and "20" in err, err
    assert json.loads(out[-1])["step"] == 24
    steps = [json.loads(line)["step"] for line in (Path(run) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert steps == sorted(steps) and steps[-1] == 24


def test_a_collection_resumes_from_what_it_recorded(version, capsys):
    recorded = json.loads(Path("collection/collection.json").read_text())
    argv = ("fit-image", recorded["pattern"], "--out", "collection", "--resume", "--no-progress", "--device", "cpu")
    status, out, err = cli(capsys, *argv)
    assert status == 0, err
    assert "2 done before, 0 to fit" in err
    assert json.loads(out[-1])["ok"] == 2
