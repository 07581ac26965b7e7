"""Image fitting: a field maps pixel coordinates in [-1, 1]^2 to intensities.

Small images train full-batch; larger ones on random pixel batches drawn from the image held in
its stored dtype on the device, so coordinates are only ever made for the pixels of one batch
(an 8k x 8k image costs its pixels, not 64M coordinate pairs). Rendering at any resolution is
chunked the same way.

Held-out pixels (`ImageTaskConfig.train_pixels`): the generalisation protocols of the papers train
on part of the image and score the rest. "even" trains on the pixels of even row and column (a
quarter, the image at half resolution) and holds out the odd-odd ones, the pixels farthest from
any trained one (Fourier features' test set; CAM's "generalisation"); "random" trains on a random
`train_fraction` of the pixels (drawn from the run's seed) and holds out all the others (SAPE's and
the shifted bases' setting). Evaluations then report ``psnr_held_out`` beside the whole image's
``psnr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from nfield.colormap import inferno
from nfield.data.images import Image, load_image, pixel_coordinates, save_image
from nfield.distributed import data_parallel, loss_share, shard, whole_step_batch
from nfield.errors import NfieldError
from nfield.fields import Field, FieldConfig
from nfield.kernels import module_version
from nfield.metrics import psnr, psnr_from_mse, ssim
from nfield.progress import progress_bar
from nfield.tasks.gradient_adjustment import GradientAdjustmentConfig, patch_groups
from nfield.tasks.signal import SignalTask
from nfield.tasks.teaching import TeachingConfig

#: How the pixels trained on are chosen (`ImageTaskConfig.train_pixels`).
TRAIN_PIXELS = ("all", "even", "random")
#: Absolute error mapped to the top of the error map's colour scale.
ERROR_MAP_MAX = 0.1
#: Most values (pixels x channels x levels of detail) of an evaluation's renders kept for the export after it (256 MB).
KEPT_RENDER_VALUES = 2**26


@dataclass(frozen=True)
class ImageTaskConfig:
    batch_size: int = 2**18  # pixels per step; images with at most this many pixels train full-batch
    render_chunk: int = 2**18  # coordinates per forward pass when rendering
    teaching: TeachingConfig = field(default_factory=TeachingConfig)  # INT: train on the worst-fitted pixels
    gradient_adjustment: GradientAdjustmentConfig = field(default_factory=GradientAdjustmentConfig)  # IGA: eNTK-balanced steps
    train_pixels: str = "all"  # all, even (even rows and columns; odd-odd held out) or random (train_fraction of them)
    train_fraction: float = 0.25  # train_pixels=random: the fraction of the pixels trained on

    def __post_init__(self) -> None:
        if self.train_pixels not in TRAIN_PIXELS:
            raise NfieldError(f"--train-pixels must be one of {', '.join(TRAIN_PIXELS)}, got '{self.train_pixels}'")
        if not 0.0 < self.train_fraction < 1.0:
            raise NfieldError(f"--train-fraction must be between 0 and 1 (exclusive), got {self.train_fraction}")
        held_out = self.train_pixels != "all"
        if held_out and (self.teaching.enabled or self.gradient_adjustment.enabled):
            raise NfieldError("--train-pixels even/random holds pixels out; INT (--teaching) and IGA (--iga) fit every pixel")


class ImageTask(SignalTask):
    """Fit `image` with a `Field` of 2 inputs and one output per image channel.

    Args:
        image: the target (its pixels are moved to `device`); None builds the task without its data
            (`channels` then says the field's outputs), enough to render a trained field.
        field_cfg: the field to fit.
        cfg: batch and rendering sizes.
        device: where training runs.
        seed: seeds the pixel sampler's own generator (saved in checkpoints for exact resume).
        channels: output channels when `image` is None.
    """

    name = "fit-image"
    kind = "image"
    config_class = ImageTaskConfig
    data_noun = "image"
    output_files = ("reconstruction.png", "error.png")
    batch_key = "batch_size"  # the task setting that sizes a step's batch (scaled by the ranks of a data-parallel run)

    def __init__(
        self,
        image: Image | None,
        field_cfg: FieldConfig,
        cfg: ImageTaskConfig = ImageTaskConfig(),
        device: torch.device | str = "cpu",
        seed: int = 0,
        channels: int | None = None,
    ):
        device = torch.device(device)
        image = None if image is None else image.to(device)
        super().__init__(image, 2, image.channels if image is not None else channels, field_cfg, cfg, device, seed)
        if image is not None:  # components initialised from the signal (NeuRBF's kernel centres)
            for module in self.model.modules():
                if callable(getattr(module, "init_from_signal", None)):
                    module.init_from_signal(image.as_float(), image.height, image.width)
        self._feedback = [m for m in self.model.modules() if callable(getattr(m, "observe_error", None))]
        self._kept_renders: tuple[tuple, dict[int, torch.Tensor]] | None = None  # (the weights' versions, renders)
        self.full_batch = False
        # data-parallel training: `batch_size` is the whole step's batch (the run was started with the
        # per-rank --batch-size times the ranks); every rank draws it from the same stream and keeps
        # its own block (`nfield.distributed`), so a run resumes exactly with any number of ranks
        self.parallel = data_parallel()
        if self.parallel is not None and self.adjuster is not None:
            raise NfieldError("IGA needs every pixel of a batch in one process (its eNTK); train it without torchrun")
        self.global_batch = cfg.batch_size
        self._share = 1.0  # this rank's loss factor for the batch last sampled (`loss_share`)
        self._trained: torch.Tensor | None = None  # (T,) row-major indices of the pixels trained on (None: all)
        self._held_out: torch.Tensor | None = None  # (H,) the pixels scored as held out
        if image is not None:
            self.n_pixels = image.height * image.width
            if cfg.train_pixels != "all":
                self._trained, self._held_out = split_pixels(image.height, image.width, cfg, seed, self.device)
            n_trained = self.n_pixels if self._trained is None else len(self._trained)
            self.full_batch = n_trained <= self.global_batch
            if self.full_batch:
                index = torch.arange(self.n_pixels, device=self.device) if self._trained is None else self._trained
                self._coords = pixel_coordinates(index, image.height, image.width)
                self._targets = image.values_at(index)

    @property
    def image(self) -> Image | None:
        """The image fitted, on the task's device (None: built without it)."""
        return self.signal

    # --- a run directory's task ---------------------------------------------------------------
    @classmethod
    def run_config(cls, image: Image, downscale: int, field_cfg: FieldConfig, cfg: ImageTaskConfig) -> dict[str, Any]:
        """The task's part of a new run's config.json: the image, the field and the task settings."""
        source = Path(image.source)
        fitted = {
            "source": str(source.resolve()) if source.exists() else image.source,
            "downscale": downscale,
            "height": image.height,
            "width": image.width,
            "channels": image.channels,
            "high_dynamic_range": image.high_dynamic_range,
            "data_range": image.data_range,
        }
        return cls._config_part(fitted, field_cfg, cfg)

    @staticmethod
    def load_data(config: dict[str, Any], source: str | None = None) -> Image:
        """The run's image (or `source` instead), which must have the size the run was fitted to."""
        fitted = config["image"]
        image = load_image(source or fitted["source"], fitted["downscale"], stored_channels=fitted["channels"])
        if (image.height, image.width, image.channels) != (fitted["height"], fitted["width"], fitted["channels"]):
            raise NfieldError(
                f"{image.source}: is {image.width}x{image.height}x{image.channels}, "
                f"the run was fitted to {fitted['width']}x{fitted['height']}x{fitted['channels']}"
            )
        return image

    def _data_summary(self) -> str:
        image = self._data()
        return f"{image.width}x{image.height}x{image.channels}"

    # --- the trainer's interface -------------------------------------------------------------
    def sample(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(coords (B, 2), targets (B, C)) for one step; with teaching, the candidates (every pixel,
        or a random batch of them) the field fits worst, re-picked on the teacher's schedule; with
        IGA on a large image, whole random patches (the groups IGA's eNTK is sampled from)."""
        if self.teacher is not None:
            return self._taught(step)
        if self.full_batch:
            return self._local(self._coords), self._local(self._targets)
        image = self._data()
        index = self._local(self._random_patches() if self.adjuster is not None else self._random_pixels())
        return pixel_coordinates(index, image.height, image.width), image.values_at(index)

    def _local(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's block of a step's whole batch (all of it in one process), remembering its share."""
        if self.parallel is None:
            return batch
        local = shard(batch)
        self._share = loss_share(len(local), len(batch))
        return local

    def _random_pixels(self) -> torch.Tensor:
        """(B,) row-major indices of a step's whole batch, drawn uniformly (with replacement) from
        the pixels trained on."""
        if self._trained is None:
            return torch.randint(0, self.n_pixels, (self.global_batch,), device=self.device, generator=self.generator)
        pick = torch.randint(0, len(self._trained), (self.global_batch,), device=self.device, generator=self.generator)
        return self._trained[pick]

    def _random_patches(self) -> torch.Tensor:
        """(B,) row-major indices of the pixels of batch_size // patch_size^2 (at least one) random
        patches, border patches cut to the image."""
        image, side = self._data(), self.cfg.gradient_adjustment.patch_size
        rows, cols = -(-image.height // side), -(-image.width // side)
        n = min(max(1, self.cfg.batch_size // side**2), rows * cols)
        patch = torch.randperm(rows * cols, device=self.device, generator=self.generator)[:n]
        offset = torch.arange(side, device=self.device)
        y = ((patch // cols) * side)[:, None, None] + offset[None, :, None]
        x = ((patch % cols) * side)[:, None, None] + offset[None, None, :]
        inside = (y < image.height) & (x < image.width)
        return (y * image.width + x)[inside]

    def _taught(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, teacher = self._data(), self.teacher
        if teacher.due(step, self.total):
            if self.full_batch:
                index = torch.arange(self.n_pixels, device=self.device)
            elif self.adjuster is not None:  # IGA's groups must stay few: candidates are whole patches
                index = self._random_patches()
            else:
                index = self._random_pixels()
            coords, targets = pixel_coordinates(index, image.height, image.width), image.values_at(index)
            teacher.pick(step, self.total, index, coords, targets, self.model)
        picked = self._local(teacher.picked)
        return pixel_coordinates(picked, image.height, image.width), image.values_at(picked)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the loss to backpropagate, {"psnr"}): the MSE; with IGA, a loss whose value is the MSE and
        whose gradient is IGA's 2 / (B C) J^T S r (see `nfield.tasks.gradient_adjustment`)."""
        coords, targets = batch
        outputs = self.model(coords).float()
        squared = (outputs - targets) ** 2
        for module in self._feedback:
            module.observe_error(coords, squared.detach().mean(dim=-1))
        mse, metrics = self.fit_terms(squared)
        if self.adjuster is None:
            return mse * self._share if self.parallel is not None else mse, metrics
        image = self._data()
        groups, slots = patch_groups(coords, (image.width, image.height), self.cfg.gradient_adjustment.patch_size)
        adjusted = self.adjuster.adjusted_residuals(self.model, coords, outputs - targets, groups, slots)
        surrogate = self.adjuster.surrogate_loss(outputs, adjusted)
        return mse.detach() + (surrogate - surrogate.detach()), metrics

    def fit_terms(self, squared: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the MSE, {"psnr"}) of the squared errors (B, C) of a batch."""
        mse = squared.mean()
        return mse, {"psnr": psnr_from_mse(mse.detach(), self._data().data_range)}

    def evaluation_pictures(self) -> dict[str, torch.Tensor]:
        """{"reconstruction": (H, W, C) the finest level the last evaluation rendered, in [0, 1] of
        the image's range}, or {} when it was too large to keep (what training logs draw)."""
        if self._kept_renders is None:
            return {}
        return {"reconstruction": self._kept_renders[1][self.model.n_lods - 1] / self._data().data_range}

    # --- the field-loss protocol (`nfield.training.stacked.FieldLossTask`): many images as one model ---
    field_method = "forward"
    coordinate_dim = 2
    needs_input_gradient = False

    def field_inputs(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The batch's pixel centres (B, 2) in [-1, 1]."""
        return batch[0]

    def field_loss(
        self, batch: tuple[torch.Tensor, torch.Tensor], outputs: torch.Tensor, gradient: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(the MSE, {"psnr"}) of the field's colours `outputs` (B, C) at the batch's pixels."""
        return self.fit_terms((outputs - batch[1]) ** 2)

    @classmethod
    def across_ranks(cls, task_part: dict[str, Any], ranks: int) -> dict[str, Any]:
        """A new data-parallel run's config: its batch is the whole step's (`whole_step_batch`);
        `sample` draws it on every rank and keeps the rank's shard."""
        return whole_step_batch(task_part["task_config"], cls.batch_key, ranks)

    @torch.no_grad()
    def evaluate(self, progress: bool = False, leave: bool = True) -> dict[str, float]:
        """PSNR (dB) and SSIM of the full-resolution reconstruction, plus PSNR per level of detail
        and, with held-out pixels, ``psnr_held_out`` over them, with a bar over the pixels rendered
        when `progress` is set (`leave`: keep it when done)."""
        image = self._data()
        target = image.as_float()
        renders = self._renders(progress, "eval", leave)
        finest = renders[self.model.n_lods - 1]
        metrics = {"psnr": psnr(finest, target, image.data_range), "ssim": ssim(finest, target, image.data_range)}
        if self._held_out is not None:
            channels = target.shape[-1]
            held_out = finest.reshape(-1, channels)[self._held_out], target.reshape(-1, channels)[self._held_out]
            metrics["psnr_held_out"] = psnr(*held_out, image.data_range)
        for lod in range(self.model.n_lods - 1):
            metrics[f"psnr_lod{lod}"] = psnr(renders[lod], target, image.data_range)
        return metrics

    def write_outputs(self, run_dir: Path, progress: bool = False) -> None:
        """Write reconstruction.png, error.png and, where the model has them, per-LOD renders and
        the SAPE progress map (renders of the last evaluation are not made again)."""
        write_outputs(self.model, self._data(), Path(run_dir), self._renders(progress, "outputs"))

    def _renders(self, progress: bool, label: str, leave: bool = True) -> dict[int, torch.Tensor]:
        """{lod: (H, W, C)} the image at every level of detail, at its own size; made once per
        change of the weights (an evaluation's renders serve the export after it), unless they
        hold over `KEPT_RENDER_VALUES` values."""
        image = self._data()
        weights = module_version(self.model)
        if self._kept_renders is None or self._kept_renders[0] != weights:
            n_lods = self.model.n_lods
            total = n_lods * image.height * image.width
            self._kept_renders = None
            with progress_bar(total=total, desc=label, unit="px", unit_scale=True, enabled=progress, leave=leave) as bar:
                renders = {
                    lod: render_field(
                        self.model, image.height, image.width, lod=lod, chunk=self.cfg.render_chunk, on_chunk=bar.update
                    )
                    for lod in range(n_lods)
                }
            if total * self.model.out_dim > KEPT_RENDER_VALUES:  # a large image is rendered again rather than held
                return renders
            self._kept_renders = (weights, renders)
        return self._kept_renders[1]

    # --- rendering -----------------------------------------------------------------------------
    def render(self, height: int, width: int, lod: int | None = None) -> torch.Tensor:
        """(height, width, channels) float32 at level of detail `lod` (None: the finest)."""
        return render_field(self.model, height, width, lod=lod, chunk=self.cfg.render_chunk)


def split_pixels(
    height: int, width: int, cfg: ImageTaskConfig, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """((T,), (H,)) row-major indices of the pixels trained on and of those held out, by
    `cfg.train_pixels`: "even" trains on even rows and columns and holds out the odd-odd pixels;
    "random" trains on round(train_fraction * pixels) of them, drawn from `seed` alone (the same on
    every rank and after a resume), and holds out the rest."""
    n = height * width
    if cfg.train_pixels == "even":
        if min(height, width) < 2:
            raise NfieldError(f"--train-pixels even needs an image of at least 2x2 pixels, got {width}x{height}")
        index = torch.arange(n, device=device).reshape(height, width)
        return index[0::2, 0::2].reshape(-1), index[1::2, 1::2].reshape(-1)
    n_trained = min(n - 1, max(1, round(cfg.train_fraction * n)))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    return order[:n_trained].sort().values.to(device), order[n_trained:].sort().values.to(device)


@torch.no_grad()
def render_field(
    model: nn.Module,
    height: int,
    width: int,
    lod: int | None = None,
    chunk: int = 2**18,
    out_device: torch.device | str | None = None,
    progress: bool = False,
    on_chunk: Callable[[int], Any] | None = None,
) -> torch.Tensor:
    """Evaluate an image field at every pixel centre of a height x width grid, at level of detail
    `lod` (None: the finest), with a progress bar over the chunks when `progress` is set, and
    `on_chunk(n_pixels)` called after each chunk (a caller's own bar).

    Coordinates are generated per chunk, so memory is bounded by `chunk` points plus the output.

    Returns:
        (height, width, out_dim) float32 on `out_device` (default: the model's device).
    """
    device = next(model.parameters()).device
    out = torch.empty(height * width, model.out_dim, dtype=torch.float32, device=out_device or device)
    was_training = model.training
    model.eval()
    n_pixels = height * width
    with progress_bar(total=n_pixels, desc="render", unit="px", unit_scale=True, enabled=progress) as bar:
        for start in range(0, n_pixels, chunk):
            index = torch.arange(start, min(start + chunk, n_pixels), device=device)
            values = model(pixel_coordinates(index, height, width), lod=lod)
            out[start : start + len(index)] = values.float().to(out.device)
            bar.update(len(index))
            if on_chunk is not None:
                on_chunk(len(index))
    model.train(was_training)
    return out.reshape(height, width, model.out_dim)


def write_outputs(model: Field, image: Image, run_dir: Path, renders: dict[int, torch.Tensor]) -> None:
    """reconstruction.png, error.png, lods/lod<k>.png and progress.png (SAPE) from `renders`
    ({lod: (H, W, C)} at every level of detail, the finest last) into `run_dir`."""
    rendered = renders[model.n_lods - 1]
    target = image.as_float()
    save_image(run_dir / "reconstruction.png", rendered / image.data_range)
    error = (rendered - target).abs().mean(dim=-1) / image.data_range
    save_image(run_dir / "error.png", inferno(error / ERROR_MAP_MAX))
    for lod in range(model.n_lods - 1):
        save_image(run_dir / "lods" / f"lod{lod}.png", renders[lod] / image.data_range)
    for module in model.modules():
        progress = getattr(module, "progress_map", None)
        if isinstance(progress, torch.Tensor) and progress.dim() == 2:  # indexed [x, y]; images are [y, x]
            at_image_size = F.interpolate(progress.T[None, None].float(), size=(image.height, image.width), mode="nearest")
            save_image(run_dir / "progress.png", inferno(at_image_size[0, 0]))
