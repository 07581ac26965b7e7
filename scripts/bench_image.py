"""Image-fitting benchmark: every model family on the same images, seed and steps.

Prints a table of PSNR at fixed step counts, milliseconds per step and parameter count, and
writes the same as JSON. A second table measures the trainer's overhead: milliseconds per step of
`nfield`'s Trainer against a bare hand-written PyTorch loop of the same SIREN, in the same run.

    python scripts/bench_image.py                      # GPU scale: camera 256 grey, astronaut 512 RGB
    python scripts/bench_image.py --scale cpu          # CPU scale: camera and astronaut at 128x128, 500 steps
    python scripts/bench_image.py --scale gpu-short    # GPU images, 250 steps (about 30 s on an H100)
    python scripts/bench_image.py --scale tiny         # smoke test: 32x32 images, 4 steps (the numbers mean nothing)
    python scripts/bench_image.py --models siren hash --out bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_report import device_name, report_header, synchronize, write_report

from nfield.data.images import load_image
from nfield.presets.image import IMAGE_PRESETS, resolve_image_preset
from nfield.tasks.image import ImageTask, ImageTaskConfig
from nfield.training.trainer import TrainConfig, Trainer, resolve_device, seed_everything

SCALES = {
    # name: (images as (bundled name, downscale), PSNR checkpoints, overhead-benchmark steps)
    "gpu": ((("camera", 2), ("astronaut", 1)), (100, 500, 2000), 500),
    "cpu": ((("camera", 4), ("astronaut", 4)), (100, 250, 500), 100),
    # the GPU images in about 30 s on an H100 (the acceptance run's short form)
    "gpu-short": ((("camera", 2), ("astronaut", 1)), (50, 100, 250), 200),
    # a smoke test: 32x32 images, a few steps (proves the script runs; the numbers mean nothing)
    "tiny": ((("camera", 16), ("astronaut", 16)), (2, 4), 2),
}


def fit_model(image, model: str, checkpoints: tuple[int, ...], device: torch.device, seed: int) -> dict:
    preset = resolve_image_preset(model, {}, image.height, image.width)
    cfg = TrainConfig(
        steps=checkpoints[-1],
        lr=preset.train.lr,
        mixed_precision=preset.train.mixed_precision,
        eval_every=0,
        checkpoint_every=0,
        log_every=100,
        progress=False,
        seed=seed,
    )
    seed_everything(seed)
    task = ImageTask(image, preset.field, ImageTaskConfig(), device=device, seed=seed)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(task, cfg, Path(run_dir), device=device)
        psnr_at = {}
        for stop in checkpoints:
            trainer.fit(stop_after=stop)
            psnr_at[stop] = task.evaluate()["psnr"]
    return {
        "model": model,
        "params": sum(p.numel() for p in task.model.parameters()),
        "ms_per_step": 1000 * trainer.train_seconds / trainer.step,
        "psnr": psnr_at,
        "ssim": task.evaluate()["ssim"],
    }


def trainer_overhead(image, steps: int, device: torch.device, repeats: int = 3) -> dict:
    """ms/step of the Trainer vs a bare loop (same SIREN, data, optimiser), alternated, median of runs."""
    preset = resolve_image_preset("siren", {}, image.height, image.width)

    def bare() -> float:
        seed_everything(0)
        task = ImageTask(image, preset.field, ImageTaskConfig(), device=device)
        coords, targets = task.sample(0)
        model = task.model
        optimizer = torch.optim.Adam(model.parameters(), lr=preset.train.lr, betas=(0.9, 0.99), eps=1e-15)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            loss = ((model(coords) - targets) ** 2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        return 1000 * (time.perf_counter() - start) / steps

    def nfield() -> float:
        seed_everything(0)
        task = ImageTask(image, preset.field, ImageTaskConfig(), device=device)
        lr = preset.train.lr
        cfg = TrainConfig(steps=steps + 1, lr=lr, mixed_precision=False, eval_every=0, checkpoint_every=0, progress=False)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(task, cfg, Path(run_dir), device=device)
            synchronize(device)
            start = time.perf_counter()
            trainer.fit(stop_after=steps)  # includes logging, NaN checks and the checkpoint at the pause
            synchronize(device)
        return 1000 * (time.perf_counter() - start) / steps

    bare(), nfield()  # warm-up: kernels, allocator, imports
    bare_ms, nfield_ms = [], []
    for _ in range(repeats):
        bare_ms.append(bare())
        nfield_ms.append(nfield())
    b, n = statistics.median(bare_ms), statistics.median(nfield_ms)
    return {"steps": steps, "bare_ms_per_step": b, "nfield_ms_per_step": n, "overhead_percent": 100 * (n / b - 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--models", nargs="+", default=list(IMAGE_PRESETS), choices=list(IMAGE_PRESETS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench_image.json"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    images, checkpoints, overhead_steps = SCALES[args.scale]
    device_label = device_name(device)
    report = report_header(device, scale=args.scale, seed=args.seed, results=[])
    header = (
        f"{'image':<20}{'model':<19}"
        + "".join(f"{f'PSNR@{s}':>10}" for s in checkpoints)
        + f"{'SSIM':>8}{'ms/step':>10}{'params':>12}"
    )
    print(f"device: {device_label}\n{header}\n{'-' * len(header)}")
    for name, downscale in images:
        image = load_image(name, downscale)
        label = f"{name} {image.width}x{image.height}"
        for model in args.models:
            row = fit_model(image, model, checkpoints, device, args.seed)
            row["image"] = label
            report["results"].append(row)
            write_report(args.out, report)
            cells = "".join(f"{row['psnr'][s]:>10.2f}" for s in checkpoints)
            print(f"{label:<20}{model:<19}{cells}{row['ssim']:>8.3f}{row['ms_per_step']:>10.2f}{row['params']:>12,}", flush=True)
    camera = load_image(*images[0])
    report["trainer_overhead"] = trainer_overhead(camera, overhead_steps, device)
    o = report["trainer_overhead"]
    print(
        f"\ntrainer overhead (siren, {images[0][0]} {camera.width}x{camera.height}, {o['steps']} steps, median of 3): "
        f"bare loop {o['bare_ms_per_step']:.2f} ms/step, nfield {o['nfield_ms_per_step']:.2f} ms/step, "
        f"overhead {o['overhead_percent']:+.1f} %"
    )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
