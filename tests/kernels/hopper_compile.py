"""Compile every Triton kernel launch for a Hopper GPU (sm_90) on a machine without one, the way the JIT does.

Triton's CPU interpreter runs a kernel's Python body, so it accepts code that the compiler refuses
(a loop variable that changes shape, a `tl.constexpr` bound twice), and it never sees the
specialisations the JIT compiles a launch with: pointers whose address and integers whose value
divide by 16 get ``tt.divisibility = 16`` hints, and an integer equal to 1 becomes a constant. Those
hints change the generated code (a hinted fused-MLP forward becomes a 3-stage cp.async/wgmma
pipeline), so a check without them compiles a kernel the GPU never runs. This module closes the
gap in two steps:

1. `recording(path)` wraps the interpreter's launches (inside a ``TRITON_INTERPRET=1`` process) and
   writes each launch to `path` as JSON: the kernel, every tensor's dtype and address modulo 64,
   every scalar's value, the constexprs and the launch options.
2. ``python -m tests.kernels.hopper_compile RECORD.json`` (a process *without* the interpreter)
   replays each recorded launch through the JIT itself, ``JITFunction.warmup`` with stand-in
   tensors at addresses of the recorded alignment and a stand-in driver that reports an sm_90 GPU:
   Triton binds and specialises the arguments exactly as for a real launch and compiles down to a
   cubin with the ptxas that ships with it. No GPU or driver is needed. It prints one line per
   distinct specialisation and exits 1 when any failed. With ``TRITON_CACHE_DIR`` set, the
   compiled kernels land there, as a real launch's would. Each line ends with the PTX's
   instruction families that decide speed on Hopper (wgmma or mma.sync, cp.async pipelining and
   stages, each atomic with its semantics and vector width).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import inspect
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

#: Keyword arguments of a launch that configure the compiler rather than bind a kernel parameter.
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
_ALIGNMENT = 64  # the recorded address residue: enough to tell every divisibility the JIT looks at (16)
_BASE_ADDRESS = 1 << 32  # stand-in tensors sit at this address plus their recorded residue


def _describe(value: Any) -> Any:
    """A JSON-able description of one launch argument: {"tensor": dtype, "address_mod": ...} for
    tensors, else the value."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"tensor": str(value.dtype).removeprefix("torch."), "address_mod": value.data_ptr() % _ALIGNMENT}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value"):  # tl.constexpr
        return _describe(value.value)
    raise TypeError(f"cannot describe a launch argument of type {type(value).__name__}")


@contextlib.contextmanager
def recording(path: Path) -> Iterator[list[dict[str, Any]]]:
    """Within the block, record every interpreted kernel launch; write the distinct ones to `path`
    (a JSON list of {"module", "kernel", "args", "options"}) on exit, and yield the live list."""
    from triton.runtime.interpreter import InterpretedFunction

    seen: dict[str, dict[str, Any]] = {}
    original = InterpretedFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        options = {key: kwargs.pop(key) for key in list(kwargs) if key in _LAUNCH_OPTIONS}
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        entry = {
            "module": self.fn.__module__,
            "kernel": self.fn.__name__,
            "args": {name: _describe(value) for name, value in bound.arguments.items()},
            "options": options,
        }
        seen.setdefault(json.dumps(entry, sort_keys=True), entry)
        kwargs.update(options)
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run
    entries: list[dict[str, Any]] = []
    try:
        yield entries
    finally:
        InterpretedFunction.run = original
        entries.extend(seen.values())
        Path(path).write_text(json.dumps(entries, indent=1))


class _StandInTensor:
    """What the JIT reads of a tensor argument: its dtype and address."""

    def __init__(self, dtype: Any, address: int):
        self.dtype, self.address = dtype, address

    def data_ptr(self) -> int:
        return self.address


class _HopperDriver:
    """Enough of Triton's CUDA driver for ``JITFunction.warmup``: a current device, stream and an
    sm_`arch` target (nothing is launched)."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def is_active(self) -> bool:
        return True

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target

    def get_active_torch_device(self) -> Any:
        import torch

        return torch.device("cpu")


def _install_driver(arch: int) -> None:
    from triton.runtime import driver

    driver.set_active(_HopperDriver(arch))


def _arguments(entry: dict[str, Any]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The JITFunction of a recorded launch, its positional arguments (stand-ins for tensors) and
    its keyword arguments (constexprs given by name, and the launch options)."""
    import torch

    kernel = getattr(importlib.import_module(entry["module"]), entry["kernel"])
    args = []
    for name in kernel.arg_names:
        value = entry["args"][name]
        if isinstance(value, dict):
            value = _StandInTensor(getattr(torch, value["tensor"]), _BASE_ADDRESS + value["address_mod"])
        args.append(value)
    return kernel, args, dict(entry.get("options", {}))


def specialisation(entry: dict[str, Any], arch: int = 90) -> tuple[str, str]:
    """(a label, the JIT's cache key) of a recorded launch, from the JIT's own argument binder."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import compute_cache_key, create_function_from_signature

    kernel, args, options = _arguments(entry)
    binder = create_function_from_signature(kernel.signature, kernel.params, make_backend(GPUTarget("cuda", arch, 32)))
    _, specialization, bound_options = binder(*args, **options)
    key = str(compute_cache_key({}, specialization, bound_options))
    constants = [f"{p.name}={v}" for p, (kind, v) in zip(kernel.params, specialization) if kind == "constexpr"]
    hinted = [p.name for p, (kind, attr) in zip(kernel.params, specialization) if kind != "constexpr" and attr == "D"]
    label = f"{entry['kernel']}({', '.join(constants)})" + "".join(f" {k}={v}" for k, v in options.items())
    label += f" [divisible by 16: {', '.join(hinted) or 'none'}]"
    return label, f"{entry['module']}.{entry['kernel']}:{key}"


def instructions(ptx: str) -> str:
    """The instruction families of a kernel's PTX that decide its speed on Hopper: matrix units
    (wgmma, mma.sync), asynchronous copies (cp.async), and each distinct atomic (with its memory
    semantics and vector width); "" when it has none of them."""
    found = []
    for pattern, name in ((r"\bwgmma\.mma_async", "wgmma"), (r"\bmma\.sync", "mma.sync"), (r"\bcp\.async\.", "cp.async")):
        if re.search(pattern, ptx):
            found.append(name)
    found += sorted(set(re.findall(r"\b(?:atom|red)\.global\.[a-z0-9_.]+", ptx)))
    return " ".join(found)


def _compile_one(job: tuple[dict[str, Any], int]) -> tuple[str, float, str]:
    """Compile one recorded launch through ``JITFunction.warmup``; ("ok" or the error's last line,
    seconds, the PTX's `instructions` and pipeline stages)."""
    entry, arch = job
    _install_driver(arch)
    kernel, args, options = _arguments(entry)
    started = time.perf_counter()
    try:
        compiled = kernel.warmup(*args, grid=(1,), **options)
        outcome, found = "ok", f"{instructions(compiled.asm['ptx'])} stages={compiled.metadata.num_stages}".strip()
    except Exception as error:  # noqa: BLE001 - every compiler error is a result to report
        lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        outcome, found = lines[-1][:400], ""
    return outcome, time.perf_counter() - started, found


def compile_all(entries: list[dict[str, Any]], arch: int = 90, workers: int = 1) -> list[tuple[str, str, float, str]]:
    """Compile each distinct specialisation among `entries` for CUDA sm_`arch` on `workers`
    processes; (label, "ok" or the error's last line, seconds, instructions) per specialisation."""
    jobs: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in entries:
        label, key = specialisation(entry, arch)
        jobs.setdefault(key, (label, entry))
    labels, work = [label for label, _ in jobs.values()], [(entry, arch) for _, entry in jobs.values()]
    if workers > 1 and len(work) > 1:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_compile_one, work))
    else:
        results = [_compile_one(job) for job in work]
    return [(label, outcome, seconds, found) for label, (outcome, seconds, found) in zip(labels, results)]


def compile_in_subprocess(*records: Path) -> str:
    """Compile the launches recorded in `records` for sm_90 in a fresh process without the
    interpreter (the test's own process may have imported Triton with it); its report, or
    AssertionError with the failures."""
    root = Path(__file__).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    command = [sys.executable, "-W", "ignore", "-m", "tests.kernels.hopper_compile", *map(str, records)]
    done = subprocess.run(command, capture_output=True, text=True, env={**env, "PYTHONPATH": str(root)}, cwd=root, timeout=900)
    assert done.returncode == 0 and "FAIL" not in done.stdout, done.stdout[-4000:] + done.stderr[-3000:]
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="JSON files written by `recording`")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability as one number (default 90)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="compiler processes (default 2)")
    args = parser.parse_args(argv)
    entries = [entry for path in args.records for entry in json.loads(path.read_text())]
    results = compile_all(entries, args.arch, args.workers)
    for label, outcome, seconds, found in results:
        status = "ok  " if outcome == "ok" else "FAIL"
        print(f"{status} sm_{args.arch} {label} {{{found}}} [{seconds:.1f} s]" + ("" if outcome == "ok" else f": {outcome}"))
    failed = sum(outcome != "ok" for _, outcome, _, _ in results)
    print(f"{len(results) - failed} of {len(results)} specialisations compiled for sm_{args.arch}, as the JIT specialises them")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
