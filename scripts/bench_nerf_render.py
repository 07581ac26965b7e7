"""What a held-out view costs per ray, against what training costs per ray, for trained NeRF runs.

For each run (an occupancy-grid NeRF: ngp, KiloNeRF, the families), on its first held-out view(s):

- ``two-pass``, the baseline: the training's sampler without autograd (every occupied sample's
  density, the samples behind a ray's opaque point dropped, the whole field again at the rest), the
  way held-out views were rendered before;
- ``culled``: `nfield.render.radiance.render_culled`, what evaluations and renders use now (the density
  network once per occupied sample, colours only at the kept ones);

in milliseconds per ray (median of `--repeats`), with the occupied and kept samples per ray, and
the largest difference between the two images (they should agree exactly). ``train`` is one
training step's milliseconds per ray (forward, backward and Adam, median over `--steps` steps after
a warm-up step) on random training rays, for scale.

    python scripts/bench_nerf_render.py RUN [RUN...] --out scripts/results/bench_nerf_render_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_report import device_name, report_header, synchronize, write_report

from nfield.render.cameras import image_rays
from nfield.render.radiance import march_step, ray_bounds, render_nerf_rays
from nfield.runs.single import load_run


def timed(device: torch.device, repeats: int, work) -> tuple[float, object]:
    """(median seconds of `work()` over `repeats` calls after one warm-up call, its last result)."""
    result = work()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        result = work()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def render_by_chunks(task, origins, directions, background, two_pass: bool) -> torch.Tensor:
    """(N, 3) colours of rays (N, 3), `task.cfg.render_chunk` rays at a time, without autograd;
    `two_pass` takes the training's sampler (``train=True``), else the culled path."""
    settings = task.cfg.render_settings()
    with torch.no_grad():
        parts = [
            render_nerf_rays(task.model, settings, task.near, o, d, background, train=two_pass)[0]["rgb"].float()
            for o, d in zip(origins.split(task.cfg.render_chunk), directions.split(task.cfg.render_chunk))
        ]
    return torch.cat(parts)


def samples_per_ray(task, origins, directions) -> tuple[float, float]:
    """(occupied samples, samples kept after early termination) per ray."""
    field = task.model["field"]
    t_near, t_far = ray_bounds(origins, directions, field.aabb, task.near)
    step = march_step(field.aabb, task.cfg.steps_per_ray)
    with torch.no_grad():
        occupied = task.model["grid"].march(origins, directions, t_near, t_far, step)
        kept = task.model["grid"].march(
            origins, directions, t_near, t_far, step, sigma_fn=field.density, early_stop_eps=task.cfg.early_stop_eps
        )
    return len(occupied) / len(origins), len(kept) / len(origins)


def train_ms_per_ray(task, device: torch.device, steps: int) -> float:
    """Median milliseconds per ray of a training step (forward, backward, Adam) on the task's batch."""
    optimizer = torch.optim.Adam(task.model.parameters(), lr=1e-12)  # the weights barely move
    task.model.train()
    seconds = []
    for step in range(steps + 1):
        synchronize(device)
        started = time.perf_counter()
        loss, _ = task.loss(task.sample(step))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step:
            seconds.append(time.perf_counter() - started)
    task.model.eval()
    return 1e3 * statistics.median(seconds) / task.cfg.batch_rays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained NeRF run directories (occupancy sampler)")
    parser.add_argument("--views", type=int, default=1, help="held-out views rendered per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed renders per path (median)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps (median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args()
    report = None
    print(
        "| run | view | rays | occupied/ray | kept/ray | two-pass ms/ray | culled ms/ray | speed-up | max diff | train ms/ray |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run_dir in args.runs:
        run = load_run(run_dir, args.device, data=True)
        task, device = run.task, run.task.device
        if report is None:
            report = report_header(device, runs=[])
        if "grid" not in task.model:
            print(f"{run_dir}: not an occupancy-grid run; skipped", file=sys.stderr)
            continue
        background = torch.ones(3, device=device)
        cameras = task.scene.test.cameras.to(device)
        for view in range(min(args.views, len(task.scene.test.images))):
            origins, directions = image_rays(cameras, view)
            occupied, kept = samples_per_ray(task, origins, directions)
            two_pass_s, two_pass = timed(
                device, args.repeats, lambda: render_by_chunks(task, origins, directions, background, True)
            )
            culled_s, culled = timed(device, args.repeats, lambda: render_by_chunks(task, origins, directions, background, False))
            n = len(origins)
            row = {
                "run": str(run_dir.name),
                "view": view,
                "rays": n,
                "occupied_per_ray": round(occupied, 1),
                "kept_per_ray": round(kept, 1),
                "two_pass_ms_per_ray": round(1e3 * two_pass_s / n, 4),
                "culled_ms_per_ray": round(1e3 * culled_s / n, 4),
                "speedup": round(two_pass_s / culled_s, 3),
                "max_difference": float((two_pass - culled).abs().max()),
            }
            if view == 0:
                row["train_ms_per_ray"] = round(train_ms_per_ray(task, device, args.steps), 4)
            report["runs"].append(row)
            write_report(args.out, report)
            print(
                f"| {row['run']} | {view} | {n:,} | {row['occupied_per_ray']} | {row['kept_per_ray']} | "
                f"{row['two_pass_ms_per_ray']:.3f} | {row['culled_ms_per_ray']:.3f} | x{row['speedup']:.2f} | "
                f"{row['max_difference']:.1e} | {row.get('train_ms_per_ray', float('nan')):.3f} |"
            )
    if report is not None:
        print(f"device: {device_name(device)}", file=sys.stderr)


if __name__ == "__main__":
    main()
