"""Which launch configuration of the fused MLP runs on a GPU, settled on that GPU.

Triton 3.6 and later have been reported to make illegal memory accesses on Hopper GPUs in kernels
with several ``tl.dot`` when their loads are software-pipelined (triton-lang/triton#10573, #10486,
#11366: clean with ``num_stages=1`` or on Triton 3.5). nfield's first GPU run (an H200 with Triton
3.6.0) crashed in the fused MLP the same way. The kernels compile to different code paths per
`FusedMLPVariant` (wgmma with a cp.async pipeline, wgmma without one, mma.sync with 32-row
programs), so rather than guess, each one runs in a child process of its own (an illegal access
poisons the CUDA context of the process that made it), is checked against the PyTorch reference on
the shapes nfield uses and timed; the fastest that passes is used. The verdict is kept per GPU
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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nfield.errors import NfieldError
from nfield.kernels.tiny_mlp import FUSED_ACTIVATIONS, VARIANTS, FusedMLPVariant
from nfield.outputs import write_atomic

ENVIRONMENT_VARIABLE = "NFIELD_FUSED_MLP_VARIANT"
_CHILD_TIMEOUT = 240  # seconds for one variant's child: start-up, compiles, checks and timing
#: (in_dim, n_neurons, n_hidden_layers, out_dim, activation, output_activation): the benchmark's network,
#: NGLOD's decoder and the ngp colour network
CHECK_SHAPES = ((32, 64, 2, 16, "relu", "none"), (35, 128, 1, 1, "relu", "none"), (31, 64, 2, 3, "relu", "sigmoid"))
CHECK_ROWS = (4096 + 3, 2**18 + 11)
TIMED_ROWS = 2**20
TOLERANCES = {
    "forward": 1e-3,
    "backward": 5e-3,
}  # relative, against the reference with the kernels' float16 roundings (slopes from rounded outputs)

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

    import nfield.kernels.tiny_mlp as kernels

    source = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()[:16]
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
        command = [sys.executable, "-m", "nfield.kernels.mlp_variants", "--child", name, "--device", str(device)]
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


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach().double()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - want).norm() / want.norm().clamp_min(1e-30))


def check_variant(variant: FusedMLPVariant, device: torch.device, rows: tuple[int, ...] = CHECK_ROWS) -> dict[str, float]:
    """Worst forward and backward relative errors of `variant` against `reference_mlp` (with the
    kernels' float16 roundings) on `CHECK_SHAPES` at each row count; AssertionError past `TOLERANCES`."""
    from nfield.kernels.tiny_mlp import fused_mlp, reference_mlp

    generator = torch.Generator().manual_seed(0)
    worst = {"forward": 0.0, "backward": 0.0}
    for in_dim, width, layers, out_dim, act, out_act in CHECK_SHAPES:
        fans = [in_dim] + [width] * layers
        outs = [width] * layers + [out_dim]
        weights = [(torch.randn(o, i, generator=generator) / i**0.5).to(device).requires_grad_() for i, o in zip(fans, outs)]
        biases = [(torch.randn(o, generator=generator) * 0.1).to(device).requires_grad_() for o in outs]
        for n in rows:
            x = torch.randn(n, in_dim, generator=generator).to(device).requires_grad_()
            cotangent = torch.randn(n, out_dim, generator=generator).to(device)
            code, out_code = FUSED_ACTIVATIONS[act], FUSED_ACTIVATIONS[out_act]
            want = reference_mlp(x, weights, biases, code, out_code, float16=True)
            got = fused_mlp(x, weights, biases, act, out_act, variant=variant)
            grads_want = torch.autograd.grad(want, [x, *weights, *biases], cotangent)
            grads_got = torch.autograd.grad(got, [x, *weights, *biases], cotangent)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            label = f"{variant.name} {in_dim}->{width}x{layers}->{out_dim} at {n} rows"
            error = _relative_error(got, want)
            assert error <= TOLERANCES["forward"], f"FAIL {label}: forward relative error {error:.3g}"
            worst["forward"] = max(worst["forward"], error)
            for index, (a, b) in enumerate(zip(grads_got, grads_want)):
                error = _relative_error(a, b)
                assert error <= TOLERANCES["backward"], f"FAIL {label}: gradient {index} relative error {error:.3g}"
                worst["backward"] = max(worst["backward"], error)
    return worst


def time_variant(variant: FusedMLPVariant, device: torch.device, n: int = TIMED_ROWS, repeats: int = 20) -> float:
    """Median milliseconds of forward + backward of the benchmark's 32 -> 64 x 2 -> 16 network at n rows."""
    from nfield.kernels.tiny_mlp import PackedWeightsCache, fused_mlp

    in_dim, width, layers, out_dim, act, out_act = CHECK_SHAPES[0]
    fans, outs = [in_dim] + [width] * layers, [width] * layers + [out_dim]
    weights = [torch.nn.Parameter(torch.randn(o, i, device=device) / i**0.5) for i, o in zip(fans, outs)]
    biases = [torch.nn.Parameter(torch.zeros(o, device=device)) for o in outs]
    x = torch.randn(n, in_dim, device=device)
    cotangent = torch.randn(n, out_dim, device=device)
    cache = PackedWeightsCache()

    def step() -> None:
        fused_mlp(x, weights, biases, act, out_act, cache=cache, variant=variant).backward(cotangent)

    step()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _child(name: str, device: str, quick: bool) -> int:
    """One variant's checks (and timing, unless `quick`) in this process; one JSON line on stdout."""
    import triton

    variant = variant_named(name)
    target = torch.device(device)
    quick = quick or target.type != "cuda"  # in Triton's interpreter: the smaller size only
    try:
        errors = check_variant(variant, target, rows=CHECK_ROWS[:1] if quick else CHECK_ROWS)
        report = {"variant": name, "ok": True, "triton": triton.__version__, **{f"{k}_error": v for k, v in errors.items()}}
        if not quick:
            ms = time_variant(variant, target)
            report.update(ms_forward_backward=ms, rows_per_second=TIMED_ROWS / ms * 1e3)
    except AssertionError as error:
        print(str(error), file=sys.stderr)
        return 1
    print(json.dumps(report), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", nargs="+", help="names to probe (default all)")
    parser.add_argument("--sanitize", action="store_true", help="also run each variant's checks under compute-sanitizer memcheck")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.device, args.quick)
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
