"""scripts/gpu_check.sh: its dry run on the CPU runs every step in the GPU order (the NeRF headline,
the never-passed gpu tests one process each, the fused-MLP probe, the benchmarks, the kernels in
Triton's interpreter) and writes the summary, headline first; --only runs a subset and a step that
does not fit in what is left of the budget waits for a second call; bad usage fails in one line."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
TESTS = ["tests-nerf", "tests-sdf", "tests-distill", "tests-grid", "tests-kilonerf-segment"]
STEPS = [
    "nerf",
    *TESTS,
    "mlp",
    "kernels",
    "sdf",
    "tests-rest",
    "sanitizer",
    "kilonerf",
    "families",
    "viewer",
    "scale",
    "papers",
    "image",
]
BENCHMARKS = {"nerf": "bench_nerf", "kernels": "bench_kernels", "sdf": "bench_sphere_tracing", "kilonerf": "bench_kilonerf",
              "families": "bench_families", "viewer": "bench_viewer", "scale": "bench_scale", "image": "bench_image",
              "papers": "reproduce_papers"}  # fmt: skip


def gpu_check(*argv, timeout=60):
    import sys

    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, argv)], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env
    )


def test_dry_run_runs_every_step_in_the_gpu_order_and_writes_the_summary_headline_first(tmp_path):
    done = gpu_check(tmp_path / "out", "--dry-run", "--budget", 900, "--archive", tmp_path / "check.tgz", timeout=900)
    out = tmp_path / "out"
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and [s["step"] for s in summary["steps"]] == STEPS
    assert all(s["result"] == "pass" for s in summary["steps"]), summary["steps"]
    for step, name in BENCHMARKS.items():
        scale = json.loads((out / f"{name}.json").read_text())["scale"]
        assert (scale["name"] if isinstance(scale, dict) else scale) == "tiny", step
    nerf = json.loads((out / "bench_nerf.json").read_text())
    assert [r["model"] for r in nerf["results"]] == ["ngp"] and len(nerf["results"][0]["curve"]) == 2
    kernels = json.loads((out / "bench_kernels.json").read_text())
    assert kernels["triton_interpreter"] and {r["backend"] for r in kernels["kernels"]} >= {"torch", "triton"}
    assert {r["component"] for r in kernels["kernels"]} == {"hash grid", "tiny MLP 64x2", "compositing", "ray marching (rays)"}
    probe = json.loads((out / "mlp_probe.json").read_text())
    assert probe["verdict"] == "wgmma-pipelined" and all(r["ok"] for r in probe["results"]) and len(probe["results"]) == 3
    papers = json.loads((out / "reproduce_papers.json").read_text())
    assert [r["key"] for r in papers["results"]] == ["ff-fourier", "siren"] and all("value" in r for r in papers["results"])
    tracing = json.loads((out / "bench_sphere_tracing.json").read_text())
    assert [r["path"] for r in tracing["results"]] == ["previous", "torch"]
    text = (out / "summary.txt").read_text()
    assert text.splitlines()[2].startswith("headline") and "ngp 800x800 PSNR" in text and ">= 60 fps" in text
    assert "verdict: wgmma-pipelined" in text and "checks passed: mlp" in text
    assert "siren: " in text and "no JSON written" not in text  # the papers step's rows
    for test_step in TESTS:  # each in its own process, collected (and skipped here)
        assert "skipped" in (out / f"{test_step}.log").read_text(), test_step
    assert (tmp_path / "check.tgz").stat().st_size > 0


def test_only_runs_the_named_steps_and_what_does_not_fit_the_budget_waits_for_a_second_call(tmp_path):
    """The dry run's nerf and kernels steps start together (a 60 s limit each, within a 60 s budget);
    sdf would start after one of them, with less than its 60 s left: not run, and the summary names
    the --only of a second call."""
    done = gpu_check(tmp_path / "out", "--dry-run", "--only", "nerf,kernels,sdf", "--budget", 60, timeout=300)
    out = tmp_path / "out"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    steps = {s["step"]: s["result"] for s in json.loads((out / "summary.json").read_text())["steps"]}
    assert steps == {"nerf": "pass", "kernels": "pass", "sdf": "not run"}
    assert "finish with: scripts/gpu_check.sh" in done.stdout and "--only sdf" in (out / "not_run.txt").read_text()
    assert not (out / "bench_sphere_tracing.json").exists()


def test_bad_usage_fails_with_one_line(tmp_path):
    for argv, message in (
        ((), "usage: scripts/gpu_check.sh OUT_DIR"),
        ((tmp_path, "--budget", "soon"), "--budget must be a whole number of seconds, got 'soon'"),
        ((tmp_path, "--budget", "10"), "--budget must be at least 60 seconds"),
        ((tmp_path, "--fast"), "unknown option --fast"),
        ((tmp_path / "x", "--only", "nerf,warp"), "--only: unknown step 'warp'"),
    ):
        done = gpu_check(*argv)
        assert done.returncode == 2 and message in done.stderr, (argv, done.stderr)
    assert not (tmp_path / "x").exists()  # refused before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_without_cuda_it_says_to_use_the_dry_run(tmp_path):
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**env, "PYTHON": sys.executable},
    )
    assert done.returncode == 1 and "no CUDA device here; use --dry-run" in done.stderr
