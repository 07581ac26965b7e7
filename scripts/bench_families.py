"""Every coordinate-network family at one parameter budget, on a fixed set of signals.

Each family is sized to the same number of parameters by its size rule (`nfield.presets.families`:
one knob per family, set so the count is closest to the budget) and trained under its image
preset's protocol (learning rate, schedule and target range: SIREN, for one, learns images in
[-1, 1] at a constant rate), the same steps and seed on every signal:

- images: two bundled photographs (camera, astronaut), band-limited noise at 1/4 and all of the
  Nyquist band, a Sierpinski triangle, a Siemens star and random discs (`scenes.signals`);
- audio: a generated one-second melody over a chirp (`scenes.signals.audio_clip`);
- video: generated discs moving over a drifting background (`scenes.signals.moving_discs_video`).

Reported per run: PSNR (audio: and SNR) at several step counts, SSIM (images, video) at the end,
milliseconds per training step, parameters. A plot of PSNR against steps per signal is written
next to the JSON. Then each paper's central claim is checked against its own baseline in the
same run: FR-INR against the same MLP without the re-parameterisation, CAM against the MLP it
modulates (same width, no modulation), INT against uniform sampling at equal time, IGA against
the same network without gradient adjustment, WIRE / FINER / Gaussian against SIREN, NeuRBF
against the hash grid, K-planes against the dense grid and shifted Gaussian bases against
Fourier features, all at the same budget.

    python scripts/bench_families.py --scale cpu     # 64 px images, 20k parameters, 300 steps (2 cores: < 30 min)
    python scripts/bench_families.py --scale gpu     # 256 px images, 200k parameters, 2000 steps
    python scripts/bench_families.py --scale gpu-short  # camera and audio at GPU sizes, 250 steps
    python scripts/bench_families.py --scale tiny    # smoke test (the numbers mean nothing)
    python scripts/bench_families.py --families siren finer --signals camera star --params 50000
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_report import UncheckpointedTrainer, report_header

from nfield.data.audio import Audio
from nfield.data.images import Image, load_image
from nfield.data.video import Video
from nfield.encodings import GaussianFourierConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig
from nfield.presets import Preset, mapped_field
from nfield.presets.families import NOT_FOR_AUDIO, sized_field
from nfield.presets.image import IMAGE_PRESETS
from nfield.tasks.audio import AudioTask, AudioTaskConfig
from nfield.tasks.image import ImageTask, ImageTaskConfig
from nfield.tasks.teaching import TeachingConfig
from nfield.tasks.video import VideoTask, VideoTaskConfig
from nfield.training.trainer import TrainConfig, resolve_device, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scenes import signals  # noqa: E402


@dataclass(frozen=True)
class Scale:
    image_size: int  # side of every image, pixels
    params: int  # the budget
    steps: tuple[int, ...]  # PSNR checkpoints; the last is the run's length
    audio_seconds: float
    sample_rate: int
    video_frames: int
    video_size: int
    video_batch: int  # pixels per video step
    signals: tuple[str, ...] = ()  # the signals run by default (empty: all)
    families: tuple[str, ...] = ()  # the families run by default (empty: all)


IMAGE_SIGNALS = ("camera", "astronaut", "noise-0.25", "noise-1.0", "sierpinski", "star", "discs")
SIGNALS = (*IMAGE_SIGNALS, "audio", "video")
#: Run only when named (--signals): sums of products of 1-D waves along the image's axes (separable in
#: x and y) and the same turned by 45 degrees (not), the test of factorised features such as K-planes'
EXTRA_SIGNALS = ("waves-0", "waves-45")
SCALES = {
    "cpu": Scale(64, 20_000, (25, 50, 100, 200, 300), 1.0, 8000, 16, 32, 2**13),
    "gpu": Scale(256, 200_000, (50, 100, 250, 500, 1000, 2000), 2.0, 22050, 32, 128, 2**18),
    # gpu_check.sh's short form: the GPU sizes on two signals, 250 steps (with video too it ran past
    # its share on an H200)
    "gpu-short": Scale(256, 200_000, (50, 100, 250), 2.0, 22050, 32, 128, 2**18, ("camera", "audio")),
    # a smoke test (proves the script runs; the numbers mean nothing)
    # (each variant with its baseline, so the claim checks run too)
    "tiny": Scale(
        16,
        3_000,
        (2, 4),
        0.05,
        8000,
        4,
        16,
        256,
        ("camera", "audio"),
        ("relu-pe", "relu-pe+iga", "siren", "siren+int", "cam", "cam-base", "hash"),
    ),
}
#: Variants: (base family, what changes). Each is its paper's claim's subject, run beside its baseline.
VARIANTS = {
    "siren+int": ("siren", "INT: each step on the worst-fitted samples (teaching)"),
    "relu-pe+iga": ("relu-pe", "IGA: gradients adjusted by the empirical NTK"),
    "cam-base": ("cam", "the MLP CAM modulates: same Fourier features and width, no modulation"),
}
#: (claimant, baseline, the paper's claim, compared at equal time rather than equal steps).
CLAIMS = (
    ("relu-pe-fr", "relu-pe", "FR-INR (Shi et al. 2024): Fourier re-parameterised weights train to a higher PSNR", False),
    ("cam", "cam-base", "CAM (Lee et al. 2024): modulation by a coordinate grid improves the MLP it modulates", False),
    ("siren+int", "siren", "INT (Zhang et al. 2024): teaching reaches a higher PSNR in the same time", True),
    ("relu-pe+iga", "relu-pe", "IGA: NTK-based gradient adjustment improves the same network", False),
    ("wire", "siren", "WIRE (Saragadam et al. 2023): Gabor wavelets beat SIREN", False),
    ("finer", "siren", "FINER (Liu et al. 2024): variable-periodic sines beat SIREN", False),
    ("gauss", "siren", "Gaussian activations (Ramasinghe & Lucey 2022) match or beat SIREN", False),
    ("neurbf", "hash", "NeuRBF (Chen et al. 2023): adaptive radial bases beat the hash grid at equal size", False),
    ("planes", "dense", "K-planes (Fridovich-Keil et al. 2023): factorised planes beat a dense grid at equal size", False),
    ("shifted-gaussian", "fourier", "Shifted bases (Zheng et al.): a shifted Gaussian basis matches Fourier features", False),
)


def image_signal(name: str, size: int) -> Image:
    """The named image at `size` x `size` (photographs box-filtered down from 512)."""
    if name in ("camera", "astronaut"):
        return load_image(name, max(1, 512 // size))
    if name.startswith("noise-"):
        array = signals.band_limited_noise(size, float(name.split("-")[1]))
    elif name == "sierpinski":
        array = signals.sierpinski(size)
    elif name == "star":
        array = signals.siemens_star(size)
    elif name == "discs":
        array = signals.random_discs(size)
    elif name.startswith("waves-"):
        array = signals.crossed_waves(size, float(name.split("-")[1]))
    else:
        raise NfieldError(f"unknown signal {name}")
    pixels = torch.from_numpy(np.ascontiguousarray(array if array.ndim == 3 else array[..., None]))
    return Image(pixels, 1.0, name)


def build_task(signal: str, family: str, scale: Scale, device: torch.device, seed: int) -> tuple[Any, int, Preset]:
    """(the task fitting `family` (or a variant) to `signal` at the budget, its parameters, the
    image preset of its family: learning rate, schedule and target range)."""
    base = VARIANTS[family][0] if family in VARIANTS else family
    if signal == "audio":
        data = Audio(
            torch.from_numpy(signals.audio_clip(scale.audio_seconds, scale.sample_rate))[:, None], scale.sample_rate, "audio"
        )
        in_dim, out_dim, kind, size = 1, 1, "audio", data.n_samples
        task_cfg: Any = AudioTaskConfig(batch_size=data.n_samples)
    elif signal == "video":
        frames = signals.moving_discs_video(scale.video_frames, scale.video_size)
        data = Video(torch.from_numpy((frames * 255).round().astype(np.uint8)), 25.0, "video")
        in_dim, out_dim, kind, size = 3, 3, "video", max(frames.shape[:3])
        task_cfg = VideoTaskConfig(batch_size=scale.video_batch, eval_frames=0)
    else:
        data = image_signal(signal, scale.image_size)
        in_dim, out_dim, kind, size = 2, data.channels, "image", scale.image_size
        task_cfg = ImageTaskConfig(batch_size=data.height * data.width)
    field, n_params = sized_field(base, in_dim, out_dim, scale.params, kind, size)
    signal_range = (-1.0, 1.0) if kind == "audio" else (0.0, 1.0)  # full-scale samples; images and frames in [0, 1]
    preset = IMAGE_PRESETS[base]
    field = mapped_field(dataclasses.replace(preset, field=field), None, signal_range)
    if family == "cam-base":  # CAM's own Fourier features and width, without the modulation grids
        cam = field.network
        field = FieldConfig(
            GaussianFourierConfig(n_features=cam.n_features, sigma=cam.sigma),
            MLPConfig(n_neurons=cam.n_neurons, n_hidden_layers=cam.n_hidden_layers, activation=cam.activation),
        )
    if family == "siren+int":
        task_cfg = dataclasses.replace(task_cfg, teaching=TeachingConfig(enabled=True))
    if family == "relu-pe+iga":
        from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig

        # images: 64 patches at every scale (the official 32 px patches on a 256 px image); audio: 64
        # runs of samples; video: patches of an eighth of the frame's side
        side = {"audio": size // 64, "video": scale.video_size // 8}.get(kind, scale.image_size // 8)
        iga = GradientAdjustmentConfig(enabled=True, patch_size=max(2, side))
        task_cfg = dataclasses.replace(task_cfg, gradient_adjustment=iga)
    seed_everything(seed)
    if kind == "audio":
        task = AudioTask(data, field, task_cfg, device=device, seed=seed)
    elif kind == "video":
        task = VideoTask(data, field, task_cfg, device=device, seed=seed)
    else:
        task = ImageTask(data, field, task_cfg, device=device, seed=seed)
    if family == "cam-base":
        from nfield.presets.families import count_parameters

        n_params = count_parameters(task.model)
    return task, n_params, preset


def applies(family: str, signal: str) -> str | None:
    """Why `family` is not run on `signal` (None: it is)."""
    base = VARIANTS[family][0] if family in VARIANTS else family
    if signal == "audio" and base in NOT_FOR_AUDIO:
        return NOT_FOR_AUDIO[base]
    return None


def fit(signal: str, family: str, scale: Scale, device: torch.device, seed: int) -> dict[str, Any]:
    """Train one family on one signal; PSNR (and SNR/SSIM) at each checkpoint with the training time."""
    task, n_params, preset = build_task(signal, family, scale, device, seed)
    lr = preset.train.lr
    cfg = TrainConfig(
        steps=scale.steps[-1],
        lr=lr,
        lr_schedule=preset.train.lr_schedule,
        mixed_precision=False,
        eval_every=0,
        checkpoint_every=0,
        log_every=scale.steps[-1],
        progress=False,
        seed=seed,
    )
    curve = []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = UncheckpointedTrainer(task, cfg, Path(run_dir), device=device)
        for stop in scale.steps:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # the trainer's log
                trainer.fit(stop_after=stop)
            metrics = task.evaluate()
            point = {"step": stop, "seconds": trainer.train_seconds, "psnr": float(metrics["psnr"])}
            for key in ("ssim", "snr"):
                if key in metrics:
                    point[key] = float(metrics[key])
            curve.append(point)
    return {
        "signal": signal,
        "family": family,
        "params": n_params,
        "lr": lr,
        "lr_schedule": preset.train.lr_schedule,
        "target_range": preset.target_range,
        "ms_per_step": 1000 * trainer.train_seconds / trainer.step,
        "curve": curve,
    }


def psnr_at_time(curve: list[dict[str, Any]], seconds: float) -> float:
    """PSNR of a run after `seconds` of training, interpolated along its curve (held past its end)."""
    times = [0.0] + [p["seconds"] for p in curve]
    values = [curve[0]["psnr"]] + [p["psnr"] for p in curve]
    return float(np.interp(seconds, times, values))


def check_claims(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each claim's PSNR difference (claimant - baseline) per signal, and on how many signals it holds."""
    by_key = {(r["signal"], r["family"]): r for r in results}
    claims = []
    for claimant, baseline, text, equal_time in CLAIMS:
        rows = []
        for signal in dict.fromkeys(r["signal"] for r in results):
            a, b = by_key.get((signal, claimant)), by_key.get((signal, baseline))
            if a is None or b is None:
                continue
            mine = a["curve"][-1]["psnr"]
            theirs = psnr_at_time(b["curve"], a["curve"][-1]["seconds"]) if equal_time else b["curve"][-1]["psnr"]
            rows.append({"signal": signal, "claimant_psnr": mine, "baseline_psnr": theirs, "difference": mine - theirs})
        if rows:
            wins = sum(r["difference"] > 0 for r in rows)
            mean = float(np.mean([r["difference"] for r in rows]))
            claims.append(
                {
                    "claim": text,
                    "claimant": claimant,
                    "baseline": baseline,
                    "equal_time": equal_time,
                    "signals": rows,
                    "holds_on": wins,
                    "of": len(rows),
                    "mean_difference_db": mean,
                }
            )
    return claims


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """PSNR against steps, one panel per signal, one line per family."""
    import matplotlib  # a dependency of nfield (its training curves)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signals_here = list(dict.fromkeys(r["signal"] for r in results))
    columns = min(3, len(signals_here))
    rows = -(-len(signals_here) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4.2 * rows), squeeze=False)
    families = list(dict.fromkeys(r["family"] for r in results))
    colours = plt.get_cmap("tab20", max(len(families), 1))
    for ax, signal in zip(axes.flat, signals_here):
        for r in results:
            if r["signal"] == signal:
                k = families.index(r["family"])
                style = "--" if k >= 20 or r["family"] in VARIANTS else "-"
                ax.plot(
                    [p["step"] for p in r["curve"]],
                    [p["psnr"] for p in r["curve"]],
                    style,
                    color=colours(k % 20),
                    label=r["family"],
                )
        ax.set_title(signal)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(signals_here) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def markdown(report: dict[str, Any]) -> str:
    """BENCHMARKS.md's tables: final PSNR per family and signal, step time and size, the claims."""
    results = report["results"]
    signals_here = list(dict.fromkeys(r["signal"] for r in results))
    families = list(dict.fromkeys(r["family"] for r in results))
    by_key = {(r["signal"], r["family"]): r for r in results}
    last = report["steps"][-1]
    lines = [
        f"PSNR (dB) after {last} steps (audio: peak 1; video: mean over frames); SSIM and SNR are in the JSON.",
        "",
    ]
    lines.append("| family | " + " | ".join(signals_here) + " | ms/step (camera) | params (camera) |")
    lines.append("|---|" + "---:|" * (len(signals_here) + 2))
    for family in families:
        cells = []
        for signal in signals_here:
            r = by_key.get((signal, family))
            cells.append("-" if r is None else f"{r['curve'][-1]['psnr']:.2f}")
        ref = next((r for r in results if r["family"] == family and r["signal"] in IMAGE_SIGNALS), None)
        timing = "-" if ref is None else f"{ref['ms_per_step']:.1f}"
        size = "-" if ref is None else f"{ref['params']:,}"
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {timing} | {size} |")
    lines += ["", "| claim | compared | holds on | mean difference |", "|---|---|---:|---:|"]
    for c in report["claims"]:
        when = "equal time" if c["equal_time"] else "equal steps"
        compared = f"{c['claimant']} vs {c['baseline']}, {when}"
        lines.append(f"| {c['claim']} | {compared} | {c['holds_on']}/{c['of']} | {c['mean_difference_db']:+.2f} dB |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="gpu")
    parser.add_argument("--params", type=int, default=None, help="parameter budget (default: the scale's)")
    parser.add_argument(
        "--families", nargs="+", default=None, choices=[*IMAGE_PRESETS, *VARIANTS], help="default: the scale's (all but at tiny)"
    )
    parser.add_argument(
        "--signals", nargs="+", default=None, choices=[*SIGNALS, *EXTRA_SIGNALS], help="default: the scale's (all but waves-*)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON report (default bench_families_<scale>.json); the plot goes next to it"
    )
    parser.add_argument("--markdown-from", type=Path, default=None, help="print the Markdown tables of an earlier JSON report")
    args = parser.parse_args()
    if args.markdown_from is not None:
        print(markdown(json.loads(args.markdown_from.read_text())), end="")
        return 0
    scale = SCALES[args.scale]
    if args.params is not None:
        scale = dataclasses.replace(scale, params=args.params)
    out = args.out or Path(f"bench_families_{args.scale}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    report = report_header(
        device, scale=args.scale, budget=scale.params, steps=list(scale.steps), seed=args.seed, results=[], skipped=[]
    )
    print(f"device: {report['device']}  budget: {scale.params:,} parameters  steps: {scale.steps[-1]}")
    header = (
        f"{'signal':<12}{'family':<18}"
        + "".join(f"{f'@{s}':>8}" for s in scale.steps)
        + f"{'SSIM/SNR':>10}{'ms/step':>9}{'params':>9}"
    )
    print(f"{header}\n{'-' * len(header)}")
    start = time.perf_counter()
    for signal in args.signals or scale.signals or SIGNALS:
        for family in args.families or scale.families or [*IMAGE_PRESETS, *VARIANTS]:
            reason = applies(family, signal)
            if reason:
                report["skipped"].append({"signal": signal, "family": family, "why": reason})
                continue
            row = fit(signal, family, scale, device, args.seed)
            report["results"].append(row)
            last = row["curve"][-1]
            extra = last.get("ssim", last.get("snr", float("nan")))
            cells = "".join(f"{p['psnr']:>8.2f}" for p in row["curve"])
            print(f"{signal:<12}{family:<18}{cells}{extra:>10.3f}{row['ms_per_step']:>9.2f}{row['params']:>9,}", flush=True)
            out.write_text(json.dumps(report, indent=2) + "\n")  # so far (a stopped run keeps its results)
    report["claims"] = check_claims(report["results"])
    report["total_seconds"] = time.perf_counter() - start
    print("\nclaims (PSNR difference at the end of training, claimant - baseline, dB):")
    for c in report["claims"]:
        when = "equal time" if c["equal_time"] else "equal steps"
        holds = f"holds on {c['holds_on']}/{c['of']} signals, mean {c['mean_difference_db']:+.2f} dB"
        print(f"  {c['claimant']} vs {c['baseline']} ({when}): {holds}")
        print(f"    {c['claim']}")
    skipped = sorted({(s["family"], s["signal"], s["why"]) for s in report["skipped"]})
    for family, signal, why in skipped:
        print(f"  not run: {family} on {signal}: {why}")
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report["results"], out.with_suffix(".png"))
    print("\n" + markdown(report), end="")
    print(f"wrote {out} and {out.with_suffix('.png')} in {report['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
