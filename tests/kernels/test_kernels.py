"""The Triton kernels (grid encoding, compositing, ray marching, fused MLP, mesh distance) on the CPU:
each against its PyTorch reference in Triton's interpreter (`kernel_checks`), the training commands
end to end on ``--backend triton`` against ``--backend torch`` (`interpreted_runs`), every memory
access bounds-checked, and every launch those made compiled for sm_90 as the JIT specialises it
(`hopper_compile`). Compiled on CUDA at large sizes under the gpu marker."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.kernels import hopper_compile, kernel_checks

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def interpreted(module: str, record: Path, *argv: str) -> list[str]:
    """`python -m MODULE --record RECORD ARGV` with TRITON_INTERPRET=1; its stdout lines (exit 0 asserted)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", module, "--record", str(record), *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()


@pytest.fixture(scope="module")
def interpreter_runs(tmp_path_factory):
    """Every kernel check and every interpreted training run, once: (their lines, their records)."""
    folder = tmp_path_factory.mktemp("interpreter")
    checks = interpreted("tests.kernels.kernel_checks", folder / "checks.json", "--size", "small")
    runs = interpreted("tests.kernels.interpreted_runs", folder / "runs.json")
    return checks, runs, [folder / "checks.json", folder / "runs.json"]


@pytest.fixture(scope="module")
def hopper_report(interpreter_runs):
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this Triton has no CUDA backend to compile with")
    return hopper_compile.compile_in_subprocess(*interpreter_runs[2]).splitlines()


@needs_triton
def test_every_kernel_matches_its_reference_in_the_interpreter_with_every_access_in_bounds(interpreter_runs):
    lines = interpreter_runs[0]
    assert [line.split(":")[0] for line in lines[:-1]] == list(kernel_checks.CHECKS), lines
    assert all(line.split(": ")[1] == "ok" for line in lines[:-1]), lines
    accesses = re.match(r"bounds: ([\d,]+) active accesses of (\d+) launches \((\d+) kernels\) inside their tensors", lines[-1])
    assert accesses and int(accesses[3]) >= 10, lines[-1]  # every kernel ran, and every access was checked


@needs_triton
def test_training_commands_on_backend_triton_equal_torch_in_the_interpreter(interpreter_runs):
    """train-nerf (ngp), fit-sdf hash and nglod with the eikonal term, fit-image hash: per-step losses
    and final metrics within each run's tolerances, with every named component on triton."""
    from tests.kernels.interpreted_runs import RUNS

    lines = interpreter_runs[1]
    assert [line.split(":")[0] for line in lines[:-1]] == list(RUNS), lines
    assert all(line.split(": ")[1] == "ok" for line in lines[:-1]), lines
    assert lines[-1].startswith("bounds: "), lines[-1]


@needs_triton
def test_every_launch_compiles_for_hopper_as_the_jit_specialises_it(hopper_report):
    compiled = [line for line in hopper_report if line.startswith("ok ")]
    assert hopper_report[-1].endswith("as the JIT specialises them") and len(compiled) >= 60, hopper_report[-1]
    assert any("n_points=1" in line or "n_rows=1" in line for line in compiled)  # an int equal to 1 became a constant
    assert all("[divisible by 16: " in line for line in compiled)
    kernels = {line.split()[2].split("(")[0] for line in compiled}
    assert len(kernels) >= 10, kernels


@needs_triton
def test_grid_gradient_scatters_use_relaxed_packed_atomics(hopper_report):
    """Gradient scatters need no ordering: relaxed atomics (no acquire-release barrier per add), with
    a row's features added by one vector atomic (v2 for two features per level)."""
    scatters = [line for line in hopper_report if "_table_grad_kernel(" in line or "_x_grad_backward_kernel(" in line]
    assert scatters
    for line in scatters:
        atomics = re.findall(r"\b(?:atom|red)\.global\.\S+", line.split("{")[1])
        assert atomics and all(".relaxed." in a for a in atomics), line
        if "F=2," in line:
            assert all(".v2.f32" in a for a in atomics), line


@needs_triton
def test_fused_mlp_variants_compile_to_different_hopper_code_paths(hopper_report):
    """wgmma-pipelined: wgmma with a cp.async pipeline; wgmma: one stage; mma: mma.sync (the probe's choices)."""
    forward = [line for line in hopper_report if "_mlp_forward_kernel(" in line and "K=32, H=32," in line and "SAVE=True" in line]
    paths = {(("BLOCK_M=32" in line), ("num_stages=1" in line)): line.split("{")[1].split("}")[0] for line in forward}
    assert "wgmma" in paths[(False, False)] and "cp.async" in paths[(False, False)], paths
    assert "wgmma" in paths[(False, True)] and "cp.async" not in paths[(False, True)], paths
    assert "mma.sync" in paths[(True, True)] and "wgmma" not in paths[(True, True)], paths


def test_a_failing_check_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def broken(device, size):
        raise AssertionError("composite rgb: relative error 0.5 > 1e-05")

    monkeypatch.setitem(kernel_checks.CHECKS, "composite", broken)
    monkeypatch.setitem(kernel_checks.CHECKS, "march", lambda device, size: "identical samples")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert kernel_checks.main(["composite", "march"]) == 1
    expected = ["composite: FAIL: composite rgb: relative error 0.5 > 1e-05", "march: ok: identical samples"]
    assert capsys.readouterr().out.splitlines() == [f"{line} [0.0 s]" for line in expected]


@needs_triton
def test_the_bounds_check_stops_an_access_past_a_tensor(tmp_path):
    """A kernel that reads two elements past its input fails in the interpreter with the kernel's
    name, before the read (the interpreter alone would return whatever lies there)."""
    script = tmp_path / "overrun.py"
    script.write_text(
        "import torch, triton, triton.language as tl\n"
        "from tests.kernels.interpreter_bounds import bounds_checked\n"
        "@triton.jit\n"
        "def copy_kernel(a_ptr, b_ptr, n, BLOCK: tl.constexpr):\n"
        "    i = tl.arange(0, BLOCK)\n"
        "    tl.store(b_ptr + i, tl.load(a_ptr + i, mask=i < n), mask=i < 10)\n"
        "a, b = torch.arange(10.0), torch.zeros(10)\n"
        "with bounds_checked() as stats:\n"
        "    copy_kernel[(1,)](a, b, 10, BLOCK=16)\n"
        "    assert torch.equal(a, b) and stats.accesses == 20\n"
        "    copy_kernel[(1,)](a, b, 12, BLOCK=16)\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode != 0
    assert "OutOfBounds('copy_kernel: load of 2 of 12 active elements outside every tensor of the launch" in done.stderr


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("check", list(kernel_checks.CHECKS))
def test_kernel_matches_the_reference_compiled_on_cuda(check):
    print(kernel_checks.CHECKS[check]("cuda", "large"))
