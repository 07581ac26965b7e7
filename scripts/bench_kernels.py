"""Kernel benchmark: points/s of every fast path against its PyTorch reference, and a NeRF step's profile.

Part 1 times each component on each backend it has here (torch always; triton on CUDA, or in
Triton's CPU interpreter when TRITON_INTERPRET=1, where timings mean nothing; tcnn when installed),
forward and forward+backward (against a random output gradient: a constant one, as ``.sum()``
gives, would flatter the gradient scatters), at several sizes; the baseline is the PyTorch
reference in the same run (the `speedup` column is backend throughput / torch throughput):

- hash grid: 3-D, 16 levels x 2 features, 2^19 rows per level (instant-ngp's encoding);
- tiny MLP: 32 -> 64 -> 64 -> 16, ReLU (torch in float32, and under float16 autocast on CUDA; the
  fused kernel in the launch configuration this GPU's probe settled on, `nfield.kernels.mlp_variants`);
- compositing: packed samples, 64 per ray;
- ray marching: a 128^3 occupancy grid holding a ball, steps of the box's diagonal / 1024 (rays/s;
  16^3 and / 64 at the tiny scale).

Part 2 profiles training steps of the ngp preset on a generated scene (800x800 at GPU scale) with
torch.profiler, once with every component on the PyTorch reference (NFIELD_BACKEND=torch) and once
with backend auto, and lists the top operations by device time (CPU time without CUDA).

    python scripts/bench_kernels.py                     # GPU scale: 2^18 .. 2^21 points, 800x800 scene
    python scripts/bench_kernels.py --scale gpu-short   # 2^18 and 2^20 points, fewer repeats (gpu_check.sh)
    python scripts/bench_kernels.py --scale cpu         # CPU scale: 2^12 .. 2^16 points, 48x48 scene
    python scripts/bench_kernels.py --scale tiny        # smoke test of every path (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from bench_report import UncheckpointedTrainer, device_name, report_header, synchronize, write_report

from nfield.backends import tcnn_installed
from nfield.data.scenes import load_scene
from nfield.encodings import HashGrid, HashGridConfig
from nfield.kernels import triton_available
from nfield.networks import MLP, MLPConfig
from nfield.presets.nerf import resolve_nerf_preset
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.rays import RaySamples
from nfield.render.volume import composite
from nfield.tasks.nerf import NeRFTask, NeRFTaskConfig
from nfield.training.trainer import resolve_device, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's scenes/ generators
from scenes.synthetic import generate  # noqa: E402

SCALES = {
    # log2 sizes (points, samples) per component; for marching (the benchmark's and the NeRF profile's)
    # log2 ray counts, the occupancy resolution and march steps per box diagonal; timed repeats;
    # NeRF profile: scene size and views, warm-up and profiled steps, rays per step
    "gpu": dict(
        sizes=(18, 19, 20, 21),
        march=(14, 15, 16, 17),
        grid=128,
        diagonal_steps=1024,
        repeats=20,
        scene=800,
        views=20,
        warmup=300,
        steps=20,
        rays=2**13,
    ),
    "gpu-short": dict(
        sizes=(18, 20),
        march=(14, 16),
        grid=128,
        diagonal_steps=1024,
        repeats=10,
        scene=800,
        views=10,
        warmup=100,
        steps=10,
        rays=2**13,
    ),
    "cpu": dict(
        sizes=(12, 14, 16),
        march=(8, 10),
        grid=128,
        diagonal_steps=1024,
        repeats=3,
        scene=48,
        views=10,
        warmup=10,
        steps=3,
        rays=1024,
    ),
    "tiny": dict(sizes=(6,), march=(4,), grid=16, diagonal_steps=64, repeats=1, scene=16, views=3, warmup=2, steps=1, rays=64),
}
GRID = HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=19)
NETWORK = MLPConfig(n_neurons=64, n_hidden_layers=2, activation="relu")


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` calls after one warm-up call (device events on CUDA)."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def kernel_backends(device: torch.device) -> list[str]:
    backends = ["torch"]
    if triton_available(device):
        backends.append("triton")
    if tcnn_installed() and device.type == "cuda":
        backends.append("tcnn")
    return backends


def bench_grid(device: torch.device, n: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    grid = HashGrid(3, GRID).to(device)
    x = torch.rand(n, 3, device=device) * 2 - 1
    cotangent = torch.randn(n, grid.out_dim, device=device)
    rows = []
    for backend in kernel_backends(device):
        grid.set_backend(backend)

        def forward():
            with torch.no_grad():
                return grid(x)

        def forward_backward():
            grid(x).backward(cotangent)  # a random gradient: a stride-0 one (.sum()) would flatter the scatter

        rows.append(row("hash grid", backend, "forward", n, timed(forward, device, repeats)))
        rows.append(row("hash grid", backend, "forward+backward", n, timed(forward_backward, device, repeats)))
        grid.params.grad = None
    return rows


def bench_mlp(device: torch.device, n: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(n, 32, device=device)
    cotangent = torch.randn(n, 16, device=device)
    rows = []
    variants = [("torch", NETWORK, False)]
    if device.type == "cuda":
        variants.append(("torch-fp16", NETWORK, True))
    variants += [(b, NETWORK, False) for b in kernel_backends(device) if b == "triton"]
    if "tcnn" in kernel_backends(device):
        variants.append(("tcnn", MLPConfig(n_neurons=64, n_hidden_layers=2, backend="tcnn"), False))
    for label, cfg, autocast in variants:
        net = MLP(32, 16, cfg).to(device)
        if label == "triton":
            net.set_backend("triton")
        context = torch.autocast(device.type, dtype=torch.float16, enabled=autocast)

        def forward():
            with torch.no_grad(), context:
                return net(x)

        def forward_backward():
            with context:
                out = net(x)
            out.float().backward(cotangent)

        extra = {}
        if label == "triton":  # the launch configuration this GPU's probe settled on (nfield.kernels.mlp_variants)
            from nfield.kernels.mlp_variants import variant_for

            extra = {"variant": variant_for(device).name}
        rows.append({**row("tiny MLP 64x2", label, "forward", n, timed(forward, device, repeats)), **extra})
        rows.append({**row("tiny MLP 64x2", label, "forward+backward", n, timed(forward_backward, device, repeats)), **extra})
    return rows


def bench_composite(device: torch.device, n: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    per_ray = 64
    n_rays = max(1, n // per_ray)
    rays = torch.arange(n_rays, device=device).repeat_interleave(per_ray)
    starts = torch.arange(per_ray, device=device, dtype=torch.float32).repeat(n_rays) * 0.01
    samples = RaySamples(rays, starts, starts + 0.01)
    sigmas = (torch.rand(len(rays), device=device) * 50).requires_grad_()
    rgbs = torch.rand(len(rays), 3, device=device).requires_grad_()
    rgb_cotangent, depth_cotangent = torch.randn(n_rays, 3, device=device), torch.randn(n_rays, device=device)
    out_rows = []
    for backend in [b for b in kernel_backends(device) if b != "tcnn"]:

        def forward():
            with torch.no_grad():
                return composite(rgbs, sigmas, samples, n_rays, backend=backend)

        def forward_backward():
            out = composite(rgbs, sigmas, samples, n_rays, backend=backend)
            torch.autograd.backward([out["rgb"], out["depth"]], [rgb_cotangent, depth_cotangent])

        out_rows.append(row("compositing", backend, "forward", len(rays), timed(forward, device, repeats)))
        out_rows.append(row("compositing", backend, "forward+backward", len(rays), timed(forward_backward, device, repeats)))
    return out_rows


def bench_march(device: torch.device, n_rays: int, repeats: int, resolution: int = 128, diagonal_steps: int = 1024) -> list[dict]:
    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    grid = OccupancyGrid(OccupancyGridConfig(resolution=resolution), aabb).to(device)
    cells = torch.arange(resolution**3, device=device)
    corners, size = grid.cell_corners(torch.zeros_like(cells), cells)
    grid.occupied[0] = (corners + 0.5 * size).norm(dim=-1) < 0.6  # a ball: about 10% of the cells
    origins = torch.nn.functional.normalize(torch.randn(n_rays, 3, device=device), dim=-1) * 3
    directions = torch.nn.functional.normalize(torch.randn(n_rays, 3, device=device) * 0.3 - origins, dim=-1)
    near, far = torch.zeros(n_rays, device=device), torch.full((n_rays,), 6.0, device=device)
    step = 2 * math.sqrt(3) / diagonal_steps
    rows = []
    for backend in [b for b in kernel_backends(device) if b != "tcnn"]:
        seconds = timed(lambda: grid.march(origins, directions, near, far, step, backend=backend), device, repeats)
        rows.append(row("ray marching (rays)", backend, "forward", n_rays, seconds))
    return rows


def row(component: str, backend: str, mode: str, n: int, seconds: float) -> dict:
    return {"component": component, "backend": backend, "mode": mode, "n": n, "seconds": seconds, "per_second": n / seconds}


@contextmanager
def backend_override(value: str | None):
    """NFIELD_BACKEND=value inside (None: unset), restored afterwards."""
    previous = os.environ.get("NFIELD_BACKEND")
    if value is None:
        os.environ.pop("NFIELD_BACKEND", None)
    else:
        os.environ["NFIELD_BACKEND"] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("NFIELD_BACKEND", None)
        else:
            os.environ["NFIELD_BACKEND"] = previous


def profile_nerf_steps(scene, scale: dict, device: torch.device, label: str, top: int = 12) -> dict:
    """Train the ngp preset `warmup` steps, then profile `steps` steps: mean step time and top ops."""
    preset = resolve_nerf_preset("ngp", {})
    task_cfg = NeRFTaskConfig(
        batch_rays=scale["rays"],
        sampler=preset.task.sampler,
        occupancy=OccupancyGridConfig(resolution=scale["grid"]),
        steps_per_ray=scale["diagonal_steps"],
    )
    cfg = dataclasses.replace(preset.train, steps=10**6, eval_every=0, checkpoint_every=0, log_every=10**6, progress=False)
    seed_everything(0)
    task = NeRFTask(scene, preset.field, task_cfg, device=device, seed=0)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = UncheckpointedTrainer(task, cfg, Path(run_dir), device=device)
        trainer.fit(stop_after=scale["warmup"])
        synchronize(device)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        started = time.perf_counter()
        with torch.profiler.profile(activities=activities) as profiler:
            trainer.fit(stop_after=scale["warmup"] + scale["steps"])
            synchronize(device)
        seconds = (time.perf_counter() - started) / scale["steps"]
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    total = sum(getattr(e, key, 0.0) for e in events) or 1.0
    ops = [
        {
            "name": e.key,
            "ms_per_step": getattr(e, key, 0.0) / 1e3 / scale["steps"],
            "share": getattr(e, key, 0.0) / total,
            "calls": e.count,
        }
        for e in events[:top]
    ]
    return {"label": label, "step_ms": seconds * 1e3, "timer": "device" if device.type == "cuda" else "cpu", "top_ops": ops}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-profile", action="store_true", help="only the kernel table")
    parser.add_argument("--out", type=Path, default=Path("bench_kernels.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    scale = SCALES[args.scale]
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    report = report_header(device, scale={"name": args.scale, **scale}, triton_interpreter=interpreted, kernels=[])
    print(
        f"device: {device_name(device)}; backends: {', '.join(kernel_backends(device))}"
        + (" (Triton interpreter)" if interpreted else "")
    )
    header = f"{'component':<22}{'backend':<12}{'mode':<18}{'n':>10}{'M/s':>12}{'speedup':>9}"
    print(f"{header}\n{'-' * len(header)}")

    def run(jobs) -> None:
        for bench, log2_n in jobs:
            try:
                rows = bench(device, 2**log2_n, scale["repeats"])
            except Exception as error:  # noqa: BLE001 - one broken component must not hide the others' numbers
                name = getattr(bench, "__name__", "bench")
                message = f"{name} at n = 2^{log2_n}: {type(error).__name__}: {error}".splitlines()[0]
                report.setdefault("failures", []).append(message)
                print(f"FAILED {message}")
                continue
            baseline = {r["mode"]: r["per_second"] for r in rows if r["backend"] == "torch"}
            for r in rows:
                r["speedup"] = r["per_second"] / baseline[r["mode"]]
                report["kernels"].append(r)
                rate = r["per_second"] / 1e6
                print(f"{r['component']:<22}{r['backend']:<12}{r['mode']:<18}{r['n']:>10}{rate:>12.2f}{r['speedup']:>9.2f}")
            write_report(args.out, report)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    jobs = [(bench_grid, s) for s in scale["sizes"]] + [(bench_composite, s) for s in scale["sizes"]]
    jobs += [(lambda d, n, r: bench_march(d, n, r, scale["grid"], scale["diagonal_steps"]), s) for s in scale["march"]]
    run(jobs)
    if not args.skip_profile:
        with tempfile.TemporaryDirectory() as data_dir:
            size = scale["scene"]
            path = generate("primitives", Path(data_dir) / "primitives", size=size, n_train=scale["views"], n_val=1, n_test=1)
            scene = load_scene(path)
            profiles = []
            for label, override in (("torch reference", "torch"), ("backend auto", None)):
                with backend_override(override):
                    profiles.append(profile_nerf_steps(scene, scale, device, label))
        report["nerf_step"] = {"scene": f"primitives {size}x{size}", "rays_per_step": scale["rays"], "profiles": profiles}
        report["nerf_step"]["speedup"] = profiles[0]["step_ms"] / profiles[1]["step_ms"]
        write_report(args.out, report)
        print(f"\nngp training step, primitives {size}x{size}, {scale['rays']} rays, after {scale['warmup']} steps:")
        for profile in profiles:
            print(f"  {profile['label']}: {profile['step_ms']:.2f} ms/step; top operations by {profile['timer']} time:")
            for op in profile["top_ops"][:8]:
                print(f"    {op['ms_per_step']:>9.3f} ms {op['share']:>6.1%}  {op['name'][:70]}")
        print(f"  step speedup (torch / auto): {report['nerf_step']['speedup']:.2f}")
    # last: the fused MLP kernel hit an illegal memory access on an H200 (2026-11-27), which leaves
    # the CUDA context unusable for everything after it
    run([(bench_mlp, s) for s in scale["sizes"]])
    write_report(args.out, report)
    print(f"wrote {args.out}")
    return 1 if report.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
