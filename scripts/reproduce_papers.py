"""Every fit-image family under its paper's own image protocol, beside the number the paper reports.

Each row is one `nfield fit-image` command: the paper's signal (or the bundled stand-in below), its
target range, learning rate and schedule, network shape, batch and pixels held out, at a size and
length the device affords (``--scale cpu``: a quarter of the paper's side and 300 steps, minutes on
two cores; ``--scale gpu``: the paper's side and steps). Where a paper's claim is a gain over a
baseline, the baseline runs under the same protocol and the table puts our gain beside the
paper's, the figure a smaller run can still check.

Stand-ins: the papers' images (DIV2K, Kodak, the Fourier-features "natural" set) are not bundled,
so the colour photograph `astronaut` (512 x 512) stands for them and `camera` is the cameraman the
SIREN and SPDER papers fit. Paper numbers are quoted from the source named in the row (a table, a
figure or the authors' project page); "none" means the paper reports no image number we could read,
and the row then records ours only.

    python scripts/reproduce_papers.py --scale cpu   # ~30 runs at 128-256 px, 300 steps (2 cores: ~40 min)
    python scripts/reproduce_papers.py --scale gpu   # the papers' sizes and steps
    python scripts/reproduce_papers.py --scale tiny  # a smoke test (32-64 px, 10 steps; the numbers mean nothing)
    python scripts/reproduce_papers.py --rows siren finer-paper --scale cpu
    python scripts/reproduce_papers.py --markdown-from results/reproduce_papers_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from bench_report import report_header, write_report

from nfield.training.trainer import resolve_device


@dataclass(frozen=True)
class Row:
    key: str
    family: str  # a fit-image model, or INT / IGA
    paper: str  # the source of the setting and the number
    setting: str  # the paper's protocol, in words
    paper_number: str  # what the paper reports for this row ("none": nothing we could read)
    image: str
    flags: tuple[str, ...]
    cpu: tuple[int, int]  # (downscale of the 512 px image, steps)
    gpu: tuple[int, int]  # the paper's (downscale, steps)
    metric: str = "psnr"  # psnr (the whole image) or psnr_held_out (the pixels not trained on)
    baseline: str | None = None  # the row this one's gain is measured against
    paper_gain: str | None = None  # the paper's gain over that baseline
    per_side: tuple[tuple[str, Callable[[int], str]], ...] = ()  # (flag, its value for the image's side in pixels)


FF = "Fourier features (Tancik et al. 2020), Table 1, natural images"
FF_SETTING = "512 px, train on even rows/cols, test odd-odd; 3x256 ReLU + sigmoid; Adam constant; 2000 full-batch steps"
FF_FLAGS = ("--train-pixels", "even", "--lr-schedule", "constant")


def _fourier_sigma(side: int) -> str:
    """Fourier features' sigma 10 on [0, 1) for 512 px (5 on nfield's [-1, 1]), kept at the same
    fraction of the training grid's Nyquist frequency on a smaller image."""
    return f"{5.0 * side / 512:g}"


def _octaves(side: int) -> str:
    """Fourier features' positional encoding tops at 2^6 cycles over a 512 px image (half the
    Nyquist frequency of its 256 px training grid): octaves 2^0 .. 2^(n-1) to the same fraction."""
    return str(max(1, round(math.log2(side / 8)) + 1))


#: (flag, value for the image's side) pairs: sizes that scale with the image
FOURIER_SIGMA = (("--sigma", _fourier_sigma),)
PE_OCTAVES = (("--n-frequencies", _octaves),)
FINER = "FINER (Liu et al. 2024), project-page figure, one DIV2K image"
FINER_SETTING = "512 px, [-1, 1] targets, 3 hidden x 256, lr decaying exponentially to 0.1x, 5000 full-batch steps"
CAM = "CAM (Lee et al. 2024), project-page table, natural images"
ROWS = (
    # Fourier features' table: one protocol, three encodings (the generalisation test)
    Row(
        "ff-relu",
        "relu",
        FF,
        FF_SETTING + ", lr 1e-2",
        "19.32",
        "astronaut",
        ("--model", "relu", "--lr", "1e-2", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
    ),
    Row(
        "ff-relu-pe",
        "relu-pe",
        FF,
        FF_SETTING + ", lr 1e-3, 128 log-spaced frequencies to 2^6 (nfield: one per octave)",
        "24.95",
        "astronaut",
        ("--model", "relu-pe", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
        per_side=PE_OCTAVES,
    ),
    Row(
        "ff-fourier",
        "fourier",
        FF,
        FF_SETTING + ", lr 1e-3, sigma 10 on [0, 1)",
        "25.57",
        "astronaut",
        ("--model", "fourier", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
        per_side=FOURIER_SIGMA,
    ),
    Row(
        "ff-learnable-fourier",
        "learnable-fourier",
        "no image experiment in its paper (Li et al. 2021); Fourier features' protocol",
        FF_SETTING + ", lr 1e-3",
        "none",
        "astronaut",
        ("--model", "learnable-fourier", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
        "ff-fourier",
        per_side=FOURIER_SIGMA,
    ),
    Row(
        "cam-gen",
        "cam",
        CAM + ", generalisation",
        "Fourier features' split, FFN sigma 10, lr 1e-3 (x0.1 at 1000, 1500), 2000 steps",
        "28.19",
        "astronaut",
        ("--model", "cam", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
        "ff-fourier",
        "+0.71 (FFN 27.48)",
        per_side=FOURIER_SIGMA,
    ),
    Row(
        "hash-gen",
        "hash",
        CAM + " (its I-NGP row), generalisation",
        "Fourier features' split, 237k parameters",
        "26.11",
        "astronaut",
        ("--model", "hash", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
    ),
    Row(
        "shifted-gen",
        "shifted-gaussian",
        "Shifted bases (Zheng et al. 2022), project-page images (archway, seahouse, walnuts, lion)",
        "512 px, train on even rows/cols, test the other 3/4; 4 directions x 128 Gaussians, sigma 0.006; "
        "4x256 ReLU; constant 5e-3, 2000 steps",
        "21.91-28.57 per image",
        "astronaut",
        ("--model", "shifted-gaussian", *FF_FLAGS),
        (2, 300),
        (1, 2000),
        "psnr_held_out",
        "ff-fourier",
        "-0.1 to -1.5 vs RFF",
        (("--n-samples", lambda side: str(side // 4)),),
    ),
    # SIREN and SPDER: the cameraman
    Row(
        "siren",
        "siren",
        "SIREN (Sitzmann et al. 2020), Fig. 1 (a curve, no number printed)",
        "cameraman 256 px, [-1, 1] targets, constant 1e-4, full batch, 4 sine layers x 256 (the notebook: 500 steps)",
        "none",
        "camera",
        ("--model", "siren"),
        (4, 300),
        (2, 500),
    ),
    Row(
        "spder-paper",
        "spder",
        "SPDER (Shah et al. 2024): a loss ratio only (1,500-50,000x lower than SIREN)",
        "cameraman, [-1, 1] targets, constant 1e-4, 501 steps, 5 hidden layers (6 damped-sine layers)",
        "none",
        "camera",
        ("--model", "spder", "--target-range", "-1", "1", "--lr-schedule", "constant", "--n-hidden-layers", "6"),
        (4, 300),
        (2, 501),
        "psnr",
        "siren",
    ),
    Row(
        "spder",
        "spder",
        "nfield's preset under the same length",
        "[0, 1] targets, cosine 1e-4, 4 layers",
        "none",
        "camera",
        ("--model", "spder"),
        (4, 300),
        (2, 501),
        "psnr",
        "siren",
    ),
    # FINER's figure: one protocol, five networks
    Row(
        "finer-paper",
        "finer",
        FINER,
        FINER_SETTING + ", lr 5e-4",
        "42.27",
        "astronaut",
        ("--model", "finer", "--target-range", "-1", "1", "--lr", "5e-4", "--lr-schedule", "exponential"),
        (4, 300),
        (1, 5000),
        "psnr",
        "finer-siren",
        "+2.49 (SIREN 39.78)",
    ),
    Row(
        "finer-siren",
        "siren",
        FINER,
        FINER_SETTING + ", lr 5e-4",
        "39.78",
        "astronaut",
        ("--model", "siren", "--lr", "5e-4", "--lr-schedule", "exponential"),
        (4, 300),
        (1, 5000),
    ),
    Row(
        "finer-gauss",
        "gauss",
        FINER,
        FINER_SETTING + ", lr 5e-3, scale 30",
        "35.11",
        "astronaut",
        ("--model", "gauss", "--target-range", "-1", "1", "--lr", "5e-3", "--lr-schedule", "exponential"),
        (4, 300),
        (1, 5000),
        "psnr",
        "finer-siren",
        "-4.67",
    ),
    Row(
        "finer-wire",
        "wire",
        FINER + " (WIRE under its own code's setting)",
        "[0, 1] targets, 5e-3 decaying to 0.1x, omega0 20, s0 30, 2 hidden layers",
        "31.32",
        "astronaut",
        ("--model", "wire", "--lr", "5e-3", "--lr-schedule", "exponential", "--s0", "30", "--n-hidden-layers", "3"),
        (4, 300),
        (1, 5000),
        "psnr",
        "finer-siren",
        "-8.46",
    ),
    Row(
        "finer-relu-pe",
        "relu-pe",
        FINER + " (PEMLP)",
        FINER_SETTING + ", lr 1e-3",
        "30.90",
        "astronaut",
        ("--model", "relu-pe", "--target-range", "-1", "1", "--lr-schedule", "exponential"),
        (4, 300),
        (1, 5000),
        "psnr",
        "finer-siren",
        "-8.88",
    ),
    Row(
        "gauss",
        "gauss",
        "nfield's preset",
        "its own",
        "none",
        "astronaut",
        ("--model", "gauss"),
        (4, 300),
        (1, 5000),
        "psnr",
        "finer-gauss",
    ),
    Row(
        "wire",
        "wire",
        "nfield's preset",
        "its own",
        "none",
        "astronaut",
        ("--model", "wire"),
        (4, 300),
        (1, 5000),
        "psnr",
        "finer-wire",
    ),
    # FR-INR: the same MLP with and without the re-parameterisation
    Row(
        "fr-base",
        "relu-pe",
        "FR-INR (Shi et al. 2024), repository figure, kodim05 (ReLU+PE)",
        "768x512, [0, 1] targets, 4 ReLU layers x 256, 6 octaves, 1e-4 (x0.1 at 3000), 10000 full-batch steps, best PSNR",
        "22.87",
        "astronaut",
        ("--model", "relu-pe", "--n-frequencies", "6", "--n-hidden-layers", "4", "--lr", "1e-4", "--lr-schedule", "constant"),
        (4, 300),
        (1, 3000),
    ),
    Row(
        "fr",
        "relu-pe-fr",
        "FR-INR (Shi et al. 2024), repository figure, kodim05 (ReLU+PE+FR)",
        "as fr-base",
        "26.78",
        "astronaut",
        ("--model", "relu-pe-fr", "--n-frequencies", "6", "--n-hidden-layers", "4", "--lr", "1e-4", "--lr-schedule", "constant"),
        (4, 300),
        (1, 3000),
        "psnr",
        "fr-base",
        "+3.91",
    ),
    # CAM's regression (every pixel) and its I-NGP row
    Row(
        "cam-fit-base",
        "fourier",
        CAM + ", regression (FFN)",
        "512 px, every pixel, sigma 10, lr 1e-3 (x0.1 at 1000, 1500), 2000 steps",
        "30.30",
        "astronaut",
        ("--model", "fourier", "--lr-schedule", "constant"),
        (4, 300),
        (1, 1000),
        per_side=FOURIER_SIGMA,
    ),
    Row(
        "cam-fit",
        "cam",
        CAM + ", regression (FFN+CAM)",
        "as cam-fit-base",
        "32.21",
        "astronaut",
        ("--model", "cam", "--lr-schedule", "constant"),
        (4, 300),
        (1, 1000),
        "psnr",
        "cam-fit-base",
        "+1.91",
        per_side=FOURIER_SIGMA,
    ),
    Row(
        "hash-fit",
        "hash",
        CAM + ", regression (its I-NGP row, 237k parameters)",
        "as cam-fit-base",
        "32.98",
        "astronaut",
        (
            "--model",
            "hash",
        ),
        (4, 300),
        (1, 2000),
    ),
    # SAPE: a random quarter of the pixels
    Row(
        "sape",
        "sape",
        "SAPE (Hertz et al. 2021): no table we could read",
        "images up to 512 px, a random 25 % of the pixels, constant 1e-3, 5000 steps",
        "none",
        "astronaut",
        ("--model", "sape", "--train-pixels", "random", "--lr-schedule", "constant"),
        (4, 300),
        (1, 5000),
        "psnr_held_out",
        "progressive",
    ),
    Row(
        "progressive",
        "progressive",
        "coarse-to-fine encoding (BARF's schedule), SAPE's protocol",
        "as sape",
        "none",
        "astronaut",
        ("--model", "progressive", "--train-pixels", "random", "--lr-schedule", "constant"),
        (4, 300),
        (1, 5000),
        "psnr_held_out",
    ),
    # no image number in the paper: the preset, beside its closest comparison
    Row(
        "pins",
        "pins",
        "PINs (Landgraf et al. 2022): no table we could read",
        "nfield's preset",
        "none",
        "camera",
        (
            "--model",
            "pins",
        ),
        (4, 300),
        (1, 2000),
    ),
    Row(
        "dense",
        "dense",
        "no paper (instant-ngp's dense-grid baseline has NeRF numbers only)",
        "nfield's preset",
        "none",
        "astronaut",
        (
            "--model",
            "dense",
        ),
        (4, 300),
        (1, 2000),
        "psnr",
        "hash-fit",
    ),
    Row(
        "planes",
        "planes",
        "K-planes (Fridovich-Keil et al. 2023): no image experiment",
        "nfield's preset",
        "none",
        "astronaut",
        (
            "--model",
            "planes",
        ),
        (4, 300),
        (1, 2000),
        "psnr",
        "dense",
    ),
    Row(
        "neurbf",
        "neurbf",
        "NeuRBF (Chen et al. 2023): DIV2K table not read (its ablation: 51.53 with sinusoid composition)",
        "2K images, 35000 steps of 2^18 pixels, decoder 1e-2 / kernels 5e-3, cosine",
        "none",
        "astronaut",
        (
            "--model",
            "neurbf",
        ),
        (4, 300),
        (1, 5000),
        "psnr",
        "hash-fit",
    ),
    # INT: SIREN with and without teaching, equal steps; the gain is in time
    Row(
        "int-base",
        "siren",
        "INT (Zhang et al. 2024), project-page table, Kodak (SIREN)",
        "768x512, [0, 1] targets, 5 sine layers x 256, 1e-3 cosine, 5000 full-batch steps; 345 s",
        "36.09",
        "astronaut",
        ("--model", "siren", "--target-range", "0", "1", "--lr", "1e-3", "--lr-schedule", "cosine", "--n-hidden-layers", "5"),
        (4, 2000),  # INT's gain is in the time to a converged fit
        (1, 5000),
    ),
    Row(
        "int",
        "INT (--teaching)",
        "INT (Zhang et al. 2024), project-page table, Kodak (SIREN + INT)",
        "as int-base; 211 s (-39 %)",
        "36.97",
        "astronaut",
        (
            "--model",
            "siren",
            "--target-range",
            "0",
            "1",
            "--lr",
            "1e-3",
            "--lr-schedule",
            "cosine",
            "--n-hidden-layers",
            "5",
            "--teaching",
        ),
        (4, 2000),  # INT's gain is in the time to a converged fit
        (1, 5000),
        "psnr",
        "int-base",
        "+0.88 dB in 61 % of the time",
    ),
    # IGA: ReLU+PE with and without gradient adjustment
    Row(
        "iga-base",
        "relu-pe",
        "IGA (Shi et al. 2025), repository figure, kodim05 (PE)",
        "768x512, [0, 1] targets, 3 ReLU layers x 256, 1e-3 (x0.1 at 3000), 10000 full-batch steps, best PSNR",
        "24.60",
        "astronaut",
        ("--model", "relu-pe", "--lr", "1e-3", "--lr-schedule", "constant"),
        (4, 300),
        (1, 3000),
    ),
    Row(
        "iga",
        "IGA (--iga)",
        "IGA (Shi et al. 2025), repository figure, kodim05 (PE+IGA)",
        "as iga-base at 5e-3, 32 px patches",
        "28.06",
        "astronaut",
        ("--model", "relu-pe", "--lr", "5e-3", "--lr-schedule", "constant", "--iga"),
        (4, 300),
        (1, 3000),
        "psnr",
        "iga-base",
        "+3.46",
        (("--iga-patch-size", lambda side: str(max(2, side // 16))),),
    ),
)
ROW_KEYS = [r.key for r in ROWS]


def command(row: Row, scale: str) -> list[str]:
    """The row's fit-image command line (without --out) at `scale`."""
    downscale, steps = {"cpu": row.cpu, "gpu": row.gpu, "tiny": (row.cpu[0] * 4, 10)}[scale]
    side = 512 // downscale  # both bundled images are 512 px wide
    flags = list(row.flags)
    for flag, value in row.per_side:
        flags += [flag, value(side)]
    return ["fit-image", row.image, "--downscale", str(downscale), "--steps", str(steps), "--eval-every", "0", *flags]


def nfield_executable() -> list[str]:
    """How to call the installed command line (the console script, else the module)."""
    found = shutil.which("nfield")
    return [found] if found else [sys.executable, "-c", "import sys; from nfield.cli import main; sys.exit(main())"]


def run_row(row: Row, scale: str, device: str) -> dict[str, Any]:
    """Run the row's command in a fresh run directory; its final metrics and wall time."""
    argv = command(row, scale)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run(
            [*nfield_executable(), *argv, "--out", str(Path(tmp) / row.key), "--device", device, "--no-progress"],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"key": row.key, "command": "nfield " + " ".join(argv), "error": tail[0], "seconds": seconds}
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "key": row.key,
        "family": row.family,
        "command": "nfield " + " ".join(argv),
        "metric": row.metric,
        "value": metrics[row.metric],
        "psnr": metrics["psnr"],
        "train_seconds": metrics["train_seconds"],
        "seconds": seconds,
    }


def markdown(report: dict[str, Any]) -> str:
    """BENCHMARKS.md's reproduction table: paper setting and number, ours, and the gains."""
    by_key = {r["key"]: r for r in report["results"]}
    lines = [
        "| family | paper, source | paper's setting | paper | ours | gain: paper | gain: ours | command |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in ROWS:
        result = by_key.get(row.key)
        if result is None:
            continue
        if "error" in result:
            ours = f"failed: {result['error']}"
        else:
            ours = f"{result['value']:.2f}" + (" (held out)" if row.metric == "psnr_held_out" else "")
            if row.family.startswith("INT") or row.key == "int-base":
                ours += f", {result['train_seconds']:.0f} s"
        gain = "-"
        base = by_key.get(row.baseline) if row.baseline else None
        if base is not None and "error" not in base and "error" not in result:
            gain = f"{result['value'] - base['value']:+.2f} vs {row.baseline}"
            if row.key == "int":
                gain += f", {100 * result['train_seconds'] / base['train_seconds']:.0f} % of the time"
        lines.append(
            f"| {row.family} | {row.paper} | {row.setting} | {row.paper_number} | {ours} | {row.paper_gain or '-'} | {gain} "
            f"| `{result['command']}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", choices=("cpu", "gpu", "tiny"), default="cpu", help="tiny: a smoke test (numbers mean nothing)"
    )
    parser.add_argument("--rows", nargs="+", choices=ROW_KEYS, default=None, help="default: every row")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default reproduce_papers_<scale>.json)")
    parser.add_argument(
        "--update", action="store_true", help="replace only these rows' results in an existing --out report (the others kept)"
    )
    parser.add_argument("--markdown-from", type=Path, default=None, help="print the Markdown table of an earlier JSON report")
    args = parser.parse_args()
    if args.markdown_from is not None:
        print(markdown(json.loads(args.markdown_from.read_text())), end="")
        return 0
    device = resolve_device(args.device)
    out = args.out or Path(f"reproduce_papers_{args.scale}.json")
    report = report_header(device, scale=args.scale, threads=torch.get_num_threads(), results=[])
    wanted = [r for r in ROWS if args.rows is None or r.key in args.rows]
    kept: list[dict[str, Any]] = []
    if args.update and out.is_file():
        earlier = json.loads(out.read_text())
        if earlier.get("scale") != args.scale:
            raise SystemExit(f"--update: {out} holds --scale {earlier.get('scale')}, not {args.scale}")
        kept = [r for r in earlier["results"] if r["key"] not in {w.key for w in wanted}]
        report["updated_rows"] = sorted({*earlier.get("updated_rows", []), *(w.key for w in wanted)})
        report["first_date"] = earlier.get("first_date", earlier["date"])
    order = {key: k for k, key in enumerate(ROW_KEYS)}
    print(f"device: {report['device']}  scale: {args.scale}  rows: {len(wanted)}")
    print(f"{'row':<22}{'family':<20}{'paper':>22}{'ours':>9}{'train s':>9}")
    start = time.perf_counter()
    for row in wanted:
        result = run_row(row, args.scale, str(device))
        report["results"] = sorted([*kept, *report["results"], result], key=lambda r: order[r["key"]])
        kept = []
        write_report(out, report)
        ours = result.get("value", float("nan"))
        note = f"  {result['error']}" if "error" in result else ""
        print(
            f"{row.key:<22}{row.family:<20}{row.paper_number:>22}{ours:>9.2f}{result.get('train_seconds', 0):>9.1f}{note}",
            flush=True,
        )
    report["total_seconds"] = time.perf_counter() - start
    write_report(out, report)
    print("\n" + markdown(report), end="")
    print(f"wrote {out} in {report['total_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
