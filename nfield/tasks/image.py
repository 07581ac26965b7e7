"""Image fitting: a field maps pixel coordinates in [-1, 1]^2 to intensities.

Small images train full-batch; larger ones on random pixel batches drawn from the image held in
its stored dtype on the device, so coordinates are only ever made for the pixels of one batch
(an 8k x 8k image costs its pixels, not 64M coordinate pairs). Rendering at any resolution is
chunked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nfield.colormap import inferno
from nfield.data.images import Image, pixel_coordinates, save_image
from nfield.fields import Field, FieldConfig
from nfield.metrics import psnr, psnr_from_mse, ssim

#: Absolute error mapped to the top of the error map's colour scale.
ERROR_MAP_MAX = 0.1


@dataclass(frozen=True)
class ImageTaskConfig:
    batch_size: int = 2**18  # pixels per step; images with at most this many pixels train full-batch
    render_chunk: int = 2**18  # coordinates per forward pass when rendering


class ImageTask:
    """Fit `image` with a `Field` of 2 inputs and one output per image channel.

    Args:
        image: the target (its pixels are moved to `device`).
        field_cfg: the field to fit.
        cfg: batch and rendering sizes.
        device: where training runs.
        seed: seeds the pixel sampler's own generator (saved in checkpoints for exact resume).
    """

    name = "fit-image"

    def __init__(
        self,
        image: Image,
        field_cfg: FieldConfig,
        cfg: ImageTaskConfig = ImageTaskConfig(),
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        self.cfg, self.device = cfg, torch.device(device)
        self.image = image.to(self.device)
        self.model = Field(2, image.channels, field_cfg).to(self.device)
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(seed)
        self.n_pixels = image.height * image.width
        self.full_batch = self.n_pixels <= cfg.batch_size
        if self.full_batch:
            index = torch.arange(self.n_pixels, device=self.device)
            self._coords = pixel_coordinates(index, image.height, image.width)
            self._targets = self.image.values_at(index)
        self._feedback = [m for m in self.model.modules() if callable(getattr(m, "observe_error", None))]

    # --- the trainer's interface -------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": list(self.model.parameters())}]

    def sample(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(coords (B, 2), targets (B, C)) for one step."""
        if self.full_batch:
            return self._coords, self._targets
        index = torch.randint(0, self.n_pixels, (self.cfg.batch_size,), device=self.device, generator=self.generator)
        return pixel_coordinates(index, self.image.height, self.image.width), self.image.values_at(index)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        coords, targets = batch
        squared = (self.model(coords).float() - targets) ** 2
        for module in self._feedback:
            module.observe_error(coords, squared.detach().mean(dim=-1))
        mse = squared.mean()
        return mse, {"psnr": psnr_from_mse(mse.detach(), self.image.data_range)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """PSNR (dB) and SSIM of the full-resolution reconstruction, plus PSNR per level of detail."""
        target = self.image.as_float()
        rendered = self.render(self.image.height, self.image.width)
        metrics = {
            "psnr": psnr(rendered, target, self.image.data_range),
            "ssim": ssim(rendered, target, self.image.data_range),
        }
        for level in range(self.model.n_levels - 1):
            metrics[f"psnr_level{level}"] = psnr(
                self.render(self.image.height, self.image.width, level=level), target, self.image.data_range
            )
        return metrics

    def export(self, run_dir: Path) -> None:
        """Write reconstruction.png, error.png and, where the model has them, per-level renders and
        the SAPE progress map."""
        write_outputs(self.model, self.image, Path(run_dir), self.cfg.render_chunk)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])

    # --- rendering -----------------------------------------------------------------------------
    def render(self, height: int, width: int, level: int | None = None) -> torch.Tensor:
        return render_field(self.model, height, width, level=level, chunk=self.cfg.render_chunk)


@torch.no_grad()
def render_field(
    model: nn.Module,
    height: int,
    width: int,
    level: int | None = None,
    chunk: int = 2**18,
    out_device: torch.device | str | None = None,
) -> torch.Tensor:
    """Evaluate an image field at every pixel centre of a height x width grid.

    Coordinates are generated per chunk, so memory is bounded by `chunk` points plus the output.

    Returns:
        (height, width, out_dim) float32 on `out_device` (default: the model's device).
    """
    device = next(model.parameters()).device
    out = torch.empty(height * width, model.out_dim, dtype=torch.float32, device=out_device or device)
    was_training = model.training
    model.eval()
    for start in range(0, height * width, chunk):
        index = torch.arange(start, min(start + chunk, height * width), device=device)
        values = model(pixel_coordinates(index, height, width), level=level)
        out[start : start + len(index)] = values.float().to(out.device)
    model.train(was_training)
    return out.reshape(height, width, model.out_dim)


def write_outputs(model: Field, image: Image, run_dir: Path, chunk: int = 2**18) -> None:
    rendered = render_field(model, image.height, image.width, chunk=chunk)
    target = image.as_float()
    save_image(run_dir / "reconstruction.png", rendered / image.data_range)
    error = (rendered - target).abs().mean(dim=-1) / image.data_range
    save_image(run_dir / "error.png", inferno(error / ERROR_MAP_MAX))
    for level in range(model.n_levels - 1):
        save_image(
            run_dir / "levels" / f"level{level}.png",
            render_field(model, image.height, image.width, level=level, chunk=chunk) / image.data_range,
        )
    for module in model.modules():
        progress = getattr(module, "progress_map", None)
        if isinstance(progress, torch.Tensor) and progress.dim() == 2:  # indexed [x, y]; images are [y, x]
            at_image_size = F.interpolate(progress.T[None, None].float(), size=(image.height, image.width), mode="nearest")
            save_image(run_dir / "progress.png", inferno(at_image_size[0, 0]))
