"""Compile every Triton kernel launch for a Hopper GPU (sm_90) on a machine without one.

Triton's CPU interpreter runs a kernel's Python body, so it accepts code that the compiler refuses
(a loop variable that changes shape, a `tl.constexpr` bound twice). This module closes that gap in
two steps:

1. `recording(path)` wraps the interpreter's launches (inside a ``TRITON_INTERPRET=1`` process) and
   writes each launch's specialisation to `path` as JSON: the kernel, every pointer's dtype, every
   scalar's type and every constexpr's value.
2. ``python -m tests.kernels.hopper_compile RECORD.json`` (a process *without* the interpreter)
   compiles each recorded specialisation with Triton's CUDA backend for sm_90, down to a cubin
   through the ptxas that ships with Triton. No GPU or driver is needed. It prints one line per
   kernel and exits 1 when any failed.
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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

_POINTER_TYPES = {
    "float32": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "float64": "fp64",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "i1",
}


#: Keyword arguments of a launch that configure the compiler rather than bind a kernel parameter.
_LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def _describe(value: Any) -> Any:
    """A JSON-able description of one launch argument: {"pointer": dtype} for tensors, else the value."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"pointer": _POINTER_TYPES[str(value.dtype).removeprefix("torch.")]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value"):  # tl.constexpr
        return _describe(value.value)
    raise TypeError(f"cannot describe a launch argument of type {type(value).__name__}")


@contextlib.contextmanager
def recording(path: Path) -> Iterator[None]:
    """Within the block, record every interpreted kernel launch's specialisation; write them to
    `path` (a JSON list of {"module", "kernel", "args"}) on exit."""
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
        kwargs.update(options)
        seen.setdefault(json.dumps(entry, sort_keys=True), entry)
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = run
    try:
        yield
    finally:
        InterpretedFunction.run = original
        Path(path).write_text(json.dumps(list(seen.values()), indent=1))


def _signature(kernel: Any, args: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Triton's (signature, constexprs) for one recorded launch of the JITFunction `kernel`."""
    signature, constexprs = {}, {}
    for param in kernel.params:
        value = args[param.name]
        if param.is_constexpr:
            signature[param.name], constexprs[param.name] = "constexpr", value
        elif isinstance(value, dict):
            signature[param.name] = "*" + value["pointer"]
        elif isinstance(value, bool):
            signature[param.name] = "i1"
        elif isinstance(value, int):
            signature[param.name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        elif isinstance(value, float):
            signature[param.name] = "fp32"
        elif value is None:
            signature[param.name], constexprs[param.name] = "constexpr", None
        else:
            raise TypeError(f"{param.name}: cannot type {value!r}")
    return signature, constexprs


def _compile_one(job: tuple[str, str, dict, dict, dict, int]) -> tuple[str, float]:
    """Compile one specialisation; ("ok" or the error's last line, seconds)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name, signature, constexprs, options, arch = job
    kernel = getattr(importlib.import_module(module), name)
    started = time.perf_counter()
    try:
        triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32), options=options)
        outcome = "ok"
    except Exception as error:  # noqa: BLE001 - every compiler error is a result to report
        lines = [line for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        outcome = lines[-1][:400]
    return outcome, time.perf_counter() - started


def compile_all(entries: list[dict[str, Any]], arch: int = 90, workers: int = 1) -> list[tuple[str, str, float]]:
    """Compile each distinct specialisation for CUDA sm_`arch` on `workers` processes; (label, "ok"
    or the error's last line, seconds) per specialisation."""
    jobs: dict[str, tuple[str, tuple]] = {}
    for entry in entries:
        kernel = getattr(importlib.import_module(entry["module"]), entry["kernel"])
        signature, constexprs = _signature(kernel, entry["args"])
        options = entry.get("options", {})
        label = f"{entry['kernel']}({', '.join(f'{k}={v}' for k, v in constexprs.items())})"
        label += "".join(f" {k}={v}" for k, v in options.items())
        key = json.dumps([entry["module"], entry["kernel"], signature, constexprs, options], sort_keys=True, default=str)
        jobs.setdefault(key, (label, (entry["module"], entry["kernel"], signature, constexprs, options, arch)))
    labels, work = [label for label, _ in jobs.values()], [job for _, job in jobs.values()]
    if workers > 1 and len(work) > 1:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_compile_one, work))
    else:
        results = [_compile_one(job) for job in work]
    return [(label, outcome, seconds) for label, (outcome, seconds) in zip(labels, results)]


def compile_in_subprocess(record: Path) -> str:
    """Compile the launches recorded in `record` for sm_90 in a fresh process without the
    interpreter (the test's own process may have imported Triton with it); its report, or
    AssertionError with the failures."""
    root = Path(__file__).resolve().parents[2]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    command = [sys.executable, "-W", "ignore", "-m", "tests.kernels.hopper_compile", str(record)]
    done = subprocess.run(command, capture_output=True, text=True, env={**env, "PYTHONPATH": str(root)}, cwd=root, timeout=600)
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
    for label, outcome, seconds in results:
        status = "ok  " if outcome == "ok" else "FAIL"
        print(f"{status} sm_{args.arch} {label} [{seconds:.1f} s]" + ("" if outcome == "ok" else f": {outcome}"))
    failed = sum(outcome != "ok" for _, outcome, _ in results)
    print(f"{len(results) - failed} of {len(results)} specialisations compiled for sm_{args.arch}")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
