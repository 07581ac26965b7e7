"""The Triton kernels (grid encoding, compositing, ray marching, fused MLP) against their PyTorch
references: in Triton's CPU interpreter (a subprocess with TRITON_INTERPRET=1) wherever Triton is
installed, and compiled on CUDA at large sizes under the gpu marker. The checks themselves are in
`kernel_checks.py`."""

import importlib.util
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
@pytest.mark.parametrize("check", list(kernel_checks.CHECKS))
def test_kernel_matches_the_reference_in_the_triton_interpreter_and_compiles_for_hopper(check, tmp_path):
    """The interpreter runs the kernels' Python bodies; every launch it made is then compiled for
    sm_90 by Triton's CUDA backend (no GPU needed), which refuses what the interpreter lets pass."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    record = tmp_path / "launches.json"
    command = [sys.executable, "-m", "tests.kernels.kernel_checks", check, "--size", "small", "--record", str(record)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.startswith(f"{check}: ok"), done.stdout
    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this Triton has no CUDA backend to compile with")
    hopper_compile.compile_in_subprocess(record)


@pytest.mark.gpu
@needs_cuda
@needs_triton
@pytest.mark.parametrize("check", list(kernel_checks.CHECKS))
def test_kernel_matches_the_reference_compiled_on_cuda(check):
    print(kernel_checks.CHECKS[check]("cuda", "large"))
