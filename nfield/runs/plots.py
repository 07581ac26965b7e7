"""Training curves: a run's loss and PSNR against steps and training time.

Every run's ``metrics.jsonl`` (written by `nfield.training.trainer.Trainer`) holds ``"kind": "train"`` lines
(``step``, ``loss``, ``train_<metric>``, ``lr``, ``train_seconds``) and ``"kind": "eval"`` lines
(``step`` and the task's held-out metrics: ``psnr``/``ssim``, or for SDF runs ``distance_mae``,
``surface_mae``, ``sign_iou``). `read_metrics` reads them back (corrupt lines skipped; an
evaluation takes the training time of the train line at its step or the nearest earlier one) and,
for a distilled KiloNeRF run, puts the distillation phase (``RUN/distill/metrics.jsonl``) in front
of the fine-tuning phase on one step and time axis. `write_curves` draws one run into
``RUN/curves.png`` (the trainer does this at the end of every run); `plot_runs` overlays several.

The figure: loss (log scale) against step and against training time on the first row; PSNR (the
train PSNR as a line, the evaluations as markers) on the second, or for runs without PSNR their
main held-out metric, or no second row when there is none.

`write_audio_comparison` draws an audio run's comparison.png: the target's and the fitted
waveforms, their difference and both spectrograms, each panel titled, with axes in seconds,
amplitude and hertz.

Example::

    >>> write_curves(Path("runs/image/camera-siren"))        # doctest: +SKIP
    PosixPath('runs/image/camera-siren/curves.png')
    >>> plot_runs([Path("runs/a"), Path("runs/b")], Path("ab.pdf"))  # doctest: +SKIP
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nfield.errors import NfieldError
from nfield.outputs import check_figure_path, write_figure
from nfield.run_directory import CONFIG_FILE, CURVES_FILE, DISTILL_DIR, METRICS_FILE, read_records

#: The second row's metric: the first of these a run has (else any other evaluated metric).
PREFERRED_METRICS = ("psnr", "distance_mae", "surface_mae", "chamfer_l1", "sign_iou", "iou", "snr", "ssim")
#: metric -> (axis label with its unit, log scale)
METRIC_AXES = {
    "psnr": ("PSNR (dB)", False),
    "ssim": ("SSIM", False),
    "snr": ("SNR (dB)", False),
    "distance_mae": ("distance MAE (box units)", True),
    "surface_mae": ("surface MAE (box units)", True),
    "chamfer_l1": ("Chamfer L1 (box units)", True),
    "sign_iou": ("sign IoU", False),
    "iou": ("IoU", False),
}
#: Output formats accepted (matplotlib writes each with its own backends, no LaTeX needed).


@dataclass
class RunMetrics:
    """A run's metrics.jsonl read back.

    Attributes:
        run_dir: the run directory.
        config: its config.json ({} when it has none or it is unreadable).
        train: train records sorted by step: ``step``, ``loss``, ``train_<metric>``, ``lr``,
            ``train_seconds`` (NaN when missing), ``phase``; only finite numbers are kept.
        evals: eval records sorted by step: ``step``, the scalar metrics, ``train_seconds`` (the
            train record's at the same or the nearest earlier step; 0 before any), ``phase``.
        phases: for a distilled run, where each phase starts: (name, step, train_seconds);
            steps and times of later phases are offset so the run reads as one axis. Empty otherwise.
    """

    run_dir: Path
    config: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    phases: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def title(self) -> str:
        """``name: task / model`` (and what a distilled run was distilled from)."""
        name = self.run_dir.absolute().name
        kind = " / ".join(str(self.config[k]) for k in ("task", "model") if self.config.get(k))
        teacher = self.config.get("teacher")
        if isinstance(teacher, dict) and teacher.get("model"):
            kind += f" (distilled from {teacher['model']})"
        return f"{name}: {kind}" if kind else name

    def values(self, metric: str, kind: str) -> list[tuple[int, float, float]]:
        """(step, train_seconds, value) of `metric` in the train or eval records; a distillation
        phase's train PSNR is its ``train_rgb_psnr``, the PSNR of the colours it regresses on the
        teacher's."""
        if kind == "eval":
            return [(r["step"], r["train_seconds"], r[metric]) for r in self.evals if metric in r]
        out = []
        for r in self.train:
            key = f"train_{metric}"
            if key not in r and metric == "psnr":  # distillation (RUN/distill/metrics.jsonl)
                key = "train_rgb_psnr"
            if key in r:
                out.append((r["step"], r["train_seconds"], r[key]))
        return out

    def metrics(self) -> list[str]:
        """Every metric with a value, the preferred ones first."""
        names = {k for r in self.evals for k in r if k not in ("step", "train_seconds", "phase")}
        names |= {k.removeprefix("train_") for r in self.train for k in r if k.startswith("train_") and k != "train_seconds"}
        if any("train_rgb_psnr" in r for r in self.train):
            names.add("psnr")
        names.discard("rgb_psnr")
        preferred = [m for m in PREFERRED_METRICS if m in names]
        evaluated = sorted(m for m in names - set(preferred) if "_lod" not in m and any(m in r for r in self.evals))
        return preferred + evaluated

    def main_metric(self) -> str | None:
        """The second row's metric: PSNR when the run has it, else its main held-out metric."""
        found = self.metrics()
        return found[0] if found else None


def read_metrics(run_dir: Path | str) -> RunMetrics:
    """Read `run_dir`'s metrics.jsonl (and a distilled run's distillation phase before it).

    `NfieldError` if `run_dir` is not a run directory or holds no usable record; corrupt lines
    (a run killed mid-write) are skipped.
    """
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise NfieldError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise NfieldError(f"{run_dir}: not a run directory (it is a file)")
    config = _read_config(run_dir)
    main = run_dir / METRICS_FILE
    distill = run_dir / DISTILL_DIR / METRICS_FILE
    files = [("distill", distill)] if "distill" in config and distill.is_file() else []
    if main.is_file():
        files.append(("fine-tune" if files else "", main))
    if not files:
        if (run_dir / CONFIG_FILE).is_file():
            raise NfieldError(f"{run_dir}: the run has no {METRICS_FILE} yet (train it first)")
        raise NfieldError(f"{run_dir}: not an nfield run directory (no config.json or {METRICS_FILE})")
    run = RunMetrics(run_dir, config)
    step0, seconds0 = 0, 0.0
    for phase, path in files:
        train, evals = read_metrics_file(path)
        if not train and not evals:
            continue
        for record in train + evals:
            record["step"] += step0
            record["train_seconds"] += seconds0
            if phase:
                record["phase"] = phase
        run.phases.append((phase, step0, seconds0))
        run.train += train
        run.evals += evals
        step0 = max(r["step"] for r in train + evals)
        seconds0 = max([seconds0] + [r["train_seconds"] for r in train if math.isfinite(r["train_seconds"])])
    if len(run.phases) < 2:
        run.phases = []
    has_metric = any(set(r) - {"step", "train_seconds", "phase"} for r in run.evals)
    if not any("loss" in r for r in run.train) and not has_metric:
        shown = " and ".join(str(p) for _, p in files)
        raise NfieldError(f"{shown}: no usable training records (empty or corrupt)")
    return run


def read_metrics_file(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, eval records) of one metrics.jsonl, each sorted by step, with only their
    finite numbers; eval records get the train_seconds of the train record at the same or the
    nearest earlier step (0 before the first). Lines that are not such records are skipped."""
    train, evals = [], []
    for record in read_records(path):
        if record.get("kind") not in ("train", "eval"):
            continue
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            continue
        kept = {k: float(v) for k, v in record.items() if _finite(v) and k not in ("step", "kind")}
        kept["step"] = step
        if record["kind"] == "train":
            kept.setdefault("train_seconds", math.nan)
            train.append(kept)
        else:
            kept.pop("train_seconds", None)
            evals.append(kept)
    train.sort(key=lambda r: r["step"])
    evals.sort(key=lambda r: r["step"])
    timed = [r for r in train if math.isfinite(r["train_seconds"])]
    steps = [r["step"] for r in timed]
    for record in evals:
        at = bisect.bisect_right(steps, record["step"]) - 1
        record["train_seconds"] = timed[at]["train_seconds"] if at >= 0 else 0.0
    return train, evals


def write_curves(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Draw `run_dir`'s training curves into `out` (default ``RUN_DIR/curves.png``); returns the path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / CURVES_FILE
    check_figure_path(out)
    return write_figure(_figure([read_metrics(run_dir)], None), out)


#: "0": runs do not draw curves.png when they end (`nfield plot RUN` draws it later).
CURVES_ENV = "NFIELD_CURVES"


class CurvesDrawer:
    """A trainer's observer that draws the run's curves.png when the run ends or is interrupted,
    unless NFIELD_CURVES=0 (drawing takes about 0.3 s a run: a collection of thousands of signals,
    or a test suite, may skip it). A failure to plot never fails training: it is one warning."""

    def run_ended(self, trainer: Any) -> None:
        for run_dir, _ in trainer.runs():
            draw_curves_quietly(run_dir)


def draw_curves_quietly(run_dir: Path) -> None:
    """`write_curves` of `run_dir` as `CurvesDrawer` draws it: skipped under NFIELD_CURVES=0, a
    failure said in one warning."""
    if os.environ.get(CURVES_ENV, "1").strip() == "0":
        return
    try:
        write_curves(run_dir)
    except Exception as err:
        message = (str(err).splitlines() or [type(err).__name__])[0]
        print(f"nfield: warning: could not write {Path(run_dir) / CURVES_FILE}: {message}", file=sys.stderr)


def plot_runs(run_dirs: Sequence[Path | str], out: Path | str) -> Path:
    """Overlay the training curves of `run_dirs` (one colour each, a legend with their directory
    names) into `out`; returns the path. One run is drawn as `write_curves` draws it."""
    if not run_dirs:
        raise NfieldError("no run directories to plot")
    out = Path(out)
    check_figure_path(out)
    runs = [read_metrics(d) for d in run_dirs]
    return write_figure(_figure(runs, run_labels([Path(d) for d in run_dirs]) if len(runs) > 1 else None), out)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """The legend's names: each directory's name, with as many parent folders as tell them apart
    (a directory given twice gets a number)."""
    parts = [Path(d).absolute().parts for d in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    names = [Path(d).absolute().name for d in run_dirs]
    return [f"{name} ({i + 1})" if names.count(name) > 1 else name for i, name in enumerate(names)]


# --- drawing ---------------------------------------------------------------------------------


def _figure(runs: list[RunMetrics], labels: list[str] | None):
    """The figure of `runs`: one run (`labels` None) in its own colours, or several overlaid."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    metric = "psnr" if any("psnr" in r.metrics() for r in runs) else next((m for r in runs if (m := r.main_metric())), None)
    rows = 2 if metric else 1
    overlay = labels is not None
    legend_rows = -(-(len(runs) + (2 if metric else 0)) // 4) if overlay else 0
    height = 3.6 * rows + 1.0 + 0.25 * legend_rows
    figure = Figure(figsize=(11, height), dpi=100)  # a fixed layout: a constrained one takes twice as long to draw
    axes = figure.subplots(rows, 2, squeeze=False)
    bottom = 0.6 + 0.25 * legend_rows + (0.15 if legend_rows else 0)
    figure.subplots_adjust(
        left=0.95 / 11, right=1 - 0.2 / 11, top=1 - 0.85 / height, bottom=bottom / height, wspace=0.22, hspace=0.38
    )
    seconds = [s for r in runs for s in [x["train_seconds"] for x in r.train + r.evals] if math.isfinite(s)]
    scale, unit = _time_unit(max(seconds, default=0.0))
    colours = _colours(len(runs)) if overlay else ["C0"]
    for i, run in enumerate(runs):
        train_colour = colours[i]
        eval_colour = colours[i] if overlay else "C3"
        loss = [(r["step"], r["train_seconds"], r["loss"]) for r in run.train if "loss" in r]
        rows_drawn = [(axes[0], loss, [])]
        if metric:
            rows_drawn.append((axes[1], run.values(metric, "train"), run.values(metric, "eval")))
        for row, line, markers in rows_drawn:
            for column, ax in enumerate(row):
                x_of = (lambda p: p[0]) if column == 0 else (lambda p: p[1] / scale)
                if line:
                    ax.plot([x_of(p) for p in line], [p[2] for p in line], "-", color=train_colour, lw=1.4)
                if markers:
                    ax.plot(
                        [x_of(p) for p in markers],
                        [p[2] for p in markers],
                        "o",
                        color=eval_colour,
                        ms=5,
                        mec="black" if overlay else eval_colour,
                        mew=0.6,
                        zorder=3,
                    )
                for k, (name, step, start) in enumerate(run.phases):
                    at = step if column == 0 else start / scale
                    if k > 0:
                        ax.axvline(at, color=train_colour, ls=":", lw=1)
                    if not overlay:
                        ax.annotate(
                            name,
                            (at, 1),
                            xycoords=("data", "axes fraction"),
                            xytext=(3, -12),
                            textcoords="offset points",
                            fontsize=8,
                            color="0.3",
                        )
    losses = [r["loss"] for run in runs for r in run.train if "loss" in r]
    label, log = METRIC_AXES.get(metric or "", ((metric or "").replace("_", " "), False))
    for row_index, row in enumerate(axes):
        for column, ax in enumerate(row):
            ax.set_xlabel("step" if column == 0 else f"training time ({unit})")
            ax.grid(alpha=0.3)
            if row_index == 0:
                ax.set_ylabel("training loss")
                if losses and min(losses) > 0:
                    ax.set_yscale("log")
            else:
                ax.set_ylabel(label)
                if log:
                    ax.set_yscale("log")
            if column == 1 and not seconds:
                ax.text(0.5, 0.5, "no training times recorded", transform=ax.transAxes, ha="center", color="0.4")
    axes[0][0].set_title("loss against steps", fontsize=10, y=1.0, pad=6)
    axes[0][1].set_title("loss against training time", fontsize=10, y=1.0, pad=6)
    if metric:
        axes[1][0].set_title(f"{label.split(' (')[0]} against steps", fontsize=10, y=1.0, pad=6)
        axes[1][1].set_title(f"{label.split(' (')[0]} against training time", fontsize=10, y=1.0, pad=6)
    if overlay:
        handles = [Line2D([], [], color=c, lw=2, label=name) for c, name in zip(colours, labels)]
        if metric:
            handles += [
                Line2D([], [], color="0.3", lw=1.4, label="train (line)"),
                Line2D([], [], color="0.5", ls="", marker="o", mec="black", label="eval (markers)"),
            ]
        figure.legend(handles=handles, loc="lower center", ncols=min(4, len(handles)), fontsize=9, frameon=False)
        tasks = sorted({str(r.config.get("task")) for r in runs if r.config.get("task")})
        figure.suptitle(f"{len(runs)} runs" + (f" ({', '.join(tasks)})" if tasks else ""))
    else:
        run = runs[0]
        distilled = metric == "psnr" and any("train_rgb_psnr" in r for r in run.train)
        if metric:
            axes[1][0].legend(
                handles=[
                    Line2D([], [], color="C0", lw=1.4, label="train" + (" (distill: colours vs teacher)" * distilled)),
                    Line2D([], [], color="C3", ls="", marker="o", label="eval"),
                ],
                fontsize=9,
            )
        figure.suptitle(f"{run.title}\n{_summary(run, metric)}", fontsize=11)
    return figure


def _summary(run: RunMetrics, metric: str | None) -> str:
    """`step N, T of training, final eval <metric> V` for a single run's title."""
    last = max((r["step"] for r in run.train + run.evals), default=0)
    times = [r["train_seconds"] for r in run.train if math.isfinite(r["train_seconds"])]
    parts = [f"step {last:,}"]
    if times:
        parts.append(f"{_duration(max(times))} of training")
    evaluated = run.values(metric, "eval") if metric else []
    if evaluated:
        name = METRIC_AXES.get(metric, (metric.replace("_", " "), False))[0].split(" (")[0]
        value = evaluated[-1][2]
        parts.append(f"final eval {name} {value:.2f} dB" if metric in ("psnr", "snr") else f"final eval {name} {value:.4g}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _time_unit(longest: float) -> tuple[float, str]:
    """(divisor, unit) for a time axis up to `longest` seconds: s, min or h."""
    if longest < 600:
        return 1.0, "s"
    if longest < 5 * 3600:
        return 60.0, "min"
    return 3600.0, "h"


def _colours(n: int) -> list:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](i / (n - 1)) for i in range(n)]


# --- files -----------------------------------------------------------------------------------


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
