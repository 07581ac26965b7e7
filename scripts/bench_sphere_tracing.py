"""Sphere tracing benchmark: an NGLOD bunny drawn by the previous tracer, the PyTorch path and the fused kernel.

For each path, along a turntable of the fitted bunny at its finest LOD: frames per second (median
over the frames, after a warm-up frame), SDF evaluations per ray, and per frame the launches and
host synchronisations a GPU would see (`nfield.kernels.dispatch_counter`, counted on one frame apart from
the timing). The baseline is the previous tracer in the same run (``sphere_trace`` compacting every
iteration, hits at |sdf| < 1e-3 whatever the pixel size, normals by autograd): the fps ratio, and
how the images agree with it (hit IoU, the share of hits within 2 eps of each other along the
normal, mean normal cosine).

    python scripts/bench_sphere_tracing.py                      # GPU scale: 1280x720, 20 frames, all paths
    python scripts/bench_sphere_tracing.py --scale cpu          # CPU scale: 640x360, 3 frames, previous and torch
    python scripts/bench_sphere_tracing.py --scale tiny         # smoke test: 48x27 (the kernel in Triton's interpreter
                                                                #   when TRITON_INTERPRET=1)
    python scripts/bench_sphere_tracing.py --run runs/sdf/bunny-nglod --scale cpu   # a fitted run instead of a fresh fit

Without --run the bunny (the shared mesh, or an icosphere at the tiny scale when it is absent) is
fitted first: 600 steps of NGLOD (the CPU batch on a CPU). With ``--paths previous`` only the
baseline runs, so the script also measures the previous commit's code (``PYTHONPATH=<old checkout>``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_report import device_name, report_header, synchronize, write_report

from nfield.fields.sdf import distance_fn
from nfield.render.camera_paths import orbit_poses
from nfield.render.cameras import PinholeCamera, camera_rays
from nfield.render.sphere_tracing import render_sdf
from nfield.training.trainer import resolve_device

SCALES = {
    # frame size, timed frames, paths by default, fit steps when no run is given
    "gpu": dict(frame=(1280, 720), frames=20, paths=("previous", "torch", "triton"), fit_steps=600),
    "cpu": dict(frame=(640, 360), frames=3, paths=("previous", "torch"), fit_steps=600),
    "tiny": dict(frame=(48, 27), frames=1, paths=("previous", "torch", "triton"), fit_steps=20),
}
TRACE = dict(max_steps=128, hit_eps=1e-3, step_scale=0.9)


def previous_render(model, lod, camera, c2w) -> dict:
    """The tracer before the NGLOD tracer, through render_sdf (also on the previous commit's code)."""
    empty_space = lambda points: model.octree.empty_cell_bounds(points, max_level=lod)  # noqa: E731
    try:
        result = render_sdf(
            distance_fn(model, lod), camera, c2w, empty_space=empty_space, pixel_footprint=0.0, compact_every=1, **TRACE
        )
    except TypeError:  # the previous commit's render_sdf: those were its only settings
        result = render_sdf(distance_fn(model, lod), camera, c2w, empty_space=empty_space, **TRACE)
    if "evaluations" not in result:
        result["evaluations"] = torch.full(result["hit"].shape, result["n_evaluations"] / result["hit"].numel())
    return result


def path_render(path: str, model, lod, camera, c2w) -> dict:
    if path == "previous":
        return previous_render(model, lod, camera, c2w)
    from nfield.fields.nglod_tracing import nglod_tracer
    from nfield.render.sphere_tracing import render_surface

    return render_surface(nglod_tracer(model, lod, backend=path), camera, c2w)


def agreement(reference: dict, image: dict, camera: PinholeCamera, c2w: torch.Tensor) -> dict:
    """How `image` agrees with `reference`: hit IoU, the share of shared hits within 2 eps along the
    normal (eps = max(1e-3, a quarter pixel's footprint)), mean normal cosine."""
    both = reference["hit"] & image["hit"]
    union = (reference["hit"] | image["hit"]).sum()
    _, directions = camera_rays(camera, c2w)
    incidence = (directions.reshape(*image["hit"].shape, 3) * image["normals"]).sum(-1).abs()
    separation = ((reference["depth"] - image["depth"]).abs() * incidence)[both]
    eps = torch.clamp_min(0.25 * image["depth"][both] / camera.fy, 1e-3)
    return {
        "hit_iou": float(both.sum() / union) if union else 1.0,
        "within_2_eps": float((separation <= 2 * eps).float().mean()) if both.any() else 1.0,
        "normal_cosine": float((reference["normals"][both] * image["normals"][both]).sum(-1).mean()) if both.any() else 1.0,
    }


def measure(path: str, model, lod: int, camera: PinholeCamera, poses: torch.Tensor, device: torch.device) -> tuple[dict, dict]:
    """(the row of `path`, its first frame)."""
    first = path_render(path, model, lod, camera, poses[0])  # warm-up: compiles, packs the field
    synchronize(device)
    times = []
    for c2w in poses[1:]:
        started = time.perf_counter()
        path_render(path, model, lod, camera, c2w)
        synchronize(device)
        times.append(time.perf_counter() - started)
    row = {"path": path, "fps": 1.0 / statistics.median(times), "evaluations_per_ray": float(first["evaluations"].float().mean())}
    try:
        from nfield.kernels.dispatch_counter import DispatchCounter
    except ImportError:  # the previous commit's code has no counter
        return row, first
    with DispatchCounter() as counter:
        path_render(path, model, lod, camera, poses[0])
    row.update(
        launches_per_frame=counter.launches, syncs_per_frame=counter.syncs, triton_launches_per_frame=counter.triton_launches
    )
    return row, first


def fitted_bunny(scale_name: str, device: torch.device):
    """NGLOD fitted to the bunny (as bench_sdf fits it) for the scale's fit steps."""
    from bench_sdf import DEFAULT_MESH, fit_model, load_mesh
    from bench_sdf import SCALES as SDF_SCALES

    shape, _ = load_mesh(DEFAULT_MESH, "tiny" if scale_name == "tiny" else "cpu")
    sdf_scale = dict(SDF_SCALES["tiny" if scale_name == "tiny" else ("gpu" if device.type == "cuda" else "cpu")])
    sdf_scale["steps"] = SCALES[scale_name]["fit_steps"]
    task, _ = fit_model(shape, "nglod", sdf_scale, device, seed=0)
    return task.model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--paths", nargs="+", choices=("previous", "torch", "triton"), help="default: the scale's")
    parser.add_argument("--run", type=Path, help="a fit-sdf run directory of an NGLOD field (default: fit the bunny)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench_sphere_tracing.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    scale = SCALES[args.scale]
    paths = args.paths or list(scale["paths"])
    if args.run:
        from nfield.runs.single import load_run

        model = load_run(args.run, str(device)).task.model.eval()
    else:
        model = fitted_bunny(args.scale, device)
    lod = model.n_lods - 1
    width, height = scale["frame"]
    camera = PinholeCamera.from_fov(width, height, 40.0)
    poses = orbit_poses(scale["frames"] + 1, 3.4, 20.0, start_azimuth_deg=30.0).to(device)
    report = report_header(device, scale={"name": args.scale, **scale}, run=str(args.run or "bunny fitted here"), results=[])
    print(f"device: {device_name(device)}; NGLOD LOD {lod} at {width}x{height}, {scale['frames']} timed frames")
    header = f"{'path':<10}{'fps':>9}{'x prev':>8}{'evals/ray':>11}{'launches':>10}{'syncs':>7}{'IoU':>8}{'<=2eps':>8}{'cos':>8}"
    print(f"{header}\n{'-' * len(header)}")
    reference = None
    for path in paths:
        row, first = measure(path, model, lod, camera, poses, device)
        if path == "previous":
            reference, baseline_fps = first, row["fps"]
        if reference is not None:
            row.update(agreement(reference, first, camera, poses[0]), fps_ratio=row["fps"] / baseline_fps)
        report["results"].append(row)
        write_report(args.out, report)
        shown = [f"{row['fps']:>9.2f}", f"{row.get('fps_ratio', float('nan')):>8.2f}", f"{row['evaluations_per_ray']:>11.2f}"]
        shown += [f"{row.get('launches_per_frame', '-'):>10}", f"{row.get('syncs_per_frame', '-'):>7}"]
        shown += [f"{row[key]:>8.4f}" if key in row else f"{'-':>8}" for key in ("hit_iou", "within_2_eps", "normal_cosine")]
        print(f"{path:<10}{''.join(shown)}", flush=True)
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
