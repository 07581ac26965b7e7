"""Every phase of a command that takes a while shows what it does and how far it is; the up-front
time estimate comes from timed steps and is corrected as the run goes; a closing evaluation's
renders are made once."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import trimesh

from nfield.runs.single import load_run
from nfield.tasks import image as image_task
from nfield.tasks import nerf as nerf_task
from nfield.training.trainer import RunClock
from scenes.synthetic import generate

NERF_SMALL = ("--n-levels", 4, "--log2-hashmap-size", 10, "--grid-resolution", 16, "--grid-warmup", 4, "--steps-per-ray", 32)
NERF_SMALL += ("--batch-rays", 128, "--device", "cpu")


def nfield(*argv, cwd=None) -> subprocess.CompletedProcess:
    """`nfield ARGV` in a fresh process (stderr is a pipe, not a terminal, as in a log file)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "nfield.cli", *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def bar_lines(stderr: str) -> list[str]:
    """Every state a bar was drawn in, and every other line, in order (tqdm redraws with \\r)."""
    return [line.strip() for line in re.split(r"[\r\n]", stderr) if line.strip()]


def finished(lines: list[str], label: str) -> int:
    """The index of the line where the bar labelled `label` reached 100%."""
    done = [i for i, line in enumerate(lines) if line.startswith(label) and "100%" in line]
    assert done, f"no finished '{label}' bar in:\n" + "\n".join(lines[-40:])
    return done[-1]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return generate("textured", tmp_path_factory.mktemp("scene") / "textured", size=24, n_train=8, n_val=1, n_test=3)


def test_train_nerf_shows_its_evaluations_and_renders_after_training(scene, tmp_path):
    """The periodic evaluation, the closing one and the renders each draw a labelled bar that
    reaches its end, after the training bar has; the run says which views it scored."""
    out = tmp_path / "run"
    argv = ("--steps", 8, "--eval-every", 4, "--eval-views", 1, "--render-views", 3, "--out", out)
    result = nfield("train-nerf", scene, *NERF_SMALL, *argv)
    assert result.returncode == 0, result.stderr
    lines = bar_lines(result.stderr)
    trained = finished(lines, "train-nerf")
    assert any(line.startswith("eval (1 view)") for line in lines[:trained])  # the evaluation at step 4
    closing = finished(lines, "eval (1 view)")
    renders = finished(lines, "renders (3 views)")
    assert trained < closing < renders, "\n".join(lines)
    assert "scored 1 and wrote 3 of the 3 held-out views" in result.stderr
    assert sorted(p.name for p in (out / "renders").glob("r_?.png")) == ["r_0.png", "r_1.png", "r_2.png"]
    evaluated = nfield("eval", out)
    assert evaluated.returncode == 0 and "eval (3 views)" in evaluated.stderr, evaluated.stderr
    assert "100%" in bar_lines(evaluated.stderr)[finished(bar_lines(evaluated.stderr), "eval (3 views)")]


@pytest.fixture(scope="module")
def sphere(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shape") / "sphere.obj"
    trimesh.creation.icosphere(subdivisions=2, radius=0.8).export(path)
    return path


def test_fit_sdf_shows_the_mesh_metrics_and_preview_and_eval_its_mesh(sphere, tmp_path):
    out = tmp_path / "sdf"
    small = ("--model", "hash", "--n-levels", 4, "--log2-hashmap-size", 10, "--batch-size", 512, "--steps", 200)
    small += ("--mesh-resolution", 24, "--metric-points", 512, "--preview-width", 32, "--preview-height", 24)
    result = nfield("fit-sdf", sphere, *small, "--device", "cpu", "--out", out)
    assert result.returncode == 0, result.stderr
    lines = bar_lines(result.stderr)
    order = [finished(lines, label) for label in ("fit-sdf", "marching cubes", "geometry", "preview")]
    assert order == sorted(order), "\n".join(lines)
    evaluated = nfield("eval", out, "--resolution", 24)
    assert evaluated.returncode == 0, evaluated.stderr
    lines = bar_lines(evaluated.stderr)
    assert finished(lines, "marching cubes") < finished(lines, "geometry")


def pace_lines(durations: list[float], total: int, eval_every: int = 0, eval_seconds: float = 0.0) -> list[tuple[int, str]]:
    """(step, line) said by a `RunClock` over steps of the given durations (and evaluations)."""
    clock, said = RunClock(0, total, total, eval_every, "cpu"), []
    for step, seconds in enumerate(durations, start=1):
        line = clock.stepped(step, seconds, final=step == total)
        if line:
            said.append((step, line))
        if eval_every and step % eval_every == 0 and step < total:
            clock.evaluated(eval_seconds)
    return said


def test_the_estimate_waits_for_timed_steps_and_counts_evaluations():
    # a slow first step (warm-up) is not timed; 1 s steps: said after 5 timed steps (>= 3 s)
    said = pace_lines([30.0] + [1.0] * 199, 200)
    assert said == [(6, "about 3 min for the remaining 194 steps (1.00 s per step on cpu)")]
    # fast steps are timed over at least 3 s, not over 5 steps
    said = pace_lines([1.0] + [0.25] * 3999, 4000)
    assert said[0] == (13, "about 17 min for the remaining 3,987 steps (0.25 s per step on cpu)")
    # evaluations due before the end count once one was timed: 10 s steps, a 100 s evaluation every 50
    # steps; the first estimate misses them (none timed yet), the correction counts the two still due
    said = pace_lines([10.0] * 200, 200, eval_every=50, eval_seconds=100.0)
    assert said[0] == (6, "about 32 min for the remaining 194 steps (10.00 s per step on cpu)")
    assert said[1] == (71, "now about 25 min for the remaining 129 steps (10.00 s per step)")  # 1290 s + 2 x 100 s


def remaining_said(line: str) -> float:
    number, unit = re.search(r"about ([\d.]+) (s|min|h) ", line).groups()
    return float(number) * {"s": 1, "min": 60, "h": 3600}[unit]


@pytest.mark.parametrize(
    "durations",
    [
        [2.0] * 40 + [4.0] * 160,  # twice as slow after step 40
        [3.0] + [max(1.2, 2.9 - 0.02 * i) for i in range(199)],  # a NeRF's grid emptying: faster and faster
        [10.0 if i % 16 == 0 else 4.0 for i in range(500)],  # an occupancy-grid update every 16 steps
    ],
)
def test_the_estimate_is_corrected_when_the_pace_changes(durations):
    said = pace_lines(durations, len(durations))
    assert said[0][0] == 6 and said[0][1].startswith("about ")
    assert all(line.startswith("now about") for _, line in said[1:]) and len(said) <= 5  # corrections, not one per step
    step, line = said[-1]
    truth = sum(durations[step:])
    assert remaining_said(line) == pytest.approx(truth, rel=0.25), (said, truth)  # the last word is about right


def test_a_steady_or_short_run_is_estimated_once_or_not_at_all():
    assert len(pace_lines([2.0] * 200, 200)) == 1
    assert pace_lines([0.2] * 200, 200) == []  # under a minute: no line


def test_a_closing_evaluation_renders_each_view_once(ngp_run, monkeypatch):
    """`evaluate` then `export` of the same views (what the trainer does when a run ends) renders
    them once; a change of the weights renders them again."""
    run = load_run(ngp_run, "cpu", data=True)
    task = run.task
    task.cfg = dataclasses.replace(task.cfg, eval_views=2, render_views=3)
    calls = []
    real = nerf_task.render_image
    monkeypatch.setattr(nerf_task, "render_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    metrics = task.evaluate()
    assert len(calls) == 2 and metrics["psnr"] > 15
    task.write_outputs(ngp_run.parent / "export")
    assert len(calls) == 3  # the third view only
    with torch.no_grad():
        next(task.model.parameters()).add_(0.0)  # an optimiser step
    task.write_outputs(ngp_run.parent / "export")
    assert len(calls) == 6


def test_an_image_run_renders_once_for_its_evaluation_and_outputs(tmp_path, monkeypatch):
    from nfield.runs.single import RunRequest, train

    calls = []
    real = image_task.render_field
    monkeypatch.setattr(image_task, "render_field", lambda *a, **k: calls.append(1) or real(*a, **k))
    request = RunRequest("image", "camera", model="relu", out=tmp_path / "run", device="cpu")
    request = dataclasses.replace(request, train={"steps": 5, "progress": False}, data_options={"downscale": 16})
    train(request)
    assert len(calls) == 1 and (tmp_path / "run" / "reconstruction.png").exists()


def test_time_phases_times_what_a_person_sees(tmp_path):
    """scripts/time_phases.py: each bar's first and last redraw and the longest quiet stretch."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "time_phases.py"
    command = (
        "import sys, time; w = sys.stderr.write; w('eval (2 views):   0%|  | 0/2 [00:00<?]\\r'); time.sleep(0.6); "
        "w('eval (2 views): 100%|##| 2/2 [00:01<00:00]\\n'); time.sleep(0.1); print('{\"psnr\": 1}')"
    )
    out = tmp_path / "phases.json"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(out), "--", sys.executable, "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    [phase] = report["phases"]
    assert phase["phase"] == "eval (2 views)" and phase["last"].startswith("eval (2 views): 100%")
    assert phase["last_s"] - phase["first_s"] >= 0.5 and report["longest_quiet_s"] >= 0.5
    assert report["stdout_last_line"] == '{"psnr": 1}' and "| eval (2 views) |" in result.stdout
