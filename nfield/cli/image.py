"""Image commands: ``fit-image`` and ``render-image``."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

from nfield.cli.options import FieldOptions, RunFlags, TrainingCommand, device_default, gradient_adjustment_flags, train_options
from nfield.errors import NfieldError
from nfield.flag_hints import PRESET, STATED, hidden_alias
from nfield.presets.image import IMAGE_PRESETS
from nfield.runs.collection import is_collection
from nfield.runs.single import load_run
from nfield.runs.views import render_image
from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig
from nfield.tasks.teaching import TeachingConfig

ImageTrainOptions = train_options(IMAGE_PRESETS)
_IGA = GradientAdjustmentConfig()  # IGA's defaults, stated in the help


@dataclass(frozen=True)
class ImageModelOptions(FieldOptions):
    """Hyper-parameter overrides; unset keys keep the model's preset value. Each key goes to the
    encoding or network that has it; a key the chosen model does not have is an error."""

    target_range: Annotated[Optional[tuple[float, float]], PRESET] = None
    """LO HI: the range the network learns the signal in (siren, finer and gauss: -1 1, as their papers' code;
    otherwise the signal's own units); outputs and metrics stay in the signal's units"""
    start_fraction: Annotated[Optional[float], PRESET] = None
    """progressive schedules: fraction of training where bands start opening"""
    end_fraction: Annotated[Optional[float], PRESET] = None  # progressive schedules: fraction of training where all are open
    grid_resolution: Annotated[Optional[int], PRESET] = None  # SAPE: resolution of the per-region progress grid
    error_threshold: Annotated[Optional[float], PRESET] = None  # SAPE: local squared error under which a region stops progressing
    n_lods: Annotated[Optional[int], PRESET] = None  # pins: levels of detail
    n_levels: Annotated[Optional[int], PRESET] = None  # grid levels (hash, dense)
    n_features_per_level: Annotated[Optional[int], PRESET] = None  # grid features per level
    log2_hashmap_size: Annotated[Optional[int], PRESET] = None  # hash table size per level, log2
    base_resolution: Annotated[Optional[int], PRESET] = None  # coarsest grid resolution
    per_level_scale: Annotated[Optional[float], PRESET] = None
    """growth factor between grid levels (default: finest level = image size)"""
    fourier_reparam: Annotated[Optional[bool], PRESET] = None
    """ReLU MLPs: Fourier-reparameterised hidden weights W = Lambda B (FR-INR)"""
    omega0: Annotated[Optional[float], PRESET] = None  # wire: frequency of the Gabor wavelet
    s0: Annotated[Optional[float], PRESET] = None  # wire: scale of the Gabor wavelet's Gaussian window
    modulation_resolution: Annotated[Optional[int], PRESET] = None  # cam: vertices per axis of the modulation grids
    basis: Annotated[Optional[str], PRESET] = None  # shifted-gaussian: gaussian, sinc or triangle
    n_samples: Annotated[Optional[int], PRESET] = None  # shifted-gaussian: lattice samples per axis
    width_factor: Annotated[Optional[float], PRESET] = None  # shifted-gaussian: basis width over the lattice spacing
    diagonals: Annotated[Optional[bool], PRESET] = None  # shifted-gaussian: lattices along the diagonals too (4 directions)
    resolutions: Annotated[Optional[tuple[int, ...]], PRESET] = None  # planes: vertices per axis of each scale
    combine: Annotated[Optional[str], PRESET] = None  # planes: product or sum
    n_kernels: Annotated[Optional[int], PRESET] = None  # neurbf: adaptive radial basis kernels
    kernel: Annotated[Optional[str], PRESET] = None  # neurbf: inverse_quadric or gaussian


@dataclass(frozen=True)
class FitImage(TrainingCommand):
    """Fit a neural field to an image (PNG/JPEG/TIFF/EXR/HDR, or a bundled name such as 'camera').

    Writes a run directory with config.json, metrics.jsonl, checkpoints/, reconstruction.png and
    error.png; prints the final metrics as JSON on the last line.
    """

    image: tyro.conf.Positional[str]
    """image file, a scikit-image sample name (camera, astronaut, coffee, chelsea, ...), or a folder or quoted glob
    ('photos/*.png') to fit every image in it: one run directory each under --out, plus index.jsonl"""
    model: Annotated[Optional[str], STATED] = None
    """relu, relu-pe, fourier, learnable-fourier, siren, spder, progressive, pins, sape, hash, dense, wire, finer, gauss,
    relu-pe-fr, cam, shifted-gaussian, planes, neurbf (default siren)"""
    downscale: int = 1  # integer box-filter downscaling of the image before fitting
    batch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=device_default(IMAGE_PRESETS, "batch_size"))] = None
    """pixels per step; smaller images train full-batch"""
    teaching: bool = False  # INT (nonparametric teaching): each step trains on the pixels fitted worst
    iga: bool = False  # IGA (inductive gradient adjustment): gradients rebalanced by the eNTK against spectral bias
    iga_patch_size: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=f"(default: {_IGA.patch_size})")] = None
    """IGA: side in pixels of the patches that each give one eNTK sample"""
    iga_n_balanced: Annotated[Optional[int], tyro.conf.arg(help_behavior_hint=f"(default: {_IGA.n_balanced})")] = None
    """IGA: the n largest eNTK eigenvalues are lowered to the (n+1)-th"""
    train_pixels: Annotated[Optional[str], tyro.conf.arg(help_behavior_hint="(default: all)")] = None
    """all; even (the even rows and columns, a quarter; the odd-odd pixels held out) or random (--train-fraction of the
    pixels; the rest held out): the papers' generalisation protocols, evaluations add psnr_held_out"""
    train_fraction: Annotated[Optional[float], tyro.conf.arg(help_behavior_hint="(default: 0.25)")] = None
    """--train-pixels random: the fraction of the pixels trained on (drawn from --seed)"""
    signals_per_batch: int = 0
    """folders and globs: images of one size trained together as one stacked model (0: as many as fit in memory)"""
    run: Annotated[RunFlags, tyro.conf.OmitArgPrefixes] = RunFlags()
    train: Annotated[ImageTrainOptions, tyro.conf.OmitArgPrefixes] = ImageTrainOptions()
    model_options: Annotated[ImageModelOptions, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="model")] = ImageModelOptions()

    def __call__(self) -> None:
        if self.train_fraction is not None and self.train_pixels != "random":
            raise NfieldError("--train-fraction sets how many pixels --train-pixels random trains on; add --train-pixels random")
        task = {
            "batch_size": self.batch_size,
            "teaching": TeachingConfig(enabled=True) if self.teaching else None,
            "gradient_adjustment": gradient_adjustment_flags(self.iga, self.iga_patch_size, self.iga_n_balanced, _IGA),
            "train_pixels": self.train_pixels,
            "train_fraction": self.train_fraction,
        }
        if is_collection(self.image):
            self.submit_collection("image", self.image, task, {"downscale": self.downscale}, self.signals_per_batch)
        else:
            self.submit("image", self.image, task, {"downscale": self.downscale})


@dataclass(frozen=True)
class RenderImage:
    """Re-render a fitted image at any resolution (super-resolution) from its run directory alone,
    chunk by chunk with a progress bar."""

    run_dir: tyro.conf.Positional[Path]  # a run directory written by fit-image
    scale: float = 1.0  # output size relative to the fitted image (4 = four times wider and taller)
    out: Annotated[Optional[Path], STATED] = None
    """output image (default RUN_DIR/render_x<scale>.png): PNG/JPEG in 8 bits, or .tif for the raw float32
    values (HDR runs keep their range)"""
    lod: Annotated[Optional[int], hidden_alias("--level", hint="")] = None  # also --level (hidden: mesh --level is a density)
    """level of detail for models that have them (pins); default the finest"""
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    progress: bool = True  # show the progress bar

    def __call__(self) -> None:
        if not 0 < self.scale < math.inf:
            raise NfieldError(f"--scale must be a positive finite number, got {self.scale}")
        run = load_run(self.run_dir, self.device)
        if run.kind != "image":
            raise NfieldError(f"{self.run_dir}: is a '{run.kind}' run; render-image needs an image run (use render)")
        height, width = round(run.config["image"]["height"] * self.scale), round(run.config["image"]["width"] * self.scale)
        out = self.out or Path(self.run_dir) / f"render_x{self.scale:g}.png"
        print(render_image(run, width, height, out, self.lod, self.progress), file=sys.stderr)
