"""Every Triton kernel against its PyTorch reference, at two sizes.

``small`` runs on the CPU in Triton's interpreter (``TRITON_INTERPRET=1`` must be set before
Triton is imported, so the CPU tests run this module in a subprocess); ``large`` runs compiled on
CUDA from the gpu-marked tests, at sizes that cross block boundaries and int32 index ranges.

    TRITON_INTERPRET=1 python -m tests.kernels.kernel_checks grid composite march mlp mesh_distance

Each check draws fresh random inputs, poisons outputs where the kernel allocates them, and raises
AssertionError with the offending error; `main` prints one line per check ("NAME: ok: ..." or
"NAME: FAIL: ...", every check running whatever the others did) and exits 1 when any failed. In the
interpreter every memory access is bounds-checked (`interpreter_bounds`): a kernel that touches
memory outside its launch's tensors fails its check, and a last line counts the accesses checked.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from nfield.encodings import DenseGrid, DenseGridConfig, HashGrid, HashGridConfig
from nfield.encodings.grid import interpolate_reference
from nfield.networks import MLP, MLPConfig
from nfield.render.occupancy import OccupancyGrid, OccupancyGridConfig
from nfield.render.rays import RaySamples
from nfield.render.volume import composite, render_weights
from tests.kernels import hopper_compile, interpreter_bounds, interpreter_speed


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in float64 (0 when both vanish); NaN anywhere is infinite error."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    scale = want.norm()
    return float((got - want).norm() / scale) if scale > 0 else float((got - want).norm())


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tolerance: float) -> float:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    error = relative_error(got, want)
    assert error <= tolerance, f"{name}: relative error {error:.3g} > {tolerance:g}"
    return error


# --------------------------------------------------------------------------------------- grids
def grid_cases(size: str) -> list[tuple[str, int, object, torch.dtype]]:
    """(label, dim, config, table dtype): d = 2, 3; F = 1, 2, 4, 8; dense, hashed and boundary levels."""
    f32, f16 = torch.float32, torch.float16
    cases = [
        ("2d-F1-hash", 2, HashGridConfig(n_levels=4, n_features_per_level=1, log2_hashmap_size=8, base_resolution=4), f32),
        ("2d-F2-fractional", 2, HashGridConfig(n_levels=5, log2_hashmap_size=7, base_resolution=3, per_level_scale=1.5), f32),
        ("3d-F2-hash", 3, HashGridConfig(n_levels=4, log2_hashmap_size=9, base_resolution=2, per_level_scale=2.0), f32),
        ("3d-F4-fp16", 3, HashGridConfig(n_levels=3, n_features_per_level=4, log2_hashmap_size=10, base_resolution=4), f16),
        ("3d-F8-dense", 3, DenseGridConfig(n_levels=2, n_features_per_level=8, base_resolution=3, per_level_scale=2.0), f32),
        ("2d-F4-dense-fp16", 2, DenseGridConfig(n_levels=3, n_features_per_level=4, base_resolution=5, per_level_scale=1.7), f16),
    ]
    if size == "large":
        ngp = HashGridConfig(n_levels=16, per_level_scale=(4096 / 16) ** (1 / 15))
        cases += [("3d-ngp", 3, ngp, torch.float32), ("3d-ngp-fp16", 3, ngp, torch.float16)]
    return cases


def grid_points(n: int, dim: int, device: str, generator: torch.Generator) -> torch.Tensor:
    """Random points plus the box's corners and faces (x = +-1) and points outside it, as a
    non-contiguous view (every other column of a wider tensor)."""
    inside = torch.rand(n, dim, generator=generator) * 2 - 1
    corners = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * dim)
    outside = torch.rand(7, dim, generator=generator) * 4 - 2
    points = torch.cat([inside, corners, outside])
    wide = torch.zeros(len(points), 2 * dim)
    wide[:, ::2] = points
    return wide.to(device)[:, ::2]


def check_grid(device: str, size: str) -> str:
    generator = torch.Generator().manual_seed(0)
    n = 140 if size == "small" else 2**20 + 77  # with the corners and outside points: not a multiple of the 128-point block
    worst = {"forward": 0.0, "table": 0.0, "x": 0.0, "xx": 0.0, "x-table": 0.0}
    for label, dim, cfg, dtype in grid_cases(size):
        grid = (HashGrid if isinstance(cfg, HashGridConfig) else DenseGrid)(dim, cfg).to(device)
        with torch.no_grad():
            grid.params.copy_(torch.randn(grid.params.shape, generator=generator))
        table = grid.params.detach().to(dtype).requires_grad_()
        reference_table = table.detach().float().requires_grad_()
        x = grid_points(n, dim, device, generator)
        assert not x.is_contiguous()
        from nfield.kernels.grid_encoding import grid_encode

        tolerance = 1e-5 if dtype == torch.float32 else 2e-3
        # forward and backward to the table (x without gradient)
        y = grid_encode(x, table, grid.levels)
        want = interpolate_reference(x, reference_table, grid.levels)
        worst["forward"] = max(worst["forward"], assert_close(f"{label} forward", y, want, 1e-5))
        cotangent = torch.randn(y.shape, generator=generator).to(device)
        (got,) = torch.autograd.grad(y, table, cotangent)
        (expected,) = torch.autograd.grad(want, reference_table, cotangent)
        worst["table"] = max(worst["table"], assert_close(f"{label} d/dtable", got, expected, tolerance))
        # gradients w.r.t. x, and an eikonal-style loss on them (second derivatives)
        if size == "large" and label.endswith("fp16"):
            continue
        m = min(len(x), 4000)  # the reference keeps every corner for double backward: a subset
        xk = x[:m].detach().clone().requires_grad_()
        xr = x[:m].detach().clone().requires_grad_()
        head = torch.randn(grid.out_dim, 1, generator=generator).to(device)

        def eikonal(points, features, params):
            value = (torch.tanh(features) @ head).sum()
            (gradient,) = torch.autograd.grad(value, points, create_graph=True)
            loss = ((gradient.norm(dim=1) - 1.0) ** 2).sum()
            return gradient, torch.autograd.grad(loss, [points, params])

        gk, (xx_k, xt_k) = eikonal(xk, grid_encode(xk, table, grid.levels), table)
        gr, (xx_r, xt_r) = eikonal(xr, interpolate_reference(xr, reference_table, grid.levels), reference_table)
        worst["x"] = max(worst["x"], assert_close(f"{label} d/dx", gk, gr, 1e-4))
        worst["xx"] = max(worst["xx"], assert_close(f"{label} eikonal d/dx", xx_k, xx_r, 1e-3))
        worst["x-table"] = max(worst["x-table"], assert_close(f"{label} eikonal d/dtable", xt_k, xt_r, max(tolerance, 1e-4)))
    if size == "large":
        worst["int64"] = check_grid_int64_indexing(device)
    return ", ".join(f"{key} {value:.1e}" for key, value in worst.items())


def check_grid_int64_indexing(device: str) -> float:
    """N L F above 2^31 output values: the last rows must still be right."""
    torch.manual_seed(1)
    grid = HashGrid(3, HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=15)).to(device)
    n = 2**26 + 3  # 2^26 x 32 columns = 2^31 values
    x = torch.rand(n, 3, device=device) * 2 - 1
    from nfield.kernels.grid_encoding import grid_encode

    with torch.no_grad():
        tail = grid_encode(x, grid.params, grid.levels)[-4096:].clone()
        want = interpolate_reference(x[-4096:], grid.params, grid.levels)
    del x
    torch.cuda.empty_cache()
    return assert_close("int64 indexing: last rows of 2^31 values", tail, want, 1e-5)


def check_grid_module_dispatch(device: str) -> str:
    """The public HashGrid on backend triton equals itself on backend torch, N = 0 included."""
    torch.manual_seed(2)
    grid = HashGrid(3, HashGridConfig(n_levels=3, log2_hashmap_size=8)).to(device)
    x = torch.rand(200, 3, device=device) * 2 - 1
    grid.set_backend("torch")
    want = grid(x)
    grid.set_backend("triton")
    got = grid(x)
    assert grid.last_backend == "triton" and "last call: triton" in repr(grid)
    assert grid(x[:0]).shape == (0, grid.out_dim)
    return f"module {assert_close('HashGrid backend triton', got, want, 1e-5):.1e}"


# ---------------------------------------------------------------------------------- compositing
def packed_samples(n_rays: int, max_samples: int, device: str, generator: torch.Generator) -> tuple[RaySamples, int]:
    counts = torch.randint(0, max_samples + 1, (n_rays,), generator=generator)
    counts[:3] = torch.tensor([0, 1, max_samples])
    rays = torch.repeat_interleave(torch.arange(n_rays), counts)
    deltas = torch.rand(len(rays), generator=generator, dtype=torch.float64) * 0.05 + 1e-4
    gaps = torch.rand(len(rays), generator=generator, dtype=torch.float64) * 0.01  # gaps between intervals, as a grid leaves
    # distances along each ray from near = 0.05 (as a renderer's are), not running on across rays:
    # at t ~ 1e5 float32 keeps no digits of a 0.05 interval and the check would measure rounding
    ends = torch.cumsum(deltas + gaps, 0)
    first = torch.cumsum(counts, 0) - counts
    ends = ends - (ends - deltas - gaps)[first.clamp_max(max(len(rays) - 1, 0))].repeat_interleave(counts) + 0.05
    starts, ends = (ends - deltas).float(), ends.float()
    return RaySamples(rays.to(device), starts.to(device), ends.to(device)), n_rays


def check_composite(device: str, size: str) -> str:
    generator = torch.Generator().manual_seed(3)
    n_rays, max_samples = (150, 90) if size == "small" else (2**16 + 5, 300)
    samples, n = packed_samples(n_rays, max_samples, device, generator)
    m = len(samples)
    sigmas = torch.rand(m, generator=generator) * 30
    sigmas[::11] = 1e6  # optical depth clamped at 1e3
    sigmas[::13] = 0.0
    sigmas = sigmas.to(device).requires_grad_()
    rgbs = torch.rand(m, 3, generator=generator).to(device).requires_grad_()
    background = torch.rand(3, generator=generator).to(device)
    got = composite(rgbs, sigmas, samples, n, background, backend="triton")
    want = composite(rgbs, sigmas, samples, n, background, backend="torch")
    errors = {}
    for key in ("rgb", "opacity", "depth", "weights"):
        errors[key] = assert_close(f"composite {key}", got[key], want[key], 1e-5)
    cotangents = {key: torch.randn(value.shape, generator=generator).to(device) for key, value in want.items()}

    def loss(out):
        return sum((out[key] * cotangents[key]).sum() for key in out)

    grads_got = torch.autograd.grad(loss(got), [rgbs, sigmas])
    grads_want = torch.autograd.grad(loss(want), [rgbs, sigmas])
    errors["d/drgb"] = assert_close("composite d/drgb", grads_got[0], grads_want[0], 1e-5)
    errors["d/dsigma"] = assert_close("composite d/dsigma", grads_got[1], grads_want[1], 1e-5)
    detached = sigmas.detach()
    for name, a, b in zip(
        ("weights", "transmittance", "alphas"),
        render_weights(samples.t_starts, samples.t_ends, detached, samples.ray_indices, n, backend="triton"),
        render_weights(samples.t_starts, samples.t_ends, detached, samples.ray_indices, n, backend="torch"),
    ):
        errors[name] = max(errors.get(name, 0.0), assert_close(f"render_weights {name}", a, b, 1e-5))
    empty = RaySamples(samples.ray_indices[:0], samples.t_starts[:0], samples.t_ends[:0])
    out = composite(rgbs[:0], sigmas[:0], empty, 4, background, backend="triton")
    assert torch.equal(out["rgb"], background.expand(4, 3)) and out["opacity"].abs().sum() == 0
    return ", ".join(f"{key} {value:.1e}" for key, value in errors.items()) + f" ({m} samples)"


# ------------------------------------------------------------------------------------- marching
def check_march(device: str, size: str) -> str:
    generator = torch.Generator().manual_seed(4)
    n_rays, resolution, step = (120, 8, 0.08) if size == "small" else (2**17 + 3, 128, 3**0.5 * 3 / 1024)
    counts = []
    for n_levels in (1, 3):
        grid = OccupancyGrid(
            OccupancyGridConfig(resolution=resolution, n_levels=n_levels), torch.tensor([[-1.0, -0.5, -1.0], [1.0, 1.5, 1.0]])
        )
        grid = grid.to(device)
        grid.occupied.copy_((torch.rand(grid.density.shape, generator=generator) < 0.15).to(device))
        origins = (torch.randn(n_rays, 3, generator=generator) * 3).to(device)
        directions = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=generator).to(device) - 0.3 * origins, dim=-1)
        near, far = torch.zeros(n_rays, device=device), torch.full((n_rays,), 12.0, device=device)
        near[:5] = 20.0  # empty rays
        for sigma_fn in (None, lambda p: 8.0 * (p.norm(dim=-1) < 0.8).float()):
            got = grid.march(origins, directions, near, far, step, sigma_fn=sigma_fn, alpha_threshold=1e-3, backend="triton")
            want = grid.march(origins, directions, near, far, step, sigma_fn=sigma_fn, alpha_threshold=1e-3, backend="torch")
            assert len(got) == len(want), f"march (levels {n_levels}): {len(got)} samples, reference {len(want)}"
            assert torch.equal(got.ray_indices, want.ray_indices), f"march (levels {n_levels}): ray indices differ"
            assert_close("march t_starts", got.t_starts, want.t_starts, 1e-6)
            assert_close("march t_ends", got.t_ends, want.t_ends, 1e-6)
            counts.append(len(want))
    return f"identical samples ({', '.join(map(str, counts))})"


# ------------------------------------------------------------------------------------------ MLP
def fused_reference(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """`net` in float32 with the fused kernels' float16 roundings (`reference_mlp`)."""
    from nfield.kernels.tiny_mlp import FUSED_ACTIVATIONS, reference_mlp

    linears = list(net.layers)[0::2]
    codes = [FUSED_ACTIVATIONS[name.lower().replace("_", "")] for name in (net.cfg.activation, net.cfg.output_activation)]
    return reference_mlp(x, [m.weight for m in linears], [m.bias for m in linears], *codes, float16=True)


def check_mlp(device: str, size: str) -> str:
    """Every launch configuration (`VARIANTS`; on CUDA the one the GPU's probe settled on, since a
    variant that faults poisons the process) against the reference with the kernels' float16
    roundings, forward and backward; the float32 network's forward within float16's error."""
    from nfield.kernels.mlp_variants import VARIANTS, variant_for

    variants = VARIANTS if torch.device(device).type == "cpu" else (variant_for(torch.device(device)),)

    torch.manual_seed(5)
    n = 300 if size == "small" else 2**18 + 11
    cases = [(32, 2, "relu", "none", 32, 16), (48, 1, "tanh", "sigmoid", 20, 3), (16, 3, "softplus", "leaky_relu", 7, 4)]
    if size == "large":
        cases += [(64, 2, "relu", "none", 32, 16), (128, 2, "relu", "sigmoid", 64, 3)]
    worst = {"forward": 0.0, "backward": 0.0}
    for variant in variants:
        for width, layers, act, out_act, in_dim, out_dim in cases:
            config = MLPConfig(n_neurons=width, n_hidden_layers=layers, activation=act, output_activation=out_act)
            net = MLP(in_dim, out_dim, config).to(device)
            x = torch.randn(n, in_dim + 3, device=device)[:, 3:].requires_grad_()  # non-contiguous
            net.set_backend("torch")
            full = net(x)
            want = fused_reference(net, x)
            cotangent = torch.randn_like(want)
            grads_want = torch.autograd.grad(want, [x, *net.parameters()], cotangent)
            net.set_backend("triton")
            with forced_variant(variant.name):
                got = net(x)
                grads_got = torch.autograd.grad(got, [x, *net.parameters()], cotangent)
                label = f"MLP {variant.name} {width}x{layers} {act}/{out_act}"
                assert_close(f"{label} forward against float32", got, full, 3e-3)
                worst["forward"] = max(worst["forward"], assert_close(f"{label} forward", got, want, 1e-3))
                for index, (a, b) in enumerate(zip(grads_got, grads_want)):
                    worst["backward"] = max(worst["backward"], assert_close(f"{label} gradient {index}", a, b, 5e-3))
                with torch.no_grad():
                    assert_close(f"{label} inference", net(x), want, 1e-3)
    names = ", ".join(v.name for v in variants)
    return f"{names} against the float16-rounded reference: forward {worst['forward']:.1e}, backward {worst['backward']:.1e}"


@contextlib.contextmanager
def forced_variant(name: str):
    """Run the fused MLP's launches in the block with the variant called `name`."""
    from nfield.kernels.mlp_variants import ENVIRONMENT_VARIABLE

    before = os.environ.get(ENVIRONMENT_VARIABLE)
    os.environ[ENVIRONMENT_VARIABLE] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ[ENVIRONMENT_VARIABLE]
        else:
            os.environ[ENVIRONMENT_VARIABLE] = before


def check_mlp_offsets(device: str, size: str) -> str:
    """Offsets of saved layers past 2^31 elements: 2^24 rows at width 64 with 3 hidden layers.

    In the interpreter only the first block of rows is launched (so only its rows are computed) over
    a saved-activation buffer sized for all 2^24 rows (6 GiB, reserved but untouched): the third
    layer starts 2^31 elements in, where int32 offsets wrap and the bounds check stops the store.
    On CUDA the whole launch runs and its last rows are compared."""
    from nfield.kernels.mlp_variants import VARIANTS
    from nfield.kernels.tiny_mlp import (
        PackedWeights,
        _forward,
        _mlp_backward_kernel,
        _mlp_forward_kernel,
        reference_mlp,
    )

    torch.manual_seed(6)
    n, width, layers = 2**24, 64, 3
    weights = (
        [torch.randn(width, 32) / 32**0.5]
        + [torch.randn(width, width) / 8 for _ in range(layers - 1)]
        + [torch.randn(16, width) / 8]
    )
    biases = [torch.randn(w.shape[0]) * 0.1 for w in weights]
    weights, biases = [w.to(device) for w in weights], [b.to(device) for b in biases]
    packed = PackedWeights(weights, biases)
    if size == "large":
        x = torch.randn(n, 32, device=device)
        out, saved = _forward(x, packed, 1, 0, True, VARIANTS[0])
        rows = slice(n - 4096, n)
        want = reference_mlp(x[rows], weights, biases, 1, 0, float16=True)
        error = assert_close("forward at int64 offsets", out[rows, :16], want, 3e-3)
        return f"last rows of {n} (3 saved layers of 2^30 values): {error:.1e}"
    block = VARIANTS[0].block_m
    x = torch.randn(block, 32)
    out = torch.empty(block, packed.O)
    saved = torch.empty(layers, n, packed.H, dtype=torch.float16)  # 6 GiB of address space; the block touches a few pages
    _mlp_forward_kernel[(1,)](
        x, x.stride(0), x.stride(1), packed.w_in, packed.b_in, packed.w_hidden, packed.b_hidden, packed.w_out, packed.b_out,
        out, saved, n, 32, layers, K=32, H=packed.H, O=packed.O, ACT=1, OUT_ACT=0, SAVE=True, BLOCK_M=block,
    )  # fmt: skip
    hidden = x
    for layer in range(layers):
        hidden = torch.relu(torch.nn.functional.linear(hidden, weights[layer], biases[layer]))
    forward = assert_close("third saved layer at 2^31 elements", saved[layers - 1, :block].float(), hidden, 3e-3)
    grad = torch.randn(block, 16)
    grad_z = torch.empty(layers, n, packed.H, dtype=torch.float16)
    grad_z_out = torch.empty(block, packed.O, dtype=torch.float16)
    grad_x = torch.empty(block, 32)
    _mlp_backward_kernel[(1,)](
        grad, grad.stride(0), grad.stride(1), out, saved, packed.w_in, packed.w_hidden, packed.w_out, grad_z, grad_z_out,
        grad_x, n, 32, 16, layers, K=32, H=packed.H, O=packed.O, ACT=1, OUT_ACT=0, NEED_X=True, BLOCK_M=block,
    )  # fmt: skip
    xr = x.clone().requires_grad_()
    (want_x,) = torch.autograd.grad(reference_mlp(xr, weights, biases, 1, 0, float16=True), xr, grad)
    backward = assert_close("input gradient through layers at 2^31 elements", grad_x, want_x, 2e-3)
    return f"saved layer 3 {forward:.1e}, backward {backward:.1e} (2^24 rows x 64 x 3 layers)"


def check_mlp_weight_gradients(device: str, size: str) -> str:
    """Weight gradients whose row sums pass float16's range (65504) stay finite and right: 4,096
    rows of a cotangent of 100 sum to ~4e5 in the output layer's bias and weights."""
    torch.manual_seed(7)
    n = 4096 if size == "small" else 2**18 + 11
    net = MLP(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=2)).to(device)
    x = torch.rand(n, 32, device=device) + 1.0  # positive inputs: products that add up
    cotangent = torch.full((n, 16), 100.0 if size == "small" else 1.0, device=device)
    want = torch.autograd.grad(fused_reference(net, x), list(net.parameters()), cotangent)
    net.set_backend("triton")
    got = torch.autograd.grad(net(x), list(net.parameters()), cotangent)
    largest = max(float(g.abs().max()) for g in want)
    assert largest > 65504, f"the check's gradients ({largest:.3g}) do not pass float16's range"
    worst = max(
        assert_close(f"weight gradient {i} beyond float16's range", a, b, 2e-3) for i, (a, b) in enumerate(zip(got, want))
    )
    return f"gradients up to {largest:.2g}: {worst:.1e}"


def check_mlp_double_backward(device: str, size: str) -> str:
    """An eikonal-style loss on the input gradient (create_graph=True) trains the fused network's
    weights exactly as the reference does (second derivatives through `reference_mlp`)."""
    torch.manual_seed(8)
    n = 200 if size == "small" else 2**16
    net = MLP(35, 1, MLPConfig(n_neurons=128, n_hidden_layers=1, activation="softplus")).to(device)
    x = torch.randn(n, 35, device=device)

    def eikonal(backend: str) -> list[torch.Tensor]:
        net.set_backend(backend)
        points = x.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(net(points).sum(), points, create_graph=True)
        loss = ((gradient.norm(dim=-1) - 1) ** 2).mean()
        grads = torch.autograd.grad(loss, weights, allow_unused=True)  # the output bias has no say in the slope
        return [torch.zeros_like(w) if g is None else g for g, w in zip(grads, weights)]

    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    want, got = eikonal("torch"), eikonal("triton")
    assert all(float(g.norm()) > 0 for g in want[:-1]), "the check's eikonal loss does not reach the weights"
    worst = max(assert_close(f"eikonal gradient {i}", a, b, 5e-3) for i, (a, b) in enumerate(zip(got, want)))
    return f"second derivatives w.r.t. the weights: {worst:.1e}"


# ------------------------------------------------------------------------------- mesh distance
def check_mesh_distance(device: str, size: str) -> str:
    """Unsigned distance and winding number against the PyTorch reference, on an open mesh (a sphere
    with a hole) with a degenerate triangle, a face count that is no block multiple, and points on,
    just inside and just outside the surface."""
    import trimesh

    from nfield.geometry.distance import unsigned_distance, winding_number
    from nfield.kernels.mesh_distance import mesh_distance_and_winding

    sphere = trimesh.creation.icosphere(subdivisions=2 if size == "small" else 4, radius=0.7)
    faces = torch.tensor(sphere.faces[sphere.triangles_center[:, 1] < 0.5])
    faces = torch.cat([faces, torch.tensor([[0, 0, 1]])])
    vertices = torch.tensor(sphere.vertices, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    n = 150 if size == "small" else 20000
    points = torch.cat([torch.rand(n, 3, generator=generator) * 2 - 1, vertices[:20] * 1.001, vertices[20:40] * 0.999])
    distance, winding = mesh_distance_and_winding(vertices.to(device), faces.to(device), points.to(device))
    want_distance, want_winding = unsigned_distance(vertices, faces, points), winding_number(vertices, faces, points)
    distance_error = float((distance.cpu() - want_distance).abs().max())
    winding_error = float((winding.cpu().double() - want_winding).abs().max())
    assert distance_error < 1e-6, f"mesh distance: max error {distance_error:.3g} > 1e-6"
    assert winding_error < 1e-5, f"winding number: max error {winding_error:.3g} > 1e-5"
    return f"distance {distance_error:.1e}, winding {winding_error:.1e} ({len(points)} points, {len(faces)} faces)"


# -------------------------------------------------------------------------------- NGLOD tracing
def fitted_sphere_nglod(device: str, steps: int = 150):
    """An NGLOD field (3 LODs, 16 features) fitted for `steps` Adam steps to a sphere of radius 0.55
    (its exact SDF at points near the surface and in the box): a real surface to trace, in seconds."""
    from nfield.encodings.octree import OctreeFeaturesConfig, SparseOctree
    from nfield.fields.sdf import NGLODConfig, NGLODField

    generator = torch.Generator().manual_seed(9)
    surface = torch.nn.functional.normalize(torch.randn(4000, 3, generator=generator), dim=-1) * 0.55
    cfg = NGLODConfig(octree=OctreeFeaturesConfig(n_lods=3, feature_dim=16), n_neurons=32)
    torch.manual_seed(9)
    field = NGLODField(cfg, SparseOctree.from_points(surface, cfg.octree))
    optimiser = torch.optim.Adam(field.parameters(), lr=1e-2)
    for _ in range(steps):
        near = surface[torch.randint(len(surface), (1024,), generator=generator)]
        x = torch.cat([near + torch.randn(1024, 3, generator=generator) * 0.05, torch.rand(512, 3, generator=generator) * 2 - 1])
        loss = (field.forward_all_lods(x) - (x.norm(dim=-1) - 0.55)[:, None]).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return field.to(device).eval()


def check_nglod_trace(device: str, size: str) -> str:
    """The fused tracer against the PyTorch path on a fitted field: the same hits and evaluations
    per ray, t within 1e-4, normals those of `tetrahedral_normals` at the same points; one Triton
    launch and no host synchronisation per frame, whatever max_steps (counted by `DispatchCounter`)."""
    from nfield.fields.nglod_tracing import nglod_tracer, packed_field
    from nfield.fields.sdf import distance_fn
    from nfield.kernels.dispatch_counter import DispatchCounter
    from nfield.render.camera_paths import orbit_poses
    from nfield.render.cameras import PinholeCamera, camera_rays
    from nfield.render.sphere_tracing import render_surface, tetrahedral_normals

    field = fitted_sphere_nglod(device)
    width, height = (24, 10) if size == "small" else (1280, 720)
    camera = PinholeCamera.from_fov(width, height, 40.0)
    c2w = orbit_poses(1, 2.2, 20.0, start_azimuth_deg=30.0)[0].to(device)
    want = render_surface(nglod_tracer(field, backend="torch"), camera, c2w)
    packed_field(field, field.n_lods - 1)  # the kernel's copy of the field, made once per change
    counts = {}
    for max_steps in (16, 128):
        with DispatchCounter() as counter:
            got = render_surface(nglod_tracer(field, backend="triton", max_steps=max_steps), camera, c2w)
        counts[max_steps] = (counter.launches, counter.syncs, counter.triton_launches)
    assert counts[16] == counts[128], f"launches, syncs, Triton launches per frame change with max_steps: {counts}"
    launches, syncs, triton_launches = counts[128]
    assert triton_launches == 1 and syncs == 0, f"per frame: {triton_launches} Triton launches, {syncs} host syncs"
    hits = int(want["hit"].sum())
    assert hits > 0.1 * width * height, f"only {hits} hits: the check's view misses the sphere"
    if size == "small":  # the interpreter computes exactly what the PyTorch path does
        assert torch.equal(got["hit"], want["hit"]), "the kernel's hits differ from the PyTorch path's"
        assert torch.equal(got["evaluations"], want["evaluations"]), "evaluations per ray differ"
    else:  # compiled: float32 sums in another order may tip a ray that grazes the threshold
        differ = int((got["hit"] != want["hit"]).sum()) + int((got["evaluations"] != want["evaluations"]).sum())
        assert differ <= 1e-3 * width * height, f"{differ} rays differ in hit or evaluations"
    hit = want["hit"] & got["hit"]
    depth = float((got["depth"][hit] - want["depth"][hit]).abs().quantile(0.999))
    assert depth < (1e-4 if size == "small" else 2e-3), f"hit distances differ by {depth:.3g}"
    origins, directions = camera_rays(camera, c2w)
    points = origins + got["depth"].reshape(-1, 1).nan_to_num(posinf=0.0) * directions
    expected = tetrahedral_normals(distance_fn(field, field.n_lods - 1), points[hit.reshape(-1)])
    normals = assert_close("tetrahedral normals", got["normals"][hit], expected, 1e-4 if size == "small" else 1e-2)
    return (
        f"{hits} hits of {width}x{height}, identical with {int(want['evaluations'].sum())} evaluations, t {depth:.1e}, "
        f"normals {normals:.1e}; per frame {triton_launches} Triton launch, {syncs} syncs, {launches} launches in all"
    )


CHECKS = {
    "grid": lambda device, size: check_grid(device, size) + "; " + check_grid_module_dispatch(device),
    "composite": check_composite,
    "march": check_march,
    "mlp": check_mlp,
    "mlp_offsets": check_mlp_offsets,
    "mlp_weight_gradients": check_mlp_weight_gradients,
    "mlp_double_backward": check_mlp_double_backward,
    "mesh_distance": check_mesh_distance,
    "nglod_trace": check_nglod_trace,
}


def run_each(names: list[str], run: Callable[[str], str]) -> list[str]:
    """Run `run(name)` for each name, printing "NAME: ok: RESULT [s]" or "NAME: FAIL: ERROR [s]"
    (a failure, or an out-of-bounds access, does not stop the others); the names that failed."""
    failed = []
    for name in names:
        started = time.perf_counter()
        try:
            result = run(name)
        except Exception as error:  # noqa: BLE001 - every failure is a result to report
            failed.append(name)
            cause = error.__cause__ if error.__cause__ is not None else error
            print(f"{name}: FAIL: {cause} [{time.perf_counter() - started:.1f} s]", flush=True)
        else:
            print(f"{name}: ok: {result} [{time.perf_counter() - started:.1f} s]", flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="*", help=f"any of {', '.join(CHECKS)} (default all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="small", choices=("small", "large"))
    parser.add_argument("--record", type=Path, help="write each interpreted launch's specialisation here (see hopper_compile)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    with contextlib.ExitStack() as stack:
        if args.record:
            stack.enter_context(hopper_compile.recording(args.record))
        bounds = stack.enter_context(interpreter_bounds.bounds_checked()) if interpreted else None
        if interpreted:
            stack.enter_context(interpreter_speed.device_calls_patched_once())
        failed = run_each(args.checks or list(CHECKS), lambda name: CHECKS[name](args.device, args.size))
    if bounds is not None:
        print(bounds.summary())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
