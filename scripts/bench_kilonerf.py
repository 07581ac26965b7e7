"""KiloNeRF benchmark: an ngp teacher against its distilled, fine-tuned and directly trained KiloNeRFs.

On a generated Blender-format object scene (``scenes.synthetic``, exact ground truth) or any
Blender-format scene given with ``--scene``, through the command line a user would run:
``train-nerf`` (the ngp teacher), ``distill`` (distillation, then fine-tuning) and ``train-nerf
--model kilonerf`` (no teacher). Reports PSNR/SSIM on every held-out view for the teacher, the
distilled student (before fine-tuning, on the periodic evaluation's views), the fine-tuned student
and the directly trained one; the frames per second rendering a held-out view at the scene's
resolution for the teacher and the KiloNeRF in the same run (float32 and half precision; the ratio
is the headline); distillation and fine-tuning times; model sizes; and the KiloNeRF evaluation
strategies (tiled, padded, segment, gather: render frames/s and training points/s), against
``tiled`` in the same run.

    python scripts/bench_kilonerf.py                  # GPU scale: 800x800 scene, full-size models
    python scripts/bench_kilonerf.py --scale cpu      # CPU scale: 48x48 scene, small models, few steps
    python scripts/bench_kilonerf.py --scale gpu-short  # 400x400 scene, 20 views, full-size models, fewer steps (gpu_check.sh)
    python scripts/bench_kilonerf.py --scale tiny     # smoke test: 16x16 scene, tiny models, a few steps
    python scripts/bench_kilonerf.py --scene path/to/lego
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_report import device_name, report_header, synchronize

from nfield.cli import main as nfield_main
from nfield.data.scenes import load_scene
from nfield.fields.kilonerf import STRATEGIES, cell_corners, occupied_cells
from nfield.render.cameras import image_rays
from nfield.render.radiance import half_precision, render_image
from nfield.run_directory import RunDirectory
from nfield.runs.single import load_run
from nfield.runs.views import evaluate
from nfield.tasks.distill import teacher_occupancy
from nfield.tasks.nerf import BACKGROUNDS
from nfield.training.trainer import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's scenes/ generators
from scenes.synthetic import generate  # noqa: E402

SCALES = {
    "gpu": dict(
        size=800,
        n_train=100,
        n_test=20,
        teacher=("--steps", 5000),
        student=(),
        distill=("--distill-steps", 5000, "--finetune-steps", 3000),
        direct=("--steps", 8000),
        points=2**20,
    ),
    "cpu": dict(
        size=48,
        n_train=40,
        n_test=4,
        teacher=(
            ("--steps", 400, "--n-levels", 8, "--log2-hashmap-size", 14, "--grid-resolution", 32)
            + ("--grid-warmup", 32, "--steps-per-ray", 128, "--batch-rays", 1024)
        ),
        student=("--longest-axis-cells", 8),
        distill=("--distill-steps", 400, "--finetune-steps", 400, "--batch-points", 4096),
        direct=(
            ("--steps", 800, "--grid-resolution", 32, "--grid-warmup", 32, "--steps-per-ray", 128, "--batch-rays", 1024)
            + ("--eval-views", 0)
        ),
        points=2**15,
    ),
    # gpu_check.sh's short form (its share is about 55 s; the 800x800 form ran past 48 s on an
    # H200 still training the teacher): full-size models on a 400x400 scene, fewer steps
    "gpu-short": dict(
        size=400,
        n_train=20,
        n_test=2,
        teacher=("--steps", 600),
        student=(),
        distill=("--distill-steps", 600, "--finetune-steps", 300),
        direct=("--steps", 900),
        points=2**20,
    ),
    # a smoke test: 16x16 scene, tiny models, a few steps (proves the script runs; the numbers mean nothing)
    "tiny": dict(
        size=16,
        n_train=8,
        n_test=2,
        teacher=(
            ("--steps", 16, "--n-levels", 4, "--log2-hashmap-size", 12, "--grid-resolution", 16)
            + ("--grid-warmup", 8, "--steps-per-ray", 64, "--batch-rays", 256)
        ),
        student=("--longest-axis-cells", 4),
        distill=("--distill-steps", 10, "--finetune-steps", 5, "--batch-points", 1024),
        direct=(
            ("--steps", 10, "--grid-resolution", 16, "--grid-warmup", 8, "--steps-per-ray", 64, "--batch-rays", 256)
            + ("--eval-views", 0)
        ),
        points=2**10,
    ),
}


def nfield(*argv) -> dict:
    """Run an nfield command; its last stdout line (a JSON object) as a dict."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = nfield_main([str(a) for a in argv])
    if status != 0:
        raise SystemExit(f"nfield {' '.join(map(str, argv))} failed with status {status}")
    return json.loads(out.getvalue().strip().splitlines()[-1])


def render_fps(
    run_dir: Path,
    scene,
    device: torch.device,
    half: bool,
    strategy: str | None = None,
    refresh_grid: bool = False,
    repeats: int = 3,
):
    """Frames per second rendering the first held-out view at full size (after a warm-up render);
    with `refresh_grid`, on the occupancy grid a distilled student would get (`teacher_occupancy`)."""
    task = load_run(run_dir, device).task
    model, task_cfg = task.model, task.cfg
    if strategy is not None:
        model["field"].strategy = strategy
    if refresh_grid:
        fresh = teacher_occupancy(model, task_cfg.occupancy, model["grid"].step_size)
        model["grid"].occupied.copy_(fresh.occupied)
    origins, directions = image_rays(scene.test.cameras.to(device), 0)
    background = torch.tensor(BACKGROUNDS["white"], device=device)
    settings = task_cfg.render_settings()
    with half_precision(device, half):
        render_image(model, settings, scene.near, origins, directions, background)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            render_image(model, settings, scene.near, origins, directions, background)
        synchronize(device)
    return repeats / (time.perf_counter() - start)


def strategy_points_per_second(run_dir: Path, device: torch.device, n_points: int, strategy: str, repeats: int = 3) -> float:
    """Training throughput of one strategy: points/s through forward and backward, points uniform
    in the occupied cells (the distillation's uniform half)."""
    model = load_run(run_dir, device).task.model
    field = model["field"].train()
    field.strategy = strategy
    occupied = torch.nonzero(occupied_cells(field, model["grid"])).squeeze(1)
    corners, size = cell_corners(field)
    generator = torch.Generator(device=device).manual_seed(0)
    cells = occupied[torch.randint(len(occupied), (n_points,), device=device, generator=generator)]
    x = corners[cells] + torch.rand(n_points, 3, device=device, generator=generator) * size
    d = torch.nn.functional.normalize(torch.randn(n_points, 3, device=device, generator=generator), dim=-1)

    def step():
        rgb, sigma = field(x, d)
        (rgb.sum() + sigma.sum()).backward()

    step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    return n_points * repeats / (time.perf_counter() - start)


def evaluate_run(run_dir: Path, device: torch.device, half: bool = False) -> dict:
    """PSNR/SSIM of a run on every held-out view of its scene (as ``nfield eval``)."""
    return evaluate(load_run(run_dir, device, data=True), half=half)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--scene", type=Path, help="a Blender-format scene (default: a generated 'primitives' scene)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_kilonerf.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    scale = SCALES[args.scale]
    report = report_header(device, scale={"name": args.scale, **scale}, seed=args.seed)
    print(f"device: {device_name(device)}")
    common = ("--device", device, "--seed", args.seed, "--no-progress")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if args.scene is None:
            size, n_train, n_test = scale["size"], scale["n_train"], scale["n_test"]
            scene_dir = generate("primitives", work / "primitives", size=size, n_train=n_train, n_val=1, n_test=n_test)
            label = f"primitives {size}x{size}"
        else:
            scene_dir, label = args.scene, args.scene.name
        scene = load_scene(scene_dir)
        height, width = scene.test.images.shape[1:3]
        report["scene"] = {"label": label, "width": int(width), "height": int(height), "test_views": len(scene.test.images)}
        teacher_dir, kilo_dir, direct_dir = work / "teacher", work / "kilo", work / "direct"

        teacher = nfield("train-nerf", scene_dir, "--model", "ngp", *scale["teacher"], *common, "--out", teacher_dir)
        distilled = nfield("distill", teacher_dir, *scale["student"], *scale["distill"], *common, "--out", kilo_dir)
        direct = nfield(
            "train-nerf", scene_dir, "--model", "kilonerf", *scale["student"], *scale["direct"], *common, "--out", direct_dir
        )
        rows = {
            "teacher (ngp)": {**evaluate_run(teacher_dir, device), "train_seconds": teacher["train_seconds"]},
            "distilled": {**distilled["distilled"], "seconds": distilled["distill_seconds"]},
            "fine-tuned": {**evaluate_run(kilo_dir, device), "seconds": distilled["finetune_seconds"]},
            "fine-tuned, half": evaluate_run(kilo_dir, device, half=True),
            "direct (no teacher)": {**evaluate_run(direct_dir, device), "train_seconds": direct["train_seconds"]},
        }
        fps = {
            "teacher": render_fps(teacher_dir, scene, device, half=False),
            "teacher_half": render_fps(teacher_dir, scene, device, half=True),
            "teacher_refreshed_grid": render_fps(teacher_dir, scene, device, half=False, refresh_grid=True),
            "kilonerf": render_fps(kilo_dir, scene, device, half=False),
            "kilonerf_half": render_fps(kilo_dir, scene, device, half=True),
        }
        strategies = {
            name: {
                "render_fps": render_fps(kilo_dir, scene, device, half=False, strategy=name),
                "train_points_per_second": strategy_points_per_second(kilo_dir, device, scale["points"], name),
            }
            for name in STRATEGIES
        }
        sizes = {
            "teacher_weights_mb": RunDirectory(teacher_dir).latest_checkpoint().model_file.stat().st_size / 2**20,
            "kilonerf_export_mb": (kilo_dir / "kilonerf.safetensors").stat().st_size / 2**20,
        }
    report.update(
        {
            "quality": rows,
            "fps": fps,
            "fps_ratio": fps["kilonerf"] / fps["teacher"],
            "fps_ratio_half": fps["kilonerf_half"] / fps["teacher"],
            "fps_ratio_same_grid": fps["kilonerf"] / fps["teacher_refreshed_grid"],
            "psnr_gap_db": rows["fine-tuned"]["psnr"] - rows["teacher (ngp)"]["psnr"],
            "strategies": strategies,
            "sizes": sizes,
            "kilonerf": {k: distilled[k] for k in ("cells", "occupied_cells", "parameters")},
        }
    )

    print(f"scene: {label}, {len(scene.test.images)} held-out views of {width}x{height}")
    header = f"{'model':<22}{'PSNR':>8}{'SSIM':>8}{'time s':>9}"
    print(f"{header}\n{'-' * len(header)}")
    for name, row in rows.items():
        seconds = row.get("seconds", row.get("train_seconds"))
        shown = f"{seconds:>9.1f}" if seconds is not None else f"{'':>9}"
        print(f"{name:<22}{row['psnr']:>8.2f}{row['ssim']:>8.3f}{shown}")
    print(f"fine-tuned - teacher: {report['psnr_gap_db']:+.2f} dB")
    print(
        f"render {width}x{height}: teacher {fps['teacher']:.2f} fps ({fps['teacher_half']:.2f} half), KiloNeRF "
        f"{fps['kilonerf']:.2f} fps ({fps['kilonerf_half']:.2f} half): x{report['fps_ratio']:.1f} "
        f"(x{report['fps_ratio_half']:.1f} half vs the float32 teacher)"
    )
    print(
        f"teacher on the student's (refreshed) occupancy grid: {fps['teacher_refreshed_grid']:.2f} fps; "
        f"KiloNeRF x{report['fps_ratio_same_grid']:.1f} on the same grid"
    )
    header = f"{'strategy':<10}{'render fps':>12}{'vs tiled':>10}{'train pts/s':>14}{'vs tiled':>10}"
    print(f"{header}\n{'-' * len(header)}")
    base = strategies["tiled"]
    for name, row in strategies.items():
        print(
            f"{name:<10}{row['render_fps']:>12.2f}{row['render_fps'] / base['render_fps']:>10.2f}"
            f"{row['train_points_per_second']:>14,.0f}{row['train_points_per_second'] / base['train_points_per_second']:>10.2f}"
        )
    k = report["kilonerf"]
    print(
        f"KiloNeRF: {k['cells']:,} cells, {k['occupied_cells']:,} occupied, {k['parameters']:,} parameters, "
        f"{sizes['kilonerf_export_mb']:.2f} MB; teacher weights {sizes['teacher_weights_mb']:.2f} MB"
    )
    args.out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
