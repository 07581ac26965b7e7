"""Which launch configuration of the fused MLP runs on a GPU, settled on that GPU.

Triton 3.6 and later have been reported to make illegal memory accesses on Hopper GPUs in kernels
with several ``tl.dot`` when their loads are software-pipelined (triton-lang/triton#10573, #10486,
#11366: clean with ``num_stages=1`` or on Triton 3.5). nfield's first GPU run (an H200 with Triton
3.6.0) crashed in the fused MLP the same way. The kernels compile to different code paths per
`FusedMLPVariant` (wgmma with a cp.async pipeline, wgmma without one, mma.sync with 32-row
programs), so rather than guess, each one runs in a child process of its own (an illegal access
poisons the CUDA context of the process that made it), is checked against the PyTorch reference on
the shapes nfield uses and timed (``python -m nfield.kernels.tiny_mlp --variant NAME``, its
`check_variant` and `time_variant`); the fastest that passes is used. The verdict is kept per GPU
model, Triton, PyTorch and kernel source in ``~/.cache/nfield/fused_mlp.json`` (or
``$NFIELD_CACHE_DIR``), so a machine settles it once.

``NFIELD_FUSED_MLP_VARIANT=NAME`` forces one without probing (any device). Under Triton's
interpreter on the CPU the first variant runs, unprobed.

    python -m nfield.kernels.mlp_variants                  # probe every variant here, print the table
    python -m nfield.kernels.mlp_variants --sanitize       # and compute-sanitizer memcheck on each
    python -m nfield.kernels.mlp_variants --out probe.json # the table as JSON too
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nfield.errors import NfieldError
from nfield.outputs import write_atomic

ENVIRONMENT_VARIABLE = "NFIELD_FUSED_MLP_VARIANT"
_CHILD_TIMEOUT = 240  # seconds for one variant's child: start-up, compiles, checks and timing
_KERNEL_SOURCE = Path(__file__).with_name("tiny_mlp.py")  # the kernels a verdict is about


@dataclass(frozen=True)
class FusedMLPVariant:
    """One launch configuration of the fused MLP kernels.

    name: how logs and ``NFIELD_FUSED_MLP_VARIANT`` call it.
    block_m: rows per program (64 lets Triton use Hopper's wgmma; 32 keeps it on mma.sync).
    num_stages: software-pipelining depth of the loads in the layer loop (None: Triton's default,
        3 on sm_90, which overlaps the next layer's weight loads with cp.async).
    num_warps: warps per program.
    """

    name: str
    block_m: int
    num_stages: int | None = None
    num_warps: int = 4

    def launch_options(self) -> dict[str, int]:
        """The compiler options of a launch (``num_warps``, and ``num_stages`` when set)."""
        options = {"num_warps": self.num_warps}
        if self.num_stages is not None:
            options["num_stages"] = self.num_stages
        return options


VARIANTS = (
    FusedMLPVariant("wgmma-pipelined", block_m=64),
    FusedMLPVariant("wgmma", block_m=64, num_stages=1),
    FusedMLPVariant("mma", block_m=32, num_stages=1),
)
"""The configurations a GPU is probed with, the fastest expected first."""

_SETTLED: dict[str, FusedMLPVariant] = {}


def variant_named(name: str) -> FusedMLPVariant:
    """The variant called `name`, or NfieldError listing the names."""
    for variant in VARIANTS:
        if variant.name == name:
            return variant
    raise NfieldError(
        f"{ENVIRONMENT_VARIABLE}={name}: no such fused-MLP variant; choose one of {', '.join(v.name for v in VARIANTS)}"
    )


def cache_file() -> Path:
    """Where verdicts are kept: $NFIELD_CACHE_DIR, else $XDG_CACHE_HOME/nfield, else ~/.cache/nfield."""
    root = os.environ.get("NFIELD_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nfield"
    return Path(root) / "fused_mlp.json"


def verdict_key(device: torch.device) -> str:
    """What a verdict depends on: the GPU model, Triton, PyTorch and the kernels' source."""
    import triton

    source = hashlib.sha256(_KERNEL_SOURCE.read_bytes()).hexdigest()[:16]
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    return f"{name} sm_{major}{minor} | triton {triton.__version__} | torch {torch.__version__} | kernels {source}"


def _read_verdicts() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_verdict(key: str, verdict: dict[str, Any]) -> None:
    """Add one verdict to the cache file, atomically (a failure to write only costs a later probe)."""
    path = cache_file()
    try:
        verdicts = {**_read_verdicts(), key: verdict}
        write_atomic(path, json.dumps(verdicts, indent=1) + "\n")
    except OSError:
        pass


def choose(results: list[dict[str, Any]]) -> FusedMLPVariant | None:
    """The fastest variant whose checks passed, or None."""
    passed = [r for r in results if r.get("ok")]
    if not passed:
        return None
    return variant_named(min(passed, key=lambda r: r.get("ms_forward_backward", float("inf")))["variant"])


def variant_for(device: torch.device) -> FusedMLPVariant:
    """The fused MLP's launch configuration on `device`.

    ``$NFIELD_FUSED_MLP_VARIANT`` wins; off CUDA (the interpreter) the first variant runs; on a GPU
    the stored verdict for this GPU model, Triton, PyTorch and kernel source, or a probe of every
    variant when there is none (once per machine, a few seconds per variant, said on stderr).

    Raises:
        NfieldError: the forced name is unknown, or no variant passed its checks on this GPU.
    """
    forced = os.environ.get(ENVIRONMENT_VARIABLE)
    if forced:
        return variant_named(forced)
    device = torch.device(device)
    if device.type != "cuda":
        return VARIANTS[0]
    key = verdict_key(device)
    if key in _SETTLED:
        return _SETTLED[key]
    stored = _read_verdicts().get(key)
    if isinstance(stored, dict) and stored.get("variant") in {v.name for v in VARIANTS}:
        _SETTLED[key] = variant_named(stored["variant"])
        return _SETTLED[key]
    print(
        f"nfield: probing the fused MLP's {len(VARIANTS)} kernel configurations on {torch.cuda.get_device_name(device)} "
        "(once per GPU model and Triton version)",
        file=sys.stderr,
        flush=True,
    )
    results = probe(device)
    chosen = choose(results)
    if chosen is None:
        failures = "; ".join(f"{r['variant']}: {r.get('error', 'failed')}" for r in results)
        raise NfieldError(
            f"the fused MLP failed on {torch.cuda.get_device_name(device)} in every configuration ({failures}); "
            "use backend 'torch'"
        )
    _store_verdict(key, {"variant": chosen.name, "results": results, "when": time.strftime("%Y-%m-%d %H:%M:%S")})
    _SETTLED[key] = chosen
    return chosen


def probe(device: torch.device, names: list[str] | None = None, sanitize: bool = False) -> list[dict[str, Any]]:
    """Run each variant's checks and timing in a child process of its own; one result dict each.

    A result has "variant", "ok", and either the measured errors and "ms_forward_backward" or
    "error" (the child's last line: a CUDA error, a failed check, a timeout). With `sanitize`, a
    second child per variant runs its checks at 4,099 rows under compute-sanitizer memcheck
    (without PyTorch's caching allocator, so an access past any tensor is caught), and the result
    gains "memcheck".
    """
    results = []
    for name in names or [v.name for v in VARIANTS]:
        variant_named(name)
        command = [sys.executable, "-m", "nfield.kernels.tiny_mlp", "--variant", name, "--device", str(device)]
        results.append(_run_child(command, name, {}))
        if sanitize:
            checked = _run_child(
                ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "3", "--print-limit", "4", *command, "--quick"],
                name,
                {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"},
            )
            results[-1]["memcheck"] = "clean" if checked.get("ok") else checked.get("error", "failed")
    return results


def _run_child(command: list[str], name: str, env: dict[str, str]) -> dict[str, Any]:
    environment = {**os.environ, **env}
    environment.pop(ENVIRONMENT_VARIABLE, None)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=_CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"variant": name, "ok": False, "error": f"no answer within {_CHILD_TIMEOUT} s"}
    except FileNotFoundError as error:
        return {"variant": name, "ok": False, "error": f"{error.filename} not found"}
    seconds = round(time.perf_counter() - started, 1)
    lines = [line for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
    report = next((json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith("{")), None)
    if done.returncode == 0 and report is not None:
        return {**report, "seconds": seconds}
    errors = [line for line in lines if "Error" in line or "error" in line or "FAIL" in line]
    return {
        "variant": name,
        "ok": False,
        "error": (errors or lines or [f"exit status {done.returncode}"])[-1][:300],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", nargs="+", help="names to probe (default all)")
    parser.add_argument("--sanitize", action="store_true", help="also run each variant's checks under compute-sanitizer memcheck")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("mlp_variants: no CUDA device here", file=sys.stderr)
        return 2
    key = verdict_key(device) if device.type == "cuda" else "cpu (Triton interpreter)"
    results = probe(device, args.variants, args.sanitize)
    chosen = choose(results)
    if chosen is not None and device.type == "cuda" and not args.variants:
        _store_verdict(key, {"variant": chosen.name, "results": results, "when": time.strftime("%Y-%m-%d %H:%M:%S")})
    header = f"{'variant':<17}{'result':<8}{'fwd err':>9}{'bwd err':>9}{'ms @2^20':>10}{'M rows/s':>10}  memcheck / error"
    print(f"fused MLP on {key}\n{header}\n{'-' * len(header)}")
    for r in results:
        if r.get("ok"):
            ms, rate = r.get("ms_forward_backward"), r.get("rows_per_second")
            timing = f"{ms:>10.3f}{rate / 1e6:>10.0f}" if ms else f"{'-':>10}{'-':>10}"
            print(
                f"{r['variant']:<17}{'ok':<8}{r['forward_error']:>9.1e}{r['backward_error']:>9.1e}{timing}  "
                f"{r.get('memcheck', '')}"
            )
        else:
            print(f"{r['variant']:<17}{'FAIL':<8}{'':>38}  {r.get('error', '')}")
    print(f"verdict: {chosen.name if chosen else 'none passed: the fused MLP stays off (backend torch)'}")
    if args.out:
        args.out.write_text(
            json.dumps({"key": key, "verdict": chosen.name if chosen else None, "results": results}, indent=1) + "\n"
        )
    return 0 if chosen is not None else 1


if __name__ == "__main__":
    sys.exit(main())
