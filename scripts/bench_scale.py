"""Past one process: many images fitted as one stacked model against one after another, and one
image trained data-parallel on 1 against 2 processes.

Many signals: N crops of the bundled photographs (each its own image) are fitted twice through
`nfield.runs.collection.fit_collection`, which is what ``nfield fit-image FOLDER`` runs: with
``--signals-per-batch 1`` (N single runs, one after another, in one process: the baseline, without
the start-up a process per file would add) and with all N stacked. Reported: signals per second
end to end (setup, training, evaluation, the files of every run) and in training alone, their ratio
(the headline), and the mean PSNR of both (the same fits, so the same to float rounding).

Data-parallel: ``fit-image`` on one larger image with the same whole batch per step, launched by
torchrun on 1 and on 2 processes (gloo on the CPU with the cores split between the processes,
NCCL with a GPU each; skipped with fewer than 2 GPUs). Reported: milliseconds per step of each,
and the speed-up.

    python scripts/bench_scale.py --scale cpu        # 16 crops of 32 px, 150 steps; DP on 256 px (2 cores: ~5 min)
    python scripts/bench_scale.py --scale gpu        # 64 crops of 128 px, 300 steps; DP on 1024 px (2 GPUs)
    python scripts/bench_scale.py --scale gpu-short  # 16 crops of 64 px, 100 steps (gpu_check.sh)
    python scripts/bench_scale.py --scale tiny       # smoke test (the numbers mean nothing)
    python scripts/bench_scale.py --models siren hash --signals 8 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from bench_report import report_header, write_report

from nfield.data.images import BUNDLED_IMAGES, load_image
from nfield.runs.collection import CollectionRequest, fit_collection, read_index
from nfield.runs.single import RunRequest
from nfield.training.trainer import resolve_device

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Scale:
    signals: int  # images fitted
    size: int  # side of each crop, pixels
    steps: int  # training steps of every fit
    dp_size: int  # side of the data-parallel run's image (0: no data-parallel comparison)
    dp_batch: int  # pixels per step of the data-parallel run, over all processes
    dp_steps: int


SCALES = {
    "cpu": Scale(16, 32, 150, 256, 2**14, 60),
    "gpu": Scale(64, 128, 300, 1024, 2**18, 300),
    "gpu-short": Scale(16, 64, 100, 512, 2**16, 100),
    "tiny": Scale(2, 8, 2, 16, 64, 2),  # proves the script runs; the numbers mean nothing
}


def write_crops(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    """n square crops of `size` px cut at random places from the bundled photographs (at 512 px, or
    box-filtered to the size when it is over 256), as PNG files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    downscale = 1 if size <= 256 else max(1, 512 // size)
    photos = [load_image(name, downscale).as_float().numpy() for name in BUNDLED_IMAGES]
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        y, x = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        crop = photo[y : y + size, x : x + size]
        crop = np.repeat(crop, 3, axis=2) if crop.shape[2] == 1 else crop[..., :3]  # one size, one stacked group
        paths.append(folder / f"crop{i:03d}.png")
        iio.imwrite(paths[-1], (np.clip(crop, 0, 1) * 255).round().astype(np.uint8))
    return paths


def fit_many(folder: Path, out: Path, model: str, steps: int, per_batch: int, device: str) -> dict:
    """Fit every image of `folder` (`signals_per_batch` = per_batch); wall and training seconds."""
    settings = {"steps": steps, "progress": False, "eval_every": 0}
    request = CollectionRequest(RunRequest("image", str(folder), model, out, device=device, train=settings), per_batch)
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # each fit's lines; the table says what matters
        summary = fit_collection(request)
    wall = time.perf_counter() - started
    entries = [e for e in read_index(out) if e.get("status") == "ok"]
    # a stacked batch's entries share its training time; single runs each have their own
    batches = {
        (e["signals_in_batch"], e["train_seconds"]) if e["signals_in_batch"] > 1 else (id(e), e["train_seconds"]) for e in entries
    }
    return {
        "wall_seconds": wall,
        "train_seconds": sum(t for _, t in batches),
        "ok": summary["ok"],
        "mean_psnr": summary.get("mean_psnr"),
    }


def many_signals(
    scale: Scale, models: list[str], n: int, repeats: int, device: str, seed: int, report: dict, out: Path | None
) -> None:
    """Every model on n crops, one by one and stacked, `repeats` times alternated (medians reported)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "crops"
        write_crops(folder, n, scale.size, seed)
        for model in models:
            row = {"model": model, "signals": n, "size": scale.size, "steps": scale.steps, "repeats": repeats}
            runs: dict[str, list[dict]] = {"sequential": [], "stacked": []}
            for repeat in range(repeats):  # alternated, so a drift of the machine's speed hits both alike
                for name, per_batch in (("sequential", 1), ("stacked", n)):
                    where = Path(tmp) / f"{model}-{name}-{repeat}"
                    runs[name].append(fit_many(folder, where, model, scale.steps, per_batch, device))
            for name, measured in runs.items():
                row[name] = {
                    **measured[0],
                    **{key: statistics.median(r[key] for r in measured) for key in ("wall_seconds", "train_seconds")},
                }
            for key in ("wall_seconds", "train_seconds"):
                row[f"speedup_{key.split('_')[0]}"] = row["sequential"][key] / row["stacked"][key]
            report["many_signals"].append(row)
            write_report(out, report)
            print(
                f"{model:>8} x{n:<4} {row['sequential']['wall_seconds']:8.1f} s {row['stacked']['wall_seconds']:8.1f} s"
                f" {n / row['sequential']['wall_seconds']:9.2f} {n / row['stacked']['wall_seconds']:9.2f}"
                f" {row['speedup_wall']:6.2f}x {row['speedup_train']:6.2f}x"
                f" {row['sequential']['mean_psnr']:7.2f} {row['stacked']['mean_psnr']:7.2f}",
                flush=True,
            )


def data_parallel(scale: Scale, model: str, device: torch.device, report: dict, out: Path | None) -> None:
    """ms/step of fit-image with the same whole batch on 1 and on 2 torchrun processes."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        report["data_parallel"] = {"skipped": f"needs 2 GPUs, this machine has {torch.cuda.device_count()}"}
        write_report(out, report)
        print(f"data-parallel: skipped ({report['data_parallel']['skipped']})")
        return
    cores = os.cpu_count() or 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (image,) = write_crops(Path(tmp) / "image", 1, scale.dp_size, 1)
        for ranks in (1, 2):
            flags = ["--model", model, "--steps", str(scale.dp_steps), "--batch-size", str(scale.dp_batch // ranks)]
            flags += ["--eval-every", "0", "--checkpoint-every", "0", "--no-progress", "--device", device.type]
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
            command += ["-m", "nfield.cli", "fit-image", str(image), "--out", str(Path(tmp) / f"r{ranks}"), *flags]
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // ranks)), "PYTHONPATH": str(ROOT)}
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:  # torchrun's report ends in a banner: show the failing rank's exit code and error
                lines = done.stderr.strip().splitlines()
                cause = [line.strip() for line in lines if any(k in line for k in ("exitcode", "Error", "error:", "Signal"))]
                raise SystemExit(f"bench_scale: the {ranks}-process run failed: {' | '.join(cause[-4:] or lines[-1:])}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(
                {"processes": ranks, "ms_per_step": 1000 * result["train_seconds"] / result["step"], "psnr": result["psnr"]}
            )
    report["data_parallel"] = {
        "model": model,
        "size": scale.dp_size,
        "batch": scale.dp_batch,
        "steps": scale.dp_steps,
        "runs": rows,
    }
    report["data_parallel"]["speedup"] = rows[0]["ms_per_step"] / rows[1]["ms_per_step"]
    write_report(out, report)
    for row in rows:
        print(f"data-parallel {model} {scale.dp_size} px, {scale.dp_batch:,} px/step: {row['processes']} process(es) "
              f"{row['ms_per_step']:.1f} ms/step, PSNR {row['psnr']:.2f}")  # fmt: skip
    print(f"data-parallel speed-up 2 vs 1 process: {report['data_parallel']['speedup']:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--models", nargs="+", default=["siren", "relu-pe", "hash"])
    parser.add_argument("--signals", type=int, default=None, help="images fitted (default: the scale's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="alternated runs of each way; medians are reported")
    parser.add_argument("--no-data-parallel", action="store_true", help="skip the 1 vs 2 process comparison")
    parser.add_argument("--out", type=Path, default=Path("bench_scale.json"))
    args = parser.parse_args()
    scale = SCALES[args.scale]
    device = resolve_device(args.device)
    n = args.signals or scale.signals
    report = report_header(device, scale={"name": args.scale, **asdict(scale)}, many_signals=[])
    print(f"{n} images of {scale.size} px, {scale.steps} steps each, on {report['device']}")
    columns = ("model", "N", "one by one", "stacked", "signals/s", "stacked/s", "wall", "train", "PSNR", "(stk)")
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, (8, 5, 10, 10, 9, 9, 7, 7, 7, 7))))
    many_signals(scale, args.models, n, args.repeats, args.device, args.seed, report, args.out)
    if not args.no_data_parallel and scale.dp_size:
        data_parallel(scale, args.models[0], device, report, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
