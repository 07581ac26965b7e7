"""Named image models: one preset per coordinate-network family, tuned defaults, same budget.

Every family gets the network its paper uses for images, at comparable size: ReLU MLPs with 3
hidden layers of 256 (Tancik et al.'s 4 linear layers), SIREN and SPDER with 4 sine layers of 256
(the SIREN paper's 5 linear layers), the grids a small 64 x 2 MLP as in instant-ngp; and the
learning rate its authors use.
Every preset trains 2000 steps, on a cosine schedule unless its paper's code does better with its
own (SIREN and the shifted bases: constant; the Gaussian activations: exponential). SIREN, FINER and
the Gaussian activations learn the image mapped to [-1, 1], as their papers' code does (the field
maps its outputs back: renders and metrics stay in the image's units). The comment above each
preset says what its paper's official code does and, where the preset differs, what each gave.
`scripts/reproduce_papers.py` runs every family under its paper's own protocol. Any hyper-parameter
can be overridden by key (the CLI's flat options): a key is applied to whichever part (encoding or
network) has it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from nfield.data.images import Image, load_image
from nfield.encodings import (
    DenseGridConfig,
    FeaturePlanesConfig,
    FrequencyConfig,
    GaussianFourierConfig,
    HashGridConfig,
    IdentityConfig,
    LearnableFourierConfig,
    NeuRBFConfig,
    ProgressiveFrequencyConfig,
    ShiftedBasisConfig,
    SpatiallyAdaptiveProgressiveConfig,
)
from nfield.errors import NfieldError
from nfield.fields import FieldConfig
from nfield.networks import (
    CamConfig,
    FinerConfig,
    GaussianNetworkConfig,
    MLPConfig,
    ProgressiveNetworkConfig,
    SirenConfig,
    SpderConfig,
    WireConfig,
)
from nfield.presets import Preset, apply_overrides, mapped_field, preset_fields, split_target_range
from nfield.tasks.image import ImageTask, ImageTaskConfig
from nfield.training.trainer import TrainConfig

#: Steps and schedule of every image preset; the learning rate and autocast differ per model.
_TRAIN = TrainConfig(steps=2000, lr_schedule="cosine", eval_every=500)
#: Pixels per step: a GPU trains images up to 512 x 512 full-batch, a CPU on 65,536-pixel batches.
_TASK = ImageTaskConfig(batch_size=2**18)
_CPU = {"batch_size": 2**16}

_MLP = MLPConfig(n_neurons=256, n_hidden_layers=3, activation="relu")
_SMALL_MLP = MLPConfig(n_neurons=64, n_hidden_layers=2, activation="relu")


def _preset(
    field: FieldConfig,
    lr: float,
    description: str,
    mixed_precision: bool = True,
    target_range: tuple[float, float] | None = None,
    lr_schedule: str = "cosine",
) -> Preset:
    train = dataclasses.replace(_TRAIN, lr=lr, mixed_precision=mixed_precision, lr_schedule=lr_schedule)
    return Preset(field, train, _TASK, description, _CPU, target_range)


IMAGE_PRESETS: dict[str, Preset] = {
    # Fourier features' code (2d_image_regression.ipynb) is the reference for the plain MLPs too: [0, 1]
    # targets through a sigmoid, constant lr (1e-2 without a mapping on natural images, 1e-3 with the
    # positional encoding, whose 128 frequencies are log-spaced up to 2^6 cycles per unit of [0, 1)),
    # 2000 full-batch steps on half the image's pixels (`scripts/reproduce_papers.py`, rows ff-*)
    "relu": _preset(FieldConfig(IdentityConfig(), _MLP), 1e-3, "ReLU MLP on raw coordinates (the spectral-bias baseline)"),
    "relu-pe": _preset(FieldConfig(FrequencyConfig(n_frequencies=10), _MLP), 1e-3, "ReLU MLP on NeRF positional encoding"),
    # Fourier features' code (tancik/fourier-feature-networks, 2d_image_regression.ipynb): targets in
    # [0, 1] through a sigmoid output, constant 1e-3, 2000 full-batch steps, sigma 10-18 on
    # coordinates in [0, 1) (here [-1, 1]: compare the scales before adopting theirs)
    "fourier": _preset(
        FieldConfig(GaussianFourierConfig(n_features=256, sigma=5.0), _MLP), 1e-3, "ReLU MLP on Gaussian random Fourier features"
    ),
    # trained frequencies have no image experiment of their own (Li et al. 2021 use them in
    # Transformers): the preset is Fourier features' with B trained
    "learnable-fourier": _preset(
        FieldConfig(LearnableFourierConfig(n_features=256, sigma=5.0), _MLP), 1e-3, "ReLU MLP on trained Fourier features"
    ),
    # SIREN's image code (explore_siren.ipynb, dataio.py) fits the image normalised to [-1, 1]
    # (Normalize(0.5, 0.5) after ToTensor) at a constant 1e-4: the camera at 128x128, 300 full-batch
    # steps on 2 CPU cores, 39.7 dB, against 34.5 on [0, 1] intensities, 33.5 with a cosine decay and
    # 30.9 with both (the preset before)
    "siren": _preset(
        FieldConfig(IdentityConfig(), SirenConfig()),
        1e-4,
        "SIREN: sine activations, w0 = 30, targets in [-1, 1], constant lr",
        mixed_precision=False,
        target_range=(-1.0, 1.0),
        lr_schedule="constant",
    ),
    # SPDER's code (SPDER_image_batched.py): [-1, 1] targets, constant 1e-4, 501 steps, 5 hidden layers;
    # on the 128x128 camera in 300 steps its protocol gave 59.7 dB against 102.8 with this preset's
    "spder": _preset(
        FieldConfig(IdentityConfig(), SpderConfig()), 1e-4, "SPDER: sin(z) sqrt|z| activations", mixed_precision=False
    ),
    # coarse-to-fine (BARF's schedule, SAPE's "progressive" baseline): SAPE's protocol, a random 25 % of
    # the pixels at a constant 1e-3 for 5000 steps, is the one it is run under in the reproduction
    "progressive": _preset(
        FieldConfig(ProgressiveFrequencyConfig(n_frequencies=10), _MLP), 1e-3, "ReLU MLP on coarse-to-fine positional encoding"
    ),
    # PINs: no official code or image table could be read; nfield's own settings
    "pins": _preset(FieldConfig(IdentityConfig(), ProgressiveNetworkConfig()), 1e-3, "PINs: hierarchical levels of detail"),
    # SAPE's code (tasks_image_2d.py): random Fourier features (256, std 20) under the progressive
    # mask, [0, 1] targets, constant 1e-3, 5000 iterations on a random 25 % of the pixels
    "sape": _preset(
        FieldConfig(SpatiallyAdaptiveProgressiveConfig(n_frequencies=10), _MLP),
        1e-3,
        "ReLU MLP on spatially adaptive progressive encoding",
    ),
    # instant-ngp's image example (tiny-cuda-nn): 16 levels x 2 features, a 64 x 2 ReLU MLP, finest level
    # at the image's size; the paper reports no image PSNR (CAM's table has one, 26.11 / 32.98 dB)
    "hash": _preset(
        FieldConfig(HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=16), _SMALL_MLP),
        1e-2,
        "multiresolution hash grid + 64x2 MLP",
    ),
    # no paper of its own: the hash grid's layout without hashing (instant-ngp's dense baseline)
    "dense": _preset(
        FieldConfig(DenseGridConfig(n_levels=8, n_features_per_level=2), _SMALL_MLP),
        1e-2,
        "multiresolution dense grid + 64x2 MLP",
    ),
    # WIRE's code (wire_image_denoise.py): min-max to [0, 1], 5e-3 decaying to 0.1x, 2 hidden layers of
    # 181 complex units (a comment recommends omega0 20, s0 30 for images); on the camera at 64x64 its
    # 5e-3 gave 31.0 dB after 300 steps where 1e-3 gave 109 dB
    "wire": _preset(
        FieldConfig(IdentityConfig(), WireConfig()), 1e-3, "WIRE: complex Gabor wavelet activations", mixed_precision=False
    ),
    # FINER's code (train_image.py, run_finer.sh): [-1, 1] targets, 5e-4 decaying exponentially to
    # 0.1x over 5000 full-batch steps on 512x512 DIV2K images. The preset takes its [-1, 1] and keeps
    # nfield's cosine decay: the camera at 128x128, 300 steps, 137.5 dB (float32's floor), against
    # 92.8 with the exponential decay and 88.1 on [0, 1] with the cosine (the preset before)
    "finer": _preset(
        FieldConfig(IdentityConfig(), FinerConfig()),
        5e-4,
        "FINER: variable-periodic sin((|z|+1) z), targets in [-1, 1]",
        mixed_precision=False,
        target_range=(-1.0, 1.0),
    ),
    # Gaussian activations: the paper's code holds NeRF only; FINER's rerun fits images in [-1, 1] at
    # 5e-3 decaying exponentially to 0.1x, scale 30, and the preset follows it. At 128 px, 300 steps:
    # the camera 55.9 dB, the astronaut 39.9, against 45.3 and 34.0 with the same decay on [0, 1] and
    # 45.0 (camera) with [0, 1] and a cosine (the preset before). At the family benchmark's 64 px it
    # gains on 6 of 9 signals and loses on 3 (sierpinski -2.1 dB, video -1.5, discs -0.4), where the
    # decay on [0, 1] would gain on all 9 by less
    "gauss": _preset(
        FieldConfig(IdentityConfig(), GaussianNetworkConfig()),
        5e-3,
        "Gaussian activations exp(-z^2 / 2 sigma^2), targets in [-1, 1]",
        mixed_precision=False,
        target_range=(-1.0, 1.0),
        lr_schedule="exponential",
    ),
    # FR-INR's code (2d_image_fitting.py): [0, 1] targets, 1e-4 with one x0.1 drop at step 3000,
    # 10000 full-batch steps on kodim05, alpha 0.05, a 6-octave positional encoding
    "relu-pe-fr": _preset(
        FieldConfig(FrequencyConfig(n_frequencies=10), dataclasses.replace(_MLP, fourier_reparam=True)),
        3e-4,
        "ReLU MLP on positional encoding, Fourier-reparameterised weights (FR-INR)",
    ),
    # CAM's code (CAM_image.py): [0, 1] targets through a sigmoid, Fourier features sigma 10, the
    # modulation grids at 10x the lr, x0.1 at steps 1000 and 1500; by default it trains on every
    # other pixel (a generalisation test, not a fit)
    "cam": _preset(FieldConfig(IdentityConfig(), CamConfig()), 1e-3, "CAM: Fourier-feature MLP modulated by a coordinate grid"),
    # The shifted-basis code (osiriszjq/complex_encoding, 2D_*_points.py): [0, 1] targets, Gaussians along
    # 4 directions (x, y and the two diagonals), 128 per direction on its 512 px images, sigma 0.006 on
    # [0, 1) = 0.77 of the spacing, 4 hidden ReLU layers of 256, constant 5e-3 (weight decay 1e-8, left
    # out here), 2000 full-batch steps. nfield follows it but lays the lattice at the image's side
    # (up to 512) per direction, as a fit of every pixel needs (`resolve_image_preset`); the camera at
    # 128x128, 300 steps: 38.4 dB, against 36.8 with the axes alone at 1e-3 cosine (the preset before),
    # 30.6 without the diagonals and 50.1 at two samples per pixel (--n-samples 256)
    "shifted-gaussian": _preset(
        FieldConfig(
            ShiftedBasisConfig(basis="gaussian", n_samples=512, width_factor=0.77, diagonals=True),
            dataclasses.replace(_MLP, n_hidden_layers=4),
        ),
        5e-3,
        "ReLU MLP on shifted Gaussian bases along the axes and diagonals",
        lr_schedule="constant",
    ),
    # K-planes' code has no image experiment: this preset is nfield's own adaptation
    "planes": _preset(
        FieldConfig(FeaturePlanesConfig(n_features=32, resolutions=(64, 128, 256, 512)), _SMALL_MLP),
        1e-2,
        "K-planes style factorised features (lines in 2-D, product) + 64x2 MLP",
    ),
    # NeuRBF's code (configs/img.py): [0, 1] targets, 35000 steps of 2^18 pixels, Adam (0.9, 0.99,
    # 1e-15), 1e-2 for the decoder and 5e-3 for the kernels and grid, cosine
    "neurbf": _preset(
        FieldConfig(NeuRBFConfig(n_kernels=4096, n_levels=2, base_resolution=16), _SMALL_MLP),
        1e-2,
        "NeuRBF: adaptive radial bases with sinusoids, plus a grid + 64x2 MLP",
    ),
}
DEFAULT_MODEL = "siren"


def resolve_image_preset(name: str, overrides: dict[str, Any], height: int, width: int) -> Preset:
    """The preset `name` with hyper-parameter `overrides` applied (each key to whichever part, encoding
    or network, has it; a key neither has is an error) and grid scales fitted to the image size."""
    if name not in IMAGE_PRESETS:
        raise NfieldError(f"unknown model '{name}'; choose one of: {', '.join(IMAGE_PRESETS)}")
    preset = IMAGE_PRESETS[name]
    field = apply_overrides(preset.field, overrides, name, others=preset_fields(IMAGE_PRESETS))
    encoding = field.encoding
    if isinstance(encoding, (HashGridConfig, DenseGridConfig)) and "per_level_scale" not in overrides:
        encoding = dataclasses.replace(encoding, per_level_scale=grid_scale_for(encoding, max(height, width)))
    if isinstance(encoding, ShiftedBasisConfig) and "n_samples" not in overrides:
        encoding = shifted_lattice_for(encoding, max(height, width))
    if isinstance(encoding, NeuRBFConfig) and "per_level_scale" not in overrides:
        # NeuRBF's official image setting puts the grid part's finest level at half the image size.
        finest = max(height, width) / 2
        scale = (finest / encoding.base_resolution) ** (1 / (encoding.n_levels - 1)) if encoding.n_levels > 1 else 1.0
        encoding = dataclasses.replace(encoding, per_level_scale=max(1.0, scale))
    return dataclasses.replace(preset, field=dataclasses.replace(field, encoding=encoding))


#: Most lattice samples per direction of a shifted basis (an audio clip's thousands of samples would
#: give a first layer larger than any budget).
MAX_SHIFTED_SAMPLES = 512


def shifted_lattice_for(encoding: ShiftedBasisConfig, signal_size: int) -> ShiftedBasisConfig:
    """The shifted basis with one lattice sample per signal sample along each direction, at most
    `MAX_SHIFTED_SAMPLES` (`signal_size`: the signal's largest side in samples)."""
    return dataclasses.replace(encoding, n_samples=max(2, min(signal_size, MAX_SHIFTED_SAMPLES)))


def grid_scale_for(grid: HashGridConfig | DenseGridConfig, finest_resolution: int) -> float:
    """Per-level scale that takes `base_resolution` to `finest_resolution` over `n_levels` levels."""
    if grid.n_levels <= 1 or finest_resolution <= grid.base_resolution:
        return 1.0
    return math.exp(math.log(finest_resolution / grid.base_resolution) / (grid.n_levels - 1))


def new_image_run(
    source: str,
    model: str,
    overrides: dict[str, Any],
    task_overrides: dict[str, Any],
    device: torch.device,
    downscale: int = 1,
) -> tuple[TrainConfig, dict[str, Any], Image]:
    """A new image run from the preset `model`: (its training config, the task's part of config.json,
    the loaded image). `task_overrides` replace keys of the task settings chosen for `device`."""
    image = load_image(source, downscale)
    field_overrides, target_range = split_target_range(overrides)
    preset = resolve_image_preset(model, field_overrides, image.height, image.width)
    task_cfg = dataclasses.replace(preset.task_for(device), **task_overrides)
    if task_cfg.batch_size <= 0:
        raise NfieldError(f"--batch-size must be positive, got {task_cfg.batch_size}")
    field_cfg = mapped_field(preset, target_range, (0.0, image.data_range))
    return preset.train, ImageTask.run_config(image, downscale, field_cfg, task_cfg), image
