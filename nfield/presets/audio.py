"""Named audio models: SIREN's audio setting and two baselines, at the same size.

- ``siren`` (default): SIREN's audio experiment (Sitzmann et al. 2020, Sec. 4.2 and the official
  notebook): 4 sine layers of 256 with the first layer's w0 = 3000, so the first layer reaches
  the kHz frequencies of a few seconds of sound spread over t in [-1, 1]; lr 1e-4, 1000 steps.
- ``relu-pe``: a ReLU MLP 256 x 3 on NeRF positional encoding with 16 octaves (up to 2^15 pi
  rad per unit: about 16k cycles over the clip's span), lr 1e-3.
- ``fourier``: a ReLU MLP 256 x 3 on 256 Gaussian Fourier features of standard deviation 2000
  cycles per unit, lr 1e-3.

Clips of up to 2^17 samples (about 3 s at 44.1 kHz) train full-batch on a GPU; the CPU uses
batches of 2^14 samples.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from nfield.data.audio import Audio, load_audio
from nfield.encodings import FrequencyConfig, GaussianFourierConfig, IdentityConfig
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import MLPConfig, SirenConfig
from nfield.presets import Preset, apply_overrides, mapped_field, preset_fields, split_target_range
from nfield.presets.families import NOT_FOR, family_preset
from nfield.presets.image import IMAGE_PRESETS
from nfield.tasks.audio import AudioTask, AudioTaskConfig
from nfield.training.trainer import TrainConfig

_TRAIN = TrainConfig(steps=1000, lr_schedule="cosine", eval_every=250, mixed_precision=False)
_TASK = AudioTaskConfig(batch_size=2**17)
_CPU = {"batch_size": 2**14}
_MLP = MLPConfig(n_neurons=256, n_hidden_layers=3, activation="relu")


def _preset(field: FieldConfig, lr: float, description: str) -> Preset:
    return Preset(field, dataclasses.replace(_TRAIN, lr=lr), _TASK, description, _CPU)


AUDIO_PRESETS: dict[str, Preset] = {
    "siren": _preset(
        FieldConfig(IdentityConfig(), SirenConfig(n_neurons=256, n_hidden_layers=4, w0_initial=3000.0)),
        1e-4,
        "SIREN, first-layer w0 = 3000 (the paper's audio setting)",
    ),
    "relu-pe": _preset(FieldConfig(FrequencyConfig(n_frequencies=16), _MLP), 1e-3, "ReLU MLP on 16-octave positional encoding"),
    "fourier": _preset(
        FieldConfig(GaussianFourierConfig(n_features=256, sigma=2000.0), _MLP), 1e-3, "ReLU MLP on Gaussian Fourier features"
    ),
}
DEFAULT_MODEL = "siren"


def resolve_audio_preset(name: str, overrides: dict[str, Any], n_samples: int = 2**16) -> Preset:
    """The preset `name` with hyper-parameter `overrides` applied to whichever part has each key.
    Any other image family (wire, finer, cam, planes, ...) is taken in its audio form
    (`nfield.presets.families`) for a clip of `n_samples` samples."""
    if name in AUDIO_PRESETS:
        preset = AUDIO_PRESETS[name]
    elif name in IMAGE_PRESETS and name not in NOT_FOR["audio"]:
        preset = family_preset(name, 1, "audio", n_samples, AUDIO_PRESETS[DEFAULT_MODEL])
    else:
        why = f" ({name}: {NOT_FOR['audio'][name]})" if name in NOT_FOR["audio"] else ""
        raise NfieldError(f"unknown model '{name}'{why}; choose one of: {', '.join(audio_models())}")
    return dataclasses.replace(preset, field=apply_overrides(preset.field, overrides, name, others=preset_fields(AUDIO_PRESETS)))


def audio_models() -> list[str]:
    """Every model fit-audio takes: its own presets, then the image families that apply to audio."""
    return [*AUDIO_PRESETS, *(f for f in IMAGE_PRESETS if f not in AUDIO_PRESETS and f not in NOT_FOR["audio"])]


def new_audio_run(
    source: str, model: str, overrides: dict[str, Any], task_overrides: dict[str, Any], device: torch.device
) -> tuple[TrainConfig, dict[str, Any], Audio]:
    """A new audio run from the preset `model`: (its training config, the task's part of config.json,
    the loaded clip). `task_overrides` replace keys of the task settings chosen for `device`."""
    audio = load_audio(source)
    field_overrides, target_range = split_target_range(overrides)
    preset = resolve_audio_preset(model, field_overrides, audio.n_samples)
    task_cfg = dataclasses.replace(preset.task_for(device), **task_overrides)
    field_cfg = mapped_field(preset, target_range, (-1.0, 1.0))  # samples are full scale
    return preset.train, AudioTask.run_config(audio, field_cfg, task_cfg), audio
