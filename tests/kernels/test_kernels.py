"""The Triton kernels (grid encoding, compositing, ray marching, fused MLP, mesh distance) against their PyTorch
references: in Triton's CPU interpreter (a subprocess with TRITON_INTERPRET=1) wherever Triton is
installed, and compiled on CUDA at large sizes under the gpu marker. The checks themselves are in
`kernel_checks.py`."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.kernels import hopper_compile, kernel_checks

ROOT = Path(__file__).resolve().parents[2]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_triton
def test_every_kernel_matches_the_reference_in_the_triton_interpreter_and_compiles_for_hopper(tmp_path):
    """The interpreter runs the kernels' Python bodies (every check in one process, each reporting
    on its own line); every launch it made is then compiled for sm_90 by Triton's CUDA backend (no
    GPU needed), which refuses what the interpreter lets pass."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    record = tmp_path / "launches.json"
    command = [sys.executable, "-m", "tests.kernels.kernel_checks", "--size", "small", "--record", str(record)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [line.split(":")[0] for line in lines] == list(kernel_checks.CHECKS), done.stdout
    assert all(line.split(": ")[1] == "ok" for line in lines), done.stdout
    kernels = {entry["kernel"] for entry in json.loads(record.read_text())}
    assert len(kernels) >= 10, kernels  # every check launched its kernels in the interpreter
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this Triton has no CUDA backend to compile with")
    hopper_compile.compile_in_subprocess(record)


def test_a_failing_check_is_reported_and_the_others_still_run(monkeypatch, capsys):
    def broken(device, size):
        raise AssertionError("composite rgb: relative error 0.5 > 1e-05")

    monkeypatch.setitem(kernel_checks.CHECKS, "composite", broken)
    monkeypatch.setitem(kernel_checks.CHECKS, "march", lambda device, size: "identical samples")
    assert kernel_checks.main(["composite", "march"]) == 1
    expected = ["composite: FAIL: composite rgb: relative error 0.5 > 1e-05", "march: ok: identical samples"]
    assert capsys.readouterr().out.splitlines() == [f"{line} [0.0 s]" for line in expected]


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("check", list(kernel_checks.CHECKS))
def test_kernel_matches_the_reference_compiled_on_cuda(check):
    print(kernel_checks.CHECKS[check]("cuda", "large"))
