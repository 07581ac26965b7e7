"""SDF benchmark: every SDF model (and every NGLOD LOD) fitted to the same mesh, seed and steps.

For each model and LOD: Chamfer-L1 and normal consistency between the marching-cubes mesh and the
input surface (normalised [-1, 1] box units), volumetric IoU, parameters and size in KB (float32),
fit time, and sphere-tracing frames per second. The baseline, in the same run: NGLOD's frames per
second with octree empty-space skipping against the same field traced without it (a ratio), and
the ground-truth signed-distance backends against each other (points per second).

    python scripts/bench_sdf.py                          # GPU scale: 2000 steps, 512^3 meshes, 1280x720 frames
    python scripts/bench_sdf.py --scale cpu              # CPU scale: 300 steps, 128^3 meshes, 320x180 frames
    python scripts/bench_sdf.py --scale gpu-short        # 300 GPU-size steps, 128^3 meshes, 640x360 (gpu_check.sh's form)
    python scripts/bench_sdf.py --scale tiny             # smoke test: 20 steps, 32^3 meshes, 32x18 frames
    python scripts/bench_sdf.py --mesh ../shared/data/sdf/bunny.obj --models nglod siren --out bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_report import device_name, report_header, synchronize, write_report

from nfield.data.meshes import load_shape
from nfield.fields.sdf import NGLODField, distance_fn
from nfield.geometry.distance import signed_distance
from nfield.geometry.marching_cubes import extract_mesh
from nfield.presets.sdf import SDF_PRESETS, resolve_sdf_preset
from nfield.render.camera_paths import orbit_poses
from nfield.tasks.sdf import SDFTask, SDFTaskConfig, geometry_report
from nfield.tasks.sdf_views import render_view
from nfield.training.trainer import TrainConfig, Trainer, resolve_device, seed_everything

DEFAULT_MESH = Path(__file__).resolve().parents[2] / "shared" / "data" / "sdf" / "bunny.obj"

SCALES = {
    # name: steps, batch size, mesh resolution, surface samples for metrics, frame size, timed frames;
    # optional: task (other SDFTaskConfig fields), ground_truth_points (default 2^20 on CUDA, 2^17 on a CPU)
    # and models (default: every preset)
    "gpu": dict(steps=2000, batch_size=2**17, resolution=512, metric_points=2**18, frame=(1280, 720), frames=10),
    "cpu": dict(steps=300, batch_size=2**13, resolution=128, metric_points=2**17, frame=(320, 180), frames=2),
    # gpu_check.sh's short form (its share is about 40 s; 256^3 meshes and 1280x720 frames ran past
    # 35 s on an H200): the GPU batch, 128^3 meshes, 640x360 frames
    "gpu-short": dict(steps=300, batch_size=2**17, resolution=128, metric_points=2**17, frame=(640, 360), frames=2),
    # a smoke test: a few steps, 32^3 meshes, 32x18 frames (proves the script runs; the numbers mean nothing)
    "tiny": dict(
        steps=20,
        batch_size=2**10,
        resolution=32,
        metric_points=2**10,
        frame=(32, 18),
        frames=1,
        task=dict(pool_size=2**12, octree_points=2**14, eval_points=2**10, iou_points=2**12),
        ground_truth_points=2**9,
        models=("nglod", "siren", "hash"),  # the octree, an MLP and a grid: each path once
    ),
}


def load_mesh(path: Path, scale_name: str):
    """The shape to fit and its file name. At the tiny scale a generated icosphere stands in for a
    missing default mesh (the shared data may be absent where the smoke test runs)."""
    if scale_name == "tiny" and path == DEFAULT_MESH and not path.is_file():
        import trimesh

        print(f"{path} not found: fitting a generated icosphere instead")
        with tempfile.TemporaryDirectory() as stand_in_dir:
            stand_in = Path(stand_in_dir) / "icosphere.obj"
            trimesh.creation.icosphere(subdivisions=3).export(stand_in)
            return load_shape(stand_in), stand_in.name
    return load_shape(path), path.name


def frames_per_second(model, lod: int | None, width: int, height: int, frames: int, skip_empty: bool) -> float:
    """Sphere-traced matcap frames per second along a turntable (after one warm-up frame)."""
    device = next(model.parameters()).device
    for index, c2w in enumerate(orbit_poses(frames + 1, 3.4, 20.0, start_azimuth_deg=30.0)):
        if index == 1:
            synchronize(device)
            start = time.perf_counter()
        render_view(model, c2w, width, height, lod, skip_empty=skip_empty)
    synchronize(device)
    return frames / (time.perf_counter() - start)


def ground_truth_throughput(shape, device: torch.device, n: int) -> dict:
    """Points per second of the signed-distance backends on the same points: libigl on the CPU (the
    baseline), and the Triton kernel and the chunked PyTorch reference on CUDA (on a CPU only the
    reference, on a slice: it is meant for GPUs)."""
    points = torch.rand(n, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    runs = [("libigl", "cpu", n)]
    runs += [("triton", "cuda", n), ("torch", "cuda", n)] if device.type == "cuda" else [("torch", "cpu", min(n, 4096))]
    result = {}
    for backend, where, count in runs:
        query, mesh = points[:count].to(where), shape.to(where)
        signed_distance(mesh, query[:16], backend)  # warm-up (compiles the kernel)
        synchronize(device)
        start = time.perf_counter()
        signed_distance(mesh, query, backend)
        synchronize(device)
        result[f"{backend}_points_per_second"] = count / (time.perf_counter() - start)
    return result


def fit_model(shape, model: str, scale: dict, device: torch.device, seed: int) -> tuple[SDFTask, Trainer]:
    preset = resolve_sdf_preset(model, {})
    task_cfg = SDFTaskConfig(
        batch_size=scale["batch_size"],
        mesh_resolution=scale["resolution"],
        metric_points=scale["metric_points"],
        eikonal_weight=preset.task.eikonal_weight,
        **scale.get("task", {}),
    )
    train_cfg = TrainConfig(  # one step more than is run, so the pause skips the run's own export
        steps=scale["steps"] + 1,
        lr=preset.train.lr,
        mixed_precision=False,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
        progress=False,
    )
    seed_everything(seed)
    task = SDFTask(shape, preset.field, task_cfg, device=device, seed=seed)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(task, train_cfg, Path(run_dir), device=device)
        trainer.fit(stop_after=scale["steps"])
    return task, trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--mesh", type=Path, default=DEFAULT_MESH)
    parser.add_argument("--models", nargs="+", default=None, choices=list(SDF_PRESETS), help="default: the scale's, or all")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_sdf.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    scale = SCALES[args.scale]
    width, height = scale["frame"]
    shape, mesh_name = load_mesh(args.mesh, args.scale)
    device_label = device_name(device)
    report = report_header(device, mesh=mesh_name, scale={"name": args.scale, **scale}, seed=args.seed, results=[])
    header = (
        f"{'model':<10}{'LOD':>4}{'Chamfer-L1':>12}{'normal c.':>11}{'IoU':>8}{'params':>12}{'KB':>10}"
        f"{'fit s':>8}{'steps':>7}{f'fps@{width}x{height}':>15}"
    )
    print(f"device: {device_label}, mesh {mesh_name}, {scale['steps']} steps, meshes at {scale['resolution']}^3")
    print(f"{header}\n{'-' * len(header)}")
    nglod_skip = None
    for model in args.models or scale.get("models", list(SDF_PRESETS)):
        task, trainer = fit_model(shape, model, scale, device, args.seed)
        field = task.model.eval()
        lods = list(range(field.n_lods)) if isinstance(field, NGLODField) else [None]
        for lod in lods:
            vertices, faces = extract_mesh(distance_fn(field, lod), scale["resolution"], device=device)
            metrics = geometry_report(field, task.shape, vertices, faces, task.cfg, lod=lod, seed=args.seed)
            fps = frames_per_second(field, lod, width, height, scale["frames"], skip_empty=True)
            row = {
                "model": model,
                "lod": lod,
                **{k: metrics[k] for k in ("chamfer_l1", "normal_consistency", "iou")},
                "parameters": metrics["lod_parameters"],  # what this LOD uses
                "size_kb": metrics["lod_size_kb"],
                "fit_seconds": trainer.train_seconds,
                "steps": trainer.step,
                "fps": fps,
            }
            report["results"].append(row)
            write_report(args.out, report)
            print(
                f"{model:<10}{'-' if lod is None else lod:>4}{row['chamfer_l1']:>12.5f}{row['normal_consistency']:>11.4f}"
                f"{row['iou']:>8.4f}{row['parameters']:>12,}{row['size_kb']:>10.1f}{row['fit_seconds']:>8.1f}"
                f"{row['steps']:>7}{fps:>15.2f}",
                flush=True,
            )
        if isinstance(field, NGLODField):
            without = frames_per_second(field, None, width, height, scale["frames"], skip_empty=False)
            with_skip = report["results"][-1]["fps"]
            nglod_skip = {"fps_with_octree": with_skip, "fps_without_octree": without, "speedup": with_skip / without}
    if nglod_skip:
        report["octree_skipping"] = nglod_skip
        print(
            f"\nNGLOD finest LOD, sphere tracing at {width}x{height}: {nglod_skip['fps_with_octree']:.2f} fps with octree "
            f"empty-space skipping vs {nglod_skip['fps_without_octree']:.2f} fps without: x{nglod_skip['speedup']:.2f}"
        )
    n_points = scale.get("ground_truth_points", 2**20 if device.type == "cuda" else 2**17)
    report["ground_truth"] = {"points": n_points, **ground_truth_throughput(shape, device, n_points)}
    g = report["ground_truth"]
    baseline = g["libigl_points_per_second"]
    others = ", ".join(
        f"{key.removesuffix('_points_per_second')} ({device.type}) {value:,.0f} points/s (x{value / baseline:.2f})"
        for key, value in g.items()
        if key.endswith("_per_second") and not key.startswith("libigl")
    )
    print(f"ground-truth signed distance ({len(shape.faces):,} triangles): libigl (CPU) {baseline:,.0f} points/s, {others}")
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
