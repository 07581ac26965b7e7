"""Flags shared by the training commands, with help texts that state the presets' real defaults."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import tyro

from nfield.distributed import init_from_environment, set_data_parallel
from nfield.errors import NfieldError
from nfield.flag_hints import PRESET, STATED
from nfield.presets import Preset
from nfield.runs.collection import CollectionRequest, fit_collection
from nfield.runs.single import RunRequest, Watch, train, unwatched
from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig


class Overrides:
    """Mixin for option dataclasses whose unset (None) keys keep a preset's (or a resumed run's) value."""

    def overrides(self) -> dict[str, Any]:
        """The keys that were set, with their values."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class FieldOptions(Overrides):
    """Hyper-parameter overrides; unset keys keep the model's preset value. Each key goes to the
    encoding or network that has it; a key the chosen model does not have is an error."""

    n_neurons: Annotated[Optional[int], PRESET] = None  # hidden layer width
    n_hidden_layers: Annotated[Optional[int], PRESET] = None  # number of hidden layers
    activation: Annotated[Optional[str], PRESET] = None  # MLP activation: relu, leaky_relu, softplus, gelu, silu, tanh, sigmoid
    w0: Annotated[Optional[float], PRESET] = None  # SIREN / SPDER frequency of the hidden layers
    w0_initial: Annotated[Optional[float], PRESET] = None  # SIREN / SPDER frequency of the first layer
    n_frequencies: Annotated[Optional[int], PRESET] = None
    """octave bands of frequency encodings (relu-pe, progressive, sape, pins)"""
    n_features: Annotated[Optional[int], PRESET] = None  # number of random Fourier features (fourier, learnable-fourier)
    sigma: Annotated[Optional[float], PRESET] = None  # standard deviation of Fourier frequencies, cycles per unit on [-1, 1]


@dataclass(frozen=True)
class RunFlags:
    """Where the run goes and how it starts."""

    out: Annotated[Optional[Path], STATED] = None  # run directory (default runs/<task>/<input name>-<model>)
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    resume: bool = False  # continue the run in --out from its last checkpoint up to --steps in total
    overwrite: bool = False  # replace an existing run in --out
    progress: bool = True  # show the progress bar
    viewer: bool = False  # serve the live web viewer while training (see `nfield view`)
    port: int = 8080  # the live viewer's port (another free one if it is taken)
    logger: Literal["none", "tensorboard", "wandb"] = "none"
    """also log the metrics (and evaluation renders) to TensorBoard (RUN/tensorboard) or W&B offline (RUN/wandb)"""


def describe_default(presets: dict[str, Preset], value_of: Callable[[Preset], Any]) -> str:
    """ "(default: 2000)" when every preset agrees, else "(default: the model's: siren 0.0001, ...)"."""
    values = {name: value_of(preset) for name, preset in presets.items()}
    distinct = list(dict.fromkeys(values.values()))
    if len(distinct) == 1:
        return f"(default: {_shown(distinct[0])})"
    return "(default: the model's: " + ", ".join(f"{name} {_shown(v)}" for name, v in values.items()) + ")"


def device_default(presets: dict[str, Preset], key: str) -> str:
    """ "(default: 65,536 on CUDA, 8,192 on the CPU)" for a task setting the presets size by device."""
    preset = next(iter(presets.values()))
    gpu, cpu = getattr(preset.task, key), preset.cpu.get(key, getattr(preset.task, key))
    return f"(default: {_shown(gpu)} on CUDA, {_shown(cpu)} on the CPU)" if gpu != cpu else f"(default: {_shown(gpu)})"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:,}" if isinstance(value, int) else f"{value:g}" if isinstance(value, float) else str(value)


#: (TrainConfig key, flag type, help) of the training flags every training command takes.
_TRAIN_FLAGS: tuple[tuple[str, Any, str], ...] = (
    ("steps", Optional[int], "total steps of the run"),
    ("lr", Optional[float], "peak learning rate"),
    ("lr_schedule", Optional[Literal["constant", "cosine", "exponential"]], "learning-rate schedule"),
    ("lr_warmup_steps", Optional[int], "steps of linear warm-up"),
    ("lr_final_factor", Optional[float], "final lr relative to the peak"),
    ("grad_clip", Optional[float], "max gradient norm, 0 = off"),
    ("mixed_precision", Optional[Literal["on", "off"]], "float16 autocast on CUDA"),
    ("eval_every", Optional[int], "steps between evaluations (0: at the end only)"),
    ("checkpoint_every", Optional[int], "steps between checkpoints (0: at the end only)"),
    ("checkpoint_seconds", Optional[float], "also checkpoint after this much training time without one (0: off)"),
    ("keep_checkpoints", Optional[int], "checkpoints kept on disk"),
    ("log_every", Optional[int], "steps between metrics.jsonl lines"),
    (
        "backend",
        Optional[Literal["auto", "torch", "triton", "tcnn"]],
        "implementation of grids, MLPs and rendering (auto: Triton kernels on CUDA)",
    ),
    ("seed", Optional[int], "random seed for initialisation and sampling"),
)


class _TrainOverrides(Overrides):
    def overrides(self) -> dict[str, Any]:
        overrides = super().overrides()
        if "mixed_precision" in overrides:
            overrides["mixed_precision"] = overrides["mixed_precision"] == "on"
        return overrides


def train_options(presets: dict[str, Preset]) -> type:
    """The training flags of a command whose models are `presets`, each help stating its default."""
    fields = [
        (
            key,
            Annotated[flag_type, tyro.conf.arg(help=text, help_behavior_hint=describe_default(presets, _train_key(key)))],
            dataclasses.field(default=None),
        )
        for key, flag_type, text in _TRAIN_FLAGS
    ]
    doc = "Training overrides; unset keys keep the model's preset (or, with --resume, the run's)."
    return dataclasses.make_dataclass("TrainOptions", fields, bases=(_TrainOverrides,), frozen=True, namespace={"__doc__": doc})


def _train_key(key: str) -> Callable[[Preset], Any]:
    return lambda preset: getattr(preset.train, key)


class TrainingCommand:
    """What every training command does with its flags: one `nfield.runs.single.train` call, whose final
    metrics are printed as one JSON object on the last stdout line. Subclasses (dataclasses of flags)
    have ``model``, ``run`` (`RunFlags`), ``train`` and ``model_options``."""

    def submit(self, kind: str, source: str, task_flags: dict[str, Any], data_options: dict[str, Any]) -> None:
        init_from_environment(self.run.device)  # type: ignore[attr-defined]  # under torchrun: one model on every rank
        set_data_parallel(True)
        flags: RunFlags = self.run  # type: ignore[attr-defined]
        result = train(self.request(kind, source, task_flags, data_options), watched(flags))
        if result is not None:  # the ranks of a data-parallel run other than 0 print nothing
            print(json.dumps(result))

    def request(self, kind: str, source: str, task_flags: dict[str, Any], data_options: dict[str, Any]) -> RunRequest:
        """The `RunRequest` the flags describe (unset task options keep the preset's)."""
        flags: RunFlags = self.run  # type: ignore[attr-defined]
        return RunRequest(
            kind,
            source,
            model=self.model,  # type: ignore[attr-defined]
            out=flags.out,
            resume=flags.resume,
            overwrite=flags.overwrite,
            device=flags.device,
            train={**self.train.overrides(), "progress": flags.progress},  # type: ignore[attr-defined]
            overrides=self.model_options.overrides(),  # type: ignore[attr-defined]
            task_overrides={k: v for k, v in task_flags.items() if v is not None},
            data_options=data_options,
            logger=flags.logger,
        )

    def submit_collection(
        self, kind: str, pattern: str, task_flags: dict[str, Any], data_options: dict[str, Any], signals_per_batch: int
    ) -> None:
        """Fit every file of a folder or glob (`nfield.runs.collection`); the summary is the last stdout line."""
        if self.run.viewer:  # type: ignore[attr-defined]
            raise NfieldError(
                "--viewer follows one run; fit one file to watch it (each run of a collection opens with nfield view)"
            )
        request = CollectionRequest(self.request(kind, pattern, task_flags, data_options), signals_per_batch)
        result = fit_collection(request)
        if result is not None:
            print(json.dumps(result))


def gradient_adjustment_flags(
    iga: bool, patch_size: int | None, n_balanced: int | None, defaults: GradientAdjustmentConfig
) -> GradientAdjustmentConfig | None:
    """The IGA settings of ``--iga``, ``--iga-patch-size`` and ``--iga-n-balanced`` (None: the task's
    `defaults`), or None without ``--iga``; `NfieldError` if the last two are given without it."""
    overrides = {k: v for k, v in {"patch_size": patch_size, "n_balanced": n_balanced}.items() if v is not None}
    if not iga:
        if overrides:
            raise NfieldError("--iga-patch-size and --iga-n-balanced set IGA's hyper-parameters; add --iga to use it")
        return None
    return dataclasses.replace(defaults, enabled=True, **overrides)


def watched(flags: RunFlags) -> Watch:
    """What the run is watched by: the live viewer with ``--viewer`` (viser is loaded only then)."""
    if not flags.viewer:
        return unwatched
    from nfield.viewer.live import live_viewer

    return live_viewer(flags.port)
