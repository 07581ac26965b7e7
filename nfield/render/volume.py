"""Volume rendering of radiance fields over packed ray samples (the NeRF quadrature).

Along a ray cut into intervals i of length delta_i with density sigma_i and colour c_i:

    alpha_i = 1 - exp(-sigma_i delta_i)          the interval's opacity
    T_i = prod_{j < i} (1 - alpha_j)              transmittance up to it (exclusive)
    w_i = T_i alpha_i                             its weight
    rgb = sum_i w_i c_i + (1 - sum_i w_i) background

Samples come packed, as `nfield.render.rays.RaySamples` (`ray_indices`, `t_starts`, `t_ends`,
grouped by ray and in increasing t within a ray), and the field comes as a callback, so any field
renders. Everything is differentiable with respect to the densities and colours and runs on the
device of the tensors given: `render_weights` and `composite` take a ``backend`` (see
`nfield.backends`): ``auto`` runs the Triton kernels of `nfield.kernels.volume_rendering` on CUDA
(one lane per ray, a running transmittance, no dense (rays x samples) tensor) and the PyTorch
reference below elsewhere; both agree to float32 rounding.

Example::

    >>> import torch
    >>> from nfield.render.samplers import stratified_samples
    >>> origins, directions = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    >>> samples = stratified_samples(torch.zeros(1), torch.full((1,), 4.0), 64, perturb=False)
    >>> slab = lambda points, dirs: (torch.ones_like(points), 1e3 * (points[:, 2] > 2.0).to(points))  # white, opaque beyond z = 2
    >>> out = render_rays(slab, origins, directions, samples, background=torch.zeros(3))
    >>> out["rgb"].tolist(), round(float(out["opacity"]), 6), float(out["depth"])
    ([[1.0, 1.0, 1.0]], 1.0, 2.03125)
"""

from __future__ import annotations

from typing import Callable

import torch

from nfield.backends import choose_backend, record_backend
from nfield.errors import NfieldError
from nfield.render.rays import RaySamples

RgbSigmaFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(positions (M, 3), directions (M, 3)) -> (rgb (M, 3), sigma (M,)); an (M, 1) sigma is accepted too."""

_MAX_OPTICAL_DEPTH = 1e3  # sigma * delta is clamped here: exp(-1e3) is 0 in float64 already, and no inf reaches the sums
RENDER_BACKENDS = ("torch", "triton")


def _kernel_backend(owner: str, backend: str, intervals: tuple[torch.Tensor, ...], values: tuple[torch.Tensor, ...]) -> bool:
    """Whether the Triton kernel runs this call: float32 intervals without gradients, and values
    (densities, colours) in float32, float16 or bfloat16, which it reads into float32."""
    chosen = choose_backend(owner, backend, intervals[0].device, RENDER_BACKENDS)
    if chosen == "triton":
        usable = all(t.dtype == torch.float32 and not t.requires_grad for t in intervals)
        usable &= all(v.dtype in (torch.float32, torch.float16, torch.bfloat16) for v in values)
        if not usable:
            if backend == "triton":
                raise NfieldError(f"{owner}: the triton backend takes float32 intervals without gradients; use backend 'auto'")
            chosen = "torch"
    record_backend(owner, chosen)
    return chosen == "triton"


def render_weights(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    sigmas: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample rendering weights, transmittances and opacities of packed samples.

    The transmittance is exp(-(optical depth before the sample within its ray)), from one cumulative
    sum over all samples minus its value at each ray's first sample. That sum runs in float64, so a
    long batch of rays in float32 loses no precision. Differentiable with respect to `sigmas`.

    Args:
        t_starts: (M,) interval starts, grouped by ray, increasing within a ray.
        t_ends: (M,) interval ends.
        sigmas: (M,) densities, >= 0.
        ray_indices: (M,) int64 ray of each sample, < n_rays.
        n_rays: N, the number of rays.
        backend: auto, torch or triton; the kernel computes no gradients, so sigmas that require
            grad take the reference under auto.

    Returns:
        weights: (M,) T_i alpha_i.
        transmittance: (M,) T_i, the product of (1 - alpha_j) over the earlier samples of the ray.
        alphas: (M,) 1 - exp(-sigma_i (t_end_i - t_start_i)).
        All in the dtype of `sigmas`.

    Example::

        >>> t = torch.tensor([0.0, 1.0, 2.0])
        >>> weights, transmittance, alphas = render_weights(t[:2], t[1:], torch.tensor([0.0, 1e9]), torch.tensor([0, 0]), 1)
        >>> weights.tolist(), transmittance.tolist()
        ([0.0, 1.0], [1.0, 1.0])
    """
    if not t_starts.shape == t_ends.shape == sigmas.shape == ray_indices.shape or t_starts.dim() != 1:
        raise NfieldError(
            f"render_weights: t_starts, t_ends, sigmas and ray_indices must all be (M,), got {tuple(t_starts.shape)}, "
            f"{tuple(t_ends.shape)}, {tuple(sigmas.shape)}, {tuple(ray_indices.shape)}"
        )
    if _kernel_backend("render_weights", backend, (t_starts, t_ends), (sigmas,)) and not sigmas.requires_grad:
        from nfield.kernels.volume_rendering import render_weights_kernel

        return render_weights_kernel(t_starts, t_ends, sigmas, ray_indices, n_rays)
    optical_depth = (sigmas * (t_ends - t_starts).to(sigmas)).clamp_max(_MAX_OPTICAL_DEPTH)
    before = torch.cumsum(optical_depth.double(), dim=0) - optical_depth.double()  # exclusive, over all rays
    counts = torch.bincount(ray_indices, minlength=n_rays)
    first = torch.cumsum(counts, dim=0) - counts  # each ray's first sample
    transmittance = torch.exp(-(before - before[first[ray_indices]])).to(sigmas.dtype)
    alphas = -torch.expm1(-optical_depth)
    return transmittance * alphas, transmittance, alphas


def accumulate(weights: torch.Tensor, values: torch.Tensor | None, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Weighted sums of per-sample values over each ray (differentiable).

    Args:
        weights: (M,) per-sample weights.
        values: (M, C) per-sample values, or None for the sum of the weights themselves.
        ray_indices: (M,) int64 ray of each sample, < n_rays.
        n_rays: N, the number of rays.

    Returns:
        (N, C) sum of weights * values per ray, or (N,) sum of weights when values is None;
        0 for rays without samples.

    Example::

        >>> accumulate(torch.tensor([0.5, 0.25, 1.0]), None, torch.tensor([0, 0, 2]), 3)
        tensor([0.7500, 0.0000, 1.0000])
    """
    if values is None:
        return weights.new_zeros(n_rays).index_add(0, ray_indices, weights)
    if values.dim() != 2 or len(values) != len(weights):
        raise NfieldError(f"accumulate: values must be (M, C) with M = {len(weights)} samples, got {tuple(values.shape)}")
    weighted = weights[:, None] * values
    return weighted.new_zeros(n_rays, values.shape[1]).index_add(0, ray_indices, weighted)


def composite(
    rgbs: torch.Tensor,
    sigmas: torch.Tensor,
    samples: RaySamples,
    n_rays: int,
    background: torch.Tensor | None = None,
    backend: str = "auto",
) -> dict[str, torch.Tensor]:
    """Composite packed samples' colours and densities into per-ray colour, opacity and depth.

    Args:
        rgbs: (M, 3) colours of the samples.
        sigmas: (M,) densities of the samples.
        samples: their `RaySamples` (M samples).
        n_rays: N, the number of rays.
        background: (N, 3) or (3,) colour behind the volume, or None for black.
        backend: auto, torch or triton (`nfield.backends`).

    Returns:
        A dict with
        rgb: (N, 3) sum_i w_i c_i + (1 - opacity) * background;
        opacity: (N,) sum_i w_i;
        depth: (N,) the expected t of the ray's stopping point given that it stops, sum_i w_i t_i /
            opacity with t_i the interval midpoints, 0 where the opacity is 0;
        weights: (M,) the samples' weights w_i.

    Example::

        >>> samples = RaySamples(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0]))
        >>> out = composite(torch.eye(3)[:2], torch.tensor([0.0, 1e9]), samples, 1, background=torch.ones(3))
        >>> out["rgb"].tolist(), out["depth"].tolist()  # the second sample is opaque
        ([[0.0, 1.0, 0.0]], [2.5])
    """
    if rgbs.shape != (len(samples), 3) or sigmas.shape != (len(samples),):
        raise NfieldError(
            f"composite: rgbs must be (M, 3) and sigmas (M,) for M = {len(samples)} samples, "
            f"got {tuple(rgbs.shape)} and {tuple(sigmas.shape)}"
        )
    if _kernel_backend("composite", backend, (samples.t_starts, samples.t_ends), (sigmas, rgbs)):
        from nfield.kernels.volume_rendering import composite_kernel

        rgb, opacity, expected_t, weights = composite_kernel(
            rgbs, sigmas, samples.t_starts, samples.t_ends, samples.ray_indices, n_rays
        )
    else:
        weights, _, _ = render_weights(samples.t_starts, samples.t_ends, sigmas, samples.ray_indices, n_rays, "torch")
        opacity = accumulate(weights, None, samples.ray_indices, n_rays)
        rgb = accumulate(weights, rgbs, samples.ray_indices, n_rays)
        expected_t = accumulate(weights, samples.midpoints().to(weights)[:, None], samples.ray_indices, n_rays)[:, 0]
    stops = opacity > 0
    depth = torch.where(stops, expected_t / torch.where(stops, opacity, 1.0), 0.0)
    if background is not None:
        background = torch.as_tensor(background).to(rgb)
        if background.shape not in ((3,), (n_rays, 3)):
            raise NfieldError(f"composite: background must be (3,) or (n_rays, 3) = ({n_rays}, 3), got {tuple(background.shape)}")
        rgb = rgb + (1.0 - opacity)[:, None] * background
    return {"rgb": rgb, "opacity": opacity, "depth": depth, "weights": weights}


def render_rays(
    rgb_sigma_fn: RgbSigmaFn,
    origins: torch.Tensor,
    directions: torch.Tensor,
    samples: RaySamples,
    background: torch.Tensor | None = None,
    backend: str = "auto",
    max_samples: int | None = None,
) -> dict[str, torch.Tensor]:
    """Volume-render rays: evaluate the field at the samples' midpoints and `composite`.

    The field is called once on all M samples (none when M = 0), or without autograd on at most
    `max_samples` at a time: a field's intermediate values (a hash grid's features, the MLPs'
    hidden layers) over millions of samples would take gigabytes, which a CPU spends more time
    allocating and filling than computing. Chunk the rays to bound the samples' own memory.

    Args:
        rgb_sigma_fn: (positions (M, 3), directions (M, 3)) -> (rgb (M, 3), sigma (M,)), e.g. a
            radiance field; directions are the rays' own.
        origins: (N, 3) ray origins.
        directions: (N, 3) ray directions.
        samples: `RaySamples` of these rays.
        background: (N, 3) or (3,) colour behind the volume, or None for black.
        backend: the compositing backend: auto, torch or triton (`nfield.backends`).
        max_samples: without autograd, the most samples per call of `rgb_sigma_fn` (None: all).

    Returns:
        The dict of `composite`: rgb (N, 3), opacity (N,), depth (N,), weights (M,).

    Example: see the module docstring.
    """
    if origins.dim() != 2 or origins.shape[1] != 3 or directions.shape != origins.shape:
        raise NfieldError(
            f"render_rays: origins and directions must both be (N, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    if len(samples) == 0:
        rgbs, sigmas = origins.new_zeros(0, 3), origins.new_zeros(0)
    else:
        positions, sample_directions = samples.positions(origins, directions), directions[samples.ray_indices]
        if max_samples is not None and len(samples) > max_samples and not torch.is_grad_enabled():
            parts = [rgb_sigma_fn(p, d) for p, d in zip(positions.split(max_samples), sample_directions.split(max_samples))]
            rgbs, sigmas = torch.cat([rgb for rgb, _ in parts]), torch.cat([sigma.reshape(-1) for _, sigma in parts])
        else:
            rgbs, sigmas = rgb_sigma_fn(positions, sample_directions)
        if rgbs.shape != (len(samples), 3) or sigmas.numel() != len(samples):
            raise NfieldError(
                f"render_rays: rgb_sigma_fn must return rgb (M, 3) and sigma (M,) for M = {len(samples)} samples, "
                f"got {tuple(rgbs.shape)} and {tuple(sigmas.shape)}"
            )
        sigmas = sigmas.reshape(-1)
    return composite(rgbs, sigmas, samples, len(origins), background, backend)
