"""NeRF benchmark: held-out PSNR/SSIM against training time, training rays/s and render frames/s.

For the ngp and vanilla fields, on a generated Blender-format object scene (``scenes.synthetic``,
exact ground truth) and on the fox capture: train, evaluating every held-out view whenever the
training time (the trainer's own clock, evaluation excluded) passes a checkpoint; then time the
rendering of one held-out view. The baseline is the vanilla NeRF in the same run: the ngp/vanilla
ratio of training rays/s and the PSNR gap at every time checkpoint.

    python scripts/bench_nerf.py                      # GPU scale: 800x800 scene, fox at full size, 15/60/180/300 s
    python scripts/bench_nerf.py --scale headline --scene SCENE   # gpu_check.sh's first step (below)
    python scripts/bench_nerf.py --scale cpu          # CPU scale: 64x64 scene, fox / 16, 15/30/60 s, smaller sampling
    python scripts/bench_nerf.py --scale gpu-short    # 400x400 scene with 20 views, no fox, 5/10 s
    python scripts/bench_nerf.py --scale tiny         # smoke test: 16x16 scene, no fox, 0.5/1 s

The headline scale is the one number a short GPU slot must buy first: ngp alone on an 800x800
Blender-format scene generated beforehand on a CPU (``--scene``; 100 training and 5 held-out
views: ``python -m scenes.synthetic primitives DIR --size 800 --train 100 --val 1 --test 5``),
PSNR and SSIM on those 5 held-out views at 15, 60 and 180 s of training, rays/s, and one 800x800
render's frames per second. The JSON is rewritten at every time checkpoint, so a run stopped
early keeps what it measured. Without ``--scene`` the scene is generated first (minutes on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_report import UncheckpointedTrainer, device_name, report_header, synchronize, write_report

from nfield.data.scenes import load_scene
from nfield.presets.nerf import resolve_nerf_preset
from nfield.render.cameras import image_rays
from nfield.render.radiance import render_image
from nfield.tasks.nerf import BACKGROUNDS, NeRFTask
from nfield.training.trainer import TrainConfig, resolve_device, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's scenes/ generators
from scenes.synthetic import generate  # noqa: E402

FOX = Path(__file__).resolve().parents[2] / "shared" / "data" / "nerf" / "fox"

SCALES = {
    # synthetic scene size and views, fox downscale (None: no fox), time checkpoints (s), steps between
    # clock checks, sampling overrides
    "gpu": dict(size=800, n_train=100, n_test=20, fox_downscale=1, seconds=(15, 60, 180, 300), chunk=100, options={}),
    "cpu": dict(
        size=64,
        n_train=40,
        n_test=4,
        fox_downscale=16,
        seconds=(15, 30, 60),
        chunk=5,
        options=dict(grid_resolution=64, grid_warmup=64, steps_per_ray=256),
    ),
    # gpu_check.sh's short form (its share is about 55 s; at 800x800 with 10/25 s checkpoints it
    # ran past 57 s on an H200 without finishing a run): the GPU sampling on a 400x400 scene, 5/10 s
    "gpu-short": dict(size=400, n_train=20, n_test=2, fox_downscale=None, seconds=(5, 10), chunk=50, options={}),
    # gpu_check.sh's headline: ngp on the carried 800x800 scene, 5 held-out views scored at each checkpoint
    "headline": dict(
        size=800, n_train=100, n_test=5, fox_downscale=None, seconds=(15, 60, 180), chunk=100, options={}, models=("ngp",)
    ),
    # a smoke test: 16x16 scene, no fox, 0.5/1 s (proves the script runs; the numbers mean nothing)
    "tiny": dict(
        size=16,
        n_train=8,
        n_test=2,
        fox_downscale=None,
        seconds=(0.5, 1),
        chunk=2,
        options=dict(grid_resolution=16, grid_warmup=8, steps_per_ray=64, n_samples=16, n_importance=16),
    ),
}
BATCH_RAYS = {
    "gpu": {"ngp": 2**13, "vanilla": 2**12},
    "headline": {"ngp": 2**13},
    "cpu": {"ngp": 1024, "vanilla": 256},
    "gpu-short": {"ngp": 2**13, "vanilla": 2**12},
    "tiny": {"ngp": 256, "vanilla": 64},
}


def train_with_time_checkpoints(scene, model: str, scale_name: str, device: torch.device, seed: int, checkpoint=None) -> dict:
    """Train `model` on `scene`, evaluating the held-out views at each of the scale's time checkpoints;
    `checkpoint(row)` is called with the row so far after each."""
    scale = SCALES[scale_name]
    preset = resolve_nerf_preset(model, scale["options"])
    task_cfg = dataclasses.replace(preset.task, batch_rays=BATCH_RAYS[scale_name][model], eval_views=scale["n_test"])
    steps = 10**6  # the schedule's horizon; training stops at the last time checkpoint
    cfg = TrainConfig(
        steps=steps,
        lr=preset.train.lr,
        mixed_precision=preset.train.mixed_precision,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
        progress=False,
    )
    seed_everything(seed)
    task = NeRFTask(scene, preset.field, task_cfg, device=device, seed=seed)
    row = {"model": model, "curve": []}
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = UncheckpointedTrainer(task, cfg, Path(run_dir), device=device)
        for seconds in scale["seconds"]:
            while trainer.train_seconds < seconds:
                trainer.fit(stop_after=trainer.step + scale["chunk"])  # steps between clock checks
            point = {"seconds": seconds, "step": trainer.step, "train_seconds": trainer.train_seconds, **task.evaluate()}
            row["curve"].append(point)
            row["rays_per_second"] = task_cfg.batch_rays * trainer.step / trainer.train_seconds
            if checkpoint is not None:  # a run stopped later keeps what was measured so far
                checkpoint(row)
    row["fps"] = render_fps(task)
    return row


def render_fps(task: NeRFTask, repeats: int = 2) -> float:
    """Frames per second rendering the first held-out view (after one warm-up render)."""
    cameras = task.scene.test.cameras.to(task.device)
    background = torch.tensor(BACKGROUNDS["white"], device=task.device)
    origins, directions = image_rays(cameras, 0)
    task.model.eval()
    settings = task.cfg.render_settings()
    render_image(task.model, settings, task.scene.near, origins, directions, background)
    synchronize(task.device)
    start = time.perf_counter()
    for _ in range(repeats):
        render_image(task.model, settings, task.scene.near, origins, directions, background)
    synchronize(task.device)
    return repeats / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--models", nargs="+", choices=["ngp", "vanilla"], help="default: the scale's (ngp and vanilla)")
    parser.add_argument("--scene", type=Path, help="a Blender-format scene to use instead of generating one")
    parser.add_argument("--fox", type=Path, default=FOX)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_nerf.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    scale = SCALES[args.scale]
    report = report_header(device, scale={"name": args.scale, **scale}, seed=args.seed, results=[])
    print(f"device: {device_name(device)}")
    header = f"{'scene':<26}{'model':<9}" + "".join(f"{f'PSNR@{s}s':>11}" for s in scale["seconds"])
    header += f"{'SSIM':>7}{'steps':>8}{'rays/s':>11}{'fps':>8}"
    models = args.models or list(scale.get("models", ("ngp", "vanilla")))
    with tempfile.TemporaryDirectory() as data_dir:
        if args.scene is not None:
            scene = load_scene(args.scene)
            height, width = scene.train.images.shape[1:3]
            scenes = [(f"{args.scene.name} {width}x{height}", scene)]
        else:
            print(f"generating the {scale['size']}x{scale['size']} scene (pass --scene to skip this)", flush=True)
            synthetic = generate(
                "primitives",
                Path(data_dir) / "primitives",
                size=scale["size"],
                n_train=scale["n_train"],
                n_val=1,
                n_test=scale["n_test"],
            )
            scenes = [(f"primitives {scale['size']}x{scale['size']}", load_scene(synthetic))]
        if scale["fox_downscale"] is None:
            print(f"fox: not run at the {args.scale} scale")
        elif not args.fox.exists():
            print(f"fox: {args.fox} not found, skipped")
        else:
            fox = load_scene(args.fox, downscale=scale["fox_downscale"], skip_missing_images=True)
            height, width = fox.train.images.shape[1:3]
            scenes.append((f"fox {width}x{height}", fox))
        print(f"{header}\n{'-' * len(header)}")
        for label, scene in scenes:
            rows = {}
            for model in models:

                def checkpoint(partial: dict) -> None:
                    write_report(args.out, {**report, "results": [*report["results"], {"scene": label, **partial}]})

                row = {"scene": label, **train_with_time_checkpoints(scene, model, args.scale, device, args.seed, checkpoint)}
                rows[model] = row
                report["results"].append(row)
                write_report(args.out, report)
                psnrs = "".join(f"{point['psnr']:>11.2f}" for point in row["curve"])
                last = row["curve"][-1]
                print(
                    f"{label:<26}{model:<9}{psnrs}{last['ssim']:>7.3f}{last['step']:>8}{row['rays_per_second']:>11,.0f}{row['fps']:>8.2f}",
                    flush=True,
                )
            if {"ngp", "vanilla"} <= rows.keys():
                ngp, vanilla = rows["ngp"], rows["vanilla"]
                gaps = [a["psnr"] - b["psnr"] for a, b in zip(ngp["curve"], vanilla["curve"])]
                ratio = ngp["rays_per_second"] / vanilla["rays_per_second"]
                report.setdefault("baseline", []).append({"scene": label, "psnr_gap_db": gaps, "rays_per_second_ratio": ratio})
                print(f"{'':<26}ngp - vanilla: " + ", ".join(f"{g:+.2f} dB" for g in gaps) + f"; rays/s x{ratio:.1f}")
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
