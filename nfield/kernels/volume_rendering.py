"""Triton kernels of packed volume rendering (`nfield.render.volume`): weights and compositing.

Samples are packed and grouped by ray (`nfield.render.rays.RaySamples`). One lane of a
program walks one ray's samples in order, so the transmittance is a running product and nothing
of size (rays x samples) is ever dense. Per sample i of a ray, with tau_i = min(sigma_i delta_i, 1e3):

    alpha_i = 1 - exp(-tau_i),  T_i = exp(-sum_{j<i} tau_j),  w_i = T_i alpha_i

and per ray rgb = sum w_i c_i, opacity = sum w_i, expected_t = sum w_i m_i (m_i the midpoints).
The optical depth is summed in float64, as the PyTorch reference does. Each program walks only as
many samples as the longest of its own rays has, and each ray's first sample and count come from
a binary search of the sorted ray indices, so a launch needs no host synchronisation.

The backward, for the cotangents of rgb, opacity, expected_t and the weights, uses
g_i = <dL/drgb, c_i> + dL/dopacity + dL/dexpected_t m_i + dL/dw_i and

    dL/dtau_k = g_k T_{k+1} - sum_{i>k} g_i w_i,     dL/dc_k = w_k dL/drgb,

in two passes over each ray (the first sums g_i w_i, the second walks the prefix); dL/dsigma_k =
dL/dtau_k delta_k where tau_k was not clamped.

Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` set before import, on CPU tensors too (slowly),
which is how the CPU tests check it against the PyTorch reference.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from nfield.kernels import device_guard

_BLOCK = 64  # rays per program
_MAX_OPTICAL_DEPTH = 1e3  # the reference's clamp of sigma * delta


@triton.jit
def _alpha(tau):
    """1 - exp(-tau) without cancellation for small tau (a Taylor series below 1e-2)."""
    series = tau * (1.0 - tau * 0.5 * (1.0 - tau * (1.0 / 3.0) * (1.0 - tau * 0.25)))
    return tl.where(tau < 1e-2, series, 1.0 - tl.exp(-tau))


@triton.jit
def _composite_forward_kernel(
    rgb_ptr,
    sigma_ptr,
    start_ptr,
    end_ptr,
    first_ptr,
    count_ptr,
    weight_ptr,
    transmittance_ptr,
    alpha_ptr,
    out_rgb_ptr,
    out_opacity_ptr,
    out_t_ptr,
    n_rays,
    MAX_DEPTH: tl.constexpr,
    WITH_COLOUR: tl.constexpr,
    WITH_FACTORS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rays < n_rays
    first = tl.load(first_ptr + rays, mask=valid, other=0)
    count = tl.load(count_ptr + rays, mask=valid, other=0)
    max_count = tl.max(count, axis=0)  # this program's longest ray, not the launch's
    depth = tl.zeros((BLOCK,), tl.float64)
    red = tl.zeros((BLOCK,), tl.float32)
    green = tl.zeros((BLOCK,), tl.float32)
    blue = tl.zeros((BLOCK,), tl.float32)
    opacity = tl.zeros((BLOCK,), tl.float32)
    expected_t = tl.zeros((BLOCK,), tl.float32)
    for k in range(max_count):
        active = valid & (k < count)
        i = first + k
        sigma = tl.load(sigma_ptr + i, mask=active, other=0.0).to(tl.float32)
        start = tl.load(start_ptr + i, mask=active, other=0.0).to(tl.float32)
        end = tl.load(end_ptr + i, mask=active, other=0.0).to(tl.float32)
        tau = tl.minimum(sigma * (end - start), MAX_DEPTH)
        alpha = _alpha(tau)
        transmittance = tl.exp(-depth.to(tl.float32))
        weight = transmittance * alpha
        tl.store(weight_ptr + i, weight, mask=active)
        if WITH_FACTORS:
            tl.store(transmittance_ptr + i, transmittance, mask=active)
            tl.store(alpha_ptr + i, alpha, mask=active)
        if WITH_COLOUR:
            red += weight * tl.load(rgb_ptr + i * 3 + 0, mask=active, other=0.0).to(tl.float32)
            green += weight * tl.load(rgb_ptr + i * 3 + 1, mask=active, other=0.0).to(tl.float32)
            blue += weight * tl.load(rgb_ptr + i * 3 + 2, mask=active, other=0.0).to(tl.float32)
            opacity += weight
            expected_t += weight * (0.5 * (start + end))
        depth += tau.to(tl.float64)
    if WITH_COLOUR:
        tl.store(out_rgb_ptr + rays * 3 + 0, red, mask=valid)
        tl.store(out_rgb_ptr + rays * 3 + 1, green, mask=valid)
        tl.store(out_rgb_ptr + rays * 3 + 2, blue, mask=valid)
        tl.store(out_opacity_ptr + rays, opacity, mask=valid)
        tl.store(out_t_ptr + rays, expected_t, mask=valid)


@triton.jit
def _sample_cotangent(grad_rgb_r, grad_rgb_g, grad_rgb_b, grad_opacity, grad_t, rgb_ptr, grad_weight_ptr, i, active, start, end,
                      WITH_WEIGHT_GRAD: tl.constexpr):  # fmt: skip
    """g_i = <dL/drgb, c_i> + dL/dopacity + dL/dexpected_t m_i (+ dL/dw_i)."""
    red = tl.load(rgb_ptr + i * 3 + 0, mask=active, other=0.0).to(tl.float32)
    green = tl.load(rgb_ptr + i * 3 + 1, mask=active, other=0.0).to(tl.float32)
    blue = tl.load(rgb_ptr + i * 3 + 2, mask=active, other=0.0).to(tl.float32)
    g = grad_rgb_r * red + grad_rgb_g * green + grad_rgb_b * blue + grad_opacity + grad_t * (0.5 * (start + end))
    if WITH_WEIGHT_GRAD:
        g += tl.load(grad_weight_ptr + i, mask=active, other=0.0).to(tl.float32)
    return g


@triton.jit
def _composite_backward_kernel(
    rgb_ptr,
    sigma_ptr,
    start_ptr,
    end_ptr,
    weight_ptr,
    first_ptr,
    count_ptr,
    grad_rgb_ptr,
    grad_opacity_ptr,
    grad_t_ptr,
    grad_weight_ptr,
    grad_sigma_ptr,
    grad_colour_ptr,
    n_rays,
    MAX_DEPTH: tl.constexpr,
    WITH_WEIGHT_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = rays < n_rays
    first = tl.load(first_ptr + rays, mask=valid, other=0)
    count = tl.load(count_ptr + rays, mask=valid, other=0)
    max_count = tl.max(count, axis=0)  # this program's longest ray, not the launch's
    grad_r = tl.load(grad_rgb_ptr + rays * 3 + 0, mask=valid, other=0.0).to(tl.float32)
    grad_g = tl.load(grad_rgb_ptr + rays * 3 + 1, mask=valid, other=0.0).to(tl.float32)
    grad_b = tl.load(grad_rgb_ptr + rays * 3 + 2, mask=valid, other=0.0).to(tl.float32)
    grad_opacity = tl.load(grad_opacity_ptr + rays, mask=valid, other=0.0).to(tl.float32)
    grad_t = tl.load(grad_t_ptr + rays, mask=valid, other=0.0).to(tl.float32)
    total = tl.zeros((BLOCK,), tl.float64)
    for k in range(max_count):
        active = valid & (k < count)
        i = first + k
        start = tl.load(start_ptr + i, mask=active, other=0.0).to(tl.float32)
        end = tl.load(end_ptr + i, mask=active, other=0.0).to(tl.float32)
        weight = tl.load(weight_ptr + i, mask=active, other=0.0).to(tl.float32)
        g = _sample_cotangent(grad_r, grad_g, grad_b, grad_opacity, grad_t, rgb_ptr, grad_weight_ptr, i, active, start, end,
                              WITH_WEIGHT_GRAD)  # fmt: skip
        total += (g * weight).to(tl.float64)
    prefix = tl.zeros((BLOCK,), tl.float64)
    depth = tl.zeros((BLOCK,), tl.float64)
    for k in range(max_count):
        active = valid & (k < count)
        i = first + k
        sigma = tl.load(sigma_ptr + i, mask=active, other=0.0).to(tl.float32)
        start = tl.load(start_ptr + i, mask=active, other=0.0).to(tl.float32)
        end = tl.load(end_ptr + i, mask=active, other=0.0).to(tl.float32)
        weight = tl.load(weight_ptr + i, mask=active, other=0.0).to(tl.float32)
        g = _sample_cotangent(grad_r, grad_g, grad_b, grad_opacity, grad_t, rgb_ptr, grad_weight_ptr, i, active, start, end,
                              WITH_WEIGHT_GRAD)  # fmt: skip
        delta = end - start
        raw = sigma * delta
        tau = tl.minimum(raw, MAX_DEPTH)
        depth += tau.to(tl.float64)
        prefix += (g * weight).to(tl.float64)
        after = tl.exp(-depth.to(tl.float32))  # T_{k+1}
        grad_tau = g * after - (total - prefix).to(tl.float32)
        grad_sigma = tl.where(raw <= MAX_DEPTH, grad_tau * delta, 0.0)
        tl.store(grad_sigma_ptr + i, grad_sigma, mask=active)
        tl.store(grad_colour_ptr + i * 3 + 0, weight * grad_r, mask=active)
        tl.store(grad_colour_ptr + i * 3 + 1, weight * grad_g, mask=active)
        tl.store(grad_colour_ptr + i * 3 + 2, weight * grad_b, mask=active)


def ray_segments(ray_indices: torch.Tensor, n_rays: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each ray's first sample (N,) and sample count (N,) int64 in packed samples sorted by ray,
    by binary search (no host synchronisation, unlike a bincount on CUDA)."""
    bounds = torch.searchsorted(ray_indices, torch.arange(n_rays + 1, device=ray_indices.device))
    return bounds[:-1].contiguous(), (bounds[1:] - bounds[:-1]).contiguous()


def render_weights_kernel(
    t_starts: torch.Tensor, t_ends: torch.Tensor, sigmas: torch.Tensor, ray_indices: torch.Tensor, n_rays: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weights, transmittances and alphas (M,) float32 of packed samples (no autograd)."""
    m = len(sigmas)
    weights, transmittance, alphas = (torch.empty(m, dtype=torch.float32, device=sigmas.device) for _ in range(3))
    if m:
        first, counts = ray_segments(ray_indices, n_rays)
        dummy = weights[:1]
        with device_guard(sigmas):
            _composite_forward_kernel[(triton.cdiv(n_rays, _BLOCK),)](
                dummy, sigmas.contiguous(), t_starts.contiguous(), t_ends.contiguous(), first, counts,
                weights, transmittance, alphas, dummy, dummy, dummy, n_rays,
                MAX_DEPTH=_MAX_OPTICAL_DEPTH, WITH_COLOUR=False, WITH_FACTORS=True, BLOCK=_BLOCK,
            )  # fmt: skip
    return weights, transmittance, alphas


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, rgbs, sigmas, t_starts, t_ends, ray_indices, n_rays: int):
        device = sigmas.device
        m = len(sigmas)
        rgbs = rgbs.contiguous()
        sigmas, t_starts, t_ends = sigmas.contiguous(), t_starts.contiguous(), t_ends.contiguous()
        weights = torch.empty(m, dtype=torch.float32, device=device)
        rgb = torch.zeros(n_rays, 3, dtype=torch.float32, device=device)
        opacity = torch.zeros(n_rays, dtype=torch.float32, device=device)
        expected_t = torch.zeros(n_rays, dtype=torch.float32, device=device)
        first, counts = ray_segments(ray_indices, n_rays)
        if m:
            with device_guard(sigmas):
                _composite_forward_kernel[(triton.cdiv(n_rays, _BLOCK),)](
                    rgbs, sigmas, t_starts, t_ends, first, counts, weights, weights, weights, rgb, opacity, expected_t,
                    n_rays, MAX_DEPTH=_MAX_OPTICAL_DEPTH, WITH_COLOUR=True, WITH_FACTORS=False, BLOCK=_BLOCK,
                )  # fmt: skip
        ctx.save_for_backward(rgbs, sigmas, t_starts, t_ends, weights, first, counts)
        ctx.n_rays = n_rays
        ctx.dtypes = (rgbs.dtype, sigmas.dtype)
        return rgb, opacity, expected_t, weights

    @staticmethod
    def backward(ctx: Any, grad_rgb, grad_opacity, grad_t, grad_weights):
        rgbs, sigmas, t_starts, t_ends, weights, first, counts = ctx.saved_tensors
        n_rays, m = ctx.n_rays, len(sigmas)
        grad_rgb = torch.zeros(n_rays, 3, device=sigmas.device) if grad_rgb is None else grad_rgb.float().contiguous()
        grad_opacity = torch.zeros(n_rays, device=sigmas.device) if grad_opacity is None else grad_opacity.float().contiguous()
        grad_t = torch.zeros(n_rays, device=sigmas.device) if grad_t is None else grad_t.float().contiguous()
        grad_sigma = torch.zeros(m, dtype=torch.float32, device=sigmas.device)
        grad_colour = torch.zeros(m, 3, dtype=torch.float32, device=sigmas.device)
        if m:
            with_weight_grad = grad_weights is not None
            weight_grad = grad_weights.float().contiguous() if with_weight_grad else grad_sigma
            with device_guard(sigmas):
                _composite_backward_kernel[(triton.cdiv(n_rays, _BLOCK),)](
                    rgbs, sigmas, t_starts, t_ends, weights, first, counts, grad_rgb, grad_opacity, grad_t, weight_grad,
                    grad_sigma, grad_colour, n_rays,
                    MAX_DEPTH=_MAX_OPTICAL_DEPTH, WITH_WEIGHT_GRAD=with_weight_grad, BLOCK=_BLOCK,
                )  # fmt: skip
        rgb_dtype, sigma_dtype = ctx.dtypes
        return grad_colour.to(rgb_dtype), grad_sigma.to(sigma_dtype), None, None, None, None


def composite_kernel(
    rgbs: torch.Tensor,
    sigmas: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed compositing through the kernels, differentiable w.r.t. `rgbs` and `sigmas`.

    Args:
        rgbs: (M, 3) sample colours.
        sigmas: (M,) densities.
        t_starts, t_ends: (M,) sample intervals, grouped by ray, increasing within a ray.
        ray_indices: (M,) int64 ray of each sample.
        n_rays: N.

    Returns:
        rgb (N, 3) sum w_i c_i, opacity (N,), expected_t (N,) sum w_i m_i, weights (M,); float32.
    """
    return _Composite.apply(rgbs, sigmas, t_starts, t_ends, ray_indices, n_rays)
