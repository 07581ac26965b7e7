"""Rendering a trained radiance model: rays, images in chunks, and camera paths.

The model is the mapping of modules a NeRF run trains (an `nn.ModuleDict`, as
`nfield.tasks.nerf.build_nerf_model` builds it), used by its entries only:

- ``field``: the radiance field, (positions (M, 3), directions (M, 3)) -> (rgb (M, 3), sigma (M,)),
  with an ``aabb`` (2, 3) buffer (its box, world units) and a ``density`` method (points (M, 3) ->
  (M,) densities); optionally ``density_and_features`` and ``color_of``, which split the two
  networks so that rendering without gradients evaluates the density network once per sample
  (`render_culled`);
- ``grid``: an `nfield.render.occupancy.OccupancyGrid`, for the ``occupancy`` sampler;
- ``coarse``: a second radiance field, for the ``hierarchical`` sampler.

How it samples and composites comes from a `RadianceRenderSettings` (a NeRF task builds it from
its config with ``NeRFTaskConfig.render_settings()``); the near plane comes with the scene. Two
samplers:

- ``occupancy`` (instant-ngp): the grid marched with a fixed step, the box's diagonal /
  ``steps_per_ray`` (`march_step`), rays stopped once their transmittance falls below
  ``early_stop_eps``;
- ``hierarchical`` (NeRF): ``n_samples`` stratified samples rendered with ``coarse``, then
  ``field`` over the coarse intervals cut at ``n_importance`` importance samples.

Every ray is sampled over its span inside the field's box from the near plane on (`ray_bounds`).
Units: positions, the near plane and steps in world units; t along a ray in units of its
direction's length (world units for the unit directions of `nfield.render.cameras`); colours in
[0, 1]; depth the expected t where a ray stops, given that it stops; opacity in [0, 1].

Example::

    >>> import torch
    >>> aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    >>> origins, directions = torch.tensor([[0.0, 0.0, 3.0]] * 2), torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    >>> t_near, t_far = ray_bounds(origins, directions, aabb, near=0.5)
    >>> t_near.tolist(), t_far.tolist()  # through the box from t = 2 to 4; away from it: an empty span at the near plane
    ([2.0, 0.5], [4.0, 0.5])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn

from nfield.progress import progress_bar
from nfield.render.cameras import PinholeCamera, camera_rays
from nfield.render.rays import RaySamples, ray_aabb
from nfield.render.samplers import importance_samples, stratified_samples
from nfield.render.volume import composite, render_rays, render_weights


@dataclass(frozen=True)
class RadianceRenderSettings:
    """How `render_nerf_rays` samples and composites a radiance model's rays.

    sampler: ``occupancy`` (march the model's ``grid``) or ``hierarchical`` (``coarse`` then ``field``).
    n_samples: hierarchical: coarse stratified samples per ray.
    n_importance: hierarchical: fine samples per ray.
    steps_per_ray: occupancy: march steps across the box's diagonal (`march_step`).
    early_stop_eps: occupancy: a ray stops once its transmittance falls below this.
    chunk: rays per forward pass when rendering images (`render_image`).
    max_samples: the most samples per field call when rendering without gradients (bounds memory).
    backend: ray marching and compositing: auto (Triton kernels on CUDA), torch or triton (`nfield.backends`).
    """

    sampler: Literal["occupancy", "hierarchical"]
    n_samples: int
    n_importance: int
    steps_per_ray: int
    early_stop_eps: float
    chunk: int
    max_samples: int
    backend: str


def half_precision(device: torch.device | str, enabled: bool = True):
    """A context evaluating fields in half precision: float16 autocast on CUDA, bfloat16 on the CPU
    (which has no fast float16 matrix products). Compositing stays in float32."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16, enabled=enabled)


def composite_on(pixels: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """RGB of (..., 3) or straight-alpha RGBA (..., 4) pixels in [0, 1] over `background` (..., 3)."""
    if pixels.shape[-1] == 3:
        return pixels
    alpha = pixels[..., 3:]
    return pixels[..., :3] * alpha + background * (1 - alpha)


def march_step(aabb: torch.Tensor, steps_per_ray: int) -> float:
    """The occupancy sampler's step along rays: the diagonal of the box `aabb` (2, 3) / `steps_per_ray`, world units."""
    return float((aabb[1] - aabb[0]).norm()) / steps_per_ray


def ray_bounds(
    origins: torch.Tensor, directions: torch.Tensor, aabb: torch.Tensor, near: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t_near (N,), t_far (N,)): where rays (N, 3) are sampled, their span inside the box `aabb`
    (2, 3) from the near plane `near` on (an empty span, t_far = t_near, for rays that miss it)."""
    t_near, t_far, hit = ray_aabb(origins, directions, aabb, near)
    return t_near, torch.where(hit, t_far, t_near)


def render_nerf_rays(
    model: nn.ModuleDict,
    settings: RadianceRenderSettings,
    near: float,
    origins: torch.Tensor,
    directions: torch.Tensor,
    background: torch.Tensor,
    train: bool,
) -> list[dict[str, torch.Tensor]]:
    """Render rays (N, 3) with the model's sampler: [fine, coarse] outputs (hierarchical) or [output]
    (occupancy), each a dict with rgb (N, 3), opacity (N,), depth (N,).

    Args:
        model: the radiance model (see the module docstring).
        settings: how to sample and composite.
        near: the near plane, world units.
        origins: (N, 3) ray origins, world units.
        directions: (N, 3) ray directions.
        background: (N, 3) or (3,) colour behind the volume.
        train: perturbed samples and fields evaluated with autograd (training), or fixed samples
            and fields evaluated `settings.max_samples` at a time (rendering).
    """
    field_module = model["field"]
    aabb = field_module.aabb
    t_near, t_far = ray_bounds(origins, directions, aabb, near)
    n_rays = len(origins)
    limit = None if train else settings.max_samples  # without gradients, the field sees bounded chunks of samples
    backend = settings.backend
    if settings.sampler == "hierarchical":
        coarse_samples = stratified_samples(t_near, t_far, settings.n_samples, perturb=train)
        coarse = render_rays(model["coarse"], origins, directions, coarse_samples, background, backend, limit)
        fine_samples = importance_samples(
            coarse_samples, coarse["weights"].detach(), n_rays, settings.n_importance, perturb=train
        )
        return [render_rays(field_module, origins, directions, fine_samples, background, backend, limit), coarse]
    step_size = march_step(aabb, settings.steps_per_ray)
    if not train and not torch.is_grad_enabled() and callable(getattr(field_module, "density_and_features", None)):
        samples = model["grid"].march(origins, directions, t_near, t_far, step_size, backend=backend)
        return [render_culled(field_module, origins, directions, samples, background, settings, limit)]
    with torch.no_grad():
        samples = model["grid"].march(
            origins,
            directions,
            t_near,
            t_far,
            step_size,
            sigma_fn=field_module.density,
            early_stop_eps=settings.early_stop_eps,
            backend=backend,
        )
    return [render_rays(field_module, origins, directions, samples, background, backend, limit)]


def render_culled(
    field_module: nn.Module,
    origins: torch.Tensor,
    directions: torch.Tensor,
    samples: RaySamples,
    background: torch.Tensor,
    settings: RadianceRenderSettings,
    limit: int,
) -> dict[str, torch.Tensor]:
    """Render rays (N, 3) through their occupied samples without autograd, the density network
    evaluated once per sample: densities and geometry features at every sample (`limit` at a
    time), the samples behind the point where a ray's transmittance falls below
    `settings.early_stop_eps` dropped, colours only at the rest, then `composite` of those.

    Training's marching evaluates the densities of every sample without autograd, drops the same
    samples, and evaluates the whole field again at the rest (with autograd); rendering that way
    costs the density network twice over the kept samples. The result is the same: rgb (N, 3),
    opacity (N,), depth (N,) and weights of the kept samples.
    """
    if len(samples) == 0:
        return render_rays(field_module, origins, directions, samples, background, settings.backend)
    positions = samples.positions(origins, directions)
    sigmas, features = [], []
    for part in positions.split(limit):
        sigma, feature = field_module.density_and_features(part)
        sigmas.append(sigma.reshape(-1).to(origins.dtype))
        features.append(feature)
    sigma, feature = torch.cat(sigmas), torch.cat(features)
    _, transmittance, _ = render_weights(
        samples.t_starts, samples.t_ends, sigma, samples.ray_indices, len(origins), settings.backend
    )
    keep = transmittance >= settings.early_stop_eps
    kept = samples.select(keep)
    sigma, feature, seen_along = sigma[keep], feature[keep], directions[kept.ray_indices]
    rgb = torch.cat([field_module.color_of(f, d) for f, d in zip(feature.split(limit), seen_along.split(limit))])
    return composite(rgb, sigma, kept, len(origins), background, settings.backend)


@torch.no_grad()
def render_image(
    model: nn.ModuleDict,
    settings: RadianceRenderSettings,
    near: float,
    origins: torch.Tensor,
    directions: torch.Tensor,
    background: torch.Tensor,
    on_chunk: Callable[[int], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Render rays (N, 3) in chunks of `settings.chunk`: rgb (N, 3), depth (N,), opacity (N,), float32;
    `on_chunk(n_rays)` is called after each chunk (a progress bar's update). `near` is the near
    plane (world units), `background` the (3,) colour behind the volume."""
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "opacity": []}
    for o, d in zip(origins.split(settings.chunk), directions.split(settings.chunk)):
        out = render_nerf_rays(model, settings, near, o, d, background, train=False)[0]
        for key in parts:
            parts[key].append(out[key].float())
        if on_chunk is not None:
            on_chunk(len(o))
    return {key: torch.cat(values) for key, values in parts.items()}


def render_poses(
    model: nn.ModuleDict,
    settings: RadianceRenderSettings,
    near: float,
    poses: torch.Tensor,
    camera: PinholeCamera,
    background: torch.Tensor,
    progress: bool = True,
) -> list[dict[str, torch.Tensor]]:
    """Render each of `poses` (n, 4, 4) camera-to-world with `camera`: per frame rgb (H, W, 3),
    depth (H, W), opacity (H, W) on the CPU; `progress` shows a bar over the rays of every frame (a
    CPU takes a while over one)."""
    frames = []
    label = f"render ({len(poses)} frame{'s' if len(poses) != 1 else ''})"
    total = len(poses) * camera.height * camera.width
    with progress_bar(total=total, desc=label, unit="ray", unit_scale=True, enabled=progress) as bar:
        for c2w in poses:
            origins, directions = camera_rays(camera, c2w.to(background.device))
            out = render_image(model, settings, near, origins, directions, background, on_chunk=bar.update)
            frames.append({key: value.reshape(camera.height, camera.width, -1).squeeze(-1).cpu() for key, value in out.items()})
    return frames
